//! Epoch-fenced writes of task state, failure records and checkpoint metadata,
//! and the task-state rate limiter.
//!
//! Owns: [`FenceToken`] (what a worker holds for a task: job, task, worker,
//! epoch), the conditional multi-op that writes only while the job's
//! assignment znode still has a version at which the task is assigned to that
//! worker with that epoch, and [`TaskStateLimiter`] (state changes at once,
//! progress at most once per interval per task).
//! Must never: write task state, a failure record or checkpoint metadata
//! without the assignment check in the same multi-op, or retry a write whose
//! token was fenced.
//!
//! # How the check works
//! ZooKeeper's `check` compares versions, not content. The writer keeps the
//! assignment znode's version `v` it last validated and commits
//! `multi { check(assignment, v); set(target) }`. If the assignment changed
//! (any task of the job moved), the check fails; the writer then re-reads
//! the assignment once: if its task is still `{worker, epoch}` (another task
//! moved), it retries at the new version; otherwise it gets
//! [`CoordError::Fenced`] and nothing was written. Because the re-read and the
//! retry use the same version, "assigned at version v" and "written while the
//! assignment is at version v" hold together, atomically.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use zookeeper_client::{Client, MultiWriteError};

use super::error::{CoordError, CoordResult};
use super::model::{
    decode, encode, now_ms, CheckpointMeta, FailureRecord, JobAssignment, TaskError, TaskId,
    TaskState, TaskStatus,
};
use super::paths::ZkPaths;
use super::store::persistent;

/// What a worker holds for one assigned task; every fenced write carries it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FenceToken {
    /// Job name.
    pub job: String,
    /// Task.
    pub task: TaskId,
    /// Worker the task is assigned to.
    pub worker: String,
    /// The task's assignment epoch.
    pub epoch: u64,
}

impl FenceToken {
    /// Tokens for every task of `assignment` placed on `worker`.
    pub fn for_worker(job: &str, assignment: &JobAssignment, worker: &str) -> Vec<FenceToken> {
        assignment
            .tasks_of(worker)
            .map(|(t, epoch)| FenceToken {
                job: job.to_string(),
                task: t.clone(),
                worker: worker.to_string(),
                epoch,
            })
            .collect()
    }
}

/// Reads the assignment and returns its version if `token` is still current; `Fenced` otherwise.
pub async fn validate(
    client: &Client,
    paths: &ZkPaths,
    token: &FenceToken,
    target: &str,
) -> CoordResult<i32> {
    let apath = paths.assignment(&token.job);
    let fenced = || CoordError::Fenced {
        path: target.to_string(),
        held_epoch: token.epoch,
    };
    let (data, stat) = match client.get_data(&apath).await {
        Ok(x) => x,
        Err(zookeeper_client::Error::NoNode) => return Err(fenced()),
        Err(e) => return Err(CoordError::zk(&apath, e)),
    };
    let a: JobAssignment = decode(&apath, &data)?;
    match a.tasks.get(&token.task) {
        Some(t) if t.worker == token.worker && t.epoch == token.epoch => Ok(stat.version),
        _ => Err(fenced()),
    }
}

/// One fenced write: `data` at `target`, creating `parents` (persistent, empty) if missing.
#[derive(Debug, Clone, Copy)]
pub struct FencedWrite<'a> {
    /// Znode written.
    pub target: &'a str,
    /// Directories created first if missing (outermost first).
    pub parents: &'a [String],
    /// New content.
    pub data: &'a [u8],
    /// Version `target` must have (`None`: any).
    pub expected: Option<i32>,
}

/// Performs `write` only while `token` is current. Returns the assignment version it was
/// checked against (pass it as `version_hint` next time to save a read).
pub async fn fenced_write(
    client: &Client,
    paths: &ZkPaths,
    token: &FenceToken,
    write: FencedWrite<'_>,
    version_hint: Option<i32>,
) -> CoordResult<i32> {
    let FencedWrite {
        target,
        parents,
        data,
        expected,
    } = write;
    let apath = paths.assignment(&token.job);
    let mut version = match version_hint {
        Some(v) => v,
        None => validate(client, paths, token, target).await?,
    };
    for _ in 0..8 {
        let exists = client
            .check_stat(target)
            .await
            .map_err(|e| CoordError::zk(target, e))?
            .is_some();
        let mut w = client.new_multi_writer();
        let add =
            |r: Result<(), zookeeper_client::Error>, p: &str| r.map_err(|e| CoordError::zk(p, e));
        add(w.add_check_version(&apath, version), &apath)?;
        if exists {
            add(w.add_set_data(target, data, expected), target)?;
        } else {
            for p in parents {
                if client
                    .check_stat(p)
                    .await
                    .map_err(|e| CoordError::zk(p, e))?
                    .is_none()
                {
                    add(w.add_create(p, b"", &persistent()), p)?;
                }
            }
            add(w.add_create(target, data, &persistent()), target)?;
        }
        match w.commit().await {
            Ok(_) => return Ok(version),
            Err(MultiWriteError::OperationFailed { index: 0, source }) => {
                tracing::debug!(path = %target, error = %source, "assignment changed; revalidating the fence");
                version = validate(client, paths, token, target).await?;
            }
            Err(MultiWriteError::OperationFailed {
                source: zookeeper_client::Error::NoNode | zookeeper_client::Error::NodeExists,
                ..
            }) => {} // target or a parent appeared / vanished meanwhile: redo with fresh existence
            Err(MultiWriteError::OperationFailed {
                source: zookeeper_client::Error::BadVersion,
                ..
            }) => {
                return Err(CoordError::Conflict {
                    path: target.to_string(),
                    expected: expected.unwrap_or(-1),
                })
            }
            Err(e) => return Err(CoordError::zk(target, e.into())),
        }
    }
    Err(CoordError::Conflict {
        path: target.to_string(),
        expected: version,
    })
}

/// Writes a task's state, fenced by `token`. The state's `worker` and `epoch` are set from
/// the token and `updated_at_ms` to now.
pub async fn write_task_state(
    client: &Client,
    paths: &ZkPaths,
    token: &FenceToken,
    state: &TaskState,
    version_hint: Option<i32>,
) -> CoordResult<i32> {
    let task = token.task.to_string();
    let target = paths.task_state(&token.job, &task);
    let mut state = state.clone();
    state.worker.clone_from(&token.worker);
    state.epoch = token.epoch;
    state.updated_at_ms = now_ms();
    let data = encode(&target, &state)?;
    let parents = [paths.task(&token.job, &task)];
    let write = FencedWrite {
        target: &target,
        parents: &parents,
        data: &data,
        expected: None,
    };
    fenced_write(client, paths, token, write, version_hint).await
}

/// Records that `token.task` FAILED past its restart policy on `token.worker` (at
/// `/jobs/<job>/failed/<task>`), fenced by `token`: the leader then moves the task (or
/// restarts it in place). `restarts` is the task's restart count so far.
pub async fn write_failure(
    client: &Client,
    paths: &ZkPaths,
    token: &FenceToken,
    error: &TaskError,
    restarts: u32,
    version_hint: Option<i32>,
) -> CoordResult<i32> {
    let task = token.task.to_string();
    let target = paths.failed_task(&token.job, &task);
    let record = FailureRecord {
        worker: token.worker.clone(),
        epoch: token.epoch,
        error: error.message.clone(),
        at_ms: error.at_ms,
        restarts,
    };
    let data = encode(&target, &record)?;
    let parents = [paths.failed(&token.job)];
    let write = FencedWrite {
        target: &target,
        parents: &parents,
        data: &data,
        expected: None,
    };
    fenced_write(client, paths, token, write, version_hint).await
}

/// Writes the latest checkpoint metadata of `token`'s task, fenced by `token`. Refuses to go
/// backwards: `meta.id` must exceed the stored id.
pub async fn write_checkpoint(
    client: &Client,
    paths: &ZkPaths,
    token: &FenceToken,
    meta: &CheckpointMeta,
    version_hint: Option<i32>,
) -> CoordResult<i32> {
    let target = paths.checkpoint(&token.job, &token.task.to_string());
    let data = encode(&target, meta)?;
    let expected = match client.get_data(&target).await {
        Ok((bytes, stat)) => {
            let old: CheckpointMeta = decode(&target, &bytes)?;
            if old.id >= meta.id {
                return Err(CoordError::Invalid {
                    field: "CheckpointMeta.id".into(),
                    reason: format!(
                        "checkpoint {} is not newer than the stored {} at {target}",
                        meta.id, old.id
                    ),
                });
            }
            Some(stat.version)
        }
        Err(zookeeper_client::Error::NoNode) => None,
        Err(e) => return Err(CoordError::zk(&target, e)),
    };
    let parents = [paths.checkpoints(&token.job)];
    let write = FencedWrite {
        target: &target,
        parents: &parents,
        data: &data,
        expected,
    };
    fenced_write(client, paths, token, write, version_hint).await
}

/// What [`TaskStateLimiter::offer`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Write now (status changed, first write, or the interval has passed).
    WriteNow,
    /// Kept as pending; [`TaskStateLimiter::due`] hands it out later.
    Deferred,
}

#[derive(Debug)]
struct Pending {
    token: FenceToken,
    state: TaskState,
    urgent: bool,
}

/// Rate limiter for task-state writes: a status change is written at once, progress at most
/// once per `interval` per task; the newest deferred state is kept and handed out when due,
/// so the last update is never lost. At most one write per task is in flight.
///
/// ```
/// use std::time::{Duration, Instant};
/// use weir::coord::fencing::{Decision, FenceToken, TaskStateLimiter};
/// use weir::coord::{TaskId, TaskState, TaskStatus};
/// let mut l = TaskStateLimiter::new(Duration::from_secs(1));
/// let tok = FenceToken { job: "j".into(), task: TaskId::new("j", 0), worker: "w".into(), epoch: 1 };
/// let mut s = TaskState::scheduled("w", 1);
/// let t0 = Instant::now();
/// assert_eq!(l.offer(&tok, &s, t0), Decision::WriteNow);
/// l.completed(&tok.task);
/// s.records_in = 10;
/// assert_eq!(l.offer(&tok, &s, t0), Decision::Deferred);
/// s.state = TaskStatus::Running;
/// assert_eq!(l.offer(&tok, &s, t0), Decision::WriteNow, "a status change goes at once");
/// ```
#[derive(Debug)]
pub struct TaskStateLimiter {
    interval: Duration,
    last: BTreeMap<TaskId, (Instant, TaskStatus)>,
    pending: BTreeMap<TaskId, Pending>,
    in_flight: BTreeSet<TaskId>,
}

impl TaskStateLimiter {
    /// At most one progress write per `interval` per task.
    pub fn new(interval: Duration) -> Self {
        TaskStateLimiter {
            interval,
            last: BTreeMap::new(),
            pending: BTreeMap::new(),
            in_flight: BTreeSet::new(),
        }
    }

    /// Offers a new state for `token.task`. On `WriteNow` the caller must write it and then
    /// call [`completed`](Self::completed).
    pub fn offer(&mut self, token: &FenceToken, state: &TaskState, now: Instant) -> Decision {
        let changed = self
            .last
            .get(&token.task)
            .map(|(_, s)| *s != state.state)
            .unwrap_or(true);
        let due = self
            .last
            .get(&token.task)
            .map(|(t, _)| now.duration_since(*t) >= self.interval)
            .unwrap_or(true);
        if (changed || due) && !self.in_flight.contains(&token.task) {
            self.pending.remove(&token.task);
            self.start(token.task.clone(), state.state, now);
            Decision::WriteNow
        } else {
            let urgent = changed
                || self
                    .pending
                    .get(&token.task)
                    .map(|p| p.urgent)
                    .unwrap_or(false);
            self.pending.insert(
                token.task.clone(),
                Pending {
                    token: token.clone(),
                    state: state.clone(),
                    urgent,
                },
            );
            Decision::Deferred
        }
    }

    fn start(&mut self, task: TaskId, status: TaskStatus, now: Instant) {
        self.last.insert(task.clone(), (now, status));
        self.in_flight.insert(task);
    }

    /// Marks the in-flight write of `task` as finished (successfully or not).
    pub fn completed(&mut self, task: &TaskId) {
        self.in_flight.remove(task);
    }

    /// Pending states that may be written now (urgent ones, or whose interval has passed);
    /// each returned task is marked in flight.
    pub fn due(&mut self, now: Instant) -> Vec<(FenceToken, TaskState)> {
        let ready: Vec<TaskId> = self
            .pending
            .iter()
            .filter(|(t, p)| {
                !self.in_flight.contains(*t)
                    && (p.urgent
                        || self
                            .last
                            .get(*t)
                            .map(|(at, _)| now.duration_since(*at) >= self.interval)
                            .unwrap_or(true))
            })
            .map(|(t, _)| t.clone())
            .collect();
        let mut out = Vec::with_capacity(ready.len());
        for t in ready {
            if let Some(p) = self.pending.remove(&t) {
                self.start(t, p.state.state, now);
                out.push((p.token, p.state));
            }
        }
        out
    }

    /// Forgets a task (it stopped or moved away): drops its pending state.
    pub fn forget(&mut self, task: &TaskId) {
        self.pending.remove(task);
        self.last.remove(task);
        self.in_flight.remove(task);
    }

    /// Number of deferred states waiting.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(i: u32) -> FenceToken {
        FenceToken {
            job: "j".into(),
            task: TaskId::new("j", i),
            worker: "w".into(),
            epoch: 1,
        }
    }

    #[test]
    fn progress_is_limited_and_the_last_one_kept() {
        let mut l = TaskStateLimiter::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let mut s = TaskState::scheduled("w", 1);
        s.state = TaskStatus::Running;
        assert_eq!(l.offer(&tok(0), &s, t0), Decision::WriteNow);
        l.completed(&tok(0).task);
        for i in 1..=50 {
            s.records_in = i;
            assert_eq!(
                l.offer(&tok(0), &s, t0 + Duration::from_millis(i * 10)),
                Decision::Deferred
            );
        }
        assert!(l.due(t0 + Duration::from_millis(900)).is_empty());
        let due = l.due(t0 + Duration::from_millis(1000));
        assert_eq!(due.len(), 1);
        assert_eq!(
            due[0].1.records_in, 50,
            "the newest deferred state is written"
        );
        assert_eq!(l.pending_len(), 0);
    }

    #[test]
    fn status_change_while_in_flight_is_urgent() {
        let mut l = TaskStateLimiter::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let mut s = TaskState::scheduled("w", 1);
        assert_eq!(l.offer(&tok(1), &s, t0), Decision::WriteNow);
        s.state = TaskStatus::Failed;
        assert_eq!(
            l.offer(&tok(1), &s, t0),
            Decision::Deferred,
            "one write in flight per task"
        );
        assert!(l.due(t0).is_empty(), "still in flight");
        l.completed(&tok(1).task);
        let due = l.due(t0);
        assert_eq!(due.len(), 1, "urgent: no need to wait for the interval");
        assert_eq!(due[0].1.state, TaskStatus::Failed);
    }

    #[test]
    fn tasks_are_independent() {
        let mut l = TaskStateLimiter::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let s = TaskState::scheduled("w", 1);
        assert_eq!(l.offer(&tok(1), &s, t0), Decision::WriteNow);
        assert_eq!(l.offer(&tok(2), &s, t0), Decision::WriteNow);
        l.forget(&tok(1).task);
        l.completed(&tok(2).task);
        assert_eq!(
            l.offer(&tok(1), &s, t0),
            Decision::WriteNow,
            "forgotten task starts afresh"
        );
    }
}
