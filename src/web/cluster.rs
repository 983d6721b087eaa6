//! The cluster as the dashboard shows it: `/api/cluster`, `/api/jobs/{name}`
//! and `/api/workers/{id}`.
//!
//! Owns: [`ClusterReader`], which reads the cluster from ZooKeeper (through
//! [`crate::service::admin`], on a session of its own, opened on first use
//! and again after an error) and from the live workers' `/api/tasks` (rates,
//! stages, backpressure, watermarks, histories; this worker's own view is read
//! in memory), merges the two, and remembers the workers it saw so that a
//! worker that vanished is shown as gone; the JSON documents ([`ClusterView`],
//! [`JobDetail`], [`WorkerDetail`]); and the admin operations it forwards
//! (cancel, rescale: only called by the `--http-admin` routes).
//! Must never: write to ZooKeeper except through those two admin operations,
//! trust a worker's metrics for a task it no longer holds (a live view counts
//! only for the task id, worker and epoch of the current assignment), or wait
//! on an unreachable worker longer than [`PEER_TIMEOUT`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zookeeper_client::Client;

use super::client::PeerClient;
use super::WebError;
use crate::actors::CheckpointSummary;
use crate::coord::model::now_ms;
use crate::coord::{TaskError, ZkPaths};
use crate::service::admin::{self, ClusterStatus, JobStatus, TaskRow, WorkerRow};
use crate::service::view::SAMPLE_EVERY_MS;
use crate::service::{Sample, ServiceError, ServiceResult, SharedView, TaskView, WorkerView};

/// The longest wait on another worker's API.
pub const PEER_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a worker that left is still listed as gone.
pub const GONE_FOR_MS: u64 = 10 * 60 * 1000;
/// How long ZooKeeper may take to answer a (re)connection.
const ZK_WAIT: Duration = Duration::from_secs(3);

/// One live worker in [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerSummary {
    /// Worker id.
    pub id: String,
    /// HTTP address.
    pub address: String,
    /// Most tasks it runs.
    pub capacity: u32,
    /// Tasks assigned to it (ZooKeeper).
    pub assigned: usize,
    /// Tasks it runs (its own view; 0 when unreachable).
    pub running: usize,
    /// Job types it runs.
    pub job_types: Vec<String>,
    /// Version.
    pub version: String,
    /// Whether its API answered.
    pub reachable: bool,
    /// Why not, when it did not.
    pub unreachable_reason: Option<String>,
    /// Whether it leads the cluster (its own view).
    pub leader: bool,
    /// Its ZooKeeper session, in words (its own view).
    pub session: String,
    /// Records read per second by its tasks.
    pub records_in_per_s: f64,
    /// Records written per second by its tasks.
    pub records_out_per_s: f64,
}

/// A worker that was seen live and is no longer registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoneWorker {
    /// Worker id.
    pub id: String,
    /// Its last HTTP address.
    pub address: String,
    /// When this dashboard last saw it registered (ms since the Unix epoch).
    pub last_seen_ms: u64,
}

/// One job in [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    /// Job name.
    pub name: String,
    /// Job type.
    pub job_type: String,
    /// Parallelism.
    pub parallelism: u32,
    /// Summary state (as `weir status`).
    pub state: String,
    /// Assignment epoch.
    pub epoch: u64,
    /// Tasks.
    pub tasks: usize,
    /// Tasks RUNNING.
    pub running: usize,
    /// Records read.
    pub records_in: u64,
    /// Records written.
    pub records_out: u64,
    /// Records behind.
    pub lag: u64,
    /// Records read per second.
    pub records_in_per_s: f64,
    /// Records written per second.
    pub records_out_per_s: f64,
    /// Restarts over its tasks.
    pub restarts: u64,
    /// What could not be read, if anything.
    pub error: Option<String>,
}

/// `/api/cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The worker that served this.
    pub served_by: String,
    /// Whether that worker allows cancel and rescale.
    pub admin: bool,
    /// The leading worker, if one said so.
    pub leader: Option<String>,
    /// Live workers.
    pub workers: Vec<WorkerSummary>,
    /// Workers seen before and gone now (newest first).
    pub gone: Vec<GoneWorker>,
    /// Jobs.
    pub jobs: Vec<JobSummary>,
    /// When this was read (ms since the Unix epoch).
    pub at_ms: u64,
}

/// One task in [`JobDetail`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDetail {
    /// Task id.
    pub task: String,
    /// The job stage it runs and its index there (`"count[2]"`); empty for
    /// a single-stage job.
    #[serde(default)]
    pub job_stage: String,
    /// Assigned worker (`null`: none).
    pub worker: Option<String>,
    /// Whether that worker is registered and its API answered.
    pub worker_reachable: bool,
    /// State (as `weir status`).
    pub state: String,
    /// Assignment epoch.
    pub epoch: u64,
    /// Restarts.
    pub restarts: u32,
    /// Last error, with its time.
    pub last_error: Option<TaskError>,
    /// Records read.
    pub records_in: u64,
    /// Records written.
    pub records_out: u64,
    /// Records read per second.
    pub records_in_per_s: f64,
    /// Records written per second.
    pub records_out_per_s: f64,
    /// Records behind.
    pub lag: u64,
    /// Time its actors waited on full mailboxes, ms.
    pub backpressure_ms: u64,
    /// Lowest stage watermark (event time, ms).
    pub watermark: Option<i64>,
    /// Late records.
    pub late_records: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Latest completed checkpoint.
    pub checkpoint: Option<CheckpointSummary>,
    /// Checkpoints that failed.
    pub checkpoint_failures: u64,
    /// The checkpoint ZooKeeper records for the task (what a move or restart restores from).
    pub recorded_checkpoint: Option<crate::coord::CheckpointMeta>,
    /// Whether the counters come from the worker itself (else from ZooKeeper,
    /// published at most every second, without rates out, stages or watermark).
    pub live: bool,
    /// When ZooKeeper's copy of its state was written (ms since the Unix epoch).
    pub updated_at_ms: u64,
}

/// One stage of a job, summed over its tasks' instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSummary {
    /// Stage name (the instance names without `#<subtask>`).
    pub stage: String,
    /// Instances (over the live tasks).
    pub instances: usize,
    /// Records received.
    pub records_in: u64,
    /// Records emitted.
    pub records_out: u64,
    /// Time waited on full downstream mailboxes, ms.
    pub backpressure_ms: u64,
    /// Late records.
    pub late_records: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Lowest watermark over the instances.
    pub watermark: Option<i64>,
}

/// An error of one task, with its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEntry {
    /// Task id.
    pub task: String,
    /// Worker it is assigned to.
    pub worker: Option<String>,
    /// The error.
    pub message: String,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
}

/// One point of a job's chart.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// Records read per second over the job's live tasks.
    pub records_in_per_s: f64,
    /// Records written per second.
    pub records_out_per_s: f64,
    /// Records behind.
    pub lag: u64,
}

/// `/api/jobs/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    /// The worker that served this.
    pub served_by: String,
    /// Whether that worker allows cancel and rescale.
    pub admin: bool,
    /// Summary, as in [`ClusterView`].
    pub summary: JobSummary,
    /// Parameters.
    pub config: BTreeMap<String, String>,
    /// The job's stages (split at its `key_by`s, each run as its own
    /// tasks) with their parallelism; empty for a single-stage job.
    #[serde(default)]
    pub job_stages: Vec<crate::coord::model::StageSpec>,
    /// Tasks.
    pub tasks: Vec<TaskDetail>,
    /// Stages, summed over the live tasks.
    pub stages: Vec<StageSummary>,
    /// The tasks' errors, newest first.
    pub errors: Vec<ErrorEntry>,
    /// Records per second and lag of the last 5 minutes (a point every 2 s, oldest first).
    pub history: Vec<Point>,
    /// When this was read (ms since the Unix epoch).
    pub at_ms: u64,
}

/// One task as `/api/workers/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignedTask {
    /// Job name.
    pub job: String,
    /// Task id.
    pub task: String,
    /// State (as `weir status`).
    pub state: String,
    /// Assignment epoch.
    pub epoch: u64,
}

/// `/api/workers/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerDetail {
    /// The worker that served this.
    pub served_by: String,
    /// Whether that worker allows cancel and rescale.
    pub admin: bool,
    /// The worker, when it is registered.
    pub worker: Option<WorkerSummary>,
    /// When it is not: when it was last seen.
    pub gone: Option<GoneWorker>,
    /// The tasks ZooKeeper assigns to it.
    pub assigned: Vec<AssignedTask>,
    /// Its own view of its tasks (when it answered).
    pub tasks: Vec<TaskView>,
}

/// Reads the cluster (see the module docs).
#[derive(Debug)]
pub struct ClusterReader {
    zk: String,
    paths: ZkPaths,
    client: tokio::sync::Mutex<Option<Client>>,
    peers: PeerClient,
    seen: Mutex<BTreeMap<String, GoneWorker>>,
}

type Lives = BTreeMap<String, Result<WorkerView, String>>;

impl ClusterReader {
    /// A reader of the cluster at `zk` under `root` (connects on first use).
    pub fn new(zk: &str, root: &str) -> ServiceResult<Self> {
        Ok(ClusterReader {
            zk: zk.to_string(),
            paths: ZkPaths::new(root)?,
            client: tokio::sync::Mutex::new(None),
            peers: PeerClient::new(PEER_TIMEOUT),
            seen: Mutex::new(BTreeMap::new()),
        })
    }

    async fn client(&self) -> ServiceResult<Client> {
        let mut g = self.client.lock().await;
        if let Some(c) = g.as_ref() {
            return Ok(c.clone());
        }
        let c = admin::connect(&self.zk, ZK_WAIT, |m| tracing::debug!("dashboard: {m}")).await?;
        *g = Some(c.clone());
        Ok(c)
    }

    /// Forgets the session after an error other than "no such job" (a new one is opened
    /// on the next read).
    async fn after<T>(&self, r: ServiceResult<T>) -> ServiceResult<T> {
        if let Err(e) = &r {
            if !matches!(e, ServiceError::NoSuchJob(_) | ServiceError::Invalid { .. }) {
                tracing::debug!(error = %e, "dashboard: ZooKeeper read failed; reconnecting next time");
                *self.client.lock().await = None;
            }
        }
        r
    }

    async fn status(&self, only: Option<&str>) -> ServiceResult<ClusterStatus> {
        let c = self.client().await?;
        let r = admin::status(&c, &self.paths, only).await;
        self.after(r).await
    }

    /// Cancels `job` with a savepoint, as `weir cancel` does by default (waits at most
    /// `wait` for its znodes to go); whether they are gone.
    pub async fn cancel(&self, job: &str, wait: Duration) -> ServiceResult<bool> {
        let c = self.client().await?;
        let r = admin::cancel(
            &c,
            &self.paths,
            job,
            crate::coord::StopMode::Savepoint,
            Some(wait),
        )
        .await;
        self.after(r).await
    }

    /// Sets the parallelism of `job`; the old one.
    pub async fn rescale(&self, job: &str, n: u32) -> ServiceResult<u32> {
        let c = self.client().await?;
        let r = admin::rescale(&c, &self.paths, job, None, n).await;
        self.after(r).await
    }

    /// The views of `workers` (this one's from memory, the others' over HTTP, at once).
    async fn lives(&self, local: &SharedView, workers: &[&WorkerRow], history: bool) -> Lives {
        let me = &local.get();
        let path = if history {
            "/api/tasks?history=true"
        } else {
            "/api/tasks"
        };
        let fetches = workers.iter().map(|w| async move {
            let v = if w.id == me.worker {
                Ok(if history {
                    local.get_with_history()
                } else {
                    me.clone()
                })
            } else if w.address.is_empty() {
                Err("no HTTP address".to_string())
            } else {
                self.peers.get_json::<WorkerView>(&w.address, path).await
            };
            (w.id.clone(), v)
        });
        futures::future::join_all(fetches)
            .await
            .into_iter()
            .collect()
    }

    /// Records the registered workers as seen; the ones seen before and gone now.
    fn gone(&self, workers: &[WorkerRow]) -> Vec<GoneWorker> {
        let now = now_ms();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for w in workers {
            seen.insert(
                w.id.clone(),
                GoneWorker {
                    id: w.id.clone(),
                    address: w.address.clone(),
                    last_seen_ms: now,
                },
            );
        }
        seen.retain(|_, g| now.saturating_sub(g.last_seen_ms) <= GONE_FOR_MS);
        let mut gone: Vec<GoneWorker> = seen
            .values()
            .filter(|g| !workers.iter().any(|w| w.id == g.id))
            .cloned()
            .collect();
        gone.sort_by_key(|g| std::cmp::Reverse(g.last_seen_ms));
        gone
    }

    /// `/api/cluster`.
    pub async fn cluster(&self, local: &SharedView, admin: bool) -> ServiceResult<ClusterView> {
        let st = self.status(None).await?;
        let rows: Vec<&WorkerRow> = st.workers.iter().collect();
        let lives = self.lives(local, &rows, false).await;
        let gone = self.gone(&st.workers);
        let workers: Vec<WorkerSummary> = st
            .workers
            .iter()
            .map(|w| worker_summary(w, lives.get(&w.id)))
            .collect();
        let leader = workers.iter().find(|w| w.leader).map(|w| w.id.clone());
        let jobs = st.jobs.iter().map(|j| job_summary(j, &lives)).collect();
        Ok(ClusterView {
            served_by: local.get().worker,
            admin,
            leader,
            workers,
            gone,
            jobs,
            at_ms: now_ms(),
        })
    }

    /// `/api/jobs/{name}`.
    pub async fn job(
        &self,
        local: &SharedView,
        admin: bool,
        name: &str,
    ) -> ServiceResult<JobDetail> {
        let st = self.status(Some(name)).await?;
        self.gone(&st.workers);
        let job = st
            .jobs
            .into_iter()
            .next()
            .ok_or_else(|| ServiceError::NoSuchJob(name.to_string()))?;
        let hosting: Vec<&WorkerRow> = st
            .workers
            .iter()
            .filter(|w| job.tasks.iter().any(|t| t.worker.as_ref() == Some(&w.id)))
            .collect();
        let lives = self.lives(local, &hosting, true).await;
        let now = now_ms();
        let mut tasks = Vec::new();
        let mut live_tasks = Vec::new();
        for row in &job.tasks {
            let live = live_task(&lives, row);
            let reachable = row
                .worker
                .as_ref()
                .is_some_and(|w| matches!(lives.get(w), Some(Ok(_))));
            tasks.push(task_detail(row, live, reachable));
            live_tasks.extend(live);
        }
        let mut errors: Vec<ErrorEntry> = tasks
            .iter()
            .filter_map(|t| {
                t.last_error.as_ref().map(|e| ErrorEntry {
                    task: t.task.clone(),
                    worker: t.worker.clone(),
                    message: e.message.clone(),
                    at_ms: e.at_ms,
                })
            })
            .collect();
        errors.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
        Ok(JobDetail {
            served_by: local.get().worker,
            admin,
            summary: job_summary(&job, &lives),
            config: job.config.clone(),
            job_stages: job.stages.clone(),
            stages: stages(&live_tasks),
            history: history(&live_tasks, now),
            tasks,
            errors,
            at_ms: now,
        })
    }

    /// `/api/workers/{id}`.
    pub async fn worker(
        &self,
        local: &SharedView,
        admin: bool,
        id: &str,
    ) -> Result<WorkerDetail, WebError> {
        let st = self.status(None).await?;
        let gone = self.gone(&st.workers);
        let assigned: Vec<AssignedTask> = st
            .jobs
            .iter()
            .flat_map(|j| {
                j.tasks
                    .iter()
                    .filter(|t| t.worker.as_deref() == Some(id))
                    .map(|t| AssignedTask {
                        job: j.name.clone(),
                        task: t.task.clone(),
                        state: t.state.clone(),
                        epoch: t.epoch,
                    })
            })
            .collect();
        let served_by = local.get().worker;
        match st.workers.iter().find(|w| w.id == id) {
            Some(row) => {
                let lives = self.lives(local, &[row], false).await;
                let live = lives.get(id);
                Ok(WorkerDetail {
                    served_by,
                    admin,
                    worker: Some(worker_summary(row, live)),
                    gone: None,
                    assigned,
                    tasks: match live {
                        Some(Ok(v)) => v.tasks.clone(),
                        _ => Vec::new(),
                    },
                })
            }
            None => match gone.into_iter().find(|g| g.id == id) {
                Some(g) => Ok(WorkerDetail {
                    served_by,
                    admin,
                    worker: None,
                    gone: Some(g),
                    assigned,
                    tasks: Vec::new(),
                }),
                None => Err(WebError::NotFound(format!("no worker named {id:?}"))),
            },
        }
    }
}

fn worker_summary(w: &WorkerRow, live: Option<&Result<WorkerView, String>>) -> WorkerSummary {
    let mut s = WorkerSummary {
        id: w.id.clone(),
        address: w.address.clone(),
        capacity: w.capacity,
        assigned: w.tasks,
        running: 0,
        job_types: w.job_types.clone(),
        version: w.version.clone(),
        reachable: false,
        unreachable_reason: None,
        leader: false,
        session: String::new(),
        records_in_per_s: 0.0,
        records_out_per_s: 0.0,
    };
    match live {
        Some(Ok(v)) => {
            s.reachable = true;
            s.leader = v.leader;
            s.session.clone_from(&v.session);
            s.running = v
                .tasks
                .iter()
                .filter(|t| t.state == crate::coord::TaskStatus::Running)
                .count();
            // fold from +0.0: an empty f64 sum is -0.0.
            s.records_in_per_s = v.tasks.iter().fold(0.0, |a, t| a + t.records_in_per_s);
            s.records_out_per_s = v.tasks.iter().fold(0.0, |a, t| a + t.records_out_per_s);
        }
        Some(Err(e)) => s.unreachable_reason = Some(e.clone()),
        None => s.unreachable_reason = Some("not asked".into()),
    }
    s
}

/// The worker's own view of the task the assignment names (same worker and epoch).
fn live_task<'a>(lives: &'a Lives, row: &TaskRow) -> Option<&'a TaskView> {
    let w = row.worker.as_ref()?;
    let v = lives.get(w)?.as_ref().ok()?;
    v.tasks
        .iter()
        .find(|t| t.task == row.task && t.epoch == row.epoch)
}

/// Whether the task's worker was asked and did not answer.
fn unreachable(lives: &Lives, row: &TaskRow) -> bool {
    row.worker
        .as_ref()
        .is_some_and(|w| matches!(lives.get(w), Some(Err(_))))
}

fn job_summary(j: &JobStatus, lives: &Lives) -> JobSummary {
    let mut s = JobSummary {
        name: j.name.clone(),
        job_type: j.job_type.clone(),
        parallelism: j.parallelism,
        state: j.state.clone(),
        epoch: j.epoch,
        tasks: j.tasks.len(),
        running: j.tasks.iter().filter(|t| t.state == "RUNNING").count(),
        records_in: j.records_in,
        records_out: j.records_out,
        lag: j.lag,
        records_in_per_s: 0.0,
        records_out_per_s: 0.0,
        restarts: j.tasks.iter().map(|t| u64::from(t.restarts)).sum(),
        error: j.error.clone(),
    };
    for row in &j.tasks {
        match live_task(lives, row) {
            Some(t) => {
                s.records_in_per_s += t.records_in_per_s;
                s.records_out_per_s += t.records_out_per_s;
            }
            // ZooKeeper's copy, unless its worker did not answer (then it is stale).
            None if !unreachable(lives, row) => s.records_in_per_s += row.records_in_per_s as f64,
            None => {}
        }
    }
    s
}

fn task_detail(row: &TaskRow, live: Option<&TaskView>, reachable: bool) -> TaskDetail {
    let mut d = TaskDetail {
        task: row.task.clone(),
        job_stage: row.stage.clone(),
        worker: row.worker.clone(),
        worker_reachable: reachable,
        state: row.state.clone(),
        epoch: row.epoch,
        restarts: row.restarts,
        last_error: row.last_error.clone(),
        records_in: row.records_in,
        records_out: row.records_out,
        // ZooKeeper's rate is stale once the worker that published it stopped answering.
        records_in_per_s: if reachable {
            row.records_in_per_s as f64
        } else {
            0.0
        },
        records_out_per_s: 0.0,
        lag: row.lag,
        backpressure_ms: 0,
        watermark: None,
        late_records: 0,
        dead_letters: 0,
        checkpoint: row.checkpoint.clone(),
        checkpoint_failures: 0,
        recorded_checkpoint: row.recorded_checkpoint.clone(),
        live: false,
        updated_at_ms: row.updated_at_ms,
    };
    if let Some(t) = live {
        d.live = true;
        d.restarts = t.restarts;
        d.last_error = t.last_error.clone().or(d.last_error);
        d.records_in = t.records_in;
        d.records_out = t.records_out;
        d.records_in_per_s = t.records_in_per_s;
        d.records_out_per_s = t.records_out_per_s;
        d.lag = t.lag;
        d.backpressure_ms = t.backpressure_ms;
        d.watermark = t.watermark;
        d.late_records = t.late_records;
        d.dead_letters = t.dead_letters;
        d.checkpoint = t.checkpoint.clone().or(d.checkpoint);
        d.checkpoint_failures = t.checkpoint_failures;
    }
    d
}

/// The tasks' stage instances summed per stage name (`source#0` and `source#1` are `source`).
fn stages(tasks: &[&TaskView]) -> Vec<StageSummary> {
    let mut by: BTreeMap<String, StageSummary> = BTreeMap::new();
    for t in tasks {
        for s in &t.stages {
            let name = s
                .stage
                .rsplit_once('#')
                .map_or(s.stage.as_str(), |(n, _)| n);
            let e = by.entry(name.to_string()).or_insert_with(|| StageSummary {
                stage: name.to_string(),
                instances: 0,
                records_in: 0,
                records_out: 0,
                backpressure_ms: 0,
                late_records: 0,
                dead_letters: 0,
                watermark: None,
            });
            e.instances += 1;
            e.records_in += s.records_in;
            e.records_out += s.records_out;
            e.backpressure_ms += s.backpressure_ms;
            e.late_records += s.late_records;
            e.dead_letters += s.dead_letters;
            if let Some(w) = s.watermark {
                e.watermark = Some(e.watermark.map_or(w, |x| x.min(w)));
            }
        }
    }
    by.into_values().collect()
}

/// The job's records per second and lag on a grid of [`SAMPLE_EVERY_MS`] over the last 5
/// minutes: at each grid time, each task contributes the rate between its two samples
/// around it (tasks are sampled at their own times), summed over the tasks.
pub fn history(tasks: &[&TaskView], now_ms: u64) -> Vec<Point> {
    let step = SAMPLE_EVERY_MS;
    // Up to the oldest of the tasks' newest samples: a later point would miss tasks.
    let newest = tasks
        .iter()
        .filter_map(|t| t.history.last().map(|s| s.at_ms))
        .min()
        .unwrap_or(now_ms)
        .min(now_ms);
    let end = newest.saturating_sub(1) / step * step;
    let points = crate::service::view::HISTORY_MS / step;
    let mut out = Vec::new();
    for i in (0..points).rev() {
        let at = end.saturating_sub(i * step);
        let mut p = Point {
            at_ms: at,
            records_in_per_s: 0.0,
            records_out_per_s: 0.0,
            lag: 0,
        };
        let mut covered = false;
        for t in tasks {
            let h: &[Sample] = &t.history;
            let Some(k) = h
                .windows(2)
                .position(|w| w[0].at_ms <= at && at < w[1].at_ms)
            else {
                continue;
            };
            let (a, b) = (h[k], h[k + 1]);
            let dt = (b.at_ms - a.at_ms) as f64 / 1000.0;
            p.records_in_per_s += b.records_in.saturating_sub(a.records_in) as f64 / dt;
            p.records_out_per_s += b.records_out.saturating_sub(a.records_out) as f64 / dt;
            p.lag += b.lag;
            covered = true;
        }
        if covered {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::TaskStatus;

    fn task(id: &str, start: u64, every: u64, per_sample: u64) -> TaskView {
        let mut t = TaskView::new(id, "j", "etl", TaskStatus::Running, 1);
        t.history = (0..10)
            .map(|i| Sample {
                at_ms: start + i * every,
                records_in: i * per_sample,
                records_out: i * per_sample / 2,
                lag: 3,
            })
            .collect();
        t
    }

    #[test]
    fn history_sums_tasks_on_a_grid() {
        // Two tasks sampled at different phases: 100/s and 50/s.
        let a = task("j-0", 1_000_100, 2000, 200);
        let b = task("j-1", 1_000_900, 2000, 100);
        let now = 1_000_000 + 20_000;
        let h = history(&[&a, &b], now);
        assert!(!h.is_empty());
        let both: Vec<&Point> = h.iter().filter(|p| p.lag == 6).collect();
        assert!(both.len() >= 7, "{h:?}");
        for p in both {
            assert!((p.records_in_per_s - 150.0).abs() < 1e-9, "{p:?}");
            assert!((p.records_out_per_s - 75.0).abs() < 1e-9, "{p:?}");
        }
        assert!(h.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
    }

    #[test]
    fn stages_sum_instances() {
        let mut a = TaskView::new("j-0", "j", "etl", TaskStatus::Running, 1);
        let mut b = a.clone();
        a.stages = vec![crate::service::StageView {
            stage: "src#0".into(),
            records_out: 5,
            watermark: Some(10),
            ..Default::default()
        }];
        b.stages = vec![crate::service::StageView {
            stage: "src#1".into(),
            records_out: 7,
            watermark: Some(4),
            ..Default::default()
        }];
        let s = stages(&[&a, &b]);
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].stage.as_str(), s[0].instances, s[0].records_out),
            ("src", 2, 12)
        );
        assert_eq!(s[0].watermark, Some(4));
    }
}
