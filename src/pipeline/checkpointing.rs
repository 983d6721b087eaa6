//! How a job checkpoints: how often, where, how many to keep, and whether
//! barriers are aligned.
//!
//! Owns [`CheckpointConfig`] and [`CheckpointingMode`], plain settings the
//! job builder validates and the runtime reads. Never does I/O.

use std::time::Duration;

/// Whether checkpoint barriers are aligned where inputs merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointingMode {
    /// Aligned barriers (the default): a task that has barrier `n` from
    /// one input holds that input until every input delivered `n`, so a
    /// snapshot holds exactly the records before the barrier. Restores
    /// replay nothing twice into state.
    #[default]
    ExactlyOnce,
    /// Unaligned barriers: inputs keep flowing; a restore may replay into
    /// state records that a snapshot already counted. Never loses one.
    AtLeastOnce,
}

/// Checkpoint settings of a job.
///
/// ```
/// use std::time::Duration;
/// use weir::pipeline::{CheckpointConfig, CheckpointingMode, Job};
/// let job = Job::new("clicks").checkpointing(CheckpointConfig {
///     interval: Some(Duration::from_secs(1)),
///     storage_url: Some("file:///var/lib/weir/checkpoints".into()),
///     retain: 3,
///     mode: CheckpointingMode::ExactlyOnce,
/// });
/// # let _ = job;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// How often barriers are injected (`None`: never; positions are then
    /// committed only at the end of input).
    pub interval: Option<Duration>,
    /// Where completed checkpoints are stored (`file:///dir`; `None`: in
    /// memory only, lost with the process). A job that finds completed
    /// checkpoints of its own name there resumes from the latest.
    pub storage_url: Option<String>,
    /// Completed checkpoints kept in storage (older ones are deleted).
    pub retain: usize,
    /// Aligned (exactly-once) or unaligned (at-least-once) barriers.
    pub mode: CheckpointingMode,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            interval: Some(Duration::from_secs(1)),
            storage_url: None,
            retain: 3,
            mode: CheckpointingMode::ExactlyOnce,
        }
    }
}
