//! The restart policy of a job's supervisor.
//!
//! Owns [`RestartTracker`]: the restarts a supervisor has made, judged
//! against the job's [`RestartPolicy`] (how many within a time window, and
//! the exponential backoff between them). Pure bookkeeping: it decides,
//! the supervisor acts.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use crate::pipeline::restart::RestartPolicy;

/// The restarts a supervisor has made, judged against its policy.
#[derive(Debug)]
pub struct RestartTracker {
    policy: RestartPolicy,
    recent: VecDeque<Instant>,
    consecutive: u32,
}

impl RestartTracker {
    /// A tracker with no restarts yet.
    pub fn new(policy: RestartPolicy) -> Self {
        RestartTracker {
            policy,
            recent: VecDeque::new(),
            consecutive: 0,
        }
    }

    /// A failure happened now: the backoff to wait before restarting, or
    /// `None` when the policy is exhausted.
    pub fn on_failure(&mut self, now: Instant) -> Option<Duration> {
        while let Some(t) = self.recent.front() {
            if now.duration_since(*t) > self.policy.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() as u32 >= self.policy.max_restarts {
            return None;
        }
        if self.recent.is_empty() {
            self.consecutive = 0;
        }
        self.recent.push_back(now);
        let factor = self.policy.multiplier.powi(self.consecutive as i32);
        self.consecutive += 1;
        let backoff = self.policy.initial_backoff.mul_f64(factor.min(1e6));
        Some(backoff.min(self.policy.max_backoff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_up_after_max_within_window_with_growing_backoff() {
        let p = RestartPolicy::new(3, Duration::from_secs(10))
            .with_backoff(Duration::from_millis(100), Duration::from_millis(300));
        let mut t = RestartTracker::new(p);
        let now = Instant::now();
        assert_eq!(t.on_failure(now), Some(Duration::from_millis(100)));
        assert_eq!(t.on_failure(now), Some(Duration::from_millis(200)));
        assert_eq!(t.on_failure(now), Some(Duration::from_millis(300)));
        assert_eq!(t.on_failure(now), None);
        // Outside the window the count starts again.
        assert_eq!(
            t.on_failure(now + Duration::from_secs(11)),
            Some(Duration::from_millis(100))
        );
    }

    #[test]
    fn never_gives_up_at_once() {
        let mut t = RestartTracker::new(RestartPolicy::never());
        assert_eq!(t.on_failure(Instant::now()), None);
    }
}
