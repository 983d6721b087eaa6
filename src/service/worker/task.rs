//! One task on this worker: [`Task`] (fence token, spec, phase, progress,
//! carried restarts and error, failure report and checkpoint record) and
//! how it is shown: its [`TaskView`] (engine counters summed per stage) and
//! the [`TaskState`] published to ZooKeeper.
//! Must never: start, stop or publish anything (the worker actor does).

use std::sync::Arc;
use std::time::Instant;

use crate::actors::{JobHandle, JobStatus};
use crate::coord::{FenceToken, JobSpec, TaskError, TaskState, TaskStatus};
use crate::pipeline::CheckpointRecord;

use super::super::registry::{Progress, ProgressProbe};
use super::super::view::{StageView, TaskView};

pub(super) enum Phase {
    /// The factory is building it on a blocking thread.
    Starting,
    /// Running (or restarting, or terminal) under its supervisor.
    Running(JobHandle),
    /// Could not be built or started (and since when).
    BuildFailed(TaskError, Instant),
}

/// Where the report of a FAILED task to the leader stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FailureReport {
    NotSent,
    InFlight,
    Done,
}

/// What the task had published before it started here (moved in, or restarted in place).
#[derive(Debug, Clone, Default)]
pub(super) struct Carried {
    pub(super) restarts: u32,
    pub(super) last_error: Option<TaskError>,
}

/// One task this worker runs (or is starting): its fence token and spec,
/// its job, progress, what it carried in and where its reports stand.
pub(super) struct Task {
    pub(super) token: FenceToken,
    pub(super) spec: JobSpec,
    pub(super) phase: Phase,
    pub(super) probe: Option<Arc<dyn ProgressProbe>>,
    pub(super) probing: bool,
    pub(super) last_probe: Option<Instant>,
    pub(super) progress: Progress,
    pub(super) published: Option<(TaskStatus, Instant)>,
    pub(super) carried: Carried,
    pub(super) report: FailureReport,
    /// The checkpoint recorded for this task in ZooKeeper (read at start,
    /// advanced by each fenced write; the job restores from it).
    pub(super) record: CheckpointRecord,
    /// A checkpoint record write is in flight.
    pub(super) recording: bool,
}

impl Task {
    pub(super) fn status(&self) -> Option<TaskStatus> {
        match &self.phase {
            Phase::Starting => None,
            Phase::BuildFailed(..) => Some(TaskStatus::Failed),
            Phase::Running(h) => Some(match h.status() {
                JobStatus::Created | JobStatus::Running => TaskStatus::Running,
                JobStatus::Restarting => TaskStatus::Restarting,
                JobStatus::Failed => TaskStatus::Failed,
                JobStatus::Finished => TaskStatus::Finished,
                JobStatus::Cancelled => TaskStatus::Cancelled,
            }),
        }
    }

    pub(super) fn view(&self) -> TaskView {
        let mut v = TaskView::new(
            &self.token.task.to_string(),
            &self.token.job,
            &self.spec.job_type,
            self.status().unwrap_or(TaskStatus::Scheduled),
            self.token.epoch,
        );
        if let Some(place) = self.spec.place(self.token.task.index) {
            v.job_stage = place.stage.to_string();
        }
        v.lag = self.progress.lag;
        v.offsets = self.progress.offsets.clone();
        v.restarts = self.carried.restarts;
        v.last_error = self.carried.last_error.clone();
        match &self.phase {
            Phase::Starting => {}
            Phase::BuildFailed(e, _) => v.last_error = Some(e.clone()),
            Phase::Running(h) => {
                let r = h.report();
                let prefix = format!("{}/", r.name);
                for (name, m) in &r.tasks {
                    if name.contains("-source#") {
                        v.records_in += m.records_out.max(m.records_in);
                        v.batches += m.batches_out;
                    }
                    if name.contains("-sink#") {
                        v.records_out += m.records_out;
                    }
                    v.backpressure_ms += m.backpressure_ms;
                    v.late_records += m.late_records;
                    let watermark = (m.watermark != i64::MIN).then_some(m.watermark);
                    if let Some(w) = watermark {
                        v.watermark = Some(v.watermark.map_or(w, |x| x.min(w)));
                    }
                    v.stages.push(StageView {
                        stage: name.strip_prefix(&prefix).unwrap_or(name).to_string(),
                        records_in: m.records_in,
                        records_out: m.records_out,
                        batches_in: m.batches_in,
                        batches_out: m.batches_out,
                        late_records: m.late_records,
                        dead_letters: m.dead_letters,
                        backpressure_ms: m.backpressure_ms,
                        watermark,
                    });
                }
                v.dead_letters = r.dead_letters;
                v.restarts += r.restarts;
                v.checkpoint = r.checkpoints.last.clone();
                v.checkpoint_failures = r.checkpoints.failed;
                if let Some(e) = r.last_error {
                    v.last_error = Some(TaskError {
                        message: e.message,
                        at_ms: e.at_ms,
                    });
                }
            }
        }
        v
    }

    pub(super) fn state(&self, v: &TaskView) -> TaskState {
        TaskState {
            state: v.state,
            worker: self.token.worker.clone(),
            epoch: self.token.epoch,
            records_in: v.records_in,
            records_out: v.records_out,
            offsets: v.offsets.clone(),
            lag: v.lag,
            restarts: v.restarts,
            last_error: v.last_error.clone(),
            updated_at_ms: crate::coord::model::now_ms(),
            checkpoint: v.checkpoint.clone(),
            records_in_per_s: v.records_in_per_s.round() as u64,
        }
    }
}
