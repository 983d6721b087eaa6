//! The restart policy of a job's supervisor.
//!
//! Owns [`RestartPolicy`]: how many restarts are allowed within a time
//! window, and the exponential backoff between them. Pure bookkeeping: it
//! decides, the supervisor acts.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// At most `max_restarts` within `window`, waiting `initial_backoff`,
/// doubled (times `multiplier`) after each restart up to `max_backoff`.
///
/// ```
/// use std::time::Duration;
/// use weir::actors::RestartPolicy;
/// let p = RestartPolicy::new(3, Duration::from_secs(60))
///     .with_backoff(Duration::from_millis(100), Duration::from_secs(5));
/// assert_eq!(p.max_restarts, 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// Restarts allowed within `window`; the next failure fails the job.
    pub max_restarts: u32,
    /// The sliding window restarts are counted in.
    pub window: Duration,
    /// Wait before the first restart.
    pub initial_backoff: Duration,
    /// Longest wait between restarts.
    pub max_backoff: Duration,
    /// Backoff growth per restart.
    pub multiplier: f64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy::new(3, Duration::from_secs(60))
    }
}

impl RestartPolicy {
    /// `max_restarts` within `window`, backoff 100 ms doubling up to 10 s.
    pub fn new(max_restarts: u32, window: Duration) -> Self {
        RestartPolicy {
            max_restarts,
            window,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
        }
    }

    /// Never restart: the first failure fails the job.
    pub fn never() -> Self {
        RestartPolicy::new(0, Duration::from_secs(1))
    }

    /// Sets the backoff range.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }
}

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
