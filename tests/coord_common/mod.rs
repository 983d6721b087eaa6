//! Shared helpers of the coordination tests: the real ZooKeeper address, a unique root
//! per test (deleted at the end, even on panic), an event collector actor, polling, and a
//! tiny TCP proxy whose forwarding the test can cut (to make a session really expire).
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use tokio::net::{TcpListener, TcpStream};
use weir::coord::session::{connect_once, SessionConfig};
use weir::coord::store::{delete_recursive, ensure_layout};
use weir::coord::{CoordEvent, WorkerInfo, ZkPaths};
use zookeeper_client::Client;

/// `127.0.0.1:${WEIR_ZK_PORT:-2181}`.
pub fn zk_addr() -> String {
    format!(
        "127.0.0.1:{}",
        std::env::var("WEIR_ZK_PORT").unwrap_or_else(|_| "2181".into())
    )
}

/// Connects to the real ZooKeeper or fails the test loudly.
pub async fn connect(session_timeout: Duration) -> Client {
    let mut cfg = SessionConfig::new(zk_addr());
    cfg.session_timeout = session_timeout;
    match connect_once(&cfg).await {
        Ok(c) => c,
        Err(e) => panic!(
            "ZooKeeper is not reachable at {} ({e}). These tests need a real ZooKeeper: run `scripts/services up` \
             (set WEIR_ZK_PORT if it listens elsewhere).",
            zk_addr()
        ),
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A unique root `/weir-test-<name>-<pid>-<nanos>-<n>`, created with its base layout, and
/// deleted (recursively) when dropped.
pub struct TestRoot {
    pub root: String,
    pub paths: ZkPaths,
}

impl TestRoot {
    pub async fn new(name: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let root = format!(
            "/weir-test-{name}-{}-{nanos}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let paths = ZkPaths::new(&root).unwrap();
        let c = connect(Duration::from_secs(5)).await;
        ensure_layout(&c, &paths).await.expect("create test root");
        TestRoot { root, paths }
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        let root = self.root.clone();
        // Own thread and runtime: Drop may run inside (or after) the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut cfg = SessionConfig::new(zk_addr());
                cfg.session_timeout = Duration::from_secs(5);
                if let Ok(c) = connect_once(&cfg).await {
                    if let Err(e) = delete_recursive(&c, &root).await {
                        eprintln!("cleanup of {root} failed: {e}");
                    }
                }
            });
        })
        .join();
    }
}

/// A worker description for tests.
pub fn worker(id: &str, capacity: u32) -> WorkerInfo {
    WorkerInfo {
        id: id.into(),
        address: format!("127.0.0.1:0/{id}"),
        capacity,
        job_types: vec![],
        version: "test".into(),
        stages: Default::default(),
        brokers: String::new(),
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Records every event it receives.
#[derive(Clone, Default)]
pub struct Events(pub Arc<Mutex<Vec<CoordEvent>>>);

impl Events {
    pub fn snapshot(&self) -> Vec<CoordEvent> {
        self.0.lock().unwrap().clone()
    }
    pub fn any(&self, f: impl Fn(&CoordEvent) -> bool) -> bool {
        self.0.lock().unwrap().iter().any(f)
    }
    pub fn position(&self, f: impl Fn(&CoordEvent) -> bool) -> Option<usize> {
        self.0.lock().unwrap().iter().position(f)
    }
}

pub struct Collector(pub Events);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<CoordEvent> for Collector {
    type Result = ();
    fn handle(&mut self, ev: CoordEvent, _: &mut Context<Self>) {
        self.0 .0.lock().unwrap().push(ev);
    }
}

/// A collector actor and the shared event list it fills.
pub fn collector() -> (Recipient<CoordEvent>, Events) {
    let events = Events::default();
    let addr = Collector(events.clone()).start();
    (addr.recipient(), events)
}

/// A TCP proxy to ZooKeeper. `block()` cuts every connection and refuses (accepts and
/// drops) new ones, so the server stops hearing from the clients behind it and expires
/// their sessions; `unblock()` forwards again.
pub struct Proxy {
    pub addr: SocketAddr,
    blocked: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let blocked = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (b, cs) = (blocked.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if b.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let h = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                cs.lock().unwrap().push(h.abort_handle());
            }
        });
        Proxy {
            addr,
            blocked,
            conns,
            accept,
        }
    }

    pub fn block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    pub fn unblock(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.block();
        self.accept.abort();
    }
}
