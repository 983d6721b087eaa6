//! The worker runtime: runs the tasks ZooKeeper assigns to this process.
//!
//! Owns: [`WorkerActor`] (here; its [`WorkerConfig`] in `config.rs`, one
//! task's record and views in `task.rs`), which subscribes to the [`CoordActor`]'s events,
//! starts and stops task jobs on a [`LocalRuntime`] (one `RunnableJob` per
//! task, built by the [`JobTypeRegistry`]), publishes each task's
//! [`TaskState`] (on change and at most once per `publish_interval`; restarts
//! and the last error carry over from the state the task had before it
//! started here), reports a task FAILED past its restart policy to the leader
//! (a fenced failure record: the leader moves it elsewhere or restarts it in
//! place, see [`crate::coord::leader`]), keeps
//! the write [`Lease`] renewed by a periodic ZooKeeper round trip, and
//! [`run_worker`], the process entry point (SIGTERM: drain, commit, leave,
//! exit).
//! Must never: keep a task running once its assignment is gone or fenced;
//! start a task, or publish its state, without a valid lease; keep tasks
//! after the session expired (they are aborted at once: this process may be
//! a zombie); block its arbiter (factories and progress probes run on
//! blocking threads).
//!
//! Session handling, in order of severity:
//! - `Disconnected`: tasks keep running while the lease is valid; once it
//!   runs out (no round trip answered for `timeout - margin`) they are
//!   aborted locally, and restarted when the same session answers again (the
//!   assignment did not change, so nothing moves);
//! - `Expired`: the lease is revoked (every fenced sink refuses at once),
//!   every task is aborted, and the coordination actor opens a new session and
//!   registers again; assignments arrive anew on it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::{JobHandle, LocalRuntime};
use crate::coord::actor::{
    Deregister, ForgetTask, Ping, ReadCheckpoint, ReadSpec, ReadStopMode, ReadTaskState,
    ReportFailure, Shutdown, WriteCheckpoint, WriteTaskState,
};
use crate::coord::session::StatusHandle;
use crate::coord::{
    CheckpointMeta, CoordActor, CoordConfig, CoordError, CoordEvent, FenceToken, JobAssignment,
    JobSpec, SessionEvent, StopMode, TaskError, TaskId, TaskStatus, WorkerInfo,
};

mod config;
mod handoff;
mod task;

pub use config::WorkerConfig;
use task::{Carried, FailureReport, Phase, Task};

use super::error::{ServiceError, ServiceResult};
use super::lease::Lease;
use super::registry::{JobTypeRegistry, Progress, TaskEnv};
use super::view::{SharedView, WorkerView};
use crate::pipeline::CheckpointRecord;

/// Checkpoint ids a task takes in one assignment epoch: epoch `e` takes ids
/// above `e * 10^9`, so its checkpoints sort after every older epoch's and
/// a zombie of an older epoch never writes the same `chk-<id>` as the new
/// owner (a billion: 31 years of one checkpoint a second).
const CHECKPOINT_IDS_PER_EPOCH: u64 = 1_000_000_000;

/// How long a task whose write was fenced keeps running before it is
/// aborted, unless its job's removal (a cancel) arrives first.
const FENCED_GRACE: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Desire {
    tokens: BTreeMap<TaskId, FenceToken>,
    spec: Option<JobSpec>,
    /// Spec reads sent (one per assignment change) and the newest one
    /// answered: replies can arrive out of order, and an older read's
    /// answer applied after a newer one's put back a superseded spec (a
    /// rescale's task stopped, then started again with its old layout).
    /// Tasks start only once the newest read is answered.
    spec_reads_sent: u64,
    spec_read_answered: u64,
}

impl Desire {
    /// A spec read is sent: its number.
    fn spec_read_sent(&mut self) -> u64 {
        self.spec_reads_sent += 1;
        self.spec_reads_sent
    }

    /// Read `read` was answered: whether its answer is to be applied (no
    /// newer read was answered before it).
    fn spec_read_answered(&mut self, read: u64) -> bool {
        if read <= self.spec_read_answered {
            return false;
        }
        self.spec_read_answered = read;
        true
    }

    /// The spec held is the newest read's answer (no read outstanding).
    fn spec_settled(&self) -> bool {
        self.spec_read_answered >= self.spec_reads_sent
    }
}

/// The worker actor (see the module docs). Start it with [`WorkerActor::start_with_coord`].
pub struct WorkerActor {
    cfg: WorkerConfig,
    registry: JobTypeRegistry,
    coord: Addr<CoordActor>,
    _coord_arbiter: Arbiter,
    status: StatusHandle,
    lease: Lease,
    runtime: LocalRuntime,
    tasks: BTreeMap<TaskId, Task>,
    /// Tasks told to stop and not terminal yet (drained or aborted).
    stopping: Vec<(TaskId, JobHandle)>,
    desired: BTreeMap<String, Desire>,
    /// Removed jobs whose stop request (`/stops/<job>`) is being read: their
    /// tasks stop as it says once it arrives.
    stop_reads: std::collections::BTreeSet<String>,
    view: SharedView,
    shutting_down: bool,
    lease_lost_logged: bool,
    /// Run claims of this worker's tasks.
    claims: handoff::RunClaims,
}

impl WorkerActor {
    /// Starts the coordination actor on its own arbiter and the worker actor on the
    /// current one. Must be called inside an actix system.
    pub fn start_with_coord(
        cfg: WorkerConfig,
        registry: JobTypeRegistry,
        view: SharedView,
    ) -> ServiceResult<Addr<WorkerActor>> {
        let mut ccfg = CoordConfig::new(cfg.zk.clone());
        ccfg.root.clone_from(&cfg.root);
        ccfg.session.session_timeout = cfg.session_timeout;
        ccfg.session.auth.clone_from(&cfg.zk_auth);
        let info = WorkerInfo {
            id: cfg.id.clone(),
            address: cfg.address.clone(),
            capacity: cfg.capacity,
            job_types: registry.names(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            stages: registry.staged_types(),
            brokers: cfg.brokers.clone(),
        };
        info.validate()?;
        ccfg.worker = Some(info);
        ccfg.candidate = Some(cfg.id.clone());
        ccfg.state_write_interval = cfg.publish_interval;
        ccfg.leader_resync = Duration::from_secs(10);
        let lease = Lease::new(cfg.session_timeout, cfg.lease_margin());
        let ctx: Context<WorkerActor> = Context::new();
        let addr = ctx.address();
        let actor = CoordActor::new(ccfg, Some(addr.clone().recipient()))?;
        let status = actor.status_handle();
        let arbiter = Arbiter::new();
        let coord = CoordActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
        let runtime = LocalRuntime::new(cfg.threads);
        ctx.run(WorkerActor {
            cfg,
            registry,
            coord,
            _coord_arbiter: arbiter,
            status,
            lease,
            runtime,
            tasks: BTreeMap::new(),
            stopping: Vec::new(),
            desired: BTreeMap::new(),
            stop_reads: Default::default(),
            view,
            shutting_down: false,
            lease_lost_logged: false,
            claims: Default::default(),
        });
        Ok(addr)
    }

    fn renew_lease(&mut self, ctx: &mut Context<Self>) {
        let sent_at = Instant::now();
        let lease = self.lease.clone();
        let status = self.status.clone();
        self.coord
            .send(Ping)
            .into_actor(self)
            .map(move |res, act, ctx| match res {
                Ok(Ok(session)) => {
                    let timeout = status.get().session_timeout;
                    lease.renew_for(session, sent_at, timeout);
                    if act.lease_lost_logged {
                        tracing::info!("write lease renewed");
                        act.lease_lost_logged = false;
                        act.reconcile(ctx);
                    }
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "lease round trip failed"),
                Err(e) => tracing::debug!(error = %e, "coordination actor unavailable"),
            })
            .spawn(ctx);
    }

    fn on_assignment(
        &mut self,
        job: String,
        assignment: Option<JobAssignment>,
        ctx: &mut Context<Self>,
    ) {
        match assignment {
            None => {
                if self.desired.remove(&job).is_some() {
                    tracing::info!(job = %job, "job removed: stopping its tasks");
                }
                self.reconcile(ctx);
            }
            Some(a) => {
                let tokens: BTreeMap<TaskId, FenceToken> =
                    FenceToken::for_worker(&job, &a, &self.cfg.id)
                        .into_iter()
                        .map(|t| (t.task.clone(), t))
                        .collect();
                let d = self.desired.entry(job.clone()).or_default();
                d.tokens = tokens;
                let read = d.spec_read_sent();
                // The spec may have changed (rescale): read it again, then reconcile. Only the
                // spec: a malformed task-state node must not keep this job's tasks from starting.
                self.coord
                    .send(ReadSpec { job: job.clone() })
                    .into_actor(self)
                    .map(move |res, act, ctx| {
                        // An older read answered after a newer one: stale.
                        let newest = act
                            .desired
                            .get_mut(&job)
                            .is_some_and(|d| d.spec_read_answered(read));
                        if !newest {
                            return;
                        }
                        match res {
                            Ok(Ok(spec)) => {
                                if let Some(d) = act.desired.get_mut(&job) {
                                    d.spec = Some(spec);
                                }
                            }
                            Ok(Err(CoordError::NoNode { .. })) => {
                                tracing::info!(job = %job, "job spec gone (being cancelled)");
                            }
                            Ok(Err(e)) => tracing::error!(job = %job, error = %e, "cannot read the job; its tasks are not started"),
                            Err(e) => tracing::error!(error = %e, "coordination actor unavailable"),
                        }
                        act.reconcile(ctx);
                    })
                    .spawn(ctx);
                self.reconcile(ctx);
            }
        }
    }

    /// Stops tasks that are no longer wanted (drain + commit) and starts the wanted ones.
    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        // Stop what is not (or no longer identically) wanted.
        let unwanted: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(id, t)| {
                let Some(d) = self.desired.get(&id.job) else {
                    return true;
                };
                match d.tokens.get(*id) {
                    None => true,
                    Some(tok) => tok != &t.token || d.spec.as_ref().is_some_and(|s| s != &t.spec),
                }
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut removed_jobs = std::collections::BTreeSet::new();
        for id in unwanted {
            if !self.desired.contains_key(&id.job) && !self.shutting_down {
                // The job was cancelled: how its tasks stop is in its
                // stop request.
                removed_jobs.insert(id.job.clone());
                continue;
            }
            self.stop_task(
                &id,
                StopMode::Savepoint,
                "no longer assigned here (or its job changed)",
            );
        }
        for job in removed_jobs {
            if self.stop_reads.insert(job.clone()) {
                self.stop_cancelled_job(job, ctx);
            }
        }
        if self.shutting_down || !self.lease.is_valid() {
            return;
        }
        let mut to_start = Vec::new();
        for d in self.desired.values() {
            let Some(spec) = &d.spec else { continue };
            if !d.spec_settled() {
                continue; // the spec may have changed: wait for the newest read
            }
            for (id, tok) in &d.tokens {
                if self.tasks.contains_key(id) || self.stopping.iter().any(|(s, _)| s == id) {
                    continue;
                }
                if !spec.has_task(id.index) {
                    continue; // assignment newer than the spec we read; wait for the re-read
                }
                to_start.push((tok.clone(), spec.clone()));
            }
        }
        for (tok, spec) in to_start {
            self.start_task(tok, spec, ctx);
        }
    }

    fn start_task(&mut self, token: FenceToken, spec: JobSpec, ctx: &mut Context<Self>) {
        let Some(guard) = self.lease.guard() else {
            return;
        };
        let id = token.task.clone();
        let mut task = Task {
            token: token.clone(),
            spec: spec.clone(),
            phase: Phase::Starting,
            probe: None,
            probing: false,
            last_probe: None,
            progress: Progress::default(),
            published: None,
            carried: Carried::default(),
            report: FailureReport::NotSent,
            record: CheckpointRecord::default(),
            recording: false,
        };
        let place = spec.place(id.index);
        let stage = place.map(|p| p.stage.to_string()).unwrap_or_default();
        let Some(factory) = self.registry.get_stage(&spec.job_type, &stage) else {
            let msg = match self.registry.stages(&spec.job_type) {
                stages if !stages.is_empty() || !stage.is_empty() => format!(
                    "job type {:?} runs here as stages [{}], but the job's task {id} is of stage {stage:?} \
                     (resubmit the job so its spec names the type's stages)",
                    spec.job_type,
                    stages.join(", ")
                ),
                _ => format!(
                    "job type {:?} is not registered in this worker (it runs: {})",
                    spec.job_type,
                    self.registry.names().join(", ")
                ),
            };
            tracing::error!(task = %id, "{msg}");
            task.phase = Phase::BuildFailed(
                TaskError {
                    message: msg,
                    at_ms: crate::coord::model::now_ms(),
                },
                Instant::now(),
            );
            self.tasks.insert(id, task);
            return;
        };
        tracing::info!(task = %id, epoch = token.epoch, job_type = %spec.job_type, "starting task");
        self.tasks.insert(id.clone(), task);
        let env = TaskEnv {
            spec: spec.clone(),
            stage,
            index: place.map_or(id.index, |p| p.index),
            count: place.map_or(spec.parallelism, |p| p.count),
            brokers: self.cfg.brokers.clone(),
            guard,
            checkpoint_url: self.cfg.checkpoint_url.clone(),
        };
        let (env_stage, env_index, env_count) = (env.stage.clone(), env.index, env.count);
        let built = tokio::task::spawn_blocking(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| factory(&env))).unwrap_or_else(
                |p| {
                    Err(format!(
                        "task factory panicked: {}",
                        crate::pipeline::error::panic_message(&*p)
                    ))
                },
            )
        });
        // What the task published before (here or on the worker it moved from): its restarts
        // and last error carry over.
        let prior = self.coord.send(ReadTaskState {
            job: token.job.clone(),
            task: id.clone(),
        });
        // The checkpoint its previous owner (or its own last run) recorded.
        let recorded = self.coord.send(ReadCheckpoint {
            job: token.job.clone(),
            task: id.clone(),
        });
        // A task of a rescaled stage takes its partitions over from the
        // previous layout: it claims its run and starts once that layout
        // stopped (see `handoff`).
        let claim = self
            .claims
            .new_claim(&env_stage, env_count, env_index, &self.cfg.id);
        self.claims.hold(&id, claim.clone());
        let gate = handoff::gate(
            self.coord.clone(),
            token.job.clone(),
            spec.clone(),
            claim.clone(),
        );
        let task_name = id.clone();
        async move {
            let (gate, (built, prior, recorded)) =
                futures::future::join(gate, futures::future::join3(built, prior, recorded)).await;
            let built =
                built.unwrap_or_else(|e| Err(format!("task factory did not complete: {e}")));
            let prior = match prior {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    tracing::warn!(task = %task_name, error = %e, "previous task state unreadable; restarts and last error start afresh");
                    None
                }
                Err(e) => {
                    tracing::warn!(task = %task_name, error = %e, "coordination actor unavailable");
                    None
                }
            };
            let recorded = match recorded {
                Ok(Ok(r)) => Ok(r.map(|m| m.id)),
                Ok(Err(e)) => Err(format!("cannot read the task's checkpoint record: {e}")),
                Err(e) => Err(format!("coordination actor unavailable: {e}")),
            };
            (built, prior, recorded, gate)
        }
        .into_actor(self)
        .map(move |(res, prior, recorded, gate), act, ctx| {
            // A start stopped while it was being built or claimed: its
            // claim may have been made after the tick released it (release
            // it again, now that the claim is answered), and its job must
            // never run. Each start holds a claim of its own, so this also
            // tells a stopped start from a later start of the same task with
            // the same token (same worker, same epoch: a rescale back and
            // forth), which the token and phase checks below cannot: the
            // stopped start's job, built for the old layout, ran in the new
            // start's place, reading partitions of the old layout for good.
            if !act.claims.holds(&id, &claim) {
                act.claims.retry(id.job.clone(), claim.clone());
                return;
            }
            let Some(task) = act.tasks.get_mut(&id) else {
                return;
            };
            if task.token != token || !matches!(task.phase, Phase::Starting) {
                return;
            }
            if gate == Ok(handoff::Gate::Superseded) {
                // Its spec changed while it waited: the next reconcile
                // stops it (and its claim goes).
                tracing::info!(task = %id, "superseded before it started: its stage was rescaled again");
                return;
            }
            if let Some(p) = prior {
                task.carried = Carried {
                    restarts: p.restarts,
                    last_error: p.last_error,
                };
            }
            let failed = |reason: String| {
                tracing::error!(task = %id, error = %reason, "task could not start");
                Phase::BuildFailed(
                    TaskError {
                        message: reason,
                        at_ms: crate::coord::model::now_ms(),
                    },
                    Instant::now(),
                )
            };
            // Without its record a task could restore a zombie's checkpoint:
            // it does not start (the failure is reported and retried).
            let res = res.and_then(|b| recorded.map(|r| (b, r)));
            let res = res.and_then(|b| gate.map(|_| b));
            task.phase = match res {
                Ok((build, recorded)) => {
                    task.probe = build.probe;
                    task.record = CheckpointRecord::new(recorded);
                    // Checkpoint ids of this epoch above every older epoch's.
                    let job = build
                        .job
                        .with_checkpoint_record(task.record.clone())
                        .with_checkpoint_ids_above(token.epoch.saturating_mul(CHECKPOINT_IDS_PER_EPOCH));
                    match act.runtime.start(job) {
                        Ok(h) => Phase::Running(h),
                        Err(e) => failed(e.to_string()),
                    }
                }
                Err(reason) => failed(reason),
            };
            act.publish(ctx, false);
            // The view shows what ZooKeeper was just told (not a tick later).
            act.refresh_view();
        })
        .spawn(ctx);
    }

    /// Reads how cancelled `job`'s tasks are to stop, then stops those
    /// still here that way (a request that cannot be read: a savepoint).
    fn stop_cancelled_job(&mut self, job: String, ctx: &mut Context<Self>) {
        self.coord
            .send(ReadStopMode { job: job.clone() })
            .into_actor(self)
            .map(move |res, act, _| {
                act.stop_reads.remove(&job);
                let mode = match res {
                    Ok(Ok(m)) => m.unwrap_or_default(),
                    Ok(Err(e)) => {
                        tracing::warn!(job = %job, error = %e, "stop request unreadable: stopping with a savepoint");
                        StopMode::Savepoint
                    }
                    Err(e) => {
                        tracing::warn!(job = %job, error = %e, "coordination actor unavailable: stopping with a savepoint");
                        StopMode::Savepoint
                    }
                };
                if act.desired.contains_key(&job) {
                    return; // submitted again meanwhile: reconcile decides
                }
                let ids: Vec<TaskId> = act
                    .tasks
                    .keys()
                    .filter(|id| id.job == job)
                    .cloned()
                    .collect();
                for id in ids {
                    act.stop_task(&id, mode, "its job was cancelled");
                }
            })
            .spawn(ctx);
    }

    /// Stops one task: with a savepoint (a final checkpoint with durable
    /// storage, else a drain), drained (open windows fire), or aborted at once.
    fn stop_task(&mut self, id: &TaskId, how: StopMode, why: &str) {
        let Some(task) = self.tasks.remove(id) else {
            return;
        };
        tracing::info!(task = %id, how = ?how, "stopping task: {why}");
        self.coord.do_send(ForgetTask(task.token.clone()));
        if let Phase::Running(h) = task.phase {
            match how {
                StopMode::Savepoint => h.cancel(),
                StopMode::Drain => h.drain(),
                StopMode::Abort => h.abort(),
            }
            self.stopping.push((id.clone(), h));
        }
    }

    fn abort_all(&mut self, why: &str) {
        let ids: Vec<TaskId> = self.tasks.keys().cloned().collect();
        if !ids.is_empty() {
            tracing::warn!(tasks = ids.len(), "aborting every task: {why}");
        }
        for id in ids {
            self.stop_task(&id, StopMode::Abort, why);
        }
        for (_, h) in &self.stopping {
            h.abort();
        }
    }

    /// Publishes states that changed, and progress at most once per interval.
    fn publish(&mut self, ctx: &mut Context<Self>, progress_too: bool) {
        if !self.lease.is_valid() {
            return;
        }
        let now = Instant::now();
        let interval = self.cfg.publish_interval;
        let mut writes = Vec::new();
        for task in self.tasks.values_mut() {
            let Some(status) = task.status() else {
                continue;
            };
            let due = match task.published {
                None => true,
                Some((s, _)) if s != status => true,
                Some((_, at)) => {
                    progress_too && now.duration_since(at) >= interval && !status.is_terminal()
                }
            };
            if due {
                let mut v = task.view();
                if let Some((rin, rout)) = self.view.rates_of(&v.task) {
                    v.records_in_per_s = rin;
                    v.records_out_per_s = rout;
                }
                writes.push((task.token.clone(), task.state(&v)));
                task.published = Some((status, now));
            }
        }
        if progress_too {
            self.record_checkpoints(ctx);
        }
        for (token, state) in writes {
            self.coord
                .send(WriteTaskState {
                    token: token.clone(),
                    state,
                })
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => act.on_write_failed(&token, &e, ctx),
                    Err(e) => tracing::debug!(error = %e, "coordination actor unavailable"),
                })
                .spawn(ctx);
        }
        self.report_failures(ctx);
    }

    /// Records each running task's newest completed checkpoint under
    /// `/jobs/<job>/checkpoints/<task>`, fenced by its token (one write in
    /// flight per task, at most one per publish interval); once written,
    /// the task's retention keeps it.
    fn record_checkpoints(&mut self, ctx: &mut Context<Self>) {
        // Without durable storage there is nothing to restore from.
        let Some(url) = self.cfg.checkpoint_url.clone() else {
            return;
        };
        let mut writes = Vec::new();
        for (id, task) in self.tasks.iter_mut() {
            let Phase::Running(h) = &task.phase else {
                continue;
            };
            if task.recording {
                continue;
            }
            let r = h.report();
            let Some(last) = r.checkpoints.last else {
                continue;
            };
            if task.record.get().is_some_and(|had| had >= last.id) {
                continue;
            }
            let location = format!("{}/{}/chk-{}", url.trim_end_matches('/'), h.name(), last.id);
            task.recording = true;
            writes.push((
                id.clone(),
                task.token.clone(),
                CheckpointMeta {
                    id: last.id,
                    offsets: r.checkpoints.last_offsets.clone(),
                    state_paths: [(id.clone(), location)].into(),
                    completed_at_ms: last.completed_at_ms,
                    epoch: task.token.epoch,
                    worker: task.token.worker.clone(),
                    transactional_id: None,
                },
            ));
        }
        for (id, token, meta) in writes {
            let chk = meta.id;
            self.coord
                .send(WriteCheckpoint {
                    token: token.clone(),
                    meta,
                })
                .into_actor(self)
                .map(move |res, act, ctx| {
                    let Some(task) = act.tasks.get_mut(&id) else {
                        return;
                    };
                    if task.token != token {
                        return;
                    }
                    task.recording = false;
                    match res {
                        Ok(Ok(())) => task.record.set(chk),
                        Ok(Err(CoordError::Invalid { .. })) => {
                            // Already recorded (a write that timed out and
                            // landed): nothing older may replace it.
                            task.record.set(chk)
                        }
                        Ok(Err(e)) => act.on_write_failed(&token, &e, ctx),
                        Err(e) => tracing::debug!(error = %e, "coordination actor unavailable"),
                    }
                })
                .spawn(ctx);
        }
    }

    /// Reports each task FAILED past its restart policy (once its FAILED state was sent) to
    /// the leader, once per assignment token; a task that could not even be built only after
    /// `build_failure_delay`. A failed report is retried on the next tick.
    fn report_failures(&mut self, ctx: &mut Context<Self>) {
        let delay = self.cfg.build_failure_delay;
        let mut reports = Vec::new();
        for task in self.tasks.values_mut() {
            if task.report != FailureReport::NotSent
                || task.status() != Some(TaskStatus::Failed)
                || task.published.map(|(s, _)| s) != Some(TaskStatus::Failed)
            {
                continue;
            }
            if let Phase::BuildFailed(_, since) = &task.phase {
                if since.elapsed() < delay {
                    continue;
                }
            }
            let v = task.view();
            let error = v.last_error.unwrap_or_else(|| TaskError {
                message: "failed (no error recorded)".into(),
                at_ms: crate::coord::model::now_ms(),
            });
            task.report = FailureReport::InFlight;
            reports.push(ReportFailure {
                token: task.token.clone(),
                error,
                restarts: v.restarts,
            });
        }
        for msg in reports {
            let token = msg.token.clone();
            tracing::warn!(task = %token.task, epoch = token.epoch, restarts = msg.restarts, error = %msg.error.message,
                "task FAILED past its restart policy: reporting it to the leader");
            self.coord
                .send(msg)
                .into_actor(self)
                .map(move |res, act, ctx| {
                    let outcome = match res {
                        Ok(Ok(())) => FailureReport::Done,
                        Ok(Err(e @ CoordError::Fenced { .. })) => {
                            act.on_write_failed(&token, &e, ctx);
                            FailureReport::Done
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(task = %token.task, error = %e, "failure not reported; will retry");
                            FailureReport::NotSent
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "coordination actor unavailable");
                            FailureReport::NotSent
                        }
                    };
                    if let Some(t) = act.tasks.get_mut(&token.task) {
                        if t.token == token {
                            t.report = outcome;
                        }
                    }
                })
                .spawn(ctx);
        }
    }

    fn on_write_failed(&mut self, token: &FenceToken, e: &CoordError, ctx: &mut Context<Self>) {
        match e {
            CoordError::Fenced { .. } => {
                if self
                    .tasks
                    .get(&token.task)
                    .is_none_or(|t| &t.token != token)
                {
                    return;
                }
                // A cancelled job's assignment goes before its tasks stop
                // (as its stop request says): a write fenced meanwhile is no
                // move. Give the job's removal a moment to arrive; a task
                // that really moved away is aborted then. (Its writes are
                // fenced meanwhile, in ZooKeeper and by the broker.)
                tracing::warn!(task = %token.task, error = %e, "fenced: the task moved away or its job is being cancelled");
                let token = token.clone();
                ctx.run_later(FENCED_GRACE, move |act, _| {
                    let still_here = act.tasks.get(&token.task).is_some_and(|t| t.token == token);
                    if still_here && act.desired.contains_key(&token.job) {
                        act.stop_task(&token.task, StopMode::Abort, "fenced: the task moved away");
                    }
                });
            }
            _ => {
                tracing::warn!(task = %token.task, error = %e, "task state not published; will retry");
                if let Some(t) = self.tasks.get_mut(&token.task) {
                    t.published = None;
                }
            }
        }
    }

    fn probe_progress(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let every = Duration::from_secs(2);
        let mut due = Vec::new();
        for (id, task) in self.tasks.iter_mut() {
            let Some(probe) = task.probe.clone() else {
                continue;
            };
            if task.probing
                || task
                    .last_probe
                    .is_some_and(|t| now.duration_since(t) < every)
            {
                continue;
            }
            task.probing = true;
            task.last_probe = Some(now);
            due.push((id.clone(), task.token.clone(), probe));
        }
        for (id, token, probe) in due {
            let fut = tokio::task::spawn_blocking(move || probe.progress());
            async move { fut.await.unwrap_or_else(|e| Err(e.to_string())) }
                .into_actor(self)
                .map(move |res, act, _| {
                    let Some(t) = act.tasks.get_mut(&id) else {
                        return;
                    };
                    if t.token != token {
                        return;
                    }
                    t.probing = false;
                    match res {
                        Ok(p) => t.progress = p,
                        Err(e) => tracing::debug!(task = %id, error = %e, "progress probe failed"),
                    }
                })
                .spawn(ctx);
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.stopping.retain(|(_, h)| !h.status().is_terminal());
        self.release_claims(ctx);
        if !self.lease.is_valid() && !self.tasks.is_empty() {
            if !self.lease_lost_logged {
                tracing::warn!(status = %self.status.get().describe(), "write lease ran out: stopping tasks until ZooKeeper answers again");
                self.lease_lost_logged = true;
            }
            self.abort_all("write lease ran out (ZooKeeper unreachable for too long)");
        } else if !self.lease.is_valid() {
            self.lease_lost_logged = true;
        }
        self.reconcile(ctx);
        self.probe_progress(ctx);
        self.publish(ctx, true);
        self.refresh_view();
    }

    /// Releases the run claims of tasks that can no longer commit anything
    /// (stopped, finished, failed, never started).
    fn release_claims(&mut self, ctx: &mut Context<Self>) {
        let (tasks, stopping) = (&self.tasks, &self.stopping);
        let live = |id: &TaskId| match tasks.get(id) {
            Some(t) => match &t.phase {
                Phase::Starting => true,
                Phase::Running(h) => !h.status().is_terminal(),
                Phase::BuildFailed(..) => false,
            },
            None => stopping.iter().any(|(s, _)| s == id),
        };
        for (job, claim) in self.claims.take_releases(live) {
            handoff::release(self.coord.clone(), job, claim)
                .into_actor(self)
                .map(|failed, act, _| {
                    if let Some((job, claim)) = failed {
                        act.claims.retry(job, claim);
                    }
                })
                .spawn(ctx);
        }
    }

    fn refresh_view(&self) {
        let st = self.status.get();
        self.view.set(WorkerView {
            worker: self.cfg.id.clone(),
            session: st.describe(),
            connected: st.is_connected(),
            leader: st.leader,
            lease_ms: self.lease.remaining().as_millis() as u64,
            job_types: self.registry.names(),
            tasks: self.tasks.values().map(Task::view).collect(),
            address: self.cfg.address.clone(),
            admin: self.cfg.http_admin,
        });
    }
}

impl Actor for WorkerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        let every = (self.cfg.session_timeout / 3).min(Duration::from_secs(2));
        ctx.run_interval(every, |act, ctx| act.renew_lease(ctx));
        ctx.run_interval(Duration::from_millis(250), |act, ctx| act.tick(ctx));
        self.renew_lease(ctx);
    }
}

impl Handler<CoordEvent> for WorkerActor {
    type Result = ();
    fn handle(&mut self, ev: CoordEvent, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        match ev {
            CoordEvent::SessionState(SessionEvent::Connected { session_id }) => {
                tracing::info!(
                    session = format_args!("{session_id:#x}"),
                    "ZooKeeper session connected"
                );
                self.renew_lease(ctx);
            }
            CoordEvent::SessionState(SessionEvent::Disconnected { may_be_alive_until }) => {
                tracing::warn!(
                    alive_for = ?may_be_alive_until.saturating_duration_since(Instant::now()),
                    lease_left = ?self.lease.remaining(),
                    "disconnected from ZooKeeper: tasks keep running while the lease lasts"
                );
            }
            CoordEvent::SessionState(SessionEvent::Expired) => {
                self.lease.revoke();
                self.abort_all("ZooKeeper session expired (this worker may be a zombie)");
                self.desired.clear();
            }
            CoordEvent::AssignmentChanged { job, assignment } => {
                self.on_assignment(job, assignment, ctx)
            }
            CoordEvent::TaskStateWriteFailed { token, error } => {
                self.on_write_failed(&token, &error, ctx)
            }
            CoordEvent::BecameLeader => tracing::info!("this worker is now the leader"),
            CoordEvent::LostLeadership => tracing::warn!("this worker is no longer the leader"),
            CoordEvent::WorkersChanged(ws) => {
                tracing::debug!(workers = ws.len(), "workers changed")
            }
            CoordEvent::JobsChanged(jobs) => {
                let gone: Vec<String> = self
                    .desired
                    .keys()
                    .filter(|j| !jobs.contains(j))
                    .cloned()
                    .collect();
                for j in gone {
                    self.desired.remove(&j);
                }
                self.reconcile(ctx);
            }
        }
    }
}

/// Leaves the cluster cleanly: drains every task (cancel: drain + commit) for at most the
/// configured grace, aborts what is left, deregisters and closes the session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GracefulStop;

impl Handler<GracefulStop> for WorkerActor {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: GracefulStop, _: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        self.desired.clear();
        let ids: Vec<TaskId> = self.tasks.keys().cloned().collect();
        tracing::info!(tasks = ids.len(), "shutting down: draining tasks");
        for id in ids {
            self.stop_task(&id, StopMode::Savepoint, "worker shutting down");
        }
        let handles: Vec<JobHandle> = self.stopping.iter().map(|(_, h)| h.clone()).collect();
        let grace = self.cfg.drain_grace;
        let coord = self.coord.clone();
        Box::pin(
            async move {
                let all = futures::future::join_all(handles.iter().map(|h| h.wait()));
                if tokio::time::timeout(grace, all).await.is_err() {
                    tracing::warn!("drain took longer than {grace:?}: aborting the rest");
                    for h in &handles {
                        h.abort();
                    }
                    let all = futures::future::join_all(handles.iter().map(|h| h.wait()));
                    let _ = tokio::time::timeout(Duration::from_secs(1), all).await;
                }
                match tokio::time::timeout(Duration::from_secs(1), coord.send(Deregister)).await {
                    Ok(Ok(Ok(()))) => tracing::info!("left the cluster"),
                    other => tracing::warn!(
                        ?other,
                        "could not deregister; the session close removes the node"
                    ),
                }
                let _ =
                    tokio::time::timeout(Duration::from_millis(500), coord.send(Shutdown)).await;
            }
            .into_actor(self)
            .map(|_, act, ctx| {
                act.refresh_view();
                ctx.stop();
            }),
        )
    }
}

/// Runs a worker until SIGTERM / Ctrl-C, then leaves cleanly (see [`GracefulStop`]).
/// Serves HTTP on `http` if given. Call inside an actix system.
pub async fn run_worker(
    mut cfg: WorkerConfig,
    registry: JobTypeRegistry,
    http: Option<std::net::SocketAddr>,
) -> ServiceResult<()> {
    if registry.names().is_empty() {
        return Err(ServiceError::Invalid {
            field: "registry".into(),
            reason: "no job type registered".into(),
        });
    }
    let view = SharedView::default();
    let mut server = None;
    if let Some(addr) = http {
        let web = crate::web::WebConfig {
            addr,
            admin: cfg.http_admin,
            zk: cfg.zk.clone(),
            root: cfg.root.clone(),
        };
        let (bound, handle) = crate::web::serve(web, view.clone()).await?;
        if cfg.address.is_empty() {
            cfg.address = bound.to_string();
        }
        tracing::info!(address = %bound, admin = cfg.http_admin, "HTTP endpoint listening");
        server = Some(handle);
    }
    let id = cfg.id.clone();
    let worker = WorkerActor::start_with_coord(cfg, registry, view)?;
    tracing::info!(worker = %id, "worker started");
    crate::actors::shutdown_signal().await;
    tracing::info!(worker = %id, "signal received: leaving the cluster");
    let _ = worker.send(GracefulStop).await;
    if let Some(s) = server {
        s.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Desire;

    /// Two spec reads in flight (two assignment changes of a rescale burst):
    /// whichever order they are answered in, only the newer read's answer
    /// is applied, and tasks wait until it is.
    #[test]
    fn an_older_spec_read_answered_late_is_not_applied() {
        let mut d = Desire::default();
        assert!(d.spec_settled());
        let (older, newer) = (d.spec_read_sent(), d.spec_read_sent());
        assert!(!d.spec_settled(), "reads outstanding: no task starts");
        assert!(d.spec_read_answered(newer));
        assert!(d.spec_settled());
        assert!(!d.spec_read_answered(older), "the older answer is stale");

        let mut d = Desire::default();
        let (older, newer) = (d.spec_read_sent(), d.spec_read_sent());
        assert!(d.spec_read_answered(older), "in order: applied");
        assert!(!d.spec_settled(), "the newer read is still outstanding");
        assert!(d.spec_read_answered(newer));
        assert!(d.spec_settled());
    }
}
