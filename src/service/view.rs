//! What a worker shows about itself: the snapshot its HTTP endpoint serves.
//!
//! Owns: [`TaskView`], [`StageView`], [`Sample`] and [`WorkerView`]
//! (serialisable, the `/api/tasks` JSON wire format) and [`SharedView`], the
//! lock-protected copy the worker actor refreshes on every tick and the HTTP
//! server reads. [`SharedView::set`] also keeps each task's recent history (a
//! sample every [`SAMPLE_EVERY_MS`] over [`HISTORY_MS`]) and derives the
//! tasks' records-per-second rates from it.
//! Must never: hold engine handles or block (readers copy under a short lock).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::coord::{TaskError, TaskStatus};

/// How often a task's counters are sampled into its history.
pub const SAMPLE_EVERY_MS: u64 = 2_000;
/// How far back a task's history goes (the dashboard's charts: 5 minutes).
pub const HISTORY_MS: u64 = 5 * 60 * 1000;
/// Rates are measured over (about) this window.
pub const RATE_WINDOW_MS: u64 = 6_000;

/// One stage instance of a task's job (a source, a fused operator chain, a
/// sink): its engine counters ([`crate::pipeline::metrics::TaskMetrics`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageView {
    /// Stage instance name, `<stage>#<subtask>` (e.g. `kafka-source#0`).
    pub stage: String,
    /// Records received (read, for a source).
    pub records_in: u64,
    /// Records emitted (written, for a sink).
    pub records_out: u64,
    /// Batches received.
    pub batches_in: u64,
    /// Batches sent.
    pub batches_out: u64,
    /// Records that arrived after their window closed.
    pub late_records: u64,
    /// Records sent to the dead-letter output.
    pub dead_letters: u64,
    /// Milliseconds spent waiting on full downstream mailboxes.
    pub backpressure_ms: u64,
    /// Current input watermark (event time, ms), once there is one.
    pub watermark: Option<i64>,
}

/// A task's counters at one moment (its history, for rates and charts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// Records read so far.
    pub records_in: u64,
    /// Records written so far.
    pub records_out: u64,
    /// Records behind the end of the input.
    pub lag: u64,
}

/// One task as the worker sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// Task id (`<job>-<index>`).
    pub task: String,
    /// Job name.
    pub job: String,
    /// Job type.
    pub job_type: String,
    /// The job stage the task runs (`parse`, `count`, ..); empty for a
    /// single-stage job.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub job_stage: String,
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
    /// Records that arrived after their window closed (all stages).
    #[serde(default)]
    pub late_records: u64,
    /// Records sent to the dead-letter output.
    #[serde(default)]
    pub dead_letters: u64,
    /// The lowest watermark among the task's stages that have one (event time, ms).
    #[serde(default)]
    pub watermark: Option<i64>,
    /// Records read per second over the last seconds (set by [`SharedView::set`]).
    #[serde(default)]
    pub records_in_per_s: f64,
    /// Records written per second over the last seconds (set by [`SharedView::set`]).
    #[serde(default)]
    pub records_out_per_s: f64,
    /// The stages of the task's job, with their engine counters.
    #[serde(default)]
    pub stages: Vec<StageView>,
    /// Samples of the last [`HISTORY_MS`], oldest first (`/api/tasks?history=true` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Sample>,
}

impl TaskView {
    /// A view with every counter zero.
    pub fn new(task: &str, job: &str, job_type: &str, state: TaskStatus, epoch: u64) -> Self {
        TaskView {
            task: task.to_string(),
            job: job.to_string(),
            job_type: job_type.to_string(),
            job_stage: String::new(),
            state,
            epoch,
            records_in: 0,
            records_out: 0,
            batches: 0,
            backpressure_ms: 0,
            lag: 0,
            offsets: BTreeMap::new(),
            restarts: 0,
            last_error: None,
            checkpoint: None,
            checkpoint_failures: 0,
            late_records: 0,
            dead_letters: 0,
            watermark: None,
            records_in_per_s: 0.0,
            records_out_per_s: 0.0,
            stages: Vec::new(),
            history: Vec::new(),
        }
    }
}

/// The whole worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// The worker's HTTP address (as advertised in ZooKeeper).
    #[serde(default)]
    pub address: String,
    /// Whether its HTTP endpoint accepts cancel and rescale (`--http-admin`).
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Default)]
struct Inner {
    view: WorkerView,
    /// Per task id: (epoch, samples oldest first).
    history: BTreeMap<String, (u64, VecDeque<Sample>)>,
}

/// The worker's view, shared with the HTTP server.
#[derive(Debug, Clone, Default)]
pub struct SharedView(Arc<RwLock<Inner>>);

impl SharedView {
    /// A copy of the current view (without the tasks' histories).
    pub fn get(&self) -> WorkerView {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .view
            .clone()
    }

    /// A copy of the current view with each task's history.
    pub fn get_with_history(&self) -> WorkerView {
        let g = self.0.read().unwrap_or_else(|p| p.into_inner());
        let mut v = g.view.clone();
        for t in &mut v.tasks {
            if let Some((_, h)) = g.history.get(&t.task) {
                t.history = h.iter().copied().collect();
            }
        }
        v
    }

    /// The records in and out per second of `task`, as of the last [`set`](Self::set).
    pub fn rates_of(&self, task: &str) -> Option<(f64, f64)> {
        let g = self.0.read().unwrap_or_else(|p| p.into_inner());
        g.view
            .tasks
            .iter()
            .find(|t| t.task == task)
            .map(|t| (t.records_in_per_s, t.records_out_per_s))
    }

    /// Replaces the view: samples the tasks' counters into their histories
    /// (at most every [`SAMPLE_EVERY_MS`]) and sets their rates.
    pub fn set(&self, v: WorkerView) {
        self.set_at(v, crate::coord::model::now_ms());
    }

    /// [`set`](Self::set) at time `now_ms` (tests drive the clock).
    pub fn set_at(&self, mut v: WorkerView, now_ms: u64) {
        let mut g = self.0.write().unwrap_or_else(|p| p.into_inner());
        let keep = |id: &str| v.tasks.iter().any(|t| t.task == id);
        g.history.retain(|id, _| keep(id));
        for t in &mut v.tasks {
            let now = Sample {
                at_ms: now_ms,
                records_in: t.records_in,
                records_out: t.records_out,
                lag: t.lag,
            };
            let (epoch, h) = g
                .history
                .entry(t.task.clone())
                .or_insert_with(|| (t.epoch, VecDeque::new()));
            // Moved away and back, or counters reset: the old samples say nothing of now.
            let reset = h
                .back()
                .is_some_and(|s| s.records_in > now.records_in || s.records_out > now.records_out);
            if *epoch != t.epoch || reset {
                *epoch = t.epoch;
                h.clear();
            }
            let (rin, rout) = rates(h, &now);
            t.records_in_per_s = rin;
            t.records_out_per_s = rout;
            if h.back()
                .is_none_or(|s| now_ms.saturating_sub(s.at_ms) >= SAMPLE_EVERY_MS)
            {
                h.push_back(now);
            }
            while h
                .front()
                .is_some_and(|s| now_ms.saturating_sub(s.at_ms) > HISTORY_MS)
            {
                h.pop_front();
            }
        }
        g.view = v;
    }
}

/// Records in and out per second between the oldest sample of the last
/// [`RATE_WINDOW_MS`] (or the newest before it) and `now`; 0 with less than half a second.
pub fn rates(history: &VecDeque<Sample>, now: &Sample) -> (f64, f64) {
    let from = history
        .iter()
        .find(|s| now.at_ms.saturating_sub(s.at_ms) <= RATE_WINDOW_MS)
        .or(history.back());
    let Some(from) = from else {
        return (0.0, 0.0);
    };
    let dt = now.at_ms.saturating_sub(from.at_ms);
    if dt < 500 {
        return (0.0, 0.0);
    }
    let per_s = |a: u64, b: u64| b.saturating_sub(a) as f64 * 1000.0 / dt as f64;
    (
        per_s(from.records_in, now.records_in),
        per_s(from.records_out, now.records_out),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_and_rates() {
        let shared = SharedView::default();
        let mut t = TaskView::new("j-0", "j", "etl", TaskStatus::Running, 1);
        let view = |t: &TaskView| WorkerView {
            worker: "w".into(),
            tasks: vec![t.clone()],
            ..Default::default()
        };
        let t0 = 1_000_000;
        for i in 0..=10u64 {
            t.records_in = i * 200; // 200 every 500 ms: 400/s
            t.records_out = i * 100;
            shared.set_at(view(&t), t0 + i * 500);
        }
        let v = shared.get();
        assert!((v.tasks[0].records_in_per_s - 400.0).abs() < 1e-9, "{v:?}");
        assert!((v.tasks[0].records_out_per_s - 200.0).abs() < 1e-9);
        assert!(v.tasks[0].history.is_empty());
        let h = shared.get_with_history();
        let at: Vec<u64> = h.tasks[0].history.iter().map(|s| s.at_ms - t0).collect();
        assert_eq!(at, [0, 2000, 4000]);
        // A new epoch (moved away and back) starts afresh.
        t.epoch = 2;
        t.records_in = 5;
        shared.set_at(view(&t), t0 + 6000);
        assert_eq!(shared.get().tasks[0].records_in_per_s, 0.0);
        assert_eq!(shared.get_with_history().tasks[0].history.len(), 1);
        // Old samples fall out; a task gone from the view leaves no history.
        shared.set_at(view(&t), t0 + 6000 + HISTORY_MS + 1);
        assert_eq!(shared.get_with_history().tasks[0].history.len(), 1);
        shared.set_at(WorkerView::default(), t0 + 7000 + HISTORY_MS);
        assert!(shared.0.read().unwrap().history.is_empty());
    }
}
