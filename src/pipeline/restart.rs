//! A job's restart policy: a setting of the job, read by its supervisor.
//!
//! Owns [`RestartPolicy`]: how many restarts are allowed within a time
//! window, and the exponential backoff between them. Pure data: the
//! supervisor's tracker (`actors::restart`) judges failures against it.

use std::time::Duration;

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
