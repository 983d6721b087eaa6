//! What a worker shows about itself: the snapshot its HTTP endpoint serves.
//!
//! Owns: [`TaskView`] and [`WorkerView`] (serialisable, the `/api/tasks` JSON
//! wire format) and [`SharedView`], the lock-protected copy the worker actor
//! refreshes on every tick and the HTTP server reads.
//! Must never: hold engine handles or block (readers copy under a short lock).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::coord::{TaskError, TaskStatus};

/// One task as the worker sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    /// Task id (`<job>-<index>`).
    pub task: String,
    /// Job name.
    pub job: String,
    /// Job type.
    pub job_type: String,
    /// State as published.
    pub state: TaskStatus,
    /// Assignment epoch held.
    pub epoch: u64,
    /// Records read.
    pub records_in: u64,
    /// Records written.
    pub records_out: u64,
    /// Batches read by the source.
    pub batches: u64,
    /// Milliseconds the task's actors waited on full downstream mailboxes.
    pub backpressure_ms: u64,
    /// Records behind the end of the input (last probe).
    pub lag: u64,
    /// Committed input offsets (last probe).
    pub offsets: BTreeMap<String, i64>,
    /// Restarts by the job's supervisor.
    pub restarts: u32,
    /// Last error.
    pub last_error: Option<TaskError>,
    /// The task's latest completed checkpoint, if it checkpoints durably.
    #[serde(default)]
    pub checkpoint: Option<crate::actors::CheckpointSummary>,
    /// Checkpoints that could not be stored or committed.
    #[serde(default)]
    pub checkpoint_failures: u64,
}

/// The whole worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerView {
    /// Worker id.
    pub worker: String,
    /// ZooKeeper session, in words (`connected ...`, `disconnected ...`).
    pub session: String,
    /// Whether the session is connected.
    pub connected: bool,
    /// Whether this worker leads the cluster.
    pub leader: bool,
    /// Milliseconds left on the write lease (0: every sink refuses writes).
    pub lease_ms: u64,
    /// Job types this binary runs.
    pub job_types: Vec<String>,
    /// Tasks, by id.
    pub tasks: Vec<TaskView>,
}

/// The worker's view, shared with the HTTP server.
#[derive(Debug, Clone, Default)]
pub struct SharedView(Arc<RwLock<WorkerView>>);

impl SharedView {
    /// A copy of the current view.
    pub fn get(&self) -> WorkerView {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the view.
    pub fn set(&self, v: WorkerView) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = v;
    }
}
