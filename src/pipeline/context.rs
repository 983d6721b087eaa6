//! What a running task knows about itself.
//!
//! Owns [`TaskContext`], handed to sources, sinks and operators when they
//! open: identity (job, stage, subtask, attempt), the task's metrics and the
//! job's dead-letter output. It carries no mutable engine state.

use std::sync::Arc;

use super::dead_letter::DeadLetters;
use super::metrics::TaskMetrics;
use super::watermark::Watermarks;

/// Identity and shared handles of one task.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// Job name.
    pub job: String,
    /// Stage name (e.g. `source`, `window`, `sink`).
    pub stage: String,
    /// This instance's index, `0..parallelism`.
    pub subtask: usize,
    /// Number of parallel instances of the stage.
    pub parallelism: usize,
    /// Restart attempt of the job (0 for the first run).
    pub attempt: u32,
    /// This task's counters.
    pub metrics: Arc<TaskMetrics>,
    /// The job's dead-letter output.
    pub dead_letters: DeadLetters,
    /// The watermark strategy of this task's source stage (sources only;
    /// `Watermarks::none()` elsewhere).
    pub watermarks: Watermarks,
}

impl TaskContext {
    /// `job/stage#subtask`, used in logs and errors.
    pub fn task_name(&self) -> String {
        format!("{}/{}#{}", self.job, self.stage, self.subtask)
    }

    /// A context for unit tests and single-threaded use.
    pub fn detached(stage: &str) -> Self {
        TaskContext {
            job: "detached".into(),
            stage: stage.into(),
            subtask: 0,
            parallelism: 1,
            attempt: 0,
            metrics: Arc::new(TaskMetrics::default()),
            dead_letters: DeadLetters::log(),
            watermarks: Watermarks::none(),
        }
    }
}
