//! The leader's logic: turn (live workers, submitted jobs) into assignments.
//!
//! Owns: [`Leader`], a plain async struct (no actor, no engine) that watches
//! `/workers`, `/jobs` and every job's `spec`, computes the placement with
//! [`assign`](super::assignment::assign), writes each changed job assignment
//! (bumping the epoch only of tasks that move), re-schedules moved tasks'
//! state (keeping a FAILED task's error), and cleans a cancelled job's znodes.
//! Must never: react to its own `Disconnected` (a worker is gone only when its
//! ephemeral node is deleted, i.e. its session really expired); write an
//! assignment without checking that it still holds its election node.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use zookeeper_client::{Client, MultiWriteError, OneshotWatcher};

use super::assignment::{assign, TaskRequest};
use super::election::Leadership;
use super::error::{CoordError, CoordResult};
use super::fencing::{fenced_write, FenceToken, FencedWrite};
use super::membership::watch_workers;
use super::model::{
    decode, encode, now_ms, JobAssignment, JobSpec, TaskAssignment, TaskId, TaskState,
};
use super::paths::ZkPaths;
use super::store::{delete_recursive, persistent};

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
}

type WatchFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

struct JobInput {
    name: String,
    spec: JobSpec,
    assignment: JobAssignment,
    version: Option<i32>,
}

/// The leader's reconciliation loop over one session (see the module docs).
#[derive(Debug, Clone)]
pub struct Leader {
    client: Client,
    paths: ZkPaths,
    leadership: Leadership,
    resync: Duration,
}

impl Leader {
    /// A leader for the session of `client`, which won `leadership`.
    pub fn new(client: Client, paths: ZkPaths, leadership: Leadership) -> Self {
        Leader {
            client,
            paths,
            leadership,
            resync: Duration::from_secs(30),
        }
    }

    /// Full reconciliation at least this often even without watch events (default 30 s).
    pub fn with_resync(mut self, every: Duration) -> Self {
        self.resync = every;
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
                    if !report.written.is_empty() || !report.cleaned.is_empty() {
                        tracing::info!(?report, "leader reconciled");
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

        let mut jobs = Vec::new();
        for name in job_names {
            let spec_path = p.spec(&name);
            let spec = match c.get_and_watch_data(&spec_path).await {
                Ok((data, _, w)) => {
                    watches.push(to_future(w));
                    match decode::<JobSpec>(&spec_path, &data).and_then(|s| s.validate().map(|_| s))
                    {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, job = %name, "skipping job with a bad spec");
                            continue;
                        }
                    }
                }
                Err(zookeeper_client::Error::NoNode) => {
                    self.clean_job(&name).await?;
                    report.cleaned.push(name);
                    continue;
                }
                Err(e) => return Err(CoordError::zk(&spec_path, e)),
            };
            let apath = p.assignment(&name);
            let (assignment, version) = match c.get_data(&apath).await {
                Ok((data, stat)) => match decode::<JobAssignment>(&apath, &data) {
                    Ok(a) => (a, Some(stat.version)),
                    Err(e) => {
                        tracing::warn!(error = %e, "overwriting malformed assignment");
                        (JobAssignment::default(), Some(stat.version))
                    }
                },
                Err(zookeeper_client::Error::NoNode) => (JobAssignment::default(), None),
                Err(e) => return Err(CoordError::zk(&apath, e)),
            };
            jobs.push(JobInput {
                name,
                spec,
                assignment,
                version,
            });
        }
        report.jobs = jobs.len();

        let tasks: Vec<TaskRequest> = jobs
            .iter()
            .flat_map(|j| {
                j.spec.task_ids().into_iter().map(|id| TaskRequest {
                    id,
                    job_type: Some(j.spec.job_type.clone()),
                })
            })
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
        let placement = assign(&tasks, &workers, &previous);
        report.unassigned = placement.unassigned.clone();
        if !placement.unassigned.is_empty() {
            tracing::warn!(
                count = placement.unassigned.len(),
                "tasks left unassigned: not enough worker capacity"
            );
        }

        for job in &jobs {
            let new_epoch = job.assignment.epoch + 1;
            let mut tasks = BTreeMap::new();
            let mut moved = Vec::new();
            for id in job.spec.task_ids() {
                let Some(worker) = placement.tasks.get(&id) else {
                    continue;
                };
                let epoch = match job.assignment.tasks.get(&id) {
                    Some(old) if &old.worker == worker => old.epoch,
                    _ => {
                        moved.push(id.clone());
                        new_epoch
                    }
                };
                tasks.insert(
                    id,
                    TaskAssignment {
                        worker: worker.clone(),
                        epoch,
                    },
                );
            }
            if tasks == job.assignment.tasks && job.version.is_some() {
                continue;
            }
            let removed: Vec<TaskId> = job
                .assignment
                .tasks
                .keys()
                .filter(|t| t.index >= job.spec.parallelism)
                .cloned()
                .collect();
            let new = JobAssignment {
                epoch: new_epoch,
                tasks,
            };
            let version = self.write_assignment(&job.name, &new, job.version).await?;
            report.written.push(job.name.clone());
            for t in &moved {
                self.reschedule(&job.name, &new, t, version).await?;
            }
            for t in removed {
                delete_recursive(c, &p.task(&job.name, &t.to_string())).await?;
            }
            report.moved.extend(moved);
        }
        Ok((report, watches))
    }

    /// Writes `assignment` if we still hold our election node and the znode is still at
    /// `version` (`None`: create). Returns the new version.
    async fn write_assignment(
        &self,
        job: &str,
        assignment: &JobAssignment,
        version: Option<i32>,
    ) -> CoordResult<i32> {
        let apath = self.paths.assignment(job);
        let data = encode(&apath, assignment)?;
        let mut w = self.client.new_multi_writer();
        let node = &self.leadership.node;
        w.add_check_version(node, 0)
            .map_err(|e| CoordError::zk(node, e))?;
        match version {
            Some(v) => w.add_set_data(&apath, &data, Some(v)),
            None => w.add_create(&apath, &data, &persistent()),
        }
        .map_err(|e| CoordError::zk(&apath, e))?;
        match w.commit().await {
            Ok(results) => {
                let v = match results.last() {
                    Some(zookeeper_client::MultiWriteResult::SetData { stat }) => stat.version,
                    _ => 0,
                };
                tracing::debug!(
                    job,
                    epoch = assignment.epoch,
                    version = v,
                    "assignment written"
                );
                Ok(v)
            }
            Err(MultiWriteError::OperationFailed { index: 0, .. }) => {
                Err(CoordError::NoNode { path: node.clone() })
            }
            Err(MultiWriteError::OperationFailed {
                source: zookeeper_client::Error::BadVersion,
                ..
            }) => Err(CoordError::Conflict {
                path: apath,
                expected: version.unwrap_or(-1),
            }),
            Err(e) => Err(CoordError::zk(&apath, e.into())),
        }
    }

    /// Publishes a moved task's state for its new worker: SCHEDULED (unless terminal: a
    /// FAILED task stays FAILED), new worker and epoch; restarts, offsets and the last error
    /// are kept. Fenced like any state write, on the assignment version just written.
    async fn reschedule(
        &self,
        job: &str,
        assignment: &JobAssignment,
        task: &TaskId,
        version: i32,
    ) -> CoordResult<()> {
        let Some(ta) = assignment.tasks.get(task) else {
            return Ok(());
        };
        let name = task.to_string();
        let path = self.paths.task_state(job, &name);
        let (mut state, expected) = match self.client.get_data(&path).await {
            Ok((data, stat)) => match decode::<TaskState>(&path, &data) {
                Ok(s) => (s, Some(stat.version)),
                Err(e) => {
                    tracing::warn!(error = %e, "replacing malformed task state");
                    (
                        TaskState::scheduled(&ta.worker, ta.epoch),
                        Some(stat.version),
                    )
                }
            },
            Err(zookeeper_client::Error::NoNode) => {
                (TaskState::scheduled(&ta.worker, ta.epoch), None)
            }
            Err(e) => return Err(CoordError::zk(&path, e)),
        };
        if !state.state.is_terminal() {
            state.state = super::model::TaskStatus::Scheduled;
        }
        state.worker.clone_from(&ta.worker);
        state.epoch = ta.epoch;
        state.updated_at_ms = now_ms();
        let data = encode(&path, &state)?;
        let token = FenceToken {
            job: job.to_string(),
            task: task.clone(),
            worker: ta.worker.clone(),
            epoch: ta.epoch,
        };
        let parents = [self.paths.task(job, &name)];
        let write = FencedWrite {
            target: &path,
            parents: &parents,
            data: &data,
            expected,
        };
        match fenced_write(&self.client, &self.paths, &token, write, Some(version)).await {
            Ok(_) => Ok(()),
            // The new worker (or a newer leader pass) wrote first: its state wins.
            Err(CoordError::Conflict { .. } | CoordError::Fenced { .. }) => Ok(()),
            Err(e) => Err(e),
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
