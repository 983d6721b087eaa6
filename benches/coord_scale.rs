//! Coordination at scale, against the real ZooKeeper: simulated workers
//! (lightweight in-process members, each with its own session) and tasks in
//! jobs of 100; the leader is member m001, member m002 stands by. Measured:
//! 1. the initial placement (time until every task is assigned, and the
//!    ZooKeeper write transactions it took: the server's zxid delta, read
//!    with the `srvr` four-letter word; run it on an otherwise idle server);
//! 2. one member's expiry (m000's connection is cut, so the server expires its
//!    session after the timeout): time until all its tasks are reassigned,
//!    after the cut and after the expiry, tasks moved, writes;
//! 3. leader failover under that load: m001's connection is cut; the time
//!    until m002 wins the election (must be within the session timeout + 1 s)
//!    and until m001's tasks are reassigned, and the tasks moved that were not
//!    m001's (must be 0).
//!
//! Sizes (`--size NAME` after `--`, or `SCALE_SIZE`): `small` (default: 100
//! members, 10,000 tasks in 100 jobs) and `large` (1,000 members, 100,000
//! tasks in 1,000 jobs, 6 s sessions). `SCALE_MEMBERS`, `SCALE_JOBS`,
//! `SCALE_TASKS_PER_JOB`, `SCALE_SESSION_MS` (default 3000, large 6000)
//! override single figures.
//!
//! ZooKeeper allows 60 connections per client IP by default (`maxClientCnxns`),
//! so members connect through small proxies that use distinct loopback source
//! addresses (127.0.0.2, 127.0.0.3, ...), 50 members each.
//!
//! `cargo bench --bench coord_scale [-- --size large]` (env: WEIR_ZK_PORT).
//! Prints one JSON object.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::net::{TcpListener, TcpSocket};
use weir::coord::election::campaign;
use weir::coord::membership::register;
use weir::coord::session::{connect_once, SessionConfig};
use weir::coord::store::{create_job, delete_recursive, ensure_layout, read_assignment};
use weir::coord::{JobSpec, Leader, WorkerInfo, ZkPaths};
use zookeeper_client::Client;

fn zk_addr() -> String {
    format!(
        "127.0.0.1:{}",
        std::env::var("WEIR_ZK_PORT").unwrap_or_else(|_| "2181".into())
    )
}

/// A TCP proxy to ZooKeeper whose outbound connections come from `source`; `block()` cuts
/// them (the server then expires the sessions behind it).
struct Proxy {
    addr: SocketAddr,
    blocked: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String, source: std::net::Ipv4Addr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let blocked = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (b, cs) = (blocked.clone(), conns.clone());
        let target: SocketAddr = target.parse().unwrap();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if b.load(Ordering::SeqCst) {
                    continue;
                }
                let h = tokio::spawn(async move {
                    let Ok(sock) = TcpSocket::new_v4() else {
                        return;
                    };
                    if sock.bind(SocketAddr::new(source.into(), 0)).is_err() {
                        return;
                    }
                    if let Ok(mut outbound) = sock.connect(target).await {
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

    fn block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.block();
        self.accept.abort();
    }
}

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The server's last zxid (every write transaction bumps it by one).
fn zxid() -> u64 {
    let mut s =
        std::net::TcpStream::connect(zk_addr()).expect("ZooKeeper: run scripts/services up");
    s.write_all(b"srvr").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let line = out
        .lines()
        .find(|l| l.starts_with("Zxid:"))
        .expect("srvr has Zxid (4lw whitelist?)");
    u64::from_str_radix(
        line.trim_start_matches("Zxid:")
            .trim()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap()
}

async fn connect(addr: &str, timeout: Duration) -> Client {
    let mut cfg = SessionConfig::new(addr);
    cfg.session_timeout = timeout;
    connect_once(&cfg)
        .await
        .expect("ZooKeeper: run scripts/services up")
}

/// task -> worker over all jobs (assignments read 64 at a time).
async fn placement(c: &Client, p: &ZkPaths, jobs: &[String]) -> BTreeMap<String, String> {
    let reads: Vec<_> = futures::stream::iter(jobs)
        .map(|j| read_assignment(c, p, j))
        .buffered(64)
        .collect()
        .await;
    let mut m = BTreeMap::new();
    for a in reads.into_iter().flatten().flatten() {
        for (t, ta) in a.0.tasks {
            m.insert(t.to_string(), ta.worker);
        }
    }
    m
}

async fn wait_zxid_stable(quiet: Duration) -> u64 {
    let mut last = zxid();
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let z = zxid();
        if z != last {
            last = z;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return z;
        }
    }
}

/// The size chosen by `--size NAME` (or `SCALE_SIZE`): (members, jobs, tasks per job,
/// session timeout in ms: 6 s, weir's default, for 1,000 sessions on a shared 2-core host).
fn size() -> (&'static str, u64, u64, u64, u64) {
    let args: Vec<String> = std::env::args().collect();
    let from_args = args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--size=")
            .map(str::to_string)
            .or_else(|| (a == "--size").then(|| args.get(i + 1).cloned()).flatten())
    });
    let name = from_args
        .or_else(|| std::env::var("SCALE_SIZE").ok())
        .unwrap_or_else(|| "small".into());
    match name.as_str() {
        "small" => ("small", 100, 100, 100, 3000),
        "large" => ("large", 1000, 1000, 100, 6000),
        other => panic!("unknown size {other:?}: small (10,000 tasks) or large (100,000 tasks)"),
    }
}

/// Cuts `member`'s connection (its session then expires) and waits until its worker node is
/// gone and none of its tasks in `before` is assigned to it any more (polling only the jobs
/// it had tasks in). Returns (expired after, all reassigned after) in ms since the cut.
async fn lose_member(
    admin: &Client,
    paths: &ZkPaths,
    before: &BTreeMap<String, String>,
    member: &str,
    proxy: &Proxy,
) -> (u64, u64) {
    let jobs: Vec<String> = before
        .iter()
        .filter(|(_, w)| *w == member)
        .filter_map(|(t, _)| Some(t.rsplit_once('-')?.0.to_string()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let tasks = before
        .keys()
        .filter(|t| {
            t.rsplit_once('-')
                .is_some_and(|(j, _)| jobs.binary_search(&j.to_string()).is_ok())
        })
        .count();
    let t = Instant::now();
    proxy.block();
    let node = paths.worker(member);
    let mut expired_ms = None;
    loop {
        if expired_ms.is_none() && admin.check_stat(&node).await.ok().flatten().is_none() {
            expired_ms = Some(t.elapsed().as_millis() as u64);
        }
        if let Some(expired_ms) = expired_ms {
            let p = placement(admin, paths, &jobs).await;
            if p.len() == tasks && p.values().all(|w| w != member) {
                return (expired_ms, t.elapsed().as_millis() as u64);
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{member}'s tasks not reassigned 120 s after the cut (did the leader's session expire?)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn moved(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> BTreeSet<String> {
    before
        .iter()
        .filter(|(t, w)| after.get(*t) != Some(*w))
        .map(|(t, _)| t.clone())
        .collect()
}

fn main() {
    // RUST_LOG=weir::coord::leader=info shows each leader pass with its timings.
    if std::env::var_os("RUST_LOG").is_some() {
        weir::logging::init_stderr();
    }
    let (size_name, m, j, t, st) = size();
    let members = env_num("SCALE_MEMBERS", m) as usize;
    let jobs_n = env_num("SCALE_JOBS", j) as usize;
    let per_job = env_num("SCALE_TASKS_PER_JOB", t) as u32;
    let session = Duration::from_millis(env_num("SCALE_SESSION_MS", st));
    assert!(
        members >= 3,
        "members m000 (expires), m001 (leads), m002 (takes over)"
    );
    let total = jobs_n * per_job as usize;
    // Three runtimes, as if three kinds of processes: the members' sessions, the two
    // leader candidates (a pass's CPU must not hold up the members' pings), and the
    // measuring client (reading every assignment must not either).
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()
            .unwrap()
    };
    let (members_rt, leaders_rt, rt) = (runtime("members"), runtime("leaders"), runtime("bench"));
    let poll = Duration::from_millis(if total > 20_000 { 500 } else { 100 });
    // (Borrowed: a runtime must not be dropped inside another.)
    let (members_rt, leaders_rt) = (&members_rt, &leaders_rt);
    rt.block_on(async move {
        let root = format!("/weir-bench-scale-{}", std::process::id());
        let paths = ZkPaths::new(&root).unwrap();
        let admin = connect(&zk_addr(), Duration::from_secs(10)).await;
        ensure_layout(&admin, &paths).await.unwrap();
        let cap = (total / members + 1) as u32 * 2;

        // Members: m000 and m001 each alone behind a proxy (so their sessions can be
        // killed), the others 50 per proxy, each proxy with its own loopback source address.
        let proxy0 = Proxy::start(zk_addr(), std::net::Ipv4Addr::new(127, 0, 0, 2)).await;
        let proxy1 = Proxy::start(zk_addr(), std::net::Ipv4Addr::new(127, 0, 1, 2)).await;
        let mut shared = Vec::new();
        for k in 0..members.div_ceil(50) {
            let ip = std::net::Ipv4Addr::new(127, 0, 2 + (k / 200) as u8, 3 + (k % 200) as u8);
            shared.push(Proxy::start(zk_addr(), ip).await);
        }
        let t = Instant::now();
        let mut clients = Vec::new();
        for i in 0..members {
            let addr = match i {
                0 => proxy0.addr.to_string(),
                1 => proxy1.addr.to_string(),
                _ => shared[i / 50].addr.to_string(),
            };
            let info = WorkerInfo {
                id: format!("m{i:03}"),
                address: String::new(),
                capacity: cap,
                job_types: vec![],
                version: "bench".into(),
                stages: Default::default(),
                brokers: String::new(),
            };
            let p = paths.clone();
            let join = async move {
                let c = connect(&addr, session).await;
                register(&c, &p, &info, Duration::from_secs(5))
                    .await
                    .unwrap();
                c
            };
            // m001 and m002 live on the leaders' runtime, the others on the members'.
            let c = if i == 1 || i == 2 {
                leaders_rt.spawn(join).await.unwrap()
            } else {
                members_rt.spawn(join).await.unwrap()
            };
            clients.push(c);
        }
        let members_ms = t.elapsed().as_millis() as u64;

        // m001 leads (it enters the election first); m002 stands by and records when it wins.
        let leadership = campaign(&clients[1], &paths, "m001").await.unwrap();
        let leader1 = leaders_rt.spawn(
            Leader::new(clients[1].clone(), paths.clone(), leadership)
                .with_resync(Duration::from_secs(120))
                .run(),
        );
        let won: Arc<Mutex<Option<Instant>>> = Arc::default();
        let (c2, p2, won2) = (clients[2].clone(), paths.clone(), won.clone());
        let leader2 = leaders_rt.spawn(async move {
            let l = campaign(&c2, &p2, "m002").await.unwrap();
            *won2.lock().unwrap() = Some(Instant::now());
            Leader::new(c2, p2, l)
                .with_resync(Duration::from_secs(120))
                .run()
                .await
        });

        // The tasks, jobs submitted 16 at a time.
        let z0 = zxid();
        let t = Instant::now();
        let jobs: Vec<String> = (0..jobs_n).map(|j| format!("job{j:04}")).collect();
        let created: Vec<_> = futures::stream::iter(&jobs)
            .map(|j| {
                let spec = JobSpec {
                    name: j.clone(),
                    job_type: "bench".into(),
                    parallelism: per_job,
                    config: Default::default(),
                    stages: Vec::new(),
                };
                let (admin, paths) = (&admin, &paths);
                async move { create_job(admin, paths, &spec).await }
            })
            .buffered(16)
            .collect()
            .await;
        created.into_iter().collect::<Result<Vec<_>, _>>().unwrap();
        let submitted_ms = t.elapsed().as_millis() as u64;
        loop {
            if placement(&admin, &paths, &jobs).await.len() == total {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "not every task placed after 180 s (members' or the leader's sessions expired? \
                 a ZooKeeper stall longer than the session timeout expires them all: see `srvr` \
                 latency and target/services/zk.log)"
            );
            tokio::time::sleep(poll).await;
        }
        let placed_ms = t.elapsed().as_millis() as u64;
        let z1 = wait_zxid_stable(Duration::from_secs(2)).await;
        let initial_writes = z1 - z0;
        let initial_settled_ms = t.elapsed().as_millis() as u64;

        // 2. m000's session expires.
        let before = placement(&admin, &paths, &jobs).await;
        let victim_tasks = before.values().filter(|w| *w == "m000").count();
        let z2 = zxid();
        let (expired_ms, reassigned_ms) =
            lose_member(&admin, &paths, &before, "m000", &proxy0).await;
        let z3 = wait_zxid_stable(Duration::from_secs(2)).await;
        let after = placement(&admin, &paths, &jobs).await;
        let expiry_moved = moved(&before, &after);
        let expiry_needless = expiry_moved.iter().filter(|t| before[*t] != "m000").count();

        // 3. The leader (m001) loses its session under that load; m002 takes over.
        let before = after;
        let leader_tasks = before.values().filter(|w| *w == "m001").count();
        let z4 = zxid();
        let cut = Instant::now();
        let (l_expired_ms, l_reassigned_ms) =
            lose_member(&admin, &paths, &before, "m001", &proxy1).await;
        let new_leader_ms = won
            .lock()
            .unwrap()
            .map(|w| w.saturating_duration_since(cut).as_millis() as u64)
            .expect("m002 leads once every task of m001 is reassigned");
        let z5 = wait_zxid_stable(Duration::from_secs(2)).await;
        let after = placement(&admin, &paths, &jobs).await;
        let failover_moved = moved(&before, &after);
        let failover_needless = failover_moved
            .iter()
            .filter(|t| before[*t] != "m001")
            .count();
        let limit_ms = session.as_millis() as u64 + 1000;

        let out = serde_json::json!({
            "bench": "coord_scale",
            "size": size_name,
            "members": members,
            "jobs": jobs_n,
            "tasks": total,
            "session_timeout_ms": session.as_millis() as u64,
            "members_registered_ms": members_ms,
            "jobs_submitted_ms": submitted_ms,
            "initial_placement_ms": placed_ms,
            "initial_settled_ms": initial_settled_ms,
            "initial_zk_write_txns": initial_writes,
            "expiry": {
                "victim_tasks": victim_tasks,
                "tasks_moved": expiry_moved.len(),
                "tasks_moved_needlessly": expiry_needless,
                "session_expired_after_ms": expired_ms,
                "all_reassigned_after_ms": reassigned_ms,
                "reassigned_after_expiry_ms": reassigned_ms - expired_ms,
                "zk_write_txns": z3 - z2,
            },
            "leader_failover": {
                "leader_tasks": leader_tasks,
                "old_leader_expired_after_ms": l_expired_ms,
                "new_leader_after_ms": new_leader_ms,
                "new_leader_limit_ms": limit_ms,
                "new_leader_within_limit": new_leader_ms <= limit_ms,
                "all_reassigned_after_ms": l_reassigned_ms,
                "reassigned_after_expiry_ms": l_reassigned_ms - l_expired_ms,
                "tasks_moved": failover_moved.len(),
                "tasks_moved_needlessly": failover_needless,
                "zk_write_txns": z5 - z4,
            },
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap());
        leader1.abort();
        leader2.abort();
        drop(proxy0);
        drop(proxy1);
        drop(shared);
        // Jobs' subtrees 32 at a time (one by one, 200,000 deletes take minutes).
        let _: Vec<_> = futures::stream::iter(&jobs)
            .map(|j| {
                let (admin, dir) = (&admin, paths.job(j));
                async move { delete_recursive(admin, &dir).await }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let _ = delete_recursive(&admin, &root).await;
        drop(clients);
    });
}
