//! The ZooKeeper actor: the one owner of a process's ZooKeeper session.
//!
//! Owns: the `zookeeper_client::Client` of the current session, the session's
//! lifecycle (connect with backoff, `Disconnected` vs `Expired`, a NEW session
//! after expiry with re-registration and re-election), the background watch
//! loops (workers, jobs, assignments) and the leader loop when elected, the
//! task-state rate limiter, and the translation of all of that into
//! [`CoordEvent`]s for one subscriber. Everything else in the process talks
//! to ZooKeeper only through this actor's messages.
//! Must never: block its arbiter (every ZooKeeper call is awaited in a spawned
//! future, never on the actor's own hot path), keep using a client after its
//! session expired, or report `Expired` for a mere disconnection.
//!
//! Run it on its own [`Arbiter`], away from operator actors:
//!
//! ```no_run
//! use actix::prelude::*;
//! use weir::coord::actor::{CoordActor, CoordConfig, CoordEvent, SessionEvent};
//! use weir::coord::fencing::FenceToken;
//! use weir::coord::WorkerInfo;
//!
//! struct Worker { id: String }
//! impl Actor for Worker { type Context = Context<Self>; }
//! impl Handler<CoordEvent> for Worker {
//!     type Result = ();
//!     fn handle(&mut self, ev: CoordEvent, _: &mut Context<Self>) {
//!         match ev {
//!             CoordEvent::AssignmentChanged { job, assignment } => {
//!                 let mine = assignment.map(|a| FenceToken::for_worker(&job, &a, &self.id)).unwrap_or_default();
//!                 // start tasks in `mine` not running yet; stop running tasks of `job` not in it
//!             }
//!             CoordEvent::SessionState(SessionEvent::Disconnected { may_be_alive_until }) => {
//!                 // keep running, but stop every task before `may_be_alive_until`
//!             }
//!             CoordEvent::SessionState(SessionEvent::Expired) => { /* stop all tasks now: we may be a zombie */ }
//!             _ => {}
//!         }
//!     }
//! }
//!
//! #[actix::main]
//! async fn main() {
//!     let worker = Worker { id: "w1".into() }.start();
//!     let mut cfg = CoordConfig::new("127.0.0.1:2181");
//!     cfg.worker = Some(WorkerInfo { id: "w1".into(), address: "127.0.0.1:9000".into(), capacity: 4,
//!                                    job_types: vec![], version: "0.1.0".into(),
//!                                    stages: Default::default(), brokers: String::new() });
//!     cfg.candidate = Some("w1".into());
//!     let arbiter = Arbiter::new();
//!     let recipient = worker.recipient();
//!     let actor = CoordActor::new(cfg, Some(recipient)).expect("valid root");
//!     let coord = CoordActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
//!     # let _ = coord;
//! }
//! ```

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use dashmap::DashMap;
use tokio::sync::watch;
use zookeeper_client::{Client, SessionState};

use super::election::{campaign, Leadership};
use super::error::{CoordError, CoordResult};
use super::fencing::{write_task_state, FenceToken, TaskStateLimiter};
use super::leader::Leader;
use super::membership::{register, watch_workers};
use super::model::{decode, JobAssignment, TaskState, WorkerInfo};
use super::paths::{ZkPaths, DEFAULT_ROOT};
use super::session::{connect_with_backoff, Phase, SessionConfig, StatusHandle};
use super::store::ensure_layout;

/// Configuration of a [`CoordActor`].
#[derive(Debug, Clone)]
pub struct CoordConfig {
    /// How to reach ZooKeeper.
    pub session: SessionConfig,
    /// Root of the znode tree (default `/weir`).
    pub root: String,
    /// Register this process as a worker (ephemeral `/workers/<id>`), again after each expiry.
    pub worker: Option<WorkerInfo>,
    /// Take part in the leader election under this candidate id, and run the [`Leader`]
    /// loop while elected.
    pub candidate: Option<String>,
    /// At most one progress write per task per this interval (default 1 s).
    pub state_write_interval: Duration,
    /// The leader's full-reconcile period without events (default 30 s).
    pub leader_resync: Duration,
}

impl CoordConfig {
    /// A client-only configuration (no registration, no election) for `address`.
    pub fn new(address: impl Into<String>) -> Self {
        CoordConfig {
            session: SessionConfig::new(address),
            root: DEFAULT_ROOT.to_string(),
            worker: None,
            candidate: None,
            state_write_interval: Duration::from_secs(1),
            leader_resync: Duration::from_secs(30),
        }
    }
}

/// Session changes, as told to the subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A session is (again) connected.
    Connected {
        /// Session id.
        session_id: i64,
    },
    /// Connection lost; the session may still be alive (NOT expired). Stop tasks before the deadline.
    Disconnected {
        /// Last moment the session could still be alive on the server (last heard + timeout).
        may_be_alive_until: Instant,
    },
    /// The session expired: stop all tasks at once (we may be a zombie). A new session is
    /// being opened; registration and election are redone on it.
    Expired,
}

/// Events the actor sends to its subscriber.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum CoordEvent {
    /// The session changed state.
    SessionState(SessionEvent),
    /// The set of live workers changed (full list).
    WorkersChanged(Vec<WorkerInfo>),
    /// The set of jobs changed (full list of names).
    JobsChanged(Vec<String>),
    /// A job's assignment changed; `None` when it was removed (job cancelled).
    AssignmentChanged {
        /// Job name.
        job: String,
        /// New assignment.
        assignment: Option<JobAssignment>,
    },
    /// This process became the leader (its leader loop is running).
    BecameLeader,
    /// This process is no longer the leader (session expired or election node removed).
    LostLeadership,
    /// A deferred (rate-limited) task-state write failed, e.g. `Fenced`: stop that task.
    TaskStateWriteFailed {
        /// The token that was used.
        token: FenceToken,
        /// Why.
        error: CoordError,
    },
}

/// Stops a session's background tasks when set to `true` (or when dropped).
type StopTx = watch::Sender<bool>;

/// The ZooKeeper actor (see the module docs).
pub struct CoordActor {
    cfg: CoordConfig,
    paths: ZkPaths,
    subscriber: Option<Recipient<CoordEvent>>,
    status: StatusHandle,
    client: Option<Client>,
    generation: u64,
    stop: Option<StopTx>,
    limiter: TaskStateLimiter,
    versions: Arc<DashMap<FenceToken, i32>>,
    connecting: Option<SpawnHandle>,
}

impl CoordActor {
    /// A new actor; it connects when started. Fails only on an invalid `cfg.root`.
    pub fn new(cfg: CoordConfig, subscriber: Option<Recipient<CoordEvent>>) -> CoordResult<Self> {
        let paths = ZkPaths::new(&cfg.root)?;
        let status = StatusHandle::new(&cfg.session.address, cfg.session.session_timeout);
        let limiter = TaskStateLimiter::new(cfg.state_write_interval);
        Ok(CoordActor {
            cfg,
            paths,
            subscriber,
            status,
            client: None,
            generation: 0,
            stop: None,
            limiter,
            versions: Arc::new(DashMap::new()),
            connecting: None,
        })
    }

    /// A handle on the session status, readable from any thread without a message
    /// (e.g. for `/api/status` or "waiting for ZooKeeper at HOST:PORT").
    pub fn status_handle(&self) -> StatusHandle {
        self.status.clone()
    }

    /// The znode layout in use.
    pub fn paths(&self) -> &ZkPaths {
        &self.paths
    }

    fn emit(&self, ev: CoordEvent) {
        if let Some(s) = &self.subscriber {
            s.do_send(ev);
        }
    }

    fn client(&self) -> CoordResult<Client> {
        self.client
            .clone()
            .ok_or_else(|| CoordError::NoSession(self.status.get().describe()))
    }

    fn start_session(&mut self, ctx: &mut Context<Self>) {
        self.generation += 1;
        let gen = self.generation;
        let cfg = self.cfg.session.clone();
        let status = self.status.clone();
        let paths = self.paths.clone();
        status.update(|s| {
            s.phase = Phase::Connecting {
                attempt: 0,
                last_error: None,
            }
        });
        let fut = async move {
            loop {
                let client = connect_with_backoff(&cfg, &status).await;
                match ensure_layout(&client, &paths).await {
                    Ok(()) => return client,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot create the znode layout; reconnecting");
                        tokio::time::sleep(cfg.backoff_max).await;
                    }
                }
            }
        };
        let h = ctx.spawn(
            fut.into_actor(self)
                .map(move |client, act, ctx| act.on_connected(gen, client, ctx)),
        );
        self.connecting = Some(h);
    }

    fn on_connected(&mut self, gen: u64, client: Client, ctx: &mut Context<Self>) {
        self.connecting = None;
        if gen != self.generation {
            return;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        self.stop = Some(stop_tx);
        self.client = Some(client.clone());
        self.emit(CoordEvent::SessionState(SessionEvent::Connected {
            session_id: client.session_id().0,
        }));
        let addr = ctx.address();

        // Session state -> actor.
        let mut sw = client.state_watcher();
        let a = addr.clone();
        spawn_until(stop_rx.clone(), async move {
            loop {
                let state = sw.changed().await;
                a.do_send(ZkStateChanged { gen, state });
                if state.is_terminated() {
                    break;
                }
            }
        });

        // Registration.
        if let Some(info) = self.cfg.worker.clone() {
            let (c, p) = (client.clone(), self.paths.clone());
            let wait = client.session_timeout() * 2;
            spawn_until(stop_rx.clone(), async move {
                let mut delay = Duration::from_millis(200);
                loop {
                    match register(&c, &p, &info, wait).await {
                        Ok(()) => break,
                        Err(e) if e.is_session_lost() => break,
                        Err(e) => {
                            tracing::error!(error = %e, "worker registration failed; retrying");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            });
        }

        // Watches.
        spawn_until(
            stop_rx.clone(),
            watch_workers_loop(client.clone(), self.paths.clone(), addr.clone(), gen),
        );
        spawn_until(
            stop_rx.clone(),
            watch_jobs_loop(
                client.clone(),
                self.paths.clone(),
                addr.clone(),
                gen,
                stop_rx.clone(),
            ),
        );

        // Election and leading.
        if let Some(candidate) = self.cfg.candidate.clone() {
            let (c, p, a) = (client, self.paths.clone(), addr);
            let resync = self.cfg.leader_resync;
            spawn_until(stop_rx, async move {
                loop {
                    match campaign(&c, &p, &candidate).await {
                        Ok(l) => {
                            a.do_send(LeadershipChanged {
                                gen,
                                leadership: Some(l.clone()),
                            });
                            let r = Leader::new(c.clone(), p.clone(), l)
                                .with_resync(resync)
                                .run()
                                .await;
                            a.do_send(LeadershipChanged {
                                gen,
                                leadership: None,
                            });
                            if matches!(&r, Err(e) if e.is_session_lost()) {
                                break;
                            }
                        }
                        Err(e) if e.is_session_lost() => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "election failed; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            });
        }
    }

    /// The session is gone for good: tell the subscriber, drop everything tied to it, and
    /// open a new session (which re-registers and re-enters the election).
    fn on_expired(&mut self, ctx: &mut Context<Self>) {
        let was_leader = self.status.get().leader;
        self.status.update(|s| {
            s.phase = Phase::Expired;
            s.leader = false;
            s.session_id = None;
        });
        tracing::warn!("ZooKeeper session expired; opening a new one");
        self.emit(CoordEvent::SessionState(SessionEvent::Expired));
        if was_leader {
            self.emit(CoordEvent::LostLeadership);
        }
        self.teardown();
        self.start_session(ctx);
    }

    fn teardown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        self.client = None;
        self.limiter = TaskStateLimiter::new(self.cfg.state_write_interval);
        self.versions.clear();
    }

    fn flush_due(&mut self, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        for (token, state) in self.limiter.due(Instant::now()) {
            let fut = write_state(
                client.clone(),
                self.paths.clone(),
                self.versions.clone(),
                token.clone(),
                state,
            );
            ctx.spawn(fut.into_actor(self).map(move |res, act, _| {
                act.limiter.completed(&token.task);
                if let Err(error) = res {
                    tracing::warn!(error = %error, task = %token.task, "deferred task-state write failed");
                    act.emit(CoordEvent::TaskStateWriteFailed { token, error });
                }
            }));
        }
    }
}

fn spawn_until(
    mut stop: watch::Receiver<bool>,
    fut: impl std::future::Future<Output = ()> + 'static,
) {
    actix::spawn(async move {
        tokio::select! {
            _ = stop.wait_for(|v| *v) => {}
            _ = fut => {}
        }
    });
}

async fn write_state(
    client: Client,
    paths: ZkPaths,
    versions: Arc<DashMap<FenceToken, i32>>,
    token: FenceToken,
    state: TaskState,
) -> CoordResult<()> {
    let hint = versions.get(&token).map(|v| *v);
    match write_task_state(&client, &paths, &token, &state, hint).await {
        Ok(v) => {
            versions.insert(token, v);
            Ok(())
        }
        Err(e) => {
            versions.remove(&token);
            Err(e)
        }
    }
}

async fn pause_or_quit(e: &CoordError) -> bool {
    if e.is_session_lost() {
        return true;
    }
    tracing::debug!(error = %e, "watch loop retrying");
    tokio::time::sleep(Duration::from_millis(200)).await;
    false
}

async fn watch_workers_loop(client: Client, paths: ZkPaths, addr: Addr<CoordActor>, gen: u64) {
    let mut last = None;
    loop {
        match watch_workers(&client, &paths).await {
            Ok((workers, w)) => {
                if last.as_ref() != Some(&workers) {
                    last = Some(workers.clone());
                    addr.do_send(Internal {
                        gen,
                        event: CoordEvent::WorkersChanged(workers),
                    });
                }
                if w.changed().await.session_state.is_terminated() {
                    return;
                }
            }
            Err(e) => {
                if pause_or_quit(&e).await {
                    return;
                }
            }
        }
    }
}

async fn watch_jobs_loop(
    client: Client,
    paths: ZkPaths,
    addr: Addr<CoordActor>,
    gen: u64,
    stop: watch::Receiver<bool>,
) {
    let active: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let dir = paths.jobs();
    let mut last = None;
    loop {
        match client.list_and_watch_children(&dir).await {
            Ok((mut jobs, w)) => {
                jobs.sort();
                for job in &jobs {
                    let fresh = active
                        .lock()
                        .map(|mut s| s.insert(job.clone()))
                        .unwrap_or(false);
                    if fresh {
                        let (c, p, a, act, j) = (
                            client.clone(),
                            paths.clone(),
                            addr.clone(),
                            active.clone(),
                            job.clone(),
                        );
                        spawn_until(stop.clone(), async move {
                            watch_assignment_loop(c, p, a, gen, j.clone()).await;
                            if let Ok(mut s) = act.lock() {
                                s.remove(&j);
                            }
                        });
                    }
                }
                if last.as_ref() != Some(&jobs) {
                    last = Some(jobs.clone());
                    addr.do_send(Internal {
                        gen,
                        event: CoordEvent::JobsChanged(jobs),
                    });
                }
                if w.changed().await.session_state.is_terminated() {
                    return;
                }
            }
            Err(e) => {
                if pause_or_quit(&CoordError::zk(&dir, e)).await {
                    return;
                }
            }
        }
    }
}

/// Follows `/jobs/<job>/assignment` until the job directory is gone.
async fn watch_assignment_loop(
    client: Client,
    paths: ZkPaths,
    addr: Addr<CoordActor>,
    gen: u64,
    job: String,
) {
    let apath = paths.assignment(&job);
    let mut last: Option<Option<JobAssignment>> = None;
    let send = |a: Option<JobAssignment>, last: &mut Option<Option<JobAssignment>>| {
        if last.as_ref() != Some(&a) {
            // The first observation of "no assignment yet" is not news.
            let news = !(last.is_none() && a.is_none());
            *last = Some(a.clone());
            if news {
                addr.do_send(Internal {
                    gen,
                    event: CoordEvent::AssignmentChanged {
                        job: job.clone(),
                        assignment: a,
                    },
                });
            }
        }
    };
    loop {
        match client.get_and_watch_data(&apath).await {
            Ok((data, _, w)) => {
                match decode::<JobAssignment>(&apath, &data) {
                    Ok(a) => send(Some(a), &mut last),
                    Err(e) => tracing::warn!(error = %e, "ignoring malformed assignment"),
                }
                if w.changed().await.session_state.is_terminated() {
                    return;
                }
            }
            Err(zookeeper_client::Error::NoNode) => {
                send(None, &mut last);
                match client.check_and_watch_stat(&apath).await {
                    Ok((Some(_), _)) => continue,
                    Ok((None, w)) => {
                        match client.check_stat(&paths.job(&job)).await {
                            Ok(None) => return, // job gone
                            Ok(Some(_)) => {}
                            Err(e) => {
                                if pause_or_quit(&CoordError::zk(&apath, e)).await {
                                    return;
                                }
                                continue;
                            }
                        }
                        // Wake on creation, or re-check the job directory now and then.
                        tokio::select! {
                            ev = w.changed() => if ev.session_state.is_terminated() { return; },
                            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        }
                    }
                    Err(e) => {
                        if pause_or_quit(&CoordError::zk(&apath, e)).await {
                            return;
                        }
                    }
                }
            }
            Err(e) => {
                if pause_or_quit(&CoordError::zk(&apath, e)).await {
                    return;
                }
            }
        }
    }
}

impl Actor for CoordActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Control messages (status, shutdown) must not wait behind a flood of state writes.
        ctx.set_mailbox_capacity(1024);
        self.start_session(ctx);
        ctx.run_interval(Duration::from_millis(100), |act, ctx| act.flush_due(ctx));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.status.update(|s| {
            s.phase = Phase::Closed;
            s.leader = false;
        });
        self.teardown();
        tracing::info!("coordination actor stopped; ZooKeeper session closed");
    }
}

// ---- internal messages ----

#[derive(Message)]
#[rtype(result = "()")]
struct ZkStateChanged {
    gen: u64,
    state: SessionState,
}

impl Handler<ZkStateChanged> for CoordActor {
    type Result = ();
    fn handle(&mut self, msg: ZkStateChanged, ctx: &mut Context<Self>) {
        if msg.gen != self.generation || self.client.is_none() {
            return;
        }
        match msg.state {
            SessionState::Disconnected => {
                self.status.mark_disconnected();
                let until = self
                    .status
                    .get()
                    .may_be_alive_until()
                    .unwrap_or_else(Instant::now);
                tracing::warn!(
                    alive_for = ?until.saturating_duration_since(Instant::now()),
                    "disconnected from ZooKeeper; session not expired (yet)"
                );
                self.emit(CoordEvent::SessionState(SessionEvent::Disconnected {
                    may_be_alive_until: until,
                }));
            }
            SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                self.status.update(|s| {
                    s.phase = Phase::Connected;
                    s.last_heard = Some(Instant::now());
                });
                let id = self.client.as_ref().map(|c| c.session_id().0).unwrap_or(0);
                self.emit(CoordEvent::SessionState(SessionEvent::Connected {
                    session_id: id,
                }));
            }
            SessionState::Expired | SessionState::AuthFailed | SessionState::Closed => {
                self.on_expired(ctx)
            }
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Internal {
    gen: u64,
    event: CoordEvent,
}

impl Handler<Internal> for CoordActor {
    type Result = ();
    fn handle(&mut self, msg: Internal, _: &mut Context<Self>) {
        if msg.gen == self.generation && self.client.is_some() {
            self.status.touch();
            self.emit(msg.event);
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct LeadershipChanged {
    gen: u64,
    leadership: Option<Leadership>,
}

impl Handler<LeadershipChanged> for CoordActor {
    type Result = ();
    fn handle(&mut self, msg: LeadershipChanged, _: &mut Context<Self>) {
        if msg.gen != self.generation || self.client.is_none() {
            return;
        }
        let was = self.status.get().leader;
        let now = msg.leadership.is_some();
        self.status.update(|s| s.leader = now);
        match (was, now) {
            (false, true) => self.emit(CoordEvent::BecameLeader),
            (true, false) => self.emit(CoordEvent::LostLeadership),
            _ => {}
        }
    }
}

mod requests;
pub use requests::*;
