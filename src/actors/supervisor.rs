//! The per-job supervisor: starts a job's actors, restarts them on failure,
//! and publishes the job's lifecycle.
//!
//! Owns [`JobSupervisor`] and the job's observable state ([`JobStatus`],
//! restarts, last error, metrics) behind [`JobHandle`]. On a task failure it
//! stops every actor of the attempt and, if the
//! [`RestartPolicy`](super::restart::RestartPolicy) allows, launches a new
//! attempt after the backoff (sources reopen from their
//! start or their last committed position); past the policy the job is
//! FAILED with that error. Events from an older attempt are ignored, so a
//! dying actor of a stopped attempt cannot disturb the new one.
//!
//! It is also the checkpoint coordinator: it injects barriers, collects
//! positions and states, and once every sink flushed writes the checkpoint
//! to durable storage (when the job has some) before telling sources to
//! commit. A job with storage resumes from the latest completed checkpoint
//! there, and a cancel stops it with a savepoint (a final checkpoint, no
//! windows fired) instead of draining. Storage I/O runs as futures spawned
//! on the supervisor's context, never on an operator's arbiter.

use actix::{
    Actor, ActorContext, ActorFutureExt, ArbiterHandle, AsyncContext, Context, Handler, Message,
    Recipient, WrapFuture,
};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

use super::launch::Launch;
use super::messages::{SourceCommand, Stop, TaskEvent};
use super::restart::RestartTracker;
use crate::checkpoint::{CheckpointMetadata, CheckpointStorage, TaskState};
use crate::pipeline::{BuildError, JobConfig, TaskMetrics, TaskMetricsSnapshot};

/// Something that can start all the actors of one job attempt.
pub trait LaunchPlan: Send + 'static {
    /// Starts every stage, registering stop/drain handles in `launch`.
    fn launch(&self, launch: &mut Launch<'_>) -> Result<(), BuildError>;

    /// What the job's sources say was committed (blocking; see
    /// [`Source::committed_checkpoint`](crate::pipeline::Source::committed_checkpoint)).
    fn committed_checkpoint(
        &self,
        _job: &str,
    ) -> Result<crate::pipeline::CommittedCheckpoint, crate::pipeline::ConnectorError> {
        Ok(crate::pipeline::CommittedCheckpoint::Untracked)
    }

    /// A reader of the copies whose checkpoints the job's input still
    /// names (see [`Source::checkpoint_owners`](crate::pipeline::Source::checkpoint_owners)).
    fn checkpoint_owners(&self, _job: &str) -> Option<crate::pipeline::CheckpointOwners> {
        None
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Built, not started.
    Created,
    /// Its actors are running.
    Running,
    /// A task failed; waiting out the backoff before the next attempt.
    Restarting,
    /// Every sink received end-of-input and flushed.
    Finished,
    /// Failed past its restart policy.
    Failed,
    /// Stopped on request after draining.
    Cancelled,
}

impl JobStatus {
    /// True for FINISHED, FAILED and CANCELLED.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Finished | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// The last error a job saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// The error, as text.
    pub message: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// A snapshot of a job's observable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReport {
    /// Job name.
    pub name: String,
    /// Lifecycle state.
    pub status: JobStatus,
    /// Restarts so far.
    pub restarts: u32,
    /// The last task error, if any.
    pub last_error: Option<LastError>,
    /// Per-task counters, by task name (`job/stage#subtask`).
    pub tasks: BTreeMap<String, TaskMetricsSnapshot>,
    /// Dead letters sent.
    pub dead_letters: u64,
    /// Checkpoints completed (stored and committed) and failed.
    #[serde(default)]
    pub checkpoints: CheckpointStats,
}

/// What a job's checkpoints have done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointStats {
    /// Checkpoints completed by this supervisor.
    pub completed: u64,
    /// Checkpoints that could not be stored or committed.
    pub failed: u64,
    /// The latest completed checkpoint (restored or taken).
    pub last: Option<CheckpointSummary>,
    /// Its input offsets, `"<topic>/<partition>"` -> next offset, from
    /// every source whose position names a `topic` and its `offsets` (the
    /// Kafka source's shape).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_offsets: BTreeMap<String, i64>,
}

/// `"<topic>/<partition>"` -> next offset over sources' positions of the
/// shape `{"topic": .., "offsets": {"<partition>": next}}`.
fn topic_offsets(positions: &BTreeMap<String, serde_json::Value>) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for pos in positions.values() {
        let (Some(topic), Some(offsets)) = (
            pos.get("topic").and_then(|t| t.as_str()),
            pos.get("offsets").and_then(|o| o.as_object()),
        ) else {
            continue;
        };
        for (p, o) in offsets {
            if let Some(o) = o.as_i64() {
                out.insert(format!("{topic}/{p}"), o);
            }
        }
    }
    out
}

/// One completed checkpoint, for status pages and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointSummary {
    /// Checkpoint id.
    pub id: u64,
    /// Completion time, milliseconds since the Unix epoch.
    pub completed_at_ms: u64,
    /// From its barriers to its commit, in milliseconds (0: restored).
    pub duration_ms: u64,
    /// Bytes of operator state it holds.
    pub state_bytes: u64,
}

impl JobReport {
    /// Sum of `records_out` over the tasks of a stage (name suffix match on
    /// `/<stage>#`).
    pub fn stage_records_out(&self, stage: &str) -> u64 {
        let pat = format!("/{stage}#");
        self.tasks
            .iter()
            .filter(|(k, _)| k.contains(&pat))
            .map(|(_, m)| m.records_out)
            .sum()
    }
}

/// State shared between the supervisor and the job's handles.
pub(crate) struct JobShared {
    pub(crate) name: String,
    pub(crate) state: Mutex<(JobStatus, u32, Option<LastError>)>,
    pub(crate) metrics: DashMap<String, Arc<TaskMetrics>>,
    pub(crate) done: watch::Sender<JobStatus>,
    pub(crate) dead_letters: crate::pipeline::DeadLetters,
    pub(crate) checkpoints: Mutex<CheckpointStats>,
}

impl JobShared {
    fn set_status(&self, status: JobStatus) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0 = status;
        self.done.send_replace(status);
    }

    fn report(&self) -> JobReport {
        let (status, restarts, last_error) =
            self.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        JobReport {
            name: self.name.clone(),
            status,
            restarts,
            last_error,
            tasks: self
                .metrics
                .iter()
                .map(|e| (e.key().clone(), e.value().snapshot()))
                .collect(),
            dead_letters: self.dead_letters.count(),
            checkpoints: self
                .checkpoints
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// A running job: observe it, cancel it, wait for it.
#[derive(Clone)]
pub struct JobHandle {
    shared: Arc<JobShared>,
    supervisor: Recipient<Cancel>,
    aborter: Recipient<Abort>,
    done: watch::Receiver<JobStatus>,
}

impl JobHandle {
    /// The job's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Current lifecycle state.
    pub fn status(&self) -> JobStatus {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u32 {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
    }

    /// The last task error, if any.
    pub fn last_error(&self) -> Option<LastError> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .2
            .clone()
    }

    /// Status, restarts, last error and per-task counters.
    pub fn report(&self) -> JobReport {
        self.shared.report()
    }

    /// Asks the job to stop. A job with durable checkpoint storage stops
    /// with a savepoint: a final checkpoint, open windows kept in it (not
    /// fired), so the next run resumes exactly there. Without storage it
    /// drains ([`JobHandle::drain`]). Then CANCELLED.
    pub fn cancel(&self) {
        self.supervisor.do_send(Cancel { drain: false });
    }

    /// Asks the job to drain: sources stop reading and send end-of-input,
    /// in-flight batches are processed, every open window fires and sinks
    /// flush; then CANCELLED.
    pub fn drain(&self) {
        self.supervisor.do_send(Cancel { drain: true });
    }

    /// Stops every actor of the job at once, without draining or committing
    /// (for a worker that may have become a zombie); then CANCELLED.
    pub fn abort(&self) {
        self.aborter.do_send(Abort);
    }

    /// Waits until the job is FINISHED, FAILED or CANCELLED.
    pub async fn wait(&self) -> JobReport {
        let mut rx = self.done.clone();
        let _ = rx.wait_for(|s| s.is_terminal()).await;
        self.report()
    }
}

/// A completed checkpoint: every source position and operator state
/// recorded at one barrier, after every sink flushed what preceded it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedCheckpoint {
    /// Checkpoint id (increasing).
    pub id: u64,
    /// Source positions by task name.
    pub positions: BTreeMap<String, serde_json::Value>,
    /// Operator states by task name.
    pub states: BTreeMap<String, Vec<u8>>,
    /// Operator type names by task name (checked when restoring).
    pub operators: BTreeMap<String, String>,
    /// Completion time, milliseconds since the Unix epoch.
    pub completed_at_ms: u64,
    /// Taken over from other copies of the job (a rescale): each
    /// operator's states, to split by key; `states` is then empty.
    #[serde(skip)]
    pub adopted: Option<Adoption>,
}

impl PendingCheckpoint {
    fn new() -> Self {
        PendingCheckpoint {
            started: Instant::now(),
            sinks_acked: 0,
            positions: BTreeMap::new(),
            states: BTreeMap::new(),
            operators: BTreeMap::new(),
        }
    }
}

impl CompletedCheckpoint {
    /// Its metadata and states, as storage keeps them.
    fn to_stored(&self, job: &str) -> (CheckpointMetadata, Vec<TaskState>) {
        let states = self
            .states
            .iter()
            .map(|(task, state)| TaskState {
                task: task.clone(),
                operator: self.operators.get(task).cloned().unwrap_or_default(),
                state: state.clone(),
            })
            .collect();
        let meta = CheckpointMetadata {
            format_version: crate::checkpoint::format::FORMAT_VERSION,
            job: job.to_string(),
            id: self.id,
            completed_at_ms: self.completed_at_ms,
            positions: self.positions.clone(),
            operators: BTreeMap::new(),
            state_bytes: 0,
        };
        (meta, states)
    }

    /// A checkpoint loaded from storage.
    fn from_stored(meta: CheckpointMetadata, states: Vec<TaskState>) -> Self {
        CompletedCheckpoint {
            id: meta.id,
            positions: meta.positions,
            operators: states
                .iter()
                .map(|s| (s.task.clone(), s.operator.clone()))
                .collect(),
            states: states.into_iter().map(|s| (s.task, s.state)).collect(),
            completed_at_ms: meta.completed_at_ms,
            adopted: None,
        }
    }

    /// The checkpoint a copy named `job` restores from the `loaded`
    /// checkpoints of other copies (`from[i]` loaded as `loaded[i]`), each
    /// for the partitions `from[i]` lists: their task names renamed to
    /// `job`'s, source positions merged partition by partition (see
    /// [`merge_adopted_position`]), every operator's states kept side by
    /// side for [`Operator::restore_keys`](crate::pipeline::Operator::restore_keys)
    /// to split by `keys`.
    pub(crate) fn adopt(
        job: &str,
        from: &[crate::pipeline::AdoptedCheckpoint],
        loaded: Vec<CompletedCheckpoint>,
        keys: Option<crate::pipeline::KeyGroups>,
    ) -> Self {
        let rename = |owner: &str, task: &str| match task.strip_prefix(owner) {
            Some(rest) if rest.starts_with('/') => format!("{job}{rest}"),
            _ => task.to_string(),
        };
        let mut positions: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        let mut states: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        let mut operators = BTreeMap::new();
        let mut completed_at_ms = 0;
        for (a, chk) in from.iter().zip(loaded) {
            completed_at_ms = completed_at_ms.max(chk.completed_at_ms);
            for (task, pos) in chk.positions {
                let merged = positions
                    .entry(rename(&a.job, &task))
                    .or_insert(serde_json::Value::Null);
                merge_adopted_position(merged, pos, Some(&a.partitions));
            }
            for (task, state) in chk.states {
                states.entry(rename(&a.job, &task)).or_default().push(state);
            }
            for (task, op) in chk.operators {
                operators.entry(rename(&a.job, &task)).or_insert(op);
            }
        }
        CompletedCheckpoint {
            id: 0,
            positions,
            states: BTreeMap::new(),
            operators,
            completed_at_ms,
            adopted: Some(Adoption { states, keys }),
        }
    }
}

/// The entries of `m` whose task `has` (the job has that task).
fn carried<V: Clone>(
    m: &BTreeMap<String, V>,
    has: impl Fn(&String) -> bool,
) -> BTreeMap<String, V> {
    m.iter()
        .filter(|(task, _)| has(task))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What a copy of a job takes over from others after a rescale: each
/// operator task's snapshots from every previous owner, and which keys are
/// this copy's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adoption {
    /// Snapshots by (renamed) task name.
    pub(crate) states: BTreeMap<String, Vec<Vec<u8>>>,
    /// The keys this copy owns (`None`: not partitioned by key).
    pub(crate) keys: Option<crate::pipeline::KeyGroups>,
}

/// Merges `from`, a source position another copy (or instance) saved,
/// into `into` for `partitions` only (`None`: all). The convention
/// partitioned sources keep ([`Source::positions_by_partition`](crate::pipeline::Source::positions_by_partition)):
/// a position is a JSON object whose per-partition facts live in objects
/// keyed by the partition number (Kafka's `offsets`, `event_time`,
/// `upstream`); such keys are taken only for `partitions`, everything else
/// from whichever position has it first.
///
/// ```text
/// into {}  from {"topic":"t","offsets":{"0":5,"1":7}}  partitions [1]
///   -> {"topic":"t","offsets":{"1":7}}
/// ```
pub(crate) fn merge_adopted_position(
    into: &mut serde_json::Value,
    from: serde_json::Value,
    partitions: Option<&[i32]>,
) {
    use serde_json::Value;
    match from {
        Value::Object(map) => {
            if !into.is_object() {
                *into = Value::Object(Default::default());
            }
            let Value::Object(target) = into else {
                unreachable!("made an object above")
            };
            for (k, v) in map {
                match k.parse::<i32>() {
                    Ok(p) if partitions.is_some_and(|ps| !ps.contains(&p)) => {}
                    Ok(_) => {
                        target.insert(k, v);
                    }
                    Err(_) => merge_adopted_position(
                        target.entry(k).or_insert(Value::Null),
                        v,
                        partitions,
                    ),
                }
            }
        }
        other => {
            if into.is_null() {
                *into = other;
            }
        }
    }
}

struct PendingCheckpoint {
    /// When its barriers were triggered.
    started: Instant,
    sinks_acked: usize,
    positions: BTreeMap<String, serde_json::Value>,
    states: BTreeMap<String, Vec<u8>>,
    operators: BTreeMap<String, String>,
}

/// Ask the supervisor to stop the job: with a savepoint when it has
/// durable checkpoint storage and `drain` is false, else by draining.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Cancel {
    /// Drain (fire every open window) even when a savepoint is possible.
    pub drain: bool,
}

/// Stop the job's actors at once, without draining.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Abort;

#[derive(Message)]
#[rtype(result = "()")]
struct Relaunch;

#[derive(Message)]
#[rtype(result = "()")]
struct CheckpointTick;

/// The per-job supervisor actor.
pub struct JobSupervisor {
    plan: Box<dyn LaunchPlan>,
    config: JobConfig,
    shared: Arc<JobShared>,
    arbiters: Vec<ArbiterHandle>,
    attempt: u32,
    stops: Vec<Recipient<Stop>>,
    sources: Vec<Recipient<SourceCommand>>,
    sinks: usize,
    sinks_left: usize,
    sources_left: usize,
    restarts: RestartTracker,
    cancelling: bool,
    next_checkpoint: u64,
    pending: BTreeMap<u64, PendingCheckpoint>,
    latest: Option<Arc<CompletedCheckpoint>>,
    /// Durable checkpoint storage, if the job has one.
    storage: Option<CheckpointStorage>,
    /// A completed checkpoint is being written to storage.
    uploading: bool,
    /// Stopping with a savepoint: the job ends once this one is durable.
    savepoint: Option<u64>,
    /// Sinks whose output commits with checkpoints (this attempt's).
    committers: Vec<Arc<dyn crate::pipeline::CheckpointCommitter>>,
    /// Where each source of this attempt ended its input.
    final_positions: BTreeMap<String, serde_json::Value>,
    /// Other copies of the job this one took partitions over from (a
    /// rescale), whose checkpoints go once no committed position names
    /// them (see `collect_superseded`).
    superseded: std::collections::BTreeSet<String>,
    /// A look at which copies the input still names is under way.
    owners_reading: bool,
    /// When that was last looked at.
    owners_read_at: Option<Instant>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl JobSupervisor {
    /// Starts a supervisor for `plan` on the current arbiter and launches the
    /// job's first attempt on `arbiters`.
    pub fn start(
        name: &str,
        plan: Box<dyn LaunchPlan>,
        config: JobConfig,
        arbiters: Vec<ArbiterHandle>,
    ) -> JobHandle {
        let (tx, rx) = watch::channel(JobStatus::Created);
        let shared = Arc::new(JobShared {
            name: name.to_string(),
            state: Mutex::new((JobStatus::Created, 0, None)),
            metrics: DashMap::new(),
            done: tx,
            dead_letters: config.dead_letters.clone(),
            checkpoints: Mutex::default(),
        });
        let restarts = RestartTracker::new(config.restart.clone());
        // Validated when the job was built.
        let storage = config
            .checkpoint_storage
            .as_deref()
            .and_then(|url| CheckpointStorage::parse(url).ok());
        let first_checkpoint = config.checkpoint_ids_above + 1;
        let sup = JobSupervisor {
            plan,
            config,
            shared: shared.clone(),
            arbiters,
            attempt: 0,
            stops: Vec::new(),
            sources: Vec::new(),
            sinks: 0,
            sinks_left: 0,
            sources_left: 0,
            restarts,
            cancelling: false,
            next_checkpoint: first_checkpoint,
            pending: BTreeMap::new(),
            latest: None,
            storage,
            uploading: false,
            savepoint: None,
            committers: Vec::new(),
            final_positions: BTreeMap::new(),
            superseded: Default::default(),
            owners_reading: false,
            owners_read_at: None,
        };
        let addr = sup.start();
        JobHandle {
            shared,
            supervisor: addr.clone().recipient(),
            aborter: addr.recipient(),
            done: rx,
        }
    }

    fn launch(&mut self, ctx: &mut Context<Self>) {
        let mut launch = Launch {
            job: &self.shared.name,
            config: &self.config,
            attempt: self.attempt,
            arbiters: &self.arbiters,
            supervisor: ctx.address().recipient(),
            metrics: &self.shared.metrics,
            dead_letters: self.config.dead_letters.clone(),
            stops: Vec::new(),
            sources: Vec::new(),
            sinks: 0,
            restore: self.latest.clone(),
            restored: Default::default(),
            restore_errors: Vec::new(),
            committers: Vec::new(),
        };
        let mut res = self.plan.launch(&mut launch);
        let problems = launch.restore_problems();
        if res.is_ok() && !problems.is_empty() {
            let id = self.latest.as_ref().map_or(0, |l| l.id);
            res = Err(BuildError::invalid(
                "checkpoint",
                crate::checkpoint::CheckpointError::Incompatible {
                    job: self.shared.name.clone(),
                    id,
                    reason: problems.join("; "),
                }
                .to_string(),
            ));
        }
        let Launch {
            stops,
            sources,
            sinks,
            committers,
            ..
        } = launch;
        self.committers = committers;
        self.stops = stops;
        self.sources_left = sources.len();
        self.sources = sources;
        self.sinks = sinks;
        self.sinks_left = sinks;
        self.pending.clear();
        self.final_positions.clear();
        match res {
            Ok(()) => {
                tracing::info!(job = %self.shared.name, attempt = self.attempt, "job running");
                self.shared.set_status(JobStatus::Running);
            }
            Err(e) => {
                self.record_error(e.to_string());
                self.stop_all();
                self.shared.set_status(JobStatus::Failed);
                ctx.stop();
            }
        }
    }

    fn stop_all(&mut self) {
        for s in self.stops.drain(..) {
            s.do_send(Stop);
        }
        self.sources.clear();
    }

    fn status(&self) -> JobStatus {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
    }

    /// Every sink flushed after end-of-input. Exactly-once sinks' last
    /// transaction (the output since the last checkpoint, windows fired by
    /// the end included) commits first, as a final checkpoint with the
    /// sources' end positions (stored first, with durable storage, so a
    /// later run restores what the transaction names); then sources commit
    /// their final positions and the job ends (after a bounded wait).
    fn finalize(&mut self, ctx: &mut Context<Self>) {
        if self.committers.is_empty() {
            return self.finalize_sources(ctx);
        }
        let id = self.next_checkpoint;
        self.next_checkpoint += 1;
        let done = CompletedCheckpoint {
            id,
            positions: std::mem::take(&mut self.final_positions),
            states: BTreeMap::new(),
            operators: BTreeMap::new(),
            completed_at_ms: now_ms(),
            adopted: None,
        };
        let (meta, states) = done.to_stored(&self.shared.name);
        let storage = self.storage.clone();
        let committers = self.committers.clone();
        let positions = Arc::new(done.positions.clone());
        let attempt = self.attempt;
        let commit = async move {
            if let Some(storage) = storage {
                storage
                    .write(meta, &states)
                    .await
                    .map_err(|e| format!("final checkpoint {id} not stored: {e}"))?;
            }
            commit_all(committers, attempt, id, positions, "final checkpoint").await
        };
        ctx.spawn(commit.into_actor(self).map(move |res, act, ctx| {
            if act.attempt != attempt || act.status().is_terminal() {
                return;
            }
            match res {
                Ok(()) => {
                    tracing::info!(job = %act.shared.name, id, "output since the last checkpoint committed at the end of input");
                    act.finalize_sources(ctx)
                }
                Err(e) => act.on_failure(e, ctx),
            }
        }));
    }

    /// Lets sources commit their final positions, then ends the job (after
    /// a bounded wait).
    fn finalize_sources(&mut self, ctx: &mut Context<Self>) {
        for s in &self.sources {
            s.do_send(SourceCommand::CommitFinal);
        }
        if self.sources_left == 0 {
            return self.done(ctx);
        }
        let attempt = self.attempt;
        ctx.run_later(self.config.drain_timeout, move |act, ctx| {
            if act.attempt == attempt && !act.status().is_terminal() {
                tracing::warn!(job = %act.shared.name, "sources did not confirm their final commit in time");
                act.done(ctx);
            }
        });
    }

    fn done(&mut self, ctx: &mut Context<Self>) {
        self.stop_all();
        let status = if self.cancelling {
            JobStatus::Cancelled
        } else {
            JobStatus::Finished
        };
        tracing::info!(job = %self.shared.name, ?status, "job done");
        self.shared.set_status(status);
        ctx.stop();
    }

    fn on_checkpoint_event(&mut self, id: u64, f: impl FnOnce(&mut PendingCheckpoint)) {
        if let Some(p) = self.pending.get_mut(&id) {
            f(p);
        }
    }

    fn maybe_complete(&mut self, id: u64, ctx: &mut Context<Self>) {
        let Some(p) = self.pending.get(&id) else {
            return;
        };
        if p.sinks_acked < self.sinks {
            return;
        }
        let p = self.pending.remove(&id).expect("present");
        let started = p.started;
        // Older checkpoints can no longer complete usefully.
        self.pending = self.pending.split_off(&id);
        // What a task did not report this time (a finished source's
        // position) carries over from the latest checkpoint; only for
        // tasks this job has (a checkpoint restored at another
        // parallelism holds others, whose stale positions would override
        // the merged ones at the next restore).
        let metrics = &self.shared.metrics;
        let has = |task: &String| metrics.contains_key(task);
        let latest = self.latest.clone();
        let mut positions = latest
            .as_ref()
            .map(|l| carried(&l.positions, has))
            .unwrap_or_default();
        positions.extend(p.positions);
        let mut states = latest
            .as_ref()
            .map(|l| carried(&l.states, has))
            .unwrap_or_default();
        states.extend(p.states);
        let mut operators = latest
            .as_ref()
            .map(|l| carried(&l.operators, has))
            .unwrap_or_default();
        operators.extend(p.operators);
        let done = Arc::new(CompletedCheckpoint {
            id,
            positions,
            states,
            operators,
            completed_at_ms: now_ms(),
            adopted: None,
        });
        let storage = self.storage.clone();
        let committers = self.committers.clone();
        if storage.is_none() && committers.is_empty() {
            return self.checkpoint_durable(done, started, ctx);
        }
        // Durable first: the state is stored, then the sinks' transactions
        // commit with the positions (the commit point), and only then do
        // sources commit and the next epoch's output flow.
        self.uploading = true;
        let (job, attempt, retain) = (
            self.shared.name.clone(),
            self.attempt,
            self.config.checkpoint_retain,
        );
        let positions = done.positions.clone();
        let (meta, states) = done.to_stored(&job);
        // Never deleted: this one, the one a restart would load now, and
        // the one a coordinator recorded.
        let mut protect = vec![id];
        protect.extend(self.latest.as_ref().map(|l| l.id));
        protect.extend(self.config.checkpoint_record.as_ref().and_then(|r| r.get()));
        let persist = async move {
            if let Some(storage) = storage {
                let location = storage
                    .write(meta, &states)
                    .await
                    .map_err(|e| format!("checkpoint {id} not stored: {e}"))?;
                tracing::debug!(job, id, location, "checkpoint stored");
                if let Err(e) = storage.retain(&job, retain, &protect).await {
                    tracing::warn!(job, error = %e, "old checkpoints not deleted");
                }
            }
            commit_all(committers, attempt, id, Arc::new(positions), "checkpoint").await
        };
        ctx.spawn(persist.into_actor(self).map(move |res, act, ctx| {
            act.uploading = false;
            if act.attempt != attempt || act.status().is_terminal() {
                return;
            }
            match res {
                Ok(()) => act.checkpoint_durable(done, started, ctx),
                Err(e) => {
                    act.shared
                        .checkpoints
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .failed += 1;
                    act.on_failure(e, ctx)
                }
            }
        }));
    }

    /// Deletes the checkpoints of the copies this one took partitions over
    /// from, once no committed position of the input names them (every
    /// partition they held was committed since by a copy of the current
    /// layout, each of which loaded what it needed before its first
    /// commit): nothing can restore from them any more. At most every 5 s,
    /// after a checkpoint, off the arbiters; until all are gone. The
    /// previous layout's tasks have all stopped (run claims), and a copy
    /// never deletes its own.
    fn collect_superseded(&mut self, ctx: &mut Context<Self>) {
        let Some(storage) = self.storage.clone() else {
            return;
        };
        if self.superseded.is_empty()
            || self.owners_reading
            || self
                .owners_read_at
                .is_some_and(|t| t.elapsed() < Duration::from_secs(5))
        {
            return;
        }
        let job = self.shared.name.clone();
        let Some(read) = self.plan.checkpoint_owners(&job) else {
            // The input cannot tell: keep them.
            self.superseded.clear();
            return;
        };
        self.owners_reading = true;
        self.owners_read_at = Some(Instant::now());
        let candidates = self.superseded.clone();
        let collect = async move {
            let named = tokio::task::spawn_blocking(read)
                .await
                .map_err(|e| format!("{e}"))?
                .map_err(|e| e.to_string())?;
            let mut gone = Vec::new();
            for owner in candidates.iter().filter(|o| !named.contains(*o)) {
                match storage.delete_all(owner).await {
                    Ok(objects) => {
                        tracing::info!(job, owner, objects, "deleted the checkpoints of a copy no committed position names any more");
                        gone.push(owner.clone());
                    }
                    Err(e) => {
                        tracing::warn!(job, owner, error = %e, "a superseded copy's checkpoints not deleted")
                    }
                }
            }
            Ok::<_, String>(gone)
        };
        ctx.spawn(collect.into_actor(self).map(|res, act, _| {
            act.owners_reading = false;
            match res {
                Ok(gone) => {
                    for o in gone {
                        act.superseded.remove(&o);
                    }
                }
                Err(e) => {
                    tracing::debug!(job = %act.shared.name, error = %e, "which copies the input names: not read (tried again later)")
                }
            }
        }));
    }

    /// Checkpoint `done` is complete (and stored, with storage): it is the
    /// one to restore from; sources commit its positions; a savepoint
    /// waiting for it ends the job.
    fn checkpoint_durable(
        &mut self,
        done: Arc<CompletedCheckpoint>,
        started: Instant,
        ctx: &mut Context<Self>,
    ) {
        let id = done.id;
        {
            let mut stats = self
                .shared
                .checkpoints
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            stats.completed += 1;
            stats.last = Some(CheckpointSummary {
                id,
                completed_at_ms: now_ms(),
                duration_ms: started.elapsed().as_millis() as u64,
                state_bytes: done.states.values().map(|s| s.len() as u64).sum(),
            });
            stats.last_offsets = topic_offsets(&done.positions);
        }
        tracing::debug!(job = %self.shared.name, id, "checkpoint complete");
        self.latest = Some(done);
        self.collect_superseded(ctx);
        for s in &self.sources {
            s.do_send(SourceCommand::CheckpointComplete(id));
        }
        if self.savepoint.is_some_and(|s| s <= id) {
            tracing::info!(job = %self.shared.name, id, "stopped with a savepoint");
            self.stop_all();
            self.shared.set_status(JobStatus::Cancelled);
            ctx.stop();
        }
    }

    /// A task (or the checkpoint storage) failed: restart within the
    /// policy, else FAILED.
    fn on_failure(&mut self, error: String, ctx: &mut Context<Self>) {
        self.record_error(error.clone());
        self.stop_all();
        if self.cancelling {
            self.shared.set_status(JobStatus::Failed);
            return ctx.stop();
        }
        match self.restarts.on_failure(Instant::now()) {
            Some(backoff) => {
                {
                    let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
                    st.1 += 1;
                }
                tracing::warn!(job = %self.shared.name, %error, ?backoff, "restarting job");
                self.shared.set_status(JobStatus::Restarting);
                self.attempt += 1;
                ctx.notify_later(Relaunch, backoff);
            }
            None => {
                tracing::error!(job = %self.shared.name, %error, "restart policy exhausted; job failed");
                self.shared.set_status(JobStatus::Failed);
                ctx.stop();
            }
        }
    }

    /// Finds the checkpoint to resume from, then launches an attempt: the
    /// one the sources' transactions committed when they track that (a
    /// crash after storing `n` but before committing it leaves `n - 1`
    /// committed, and `n` is garbage), else the latest in storage.
    fn restore_then_launch(&mut self, storage: CheckpointStorage, ctx: &mut Context<Self>) {
        use crate::pipeline::CommittedCheckpoint;
        let job = self.shared.name.clone();
        // A short blocking read of the input system's committed positions,
        // on the supervisor's thread (no operator runs there), at start.
        let committed = match self.plan.committed_checkpoint(&job) {
            Ok(c) => c,
            Err(e) => {
                return self.on_failure(format!("cannot read committed checkpoint: {e}"), ctx)
            }
        };
        if let CommittedCheckpoint::Adopted { from, .. } = &committed {
            self.superseded
                .extend(from.iter().map(|a| a.job.clone()).filter(|o| *o != job));
        }
        let in_memory = self.latest.clone();
        let recorded = self.config.checkpoint_record.as_ref().and_then(|r| r.get());
        let find = async move {
            // Ids are never reused, even those of uncommitted checkpoints.
            let stored = storage.latest(&job).await?;
            let id = match committed {
                // A coordinator's record (fenced: never a zombie's), or
                // this process's own newer one, before whatever is newest
                // in storage.
                CommittedCheckpoint::Untracked => match recorded {
                    Some(r) => Some(r.max(in_memory.as_ref().map_or(0, |c| c.id))),
                    None => stored,
                },
                CommittedCheckpoint::Nothing => None,
                CommittedCheckpoint::At(id) => Some(id),
                CommittedCheckpoint::Adopted { from, keys } => {
                    let mut loaded = Vec::with_capacity(from.len());
                    for a in &from {
                        let (meta, states) = storage.load(&a.job, a.id).await?;
                        loaded.push(CompletedCheckpoint::from_stored(meta, states));
                    }
                    let chk = CompletedCheckpoint::adopt(&job, &from, loaded, keys);
                    return Ok((Some(chk), stored));
                }
            };
            let found = match id {
                Some(id) if in_memory.as_ref().is_some_and(|c| c.id == id) => {
                    in_memory.map(|c| (*c).clone())
                }
                Some(id) => {
                    let (meta, states) = storage.load(&job, id).await?;
                    Some(CompletedCheckpoint::from_stored(meta, states))
                }
                None => None,
            };
            Ok::<_, crate::checkpoint::CheckpointError>((found, stored))
        };
        ctx.wait(find.into_actor(self).map(|res, act, ctx| match res {
            Ok((found, stored)) => {
                act.next_checkpoint = act.next_checkpoint.max(stored.unwrap_or(0) + 1);
                act.latest = found.map(|chk| {
                    if chk.adopted.is_some() {
                        tracing::info!(job = %act.shared.name, "taking over other copies' checkpoints (rescaled)");
                        return Arc::new(chk);
                    }
                    tracing::info!(job = %act.shared.name, id = chk.id, "resuming from checkpoint {}", chk.id);
                    let mut stats = act
                        .shared
                        .checkpoints
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    stats.last = Some(CheckpointSummary {
                        id: chk.id,
                        completed_at_ms: chk.completed_at_ms,
                        duration_ms: 0,
                        state_bytes: chk.states.values().map(|s| s.len() as u64).sum(),
                    });
                    stats.last_offsets = topic_offsets(&chk.positions);
                    drop(stats);
                    act.next_checkpoint = act.next_checkpoint.max(chk.id + 1);
                    Arc::new(chk)
                });
                act.launch(ctx);
            }
            Err(e) => {
                act.record_error(format!("cannot restore: {e}"));
                act.shared.set_status(JobStatus::Failed);
                ctx.stop();
            }
        }));
    }

    fn record_error(&self, message: String) {
        let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        st.2 = Some(LastError {
            message,
            at_ms: now_ms(),
        });
    }
}

impl Actor for JobSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match self.storage.clone() {
            Some(storage) => self.restore_then_launch(storage, ctx),
            None => self.launch(ctx),
        }
        if let Some(every) = self.config.checkpoint_interval {
            ctx.run_interval(every, |_, ctx| ctx.notify(CheckpointTick));
        }
    }
}

impl Handler<CheckpointTick> for JobSupervisor {
    type Result = ();
    fn handle(&mut self, _: CheckpointTick, _ctx: &mut Context<Self>) {
        if self.cancelling
            || self.uploading
            || self.status() != JobStatus::Running
            || self.sources.is_empty()
        {
            return;
        }
        // Do not pile up checkpoints behind a slow one.
        if self.pending.len() >= 2 {
            return;
        }
        let id = self.next_checkpoint;
        self.next_checkpoint += 1;
        self.pending.insert(id, PendingCheckpoint::new());
        for s in &self.sources {
            s.do_send(SourceCommand::TriggerCheckpoint(id));
        }
    }
}

/// Commits checkpoint `id` of job attempt `attempt` through every
/// committer, one after the other, off the arbiters (`spawn_blocking`);
/// errors name the checkpoint as `label` `id`.
async fn commit_all(
    committers: Vec<Arc<dyn crate::pipeline::CheckpointCommitter>>,
    attempt: u32,
    id: u64,
    positions: Arc<BTreeMap<String, serde_json::Value>>,
    label: &'static str,
) -> Result<(), String> {
    for c in committers {
        let positions = positions.clone();
        tokio::task::spawn_blocking(move || c.commit(attempt, id, &positions))
            .await
            .map_err(|e| format!("{label} {id} commit: {e}"))?
            .map_err(|e| format!("{label} {id} not committed: {e}"))?;
    }
    Ok(())
}

impl Handler<TaskEvent> for JobSupervisor {
    type Result = ();

    fn handle(&mut self, ev: TaskEvent, ctx: &mut Context<Self>) {
        match ev {
            TaskEvent::Finished { attempt, task } if attempt == self.attempt => {
                tracing::debug!(task, "sink finished");
                self.sinks_left = self.sinks_left.saturating_sub(1);
                if self.sinks_left == 0 {
                    self.finalize(ctx);
                }
            }
            TaskEvent::SourceEnded {
                attempt,
                task,
                position: Some(p),
            } if attempt == self.attempt => {
                self.final_positions.insert(task, p);
            }
            TaskEvent::SourceCommitted { attempt } if attempt == self.attempt => {
                self.sources_left = self.sources_left.saturating_sub(1);
                if self.sources_left == 0 && self.sinks_left == 0 {
                    self.done(ctx);
                }
            }
            TaskEvent::SourceCheckpointed {
                attempt,
                id,
                task,
                position: Some(pos),
            } if attempt == self.attempt => {
                self.on_checkpoint_event(id, |p| {
                    p.positions.insert(task, pos);
                });
            }
            TaskEvent::OperatorSnapshot {
                attempt,
                id,
                task,
                operator,
                state,
            } if attempt == self.attempt => {
                self.on_checkpoint_event(id, |p| {
                    p.operators.insert(
                        task.clone(),
                        crate::checkpoint::format::operator_signature(operator),
                    );
                    p.states.insert(task, state);
                });
            }
            TaskEvent::SinkCheckpointed { attempt, id } if attempt == self.attempt => {
                self.on_checkpoint_event(id, |p| p.sinks_acked += 1);
                self.maybe_complete(id, ctx);
            }
            TaskEvent::Failed { attempt, error } if attempt == self.attempt => {
                self.on_failure(error.to_string(), ctx)
            }
            _ => {} // an event of an older attempt
        }
    }
}

impl Handler<Relaunch> for JobSupervisor {
    type Result = ();
    fn handle(&mut self, _: Relaunch, ctx: &mut Context<Self>) {
        if self.cancelling {
            self.shared.set_status(JobStatus::Cancelled);
            return ctx.stop();
        }
        match self.storage.clone() {
            Some(storage) => self.restore_then_launch(storage, ctx),
            None => self.launch(ctx),
        }
    }
}

impl Handler<Abort> for JobSupervisor {
    type Result = ();
    fn handle(&mut self, _: Abort, ctx: &mut Context<Self>) {
        tracing::warn!(job = %self.shared.name, "aborting job");
        self.cancelling = true;
        self.stop_all();
        self.shared.set_status(JobStatus::Cancelled);
        ctx.stop();
    }
}

impl Handler<Cancel> for JobSupervisor {
    type Result = ();
    fn handle(&mut self, cancel: Cancel, ctx: &mut Context<Self>) {
        if self.cancelling {
            return;
        }
        self.cancelling = true;
        let savepoint = self.storage.is_some()
            && !cancel.drain
            && !self.config.drain_on_cancel
            && self.status() == JobStatus::Running
            && !self.sources.is_empty();
        if savepoint {
            // Stop with a savepoint: a final checkpoint; the job ends once
            // it is durable (`checkpoint_durable`). Open windows stay open,
            // in it, for the next run.
            let id = self.next_checkpoint;
            self.next_checkpoint += 1;
            self.savepoint = Some(id);
            self.pending.insert(id, PendingCheckpoint::new());
            tracing::info!(job = %self.shared.name, id, "stopping with a savepoint");
            for s in &self.sources {
                s.do_send(SourceCommand::StopWithCheckpoint(id));
            }
            let (timeout, attempt) = (self.config.drain_timeout, self.attempt);
            ctx.run_later(timeout, move |act, ctx| {
                if act.attempt == attempt && !act.status().is_terminal() {
                    tracing::warn!(job = %act.shared.name, id, "savepoint not complete in time; stopping (the previous checkpoint stands)");
                    act.stop_all();
                    act.shared.set_status(JobStatus::Cancelled);
                    ctx.stop();
                }
            });
            return;
        }
        if self
            .shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            == JobStatus::Restarting
        {
            return; // Relaunch will see the flag.
        }
        for s in &self.sources {
            s.do_send(SourceCommand::Drain);
        }
        let timeout: Duration = self.config.drain_timeout;
        let attempt = self.attempt;
        ctx.run_later(timeout, move |act, ctx| {
            if act.attempt == attempt
                && !act
                    .shared
                    .state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .0
                    .is_terminal()
            {
                tracing::warn!(job = %act.shared.name, "drain timed out; stopping actors");
                act.stop_all();
                act.shared.set_status(JobStatus::Cancelled);
                ctx.stop();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn adopted_positions_take_each_partition_from_its_owner() {
        let from = vec![
            crate::pipeline::AdoptedCheckpoint {
                job: "j-count-task-0-of-2".into(),
                id: 7,
                transactional_id: None,
                partitions: vec![2],
            },
            crate::pipeline::AdoptedCheckpoint {
                job: "j-count-task-1-of-2".into(),
                id: 9,
                transactional_id: None,
                partitions: vec![1],
            },
        ];
        let chk = |job: &str, offsets: serde_json::Value, state: u8| CompletedCheckpoint {
            id: 1,
            positions: [(
                format!("{job}/source#0"),
                json!({"topic": "t", "offsets": offsets, "upstream": {"0": [[5, "active"]]}}),
            )]
            .into(),
            states: [(format!("{job}/window#0"), vec![state])].into(),
            operators: [(format!("{job}/window#0"), "W".to_string())].into(),
            completed_at_ms: 1,
            adopted: None,
        };
        let loaded = vec![
            chk("j-count-task-0-of-2", json!({"0": 10, "2": 20}), 1),
            chk("j-count-task-1-of-2", json!({"1": 11, "3": 31}), 2),
        ];
        let c = CompletedCheckpoint::adopt("j-count-task-1-of-3", &from, loaded, None);
        assert_eq!(
            c.positions["j-count-task-1-of-3/source#0"],
            json!({"topic": "t", "offsets": {"1": 11, "2": 20}, "upstream": {}})
        );
        let a = c.adopted.unwrap();
        assert_eq!(
            a.states["j-count-task-1-of-3/window#0"],
            vec![vec![1], vec![2]]
        );
        assert_eq!(c.operators["j-count-task-1-of-3/window#0"], "W");
        assert!(c.states.is_empty());
    }
}
