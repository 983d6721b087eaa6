//! How a job checkpoints: how often, where, how many to keep, and whether
//! barriers are aligned.
//!
//! Owns [`CheckpointConfig`] and [`CheckpointingMode`], plain settings the
//! job builder validates and the runtime reads, and [`CheckpointRecord`],
//! the id a coordinator outside the job recorded for it. Never does I/O.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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

/// The checkpoint a record kept outside the job names as its latest (the
/// cluster keeps one per task in ZooKeeper, written fenced by the task's
/// assignment epoch, so a zombie's checkpoints are never recorded).
///
/// A job given a record ([`RunnableJob::with_checkpoint_record`]) restores
/// from the recorded checkpoint when its sources do not track which one
/// they committed (with an exactly-once Kafka sink the transaction is the
/// commit point and wins), and its retention never deletes the recorded
/// one. The coordinator updates it with [`set`](Self::set) once it has
/// written a newer id.
///
/// ```
/// use weir::pipeline::CheckpointRecord;
/// let record = CheckpointRecord::new(None);
/// assert_eq!(record.get(), None);
/// record.set(7);
/// record.set(5); // never goes back
/// assert_eq!(record.get(), Some(7));
/// ```
///
/// [`RunnableJob::with_checkpoint_record`]: crate::pipeline::job::RunnableJob::with_checkpoint_record
#[derive(Clone, Debug, Default)]
pub struct CheckpointRecord {
    id: Arc<AtomicU64>,
}

impl CheckpointRecord {
    /// A record naming `id` (`None`: no checkpoint recorded yet).
    pub fn new(id: Option<u64>) -> Self {
        CheckpointRecord {
            id: Arc::new(AtomicU64::new(id.unwrap_or(0))),
        }
    }

    /// The recorded id.
    pub fn get(&self) -> Option<u64> {
        match self.id.load(Ordering::Acquire) {
            0 => None,
            id => Some(id),
        }
    }

    /// Records `id` if it is newer than the recorded one.
    pub fn set(&self, id: u64) {
        self.id.fetch_max(id, Ordering::AcqRel);
    }
}
