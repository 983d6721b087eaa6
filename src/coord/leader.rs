//! The leader's logic: turn (live workers, submitted jobs) into assignments.
//!
//! Owns: [`Leader`], a plain async struct (no actor, no engine) that watches
//! `/workers`, `/jobs`, every job's `spec` and the children of every job's
//! `failed` directory, computes the placement with
//! [`assign`], writes each changed job assignment
//! (bumping the epoch only of tasks that move or are restarted), re-schedules
//! moved tasks' state (keeping a FAILED task's error), handles failure
//! records, and cleans a cancelled job's znodes. A pass reads concurrently
//! and writes all its changes (assignments, moved tasks' states, removed
//! tasks' znodes) in few fenced multi-ops ([`batch`]); ARCHITECTURE.md has
//! its write budget.
//! Must never: react to its own `Disconnected` (a worker is gone only when its
//! ephemeral node is deleted, i.e. its session really expired); write an
//! assignment without checking that it still holds its election node; read
//! every task's state on a reconciliation (ZooKeeper traffic must grow with
//! failures and moves, not with tasks); write one znode per transaction when
//! a batch can carry it.
//!
//! # Failover of a FAILED task
//! A worker whose task is FAILED past its restart policy writes (fenced)
//! `/jobs/<job>/failed/<task>` = [`FailureRecord`]. The leader has one
//! children watch per job on `failed`, so a record wakes it at once. For a
//! record whose worker and epoch are still the task's assignment, the task is
//! requested with `avoid = <that worker>` (kept in the assignment as
//! [`TaskAssignment::avoid`] while the task runs elsewhere, so later passes do
//! not move it back): it moves,
//! with a new epoch, to the least-loaded other live worker that accepts its
//! job type, and nothing else moves. If no other worker can take it (a single
//! live worker, or the others full) it stays and gets a new epoch on the same
//! worker: the worker sees its token change and restarts it in place. Either
//! way its state is rewritten SCHEDULED for the (new) worker, keeping its
//! `restarts` and `last_error` (the record's error if newer), and then the
//! record is deleted (conditionally on its version, so a newer record written
//! meanwhile survives). Records whose worker/epoch are no longer current
//! (stale, e.g. the task already moved) are only deleted.
//!
//! # Giving up on a task that fails everywhere
//! Each failure's time is kept in the task's assignment
//! ([`TaskAssignment::failed_at_ms`], pruned to [`TASK_FAILURE_WINDOW`]). The
//! failure that makes [`TASK_FAILURE_LIMIT`] within the window ends the
//! moves: the task is taken out of the placement and listed in
//! [`JobAssignment::given_up`] with the reason, and its state is written
//! FAILED with that reason and its last error. No worker runs it until the
//! job is submitted again (cancel, submit), as Flink fails a job whose
//! restart strategy is exhausted.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use zookeeper_client::{Client, OneshotWatcher};

use super::assignment::{assign, TaskRequest};
use super::batch::{self, Op, Unit, DEFAULT_MULTI_BYTES};
use super::election::Leadership;
use super::error::{CoordError, CoordResult};
use super::membership::watch_workers;
use super::model::{
    decode, encode, now_ms, FailureRecord, JobAssignment, JobSpec, TaskAssignment, TaskError,
    TaskId, TaskState, TaskStatus,
};
use super::paths::ZkPaths;
use super::store::{delete_recursive, persistent};

/// Failures (past the task's own restart policy, on any workers) within
/// [`TASK_FAILURE_WINDOW`] after which the leader gives up on a task.
pub const TASK_FAILURE_LIMIT: usize = 3;

/// The window over which [`TASK_FAILURE_LIMIT`] counts failures.
pub const TASK_FAILURE_WINDOW: Duration = Duration::from_secs(600);

/// What one reconciliation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Live workers seen.
    pub workers: usize,
    /// Jobs with a valid spec.
    pub jobs: usize,
    /// Jobs whose assignment was (re)written.
    pub written: Vec<String>,
    /// Tasks placed on a different worker than before (including new ones).
    pub moved: Vec<TaskId>,
    /// Tasks left without a worker (no capacity or no worker accepts the job type).
    pub unassigned: Vec<TaskId>,
    /// Cancelled jobs whose znodes were removed.
    pub cleaned: Vec<String>,
    /// FAILED tasks moved to another worker (also in `moved`).
    pub failed_over: Vec<TaskId>,
    /// FAILED tasks restarted in place with a new epoch (no other worker could take them).
    pub restarted: Vec<TaskId>,
    /// Stale or malformed failure records deleted without acting on them.
    pub stale_failures: usize,
    /// FAILED tasks given up on: failed [`TASK_FAILURE_LIMIT`] times within the window.
    pub given_up: Vec<TaskId>,
    /// Multi-ops the placement was written in (assignments, moved tasks' states, removed
    /// tasks' znodes; see "Write budget" in ARCHITECTURE.md).
    pub transactions: usize,
    /// Milliseconds the pass spent reading, computing the placement, and writing.
    pub timings_ms: [u64; 3],
}

type WatchFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// job -> (`mzxid` read at, assignment).
type AssignmentCache = BTreeMap<String, (i64, Arc<JobAssignment>)>;

/// Jobs whose documents a pass reads at once (each 3 requests in flight on the session).
const READ_CONCURRENCY: usize = 256;

/// Task states a pass reads at once (moved tasks that already have a state).
const STATE_READ_CONCURRENCY: usize = 256;

/// One job as a pass read it.
enum JobRead {
    /// A valid spec: the job's inputs, its watches, stale failure records deleted.
    Input(Box<JobInput>, Vec<OneshotWatcher>, usize),
    /// A bad spec: skipped (its watch kept).
    Skipped(Vec<OneshotWatcher>),
    /// No spec: the job was cancelled and its znodes are now removed.
    Cleaned(String),
}

/// What a pass changes in one job.
struct JobChange<'a> {
    job: &'a JobInput,
    new: JobAssignment,
    moved: Vec<TaskId>,
    restarted: Vec<TaskId>,
    removed: Vec<TaskId>,
}

struct JobInput {
    name: String,
    spec: JobSpec,
    assignment: Arc<JobAssignment>,
    version: Option<i32>,
    /// Current failure records: task -> (record, its znode version).
    failures: BTreeMap<TaskId, (FailureRecord, i32)>,
    /// Recent failure times per task (the assignment's, pruned, plus the current record's).
    history: BTreeMap<TaskId, Vec<u64>>,
    /// Tasks given up on: earlier ones still in the spec, and the ones given up now.
    given_up: BTreeMap<TaskId, String>,
    /// The ones given up in this pass (their state must be written FAILED).
    giving_up: Vec<TaskId>,
}

/// The leader's reconciliation loop over one session (see the module docs).
#[derive(Debug, Clone)]
pub struct Leader {
    client: Client,
    paths: ZkPaths,
    leadership: Leadership,
    resync: Duration,
    multi_bytes: usize,
    /// Assignments as last read, by job, with the `mzxid` they were read at: a pass reads
    /// only the assignments whose `mzxid` changed (a `check_stat`, no data), so what it
    /// decodes grows with the jobs that changed, not with all jobs.
    cache: Arc<Mutex<AssignmentCache>>,
}

impl Leader {
    /// A leader for the session of `client`, which won `leadership`.
    pub fn new(client: Client, paths: ZkPaths, leadership: Leadership) -> Self {
        Leader {
            client,
            paths,
            leadership,
            resync: Duration::from_secs(30),
            multi_bytes: DEFAULT_MULTI_BYTES,
            cache: Arc::default(),
        }
    }

    /// Full reconciliation at least this often even without watch events (default 30 s).
    pub fn with_resync(mut self, every: Duration) -> Self {
        self.resync = every;
        self
    }

    /// Packs a pass's writes into multi-ops of at most this many bytes (estimated; default
    /// [`DEFAULT_MULTI_BYTES`], within ZooKeeper's default `jute.maxbuffer` of 1 MiB).
    pub fn with_multi_bytes(mut self, bytes: usize) -> Self {
        self.multi_bytes = bytes.max(1);
        self
    }

    /// Reconciles until the session is lost or leadership is lost (our election node is
    /// gone), which is the only way it returns. Transient errors are retried with backoff.
    pub async fn run(self) -> CoordResult<()> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.reconcile().await {
                Ok((report, watches)) => {
                    backoff = Duration::from_millis(100);
                    if !report.written.is_empty()
                        || !report.cleaned.is_empty()
                        || report.stale_failures > 0
                    {
                        // Counts, not lists: a pass may move 100,000 tasks.
                        tracing::info!(
                            workers = report.workers,
                            jobs = report.jobs,
                            written = report.written.len(),
                            moved = report.moved.len(),
                            unassigned = report.unassigned.len(),
                            cleaned = report.cleaned.len(),
                            failed_over = report.failed_over.len(),
                            restarted = report.restarted.len(),
                            given_up = report.given_up.len(),
                            stale_failures = report.stale_failures,
                            transactions = report.transactions,
                            read_ms = report.timings_ms[0],
                            place_ms = report.timings_ms[1],
                            write_ms = report.timings_ms[2],
                            "leader reconciled"
                        );
                        tracing::debug!(?report, "leader reconciled (in full)");
                    }
                    if watches.is_empty() {
                        tokio::time::sleep(self.resync).await;
                    } else {
                        let _ =
                            tokio::time::timeout(self.resync, futures::future::select_all(watches))
                                .await;
                    }
                }
                Err(e) if e.is_session_lost() => return Err(e),
                Err(CoordError::NoNode { ref path }) if *path == self.leadership.node => {
                    tracing::warn!(node = %path, "election node gone: no longer leader");
                    return Err(CoordError::NoNode { path: path.clone() });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader reconciliation failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One reconciliation: reads everything (after a `sync`), writes what changed, and
    /// returns the watches to wait on before the next one.
    pub async fn reconcile(&self) -> CoordResult<(ReconcileReport, Vec<WatchFuture>)> {
        let c = &self.client;
        let p = &self.paths;
        let mut watches: Vec<WatchFuture> = Vec::new();
        let mut report = ReconcileReport::default();
        let started = Instant::now();
        c.sync(p.root())
            .await
            .map_err(|e| CoordError::zk(p.root(), e))?;

        let (workers, ww) = watch_workers(c, p).await?;
        watches.push(to_future(ww));
        report.workers = workers.len();

        let jobs_dir = p.jobs();
        let (job_names, jw) = c
            .list_and_watch_children(&jobs_dir)
            .await
            .map_err(|e| CoordError::zk(&jobs_dir, e))?;
        watches.push(to_future(jw));

        // Every job's documents, read concurrently (a pass costs round trips per job, not
        // per task, and they overlap).
        let reads: Vec<CoordResult<JobRead>> = futures::stream::iter(job_names)
            .map(|name| self.read_job(name))
            .buffered(READ_CONCURRENCY)
            .collect()
            .await;
        let mut jobs = Vec::new();
        for r in reads {
            match r? {
                JobRead::Input(input, ws, stale) => {
                    watches.extend(ws.into_iter().map(to_future));
                    report.stale_failures += stale;
                    jobs.push(*input);
                }
                JobRead::Skipped(ws) => watches.extend(ws.into_iter().map(to_future)),
                JobRead::Cleaned(name) => report.cleaned.push(name),
            }
        }
        report.jobs = jobs.len();

        // A task that FAILED on a worker avoids it (now, and in later passes through the
        // assignment's `avoid`), so it moves if another worker can take it.
        let tasks: Vec<TaskRequest> = jobs
            .iter()
            .flat_map(|j| {
                j.spec
                    .task_ids()
                    .into_iter()
                    .filter(|id| !j.given_up.contains_key(id))
                    .map(|id| {
                        let avoid = match j.failures.get(&id) {
                            Some((rec, _)) => Some(rec.worker.clone()),
                            None => j.assignment.tasks.get(&id).and_then(|a| a.avoid.clone()),
                        };
                        TaskRequest {
                            id,
                            job_type: Some(j.spec.job_type.clone()),
                            avoid,
                        }
                    })
            })
            .collect();
        let avoids: BTreeMap<&TaskId, &String> = tasks
            .iter()
            .filter_map(|t| Some((&t.id, t.avoid.as_ref()?)))
            .collect();
        let previous: BTreeMap<TaskId, String> = jobs
            .iter()
            .flat_map(|j| {
                j.assignment
                    .tasks
                    .iter()
                    .map(|(t, a)| (t.clone(), a.worker.clone()))
            })
            .collect();
        let read_done = Instant::now();
        report.timings_ms[0] = (read_done - started).as_millis() as u64;
        let placement = assign(&tasks, &workers, &previous);
        report.unassigned = placement.unassigned.clone();
        if !placement.unassigned.is_empty() {
            tracing::warn!(
                count = placement.unassigned.len(),
                "tasks left unassigned: not enough worker capacity"
            );
        }

        // What changes, job by job (no I/O).
        let place_done = Instant::now();
        report.timings_ms[1] = (place_done - read_done).as_millis() as u64;
        let mut changes: Vec<JobChange<'_>> = Vec::new();
        for job in &jobs {
            let new_epoch = job.assignment.epoch + 1;
            let mut tasks = BTreeMap::new();
            let mut moved = Vec::new();
            let mut restarted = Vec::new();
            for id in job.spec.task_ids() {
                let Some(worker) = placement.tasks.get(&id) else {
                    continue;
                };
                let failed = job.failures.contains_key(&id);
                let epoch = match job.assignment.tasks.get(&id) {
                    Some(old) if &old.worker == worker && !failed => old.epoch,
                    Some(old) if &old.worker == worker => {
                        // FAILED and nowhere else to go: a new epoch restarts it in place.
                        restarted.push(id.clone());
                        new_epoch
                    }
                    _ => {
                        moved.push(id.clone());
                        new_epoch
                    }
                };
                // Remembered only while the task runs elsewhere: once it is (back) on the
                // worker it avoids, for want of another, it counts there like any task.
                let avoid = avoids
                    .get(&id)
                    .filter(|w| **w != worker)
                    .map(|w| (*w).clone());
                let failed_at_ms = job.history.get(&id).cloned().unwrap_or_default();
                tasks.insert(
                    id,
                    TaskAssignment {
                        worker: worker.clone(),
                        epoch,
                        avoid,
                        failed_at_ms,
                    },
                );
            }
            // Failure records of tasks left unassigned (no capacity): nothing to restart.
            let unplaced: Vec<&TaskId> = job
                .failures
                .keys()
                .filter(|t| !tasks.contains_key(*t))
                .collect();
            for t in unplaced {
                let (_, v) = &job.failures[t];
                self.delete_failure(&job.name, &t.to_string(), Some(*v))
                    .await?;
            }
            if tasks == job.assignment.tasks
                && job.given_up == job.assignment.given_up
                && job.version.is_some()
            {
                continue;
            }
            let removed: Vec<TaskId> = job
                .assignment
                .tasks
                .keys()
                .filter(|t| !job.spec.has_task(t.index))
                .cloned()
                .collect();
            changes.push(JobChange {
                job,
                new: JobAssignment {
                    epoch: new_epoch,
                    tasks,
                    given_up: job.given_up.clone(),
                },
                moved,
                restarted,
                removed,
            });
        }

        // The states to rewrite for moved and restarted tasks, read concurrently: one
        // listing of `tasks/` per changed job, then only the tasks that have a directory.
        let needs: Vec<(String, bool)> = changes
            .iter()
            .map(|ch| {
                let any = !(ch.moved.is_empty() && ch.restarted.is_empty());
                (ch.job.name.clone(), any)
            })
            .collect();
        let listings: Vec<CoordResult<BTreeSet<String>>> = futures::stream::iter(needs)
            .map(|(job, any)| self.list_tasks(job, any))
            .buffered(READ_CONCURRENCY)
            .collect()
            .await;
        let mut wanted: Vec<(usize, TaskId, bool)> = Vec::new();
        let mut reads = Vec::new();
        for (k, (ch, listing)) in changes.iter().zip(listings).enumerate() {
            let dirs = listing?;
            for t in ch.moved.iter().chain(&ch.restarted) {
                let name = t.to_string();
                let has_dir = dirs.contains(&name);
                let ta = &ch.new.tasks[t];
                reads.push((
                    has_dir.then(|| self.paths.task_state(&ch.job.name, &name)),
                    ta.worker.clone(),
                    ta.epoch,
                ));
                wanted.push((k, t.clone(), has_dir));
            }
        }
        let states: Vec<CoordResult<(TaskState, Option<i32>)>> = futures::stream::iter(reads)
            .map(|(path, worker, epoch)| self.read_state_if(path, worker, epoch))
            .buffered(STATE_READ_CONCURRENCY)
            .collect()
            .await;

        // One batch for the whole pass: per changed job its assignment, then its moved
        // tasks' states (fenced by it), then its removed tasks' znodes.
        let mut units = Vec::new();
        let mut apaths = BTreeMap::new();
        let mut removals = Vec::new();
        let mut states = states.into_iter();
        let mut wanted = wanted.iter().peekable();
        for (k, ch) in changes.iter().enumerate() {
            let name = &ch.job.name;
            let apath = p.assignment(name);
            let data = encode(&apath, &ch.new)?;
            let (op, version) = match ch.job.version {
                Some(v) => (
                    Op::Set {
                        path: apath.clone(),
                        data,
                        version: Some(v),
                    },
                    v + 1,
                ),
                None => (
                    Op::Create {
                        path: apath.clone(),
                        data,
                    },
                    0,
                ),
            };
            units.push(Unit {
                ops: vec![op],
                fenced_by: None,
                optional: false,
                writes_assignment: Some((name.clone(), version)),
            });
            apaths.insert(name.clone(), apath);
            while let Some((_, t, has_dir)) = wanted.next_if(|(j, _, _)| *j == k) {
                let (state, expected) = states.next().expect("one state per wanted task")?;
                let ta = &ch.new.tasks[t];
                let failure = ch.job.failures.get(t).map(|(r, _)| r);
                let state = rescheduled(state, ta, failure);
                let tname = t.to_string();
                let path = p.task_state(name, &tname);
                let data = encode(&path, &state)?;
                let mut ops = Vec::new();
                if !has_dir {
                    ops.push(Op::Create {
                        path: p.task(name, &tname),
                        data: Vec::new(),
                    });
                }
                ops.push(match expected {
                    Some(v) => Op::Set {
                        path,
                        data,
                        version: Some(v),
                    },
                    None => Op::Create { path, data },
                });
                // Optional: the new worker (or a newer pass) may have written first; its
                // state wins.
                units.push(Unit {
                    ops,
                    fenced_by: Some(name.clone()),
                    optional: true,
                    writes_assignment: None,
                });
            }
            for t in &ch.removed {
                let tname = t.to_string();
                removals.push((units.len(), p.task(name, &tname)));
                units.push(Unit {
                    ops: vec![
                        Op::Delete {
                            path: p.task_state(name, &tname),
                            version: None,
                        },
                        Op::Delete {
                            path: p.task(name, &tname),
                            version: None,
                        },
                    ],
                    fenced_by: None,
                    optional: true,
                    writes_assignment: None,
                });
            }
        }
        if !units.is_empty() {
            let done =
                batch::commit(c, &self.leadership.node, &apaths, &units, self.multi_bytes).await?;
            report.transactions = done.transactions;
            // A removed task whose znodes were not exactly `<task>/state`: delete its tree.
            for (u, dir) in &removals {
                if done.dropped.binary_search(u).is_ok() {
                    delete_recursive(c, dir).await?;
                }
            }
            tracing::debug!(
                transactions = done.transactions,
                ops = done.ops,
                dropped = done.dropped.len(),
                "placement written"
            );
        }

        for ch in changes {
            let job = ch.job;
            report.written.push(job.name.clone());
            for t in &job.giving_up {
                let (rec, _) = &job.failures[t];
                let reason = &job.given_up[t];
                tracing::error!(task = %t, worker = %rec.worker, error = %rec.error, "task FAILED past its restart policy: {reason}");
                self.give_up(&job.name, t, rec, reason).await?;
                report.given_up.push(t.clone());
            }
            for (t, (rec, v)) in &job.failures {
                if let Some(ta) = ch.new.tasks.get(t) {
                    tracing::warn!(
                        task = %t, from = %rec.worker, to = %ta.worker, epoch = ta.epoch,
                        error = %rec.error,
                        "task FAILED past its restart policy: {}",
                        if ta.worker == rec.worker { "restarting it in place (no other worker can take it)" } else { "moved to another worker" }
                    );
                    if ta.worker == rec.worker {
                        report.restarted.push(t.clone());
                    } else {
                        report.failed_over.push(t.clone());
                    }
                }
                self.delete_failure(&job.name, &t.to_string(), Some(*v))
                    .await?;
            }
            report.moved.extend(ch.moved);
        }
        report.timings_ms[2] = place_done.elapsed().as_millis() as u64;
        // Forget cancelled jobs.
        if let Ok(mut m) = self.cache.lock() {
            let live: BTreeSet<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
            m.retain(|j, _| live.contains(j.as_str()));
        }
        Ok((report, watches))
    }

    /// The task directories of a changed job (empty when it has none yet: a new job, or
    /// nothing to rewrite).
    async fn list_tasks(&self, job: String, any: bool) -> CoordResult<BTreeSet<String>> {
        if !any {
            return Ok(BTreeSet::new());
        }
        let dir = self.paths.tasks(&job);
        match self.client.list_children(&dir).await {
            Ok(children) => Ok(children.into_iter().collect()),
            Err(zookeeper_client::Error::NoNode) => Ok(BTreeSet::new()),
            Err(e) => Err(CoordError::zk(&dir, e)),
        }
    }

    /// A job's assignment and its version (`None`: none yet), from the cache when its
    /// `mzxid` is unchanged.
    async fn read_assignment(&self, job: &str) -> CoordResult<(Arc<JobAssignment>, Option<i32>)> {
        let c = &self.client;
        let apath = self.paths.assignment(job);
        let cached = self.cache.lock().ok().and_then(|m| m.get(job).cloned());
        if let Some((mzxid, a)) = cached {
            match c.check_stat(&apath).await {
                Ok(Some(stat)) if stat.mzxid == mzxid => return Ok((a, Some(stat.version))),
                Ok(_) => {}
                Err(e) => return Err(CoordError::zk(&apath, e)),
            }
        }
        match c.get_data(&apath).await {
            Ok((data, stat)) => match decode::<JobAssignment>(&apath, &data) {
                Ok(a) => {
                    let a = Arc::new(a);
                    if let Ok(mut m) = self.cache.lock() {
                        m.insert(job.to_string(), (stat.mzxid, a.clone()));
                    }
                    Ok((a, Some(stat.version)))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "overwriting malformed assignment");
                    Ok((Arc::default(), Some(stat.version)))
                }
            },
            Err(zookeeper_client::Error::NoNode) => Ok((Arc::default(), None)),
            Err(e) => Err(CoordError::zk(&apath, e)),
        }
    }

    /// A moved task's current state (see [`Self::read_task_state`]); SCHEDULED without a read
    /// when it has no directory (`path` is `None`).
    async fn read_state_if(
        &self,
        path: Option<String>,
        worker: String,
        epoch: u64,
    ) -> CoordResult<(TaskState, Option<i32>)> {
        match path {
            Some(path) => self.read_task_state(&path, &worker, epoch).await,
            None => Ok((TaskState::scheduled(&worker, epoch), None)),
        }
    }

    /// Reads one job's documents for a pass: its spec (watched), assignment and failure
    /// records (watched); deletes stale failure records; cleans the job if its spec is gone.
    async fn read_job(&self, name: String) -> CoordResult<JobRead> {
        let c = &self.client;
        let p = &self.paths;
        let mut watches = Vec::new();
        let spec_path = p.spec(&name);
        let spec = match c.get_and_watch_data(&spec_path).await {
            Ok((data, _, w)) => {
                watches.push(w);
                match decode::<JobSpec>(&spec_path, &data).and_then(|s| s.validate().map(|_| s)) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, job = %name, "skipping job with a bad spec");
                        return Ok(JobRead::Skipped(watches));
                    }
                }
            }
            Err(zookeeper_client::Error::NoNode) => {
                self.clean_job(&name).await?;
                return Ok(JobRead::Cleaned(name));
            }
            Err(e) => return Err(CoordError::zk(&spec_path, e)),
        };
        let (assignment, version) = self.read_assignment(&name).await?;
        let (records, fw) = self.watch_failures(&name).await?;
        if let Some(w) = fw {
            watches.push(w);
        }
        let mut failures = BTreeMap::new();
        let mut stale = 0;
        for (child, rec) in records {
            let current = rec.as_ref().and_then(|(r, v)| {
                let id: TaskId = child.parse().ok()?;
                let held = assignment.tasks.get(&id)?;
                (id.job == name
                    && spec.has_task(id.index)
                    && held.worker == r.worker
                    && held.epoch == r.epoch)
                    .then(|| (id, (r.clone(), *v)))
            });
            match current {
                Some((id, rec)) => {
                    failures.insert(id, rec);
                }
                None => {
                    let version = rec.map(|(_, v)| v);
                    tracing::info!(job = %name, task = %child, "deleting a stale failure record");
                    self.delete_failure(&name, &child, version).await?;
                    stale += 1;
                }
            }
        }
        let now = now_ms();
        let window = TASK_FAILURE_WINDOW.as_millis() as u64;
        let mut history = BTreeMap::new();
        let mut given_up: BTreeMap<TaskId, String> = assignment
            .given_up
            .iter()
            .filter(|(t, _)| spec.has_task(t.index))
            .map(|(t, r)| (t.clone(), r.clone()))
            .collect();
        let mut giving_up = Vec::new();
        // Only tasks with failures have a history: no per-task work for the others.
        let failing = assignment
            .tasks
            .iter()
            .filter(|(_, a)| !a.failed_at_ms.is_empty())
            .map(|(t, _)| t)
            .chain(failures.keys())
            .filter(|t| spec.has_task(t.index))
            .cloned()
            .collect::<BTreeSet<TaskId>>();
        for id in failing {
            let mut times: Vec<u64> = assignment
                .tasks
                .get(&id)
                .map(|a| a.failed_at_ms.clone())
                .unwrap_or_default();
            if let Some((rec, _)) = failures.get(&id) {
                times.push(rec.at_ms);
            }
            times.retain(|&t| t.saturating_add(window) > now);
            times.sort_unstable();
            if failures.contains_key(&id)
                && times.len() >= TASK_FAILURE_LIMIT
                && !given_up.contains_key(&id)
            {
                let (rec, _) = &failures[&id];
                given_up.insert(
                    id.clone(),
                    format!(
                        "given up: FAILED {} times within {} s (last on worker {}); not placed again until the job is submitted again; last error: {}",
                        times.len(),
                        TASK_FAILURE_WINDOW.as_secs(),
                        rec.worker,
                        rec.error
                    ),
                );
                giving_up.push(id.clone());
            }
            if !times.is_empty() {
                history.insert(id, times);
            }
        }
        Ok(JobRead::Input(
            Box::new(JobInput {
                name,
                spec,
                assignment,
                version,
                failures,
                history,
                given_up,
                giving_up,
            }),
            watches,
            stale,
        ))
    }

    /// Lists (and watches) a job's failure records, each read with its version (`None` when
    /// it is malformed: it is then deleted as stale). Creates the `failed` directory of a
    /// job submitted before failure records existed.
    #[allow(clippy::type_complexity)]
    async fn watch_failures(
        &self,
        job: &str,
    ) -> CoordResult<(
        Vec<(String, Option<(FailureRecord, i32)>)>,
        Option<OneshotWatcher>,
    )> {
        let c = &self.client;
        let dir = self.paths.failed(job);
        let (children, w) = match c.list_and_watch_children(&dir).await {
            Ok(x) => x,
            Err(zookeeper_client::Error::NoNode) => {
                // `create`, not `mkdir`: never resurrect the directory of a job being cleaned.
                match c.create(&dir, b"", &persistent()).await {
                    Ok(_) | Err(zookeeper_client::Error::NodeExists) => {}
                    Err(zookeeper_client::Error::NoNode) => return Ok((Vec::new(), None)),
                    Err(e) => return Err(CoordError::zk(&dir, e)),
                }
                match c.list_and_watch_children(&dir).await {
                    Ok(x) => x,
                    Err(zookeeper_client::Error::NoNode) => return Ok((Vec::new(), None)),
                    Err(e) => return Err(CoordError::zk(&dir, e)),
                }
            }
            Err(e) => return Err(CoordError::zk(&dir, e)),
        };
        let mut out = Vec::with_capacity(children.len());
        for child in children {
            let path = self.paths.failed_task(job, &child);
            match c.get_data(&path).await {
                Ok((data, stat)) => match decode::<FailureRecord>(&path, &data) {
                    Ok(r) => out.push((child, Some((r, stat.version)))),
                    Err(e) => {
                        tracing::warn!(error = %e, "malformed failure record");
                        out.push((child, None));
                    }
                },
                Err(zookeeper_client::Error::NoNode) => {}
                Err(e) => return Err(CoordError::zk(&path, e)),
            }
        }
        Ok((out, Some(w)))
    }

    /// Deletes a failure record at `version` (`None`: any). A record that is gone, or that
    /// was rewritten meanwhile (a newer failure, handled on the next pass), is left alone.
    async fn delete_failure(&self, job: &str, task: &str, version: Option<i32>) -> CoordResult<()> {
        let path = self.paths.failed_task(job, task);
        match self.client.delete(&path, version).await {
            Ok(()) | Err(zookeeper_client::Error::NoNode | zookeeper_client::Error::BadVersion) => {
                Ok(())
            }
            Err(e) => Err(CoordError::zk(&path, e)),
        }
    }

    /// A task's published state and its znode version; SCHEDULED on `worker` at `epoch` when
    /// there is none (version `None`) or it is malformed (replaced, with a warning).
    async fn read_task_state(
        &self,
        path: &str,
        worker: &str,
        epoch: u64,
    ) -> CoordResult<(TaskState, Option<i32>)> {
        match self.client.get_data(path).await {
            Ok((data, stat)) => match decode::<TaskState>(path, &data) {
                Ok(s) => Ok((s, Some(stat.version))),
                Err(e) => {
                    tracing::warn!(error = %e, "replacing malformed task state");
                    Ok((TaskState::scheduled(worker, epoch), Some(stat.version)))
                }
            },
            Err(zookeeper_client::Error::NoNode) => Ok((TaskState::scheduled(worker, epoch), None)),
            Err(e) => Err(CoordError::zk(path, e)),
        }
    }

    /// Writes the state of a task given up on: FAILED, its restarts and the reason (which
    /// ends with its last error) as its last error. Unconditional: no worker holds the task.
    async fn give_up(
        &self,
        job: &str,
        task: &TaskId,
        failure: &FailureRecord,
        reason: &str,
    ) -> CoordResult<()> {
        let path = self.paths.task_state(job, &task.to_string());
        let (mut state, _) = self
            .read_task_state(&path, &failure.worker, failure.epoch)
            .await?;
        state.state = TaskStatus::Failed;
        state.restarts = state.restarts.max(failure.restarts);
        state.last_error = Some(TaskError {
            message: reason.to_string(),
            at_ms: failure.at_ms,
        });
        state.updated_at_ms = now_ms();
        let data = encode(&path, &state)?;
        match self.client.set_data(&path, &data, None).await {
            Ok(_) => Ok(()),
            Err(zookeeper_client::Error::NoNode) => {
                match self.client.create(&path, &data, &persistent()).await {
                    Ok(_) | Err(zookeeper_client::Error::NodeExists) => Ok(()),
                    Err(e) => Err(CoordError::zk(&path, e)),
                }
            }
            Err(e) => Err(CoordError::zk(&path, e)),
        }
    }

    /// Removes a cancelled job: first its assignment (workers watching it stop the tasks),
    /// then the whole `/jobs/<job>` subtree (FLINK-25486: never leave a dead job's znodes).
    async fn clean_job(&self, job: &str) -> CoordResult<()> {
        let apath = self.paths.assignment(job);
        match self.client.delete(&apath, None).await {
            Ok(()) | Err(zookeeper_client::Error::NoNode) => {}
            Err(e) => return Err(CoordError::zk(&apath, e)),
        }
        delete_recursive(&self.client, &self.paths.job(job)).await?;
        tracing::info!(job, "cancelled job cleaned");
        Ok(())
    }
}

fn to_future(w: OneshotWatcher) -> WatchFuture {
    Box::pin(async move {
        let _ = w.changed().await;
    })
}

/// A moved (or restarted) task's state for its new worker and epoch: SCHEDULED (unless
/// terminal and not a `failure` being handled: a FAILED task moved off a dead worker stays
/// FAILED), restarts, offsets and the last error kept; with a `failure` record, its error
/// replaces an older `last_error` and its restart count a smaller one.
fn rescheduled(
    mut state: TaskState,
    ta: &TaskAssignment,
    failure: Option<&FailureRecord>,
) -> TaskState {
    if !state.state.is_terminal() || failure.is_some() {
        state.state = TaskStatus::Scheduled;
    }
    if let Some(f) = failure {
        state.restarts = state.restarts.max(f.restarts);
        if state.last_error.as_ref().is_none_or(|e| e.at_ms < f.at_ms) {
            state.last_error = Some(TaskError {
                message: f.error.clone(),
                at_ms: f.at_ms,
            });
        }
    }
    state.worker.clone_from(&ta.worker);
    state.epoch = ta.epoch;
    state.updated_at_ms = now_ms();
    state
}
