//! The [`CoordActor`]'s requests: one message per thing the rest of the
//! process asks of ZooKeeper (register, jobs, assignments, task states,
//! checkpoint records, stop requests, run claims) and its handler, each a
//! future on the current session's client. Must never: hold a client past
//! its session (every handler takes it from the actor when it runs) or block
//! the actor's arbiter.

use std::time::Instant;

use actix::prelude::*;

use super::super::error::{CoordError, CoordResult};
use super::super::fencing::{write_checkpoint, write_failure, Decision, FenceToken};
use super::super::membership::{deregister, register};
use super::super::model::{
    encode, CheckpointMeta, JobAssignment, JobSpec, TaskError, TaskId, TaskState, WorkerInfo,
};
use super::super::run_claim::{self, RunClaim};
use super::super::session::SessionStatus;
use super::super::store::{self, persistent, JobView};
use super::{write_state, CoordActor, CoordEvent};

/// Registers (or updates) this process as a worker; remembered and redone after expiry.
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<()>")]
pub struct Register(pub WorkerInfo);

/// Leaves cleanly: deletes this process's worker node and stops re-registering.
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<()>")]
pub struct Deregister;

/// Submits a job (atomically creates its directory, spec, `tasks` and `checkpoints`).
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<()>")]
pub struct CreateJob(pub JobSpec);

/// Replaces a job's spec (rescale, config change).
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<()>")]
pub struct UpdateJob(pub JobSpec);

/// Cancels a job (deletes its spec; the leader removes the assignment and the znodes).
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<()>")]
pub struct CancelJob {
    /// Job name.
    pub job: String,
}

/// Reads everything about a job.
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<JobView>")]
pub struct ReadJob {
    /// Job name.
    pub job: String,
}

/// Reads only a job's spec (a worker building its tasks must not be blocked by one
/// malformed task-state node, as [`ReadJob`] would be).
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<JobSpec>")]
pub struct ReadSpec {
    /// Job name.
    pub job: String,
}

/// Reads one task's published state (`None`: nothing published yet).
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<Option<TaskState>>")]
pub struct ReadTaskState {
    /// Job name.
    pub job: String,
    /// Task.
    pub task: TaskId,
}

/// Records that a task FAILED past its restart policy (fenced by `token`, not rate-limited):
/// the leader moves it to another worker, or restarts it in place if none can take it.
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<()>")]
pub struct ReportFailure {
    /// The reporting worker's token for the task.
    pub token: FenceToken,
    /// The error that failed it.
    pub error: TaskError,
    /// Restarts so far.
    pub restarts: u32,
}

/// Lists job names.
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<Vec<String>>")]
pub struct ListJobs;

/// Lists live workers.
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<Vec<WorkerInfo>>")]
pub struct ListWorkers;

/// Reads a job's assignment with its znode version.
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<Option<(JobAssignment, i32)>>")]
pub struct ReadAssignment {
    /// Job name.
    pub job: String,
}

/// Writes a job's assignment, conditional on `expected_version` (`None`: create it).
/// Normally only the leader writes assignments; this is for tools and tests.
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<i32>")]
pub struct WriteAssignment {
    /// Job name.
    pub job: String,
    /// New assignment.
    pub assignment: JobAssignment,
    /// Version the znode must have.
    pub expected_version: Option<i32>,
}

/// What happened to a [`WriteTaskState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Written (fenced) now.
    Written,
    /// Rate-limited: kept and written later (a failure is reported as
    /// [`CoordEvent::TaskStateWriteFailed`]).
    Deferred,
}

/// Publishes a task's state, fenced by `token` and rate-limited (status changes at once,
/// progress at most once per `state_write_interval`).
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<WriteOutcome>")]
pub struct WriteTaskState {
    /// The writer's token for the task.
    pub token: FenceToken,
    /// New state.
    pub state: TaskState,
}

/// Drops any deferred state of a task (it stopped or moved away).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ForgetTask(pub FenceToken);

/// Writes a task's latest checkpoint metadata, fenced by `token`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<()>")]
pub struct WriteCheckpoint {
    /// Token of a task of the job held by the writer.
    pub token: FenceToken,
    /// Metadata (its id must exceed the stored one).
    pub meta: CheckpointMeta,
}

/// Reads a task's latest checkpoint metadata.
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<Option<CheckpointMeta>>")]
pub struct ReadCheckpoint {
    /// Job name.
    pub job: String,
    /// The task.
    pub task: TaskId,
}

/// Reads how a cancelled job's tasks are to stop.
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<Option<crate::coord::StopMode>>")]
pub struct ReadStopMode {
    /// Job name.
    pub job: String,
}

/// Deletes a znode (relative to the root, e.g. `jobs/x/tasks/x-9`), optionally with its subtree.
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<()>")]
pub struct Delete {
    /// Path relative to the root.
    pub path: String,
    /// Delete children too.
    pub recursive: bool,
}

/// A snapshot of the session status.
#[derive(Debug, Clone, Message)]
#[rtype(result = "SessionStatus")]
pub struct GetStatus;

/// Replaces the subscriber.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<CoordEvent>);

/// Stops the actor and closes the session (its ephemeral nodes vanish at once).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

macro_rules! with_client {
    ($self:ident, |$c:ident, $p:ident| $body:expr) => {{
        match $self.client() {
            Err(e) => Box::pin(async move { Err(e) }),
            Ok($c) => {
                let $p = $self.paths.clone();
                Box::pin(async move { $body })
            }
        }
    }};
}

impl Handler<Register> for CoordActor {
    type Result = ResponseFuture<CoordResult<()>>;
    fn handle(&mut self, msg: Register, _: &mut Context<Self>) -> Self::Result {
        if let Err(e) = msg.0.validate() {
            return Box::pin(async move { Err(e) });
        }
        self.cfg.worker = Some(msg.0.clone());
        with_client!(self, |c, p| {
            let wait = c.session_timeout() * 2;
            register(&c, &p, &msg.0, wait).await
        })
    }
}

impl Handler<Deregister> for CoordActor {
    type Result = ResponseFuture<CoordResult<()>>;
    fn handle(&mut self, _: Deregister, _: &mut Context<Self>) -> Self::Result {
        let Some(info) = self.cfg.worker.take() else {
            return Box::pin(async { Ok(()) });
        };
        with_client!(self, |c, p| deregister(&c, &p, &info.id).await)
    }
}

impl Handler<CreateJob> for CoordActor {
    type Result = ResponseFuture<CoordResult<()>>;
    fn handle(&mut self, msg: CreateJob, _: &mut Context<Self>) -> Self::Result {
        with_client!(self, |c, p| store::create_job(&c, &p, &msg.0).await)
    }
}

impl Handler<UpdateJob> for CoordActor {
    type Result = ResponseFuture<CoordResult<()>>;
    fn handle(&mut self, msg: UpdateJob, _: &mut Context<Self>) -> Self::Result {
        with_client!(self, |c, p| store::update_job(&c, &p, &msg.0).await)
    }
}

impl Handler<CancelJob> for CoordActor {
    type Result = ResponseFuture<CoordResult<()>>;
    fn handle(&mut self, msg: CancelJob, _: &mut Context<Self>) -> Self::Result {
        with_client!(self, |c, p| store::cancel_job(&c, &p, &msg.job).await)
    }
}

impl Handler<ReadJob> for CoordActor {
    type Result = ResponseFuture<CoordResult<JobView>>;
    fn handle(&mut self, msg: ReadJob, _: &mut Context<Self>) -> Self::Result {
        with_client!(self, |c, p| store::read_job(&c, &p, &msg.job).await)
    }
}

impl Handler<ReadSpec> for CoordActor {
    type Result = ResponseFuture<CoordResult<JobSpec>>;
    fn handle(&mut self, msg: ReadSpec, _: &mut Context<Self>) -> Self::Result {
        with_client!(self, |c, p| store::read_spec(&c, &p, &msg.job).await)
    }
}

impl Handler<ReadTaskState> for CoordActor {
    type Result = ResponseFuture<CoordResult<Option<TaskState>>>;
    fn handle(&mut self, msg: ReadTaskState, _: &mut Context<Self>) -> Self::Result {
        with_client!(self, |c, p| store::read_task_state(
            &c, &p, &msg.job, &msg.task
        )
        .await)
    }
}

impl Handler<ReportFailure> for CoordActor {
    type Result = ResponseFuture<CoordResult<()>>;
    fn handle(&mut self, msg: ReportFailure, _: &mut Context<Self>) -> Self::Result {
        let versions = self.versions.clone();
        with_client!(self, |c, p| {
            let hint = versions.get(&msg.token).map(|v| *v);
            match write_failure(&c, &p, &msg.token, &msg.error, msg.restarts, hint).await {
                Ok(v) => {
                    versions.insert(msg.token, v);
                    Ok(())
                }
                Err(e) => {
                    versions.remove(&msg.token);
                    Err(e)
                }
            }
        })
    }
}

impl Handler<ListJobs> for CoordActor {
    type Result = ResponseFuture<CoordResult<Vec<String>>>;
    fn handle(&mut self, _: ListJobs, _: &mut Context<Self>) -> Self::Result {
        with_client!(self, |c, p| store::list_jobs(&c, &p).await)
    }
}

impl Handler<ListWorkers> for CoordActor {
    type Result = ResponseFuture<CoordResult<Vec<WorkerInfo>>>;
    fn handle(&mut self, _: ListWorkers, _: &mut Context<Self>) -> Self::Result {
        with_client!(self, |c, p| store::list_workers(&c, &p).await)
    }
}

impl Handler<ReadAssignment> for CoordActor {
    type Result = ResponseFuture<CoordResult<Option<(JobAssignment, i32)>>>;
    fn handle(&mut self, msg: ReadAssignment, _: &mut Context<Self>) -> Self::Result {
        with_client!(self, |c, p| store::read_assignment(&c, &p, &msg.job).await)
    }
}

impl Handler<WriteAssignment> for CoordActor {
    type Result = ResponseFuture<CoordResult<i32>>;
    fn handle(&mut self, msg: WriteAssignment, _: &mut Context<Self>) -> Self::Result {
        with_client!(self, |c, p| {
            let path = p.assignment(&msg.job);
            let data = encode(&path, &msg.assignment)?;
            match msg.expected_version {
                Some(v) => match c.set_data(&path, &data, Some(v)).await {
                    Ok(stat) => Ok(stat.version),
                    Err(zookeeper_client::Error::BadVersion) => {
                        Err(CoordError::Conflict { path, expected: v })
                    }
                    Err(e) => Err(CoordError::zk(&path, e)),
                },
                None => c
                    .create(&path, &data, &persistent())
                    .await
                    .map(|_| 0)
                    .map_err(|e| CoordError::zk(&path, e)),
            }
        })
    }
}

impl Handler<WriteTaskState> for CoordActor {
    type Result = ResponseActFuture<Self, CoordResult<WriteOutcome>>;
    fn handle(&mut self, msg: WriteTaskState, _: &mut Context<Self>) -> Self::Result {
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        match self.limiter.offer(&msg.token, &msg.state, Instant::now()) {
            Decision::Deferred => Box::pin(fut::ready(Ok(WriteOutcome::Deferred))),
            Decision::WriteNow => {
                let task = msg.token.task.clone();
                let f = write_state(
                    client,
                    self.paths.clone(),
                    self.versions.clone(),
                    msg.token,
                    msg.state,
                );
                Box::pin(f.into_actor(self).map(move |r, act, _| {
                    act.limiter.completed(&task);
                    r.map(|_| WriteOutcome::Written)
                }))
            }
        }
    }
}

impl Handler<ForgetTask> for CoordActor {
    type Result = ();
    fn handle(&mut self, msg: ForgetTask, _: &mut Context<Self>) {
        self.limiter.forget(&msg.0.task);
        self.versions.remove(&msg.0);
    }
}

impl Handler<WriteCheckpoint> for CoordActor {
    type Result = ResponseFuture<CoordResult<()>>;
    fn handle(&mut self, msg: WriteCheckpoint, _: &mut Context<Self>) -> Self::Result {
        let versions = self.versions.clone();
        with_client!(self, |c, p| {
            let hint = versions.get(&msg.token).map(|v| *v);
            let v = write_checkpoint(&c, &p, &msg.token, &msg.meta, hint).await?;
            versions.insert(msg.token, v);
            Ok(())
        })
    }
}

impl Handler<ReadCheckpoint> for CoordActor {
    type Result = ResponseFuture<CoordResult<Option<CheckpointMeta>>>;
    fn handle(&mut self, msg: ReadCheckpoint, _: &mut Context<Self>) -> Self::Result {
        with_client!(self, |c, p| store::read_checkpoint(
            &c,
            &p,
            &msg.job,
            &msg.task.to_string()
        )
        .await)
    }
}

impl Handler<ReadStopMode> for CoordActor {
    type Result = ResponseFuture<CoordResult<Option<crate::coord::StopMode>>>;
    fn handle(&mut self, msg: ReadStopMode, _: &mut Context<Self>) -> Self::Result {
        with_client!(self, |c, p| store::read_stop_mode(&c, &p, &msg.job).await)
    }
}

impl Handler<Delete> for CoordActor {
    type Result = ResponseFuture<CoordResult<()>>;
    fn handle(&mut self, msg: Delete, _: &mut Context<Self>) -> Self::Result {
        with_client!(self, |c, p| {
            let path = format!("{}/{}", p.root(), msg.path.trim_start_matches('/'));
            if msg.recursive {
                store::delete_recursive(&c, &path).await
            } else {
                c.delete(&path, None)
                    .await
                    .map_err(|e| CoordError::zk(&path, e))
            }
        })
    }
}

impl Handler<GetStatus> for CoordActor {
    type Result = MessageResult<GetStatus>;
    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status.get())
    }
}

impl Handler<Subscribe> for CoordActor {
    type Result = ();
    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        self.subscriber = Some(msg.0);
    }
}

impl Handler<Shutdown> for CoordActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// One cheap round trip on the current session (an `exists` on the root); answers the id
/// of the session that served it. A worker's write lease is renewed from it: the server
/// answered, so the session lived at least until the request was sent plus the timeout.
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<i64>")]
pub struct Ping;

impl Handler<Ping> for CoordActor {
    type Result = ResponseFuture<CoordResult<i64>>;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Self::Result {
        let status = self.status.clone();
        with_client!(self, |c, p| {
            let root = p.root().to_string();
            c.check_stat(&root)
                .await
                .map_err(|e| CoordError::zk(&root, e))?;
            status.touch();
            Ok(c.session_id().0)
        })
    }
}

/// Claims that a task runs here under `spec` (see
/// [`run_claim::claim`](super::super::run_claim::claim)).
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<run_claim::Claimed>")]
pub struct ClaimRun {
    /// Job name.
    pub job: String,
    /// The spec the task is started under.
    pub spec: JobSpec,
    /// The claim.
    pub claim: RunClaim,
}

impl Handler<ClaimRun> for CoordActor {
    type Result = ResponseFuture<CoordResult<run_claim::Claimed>>;
    fn handle(&mut self, msg: ClaimRun, _: &mut Context<Self>) -> Self::Result {
        with_client!(self, |c, p| run_claim::claim(
            &c, &p, &msg.job, &msg.spec, &msg.claim
        )
        .await)
    }
}

/// Lists the run claims of a job's tasks.
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<Vec<RunClaim>>")]
pub struct ListRunClaims {
    /// Job name.
    pub job: String,
}

impl Handler<ListRunClaims> for CoordActor {
    type Result = ResponseFuture<CoordResult<Vec<RunClaim>>>;
    fn handle(&mut self, msg: ListRunClaims, _: &mut Context<Self>) -> Self::Result {
        with_client!(self, |c, p| run_claim::list(&c, &p, &msg.job).await)
    }
}

/// Releases this worker's run claim of a task that stopped.
#[derive(Debug, Clone, Message)]
#[rtype(result = "CoordResult<()>")]
pub struct ReleaseRun {
    /// Job name.
    pub job: String,
    /// The claim.
    pub claim: RunClaim,
}

impl Handler<ReleaseRun> for CoordActor {
    type Result = ResponseFuture<CoordResult<()>>;
    fn handle(&mut self, msg: ReleaseRun, _: &mut Context<Self>) -> Self::Result {
        with_client!(self, |c, p| run_claim::release(
            &c, &p, &msg.job, &msg.claim
        )
        .await)
    }
}
