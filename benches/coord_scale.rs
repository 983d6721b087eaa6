//! Coordination at scale, against the real ZooKeeper: 100 simulated workers
//! (lightweight in-process members, each with its own session), 10,000 tasks
//! (100 jobs × 100), one leader. One member's session is killed (its
//! connection is cut, so the server expires it after the session timeout);
//! measured: the time until all its tasks are reassigned, and how many
//! ZooKeeper write transactions that took (the server's zxid delta, read with
//! the `srvr` four-letter word; run it on an otherwise idle ZooKeeper).
//!
//! ZooKeeper allows 60 connections per client IP by default (`maxClientCnxns`),
//! so members connect through small proxies that use distinct loopback source
//! addresses (127.0.0.2, 127.0.0.3, ...), 50 members each.
//!
//! `cargo bench --bench coord_scale` (env: WEIR_ZK_PORT, SCALE_MEMBERS,
//! SCALE_JOBS, SCALE_TASKS_PER_JOB, SCALE_SESSION_MS). Prints one JSON object.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

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

/// task -> worker over all jobs.
async fn placement(c: &Client, p: &ZkPaths, jobs: &[String]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for j in jobs {
        if let Ok(Some((a, _))) = read_assignment(c, p, j).await {
            for (t, ta) in a.tasks {
                m.insert(t.to_string(), ta.worker);
            }
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

fn main() {
    let members = env_num("SCALE_MEMBERS", 100) as usize;
    let jobs_n = env_num("SCALE_JOBS", 100) as usize;
    let per_job = env_num("SCALE_TASKS_PER_JOB", 100) as u32;
    let session = Duration::from_millis(env_num("SCALE_SESSION_MS", 3000));
    let total = jobs_n * per_job as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let root = format!("/weir-bench-scale-{}", std::process::id());
        let paths = ZkPaths::new(&root).unwrap();
        let admin = connect(&zk_addr(), Duration::from_secs(10)).await;
        ensure_layout(&admin, &paths).await.unwrap();
        let cap = (total / members + 1) as u32 * 2;

        // Members: m000 alone behind its proxy (so its session can be killed), the others
        // 50 per proxy, each proxy with its own loopback source address.
        let proxy = Proxy::start(zk_addr(), std::net::Ipv4Addr::new(127, 0, 0, 2)).await;
        let mut shared = Vec::new();
        for k in 0..members.div_ceil(50) {
            shared.push(
                Proxy::start(zk_addr(), std::net::Ipv4Addr::new(127, 0, 0, 3 + k as u8)).await,
            );
        }
        let t = Instant::now();
        let mut clients = Vec::new();
        for i in 0..members {
            let addr = if i == 0 {
                proxy.addr.to_string()
            } else {
                shared[i / 50].addr.to_string()
            };
            let c = connect(&addr, session).await;
            let info = WorkerInfo {
                id: format!("m{i:03}"),
                address: String::new(),
                capacity: cap,
                job_types: vec![],
                version: "bench".into(),
            };
            register(&c, &paths, &info, Duration::from_secs(5))
                .await
                .unwrap();
            clients.push(c);
        }
        let members_ms = t.elapsed().as_millis();

        // The leader (its own session).
        let lc = connect(&zk_addr(), Duration::from_secs(10)).await;
        let leadership = campaign(&lc, &paths, "leader").await.unwrap();
        let leader = tokio::spawn(
            Leader::new(lc.clone(), paths.clone(), leadership)
                .with_resync(Duration::from_secs(120))
                .run(),
        );

        // 10,000 tasks.
        let z0 = zxid();
        let t = Instant::now();
        let jobs: Vec<String> = (0..jobs_n).map(|j| format!("job{j:03}")).collect();
        for j in &jobs {
            let spec = JobSpec {
                name: j.clone(),
                job_type: "bench".into(),
                parallelism: per_job,
                config: Default::default(),
            };
            create_job(&admin, &paths, &spec).await.unwrap();
        }
        loop {
            if placement(&admin, &paths, &jobs).await.len() == total {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let placed_ms = t.elapsed().as_millis();
        let z1 = wait_zxid_stable(Duration::from_secs(2)).await;
        let initial_writes = z1 - z0;
        let initial_settled_ms = t.elapsed().as_millis();

        // Kill m000's session.
        let before = placement(&admin, &paths, &jobs).await;
        let victim_tasks = before.values().filter(|w| *w == "m000").count();
        let z2 = zxid();
        let t = Instant::now();
        proxy.block();
        let victim_node = paths.worker("m000");
        let mut expired_ms = None;
        let reassigned_ms;
        loop {
            if expired_ms.is_none()
                && admin
                    .check_stat(&victim_node)
                    .await
                    .ok()
                    .flatten()
                    .is_none()
            {
                expired_ms = Some(t.elapsed().as_millis());
            }
            if expired_ms.is_some() {
                let p = placement(&admin, &paths, &jobs).await;
                if p.len() == total && p.values().all(|w| w != "m000") {
                    reassigned_ms = t.elapsed().as_millis();
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let z3 = wait_zxid_stable(Duration::from_secs(2)).await;
        let after = placement(&admin, &paths, &jobs).await;
        let moved = before
            .iter()
            .filter(|(t, w)| after.get(*t) != Some(*w))
            .count();
        let expired_ms = expired_ms.unwrap_or(0);
        let out = serde_json::json!({
            "bench": "coord_scale",
            "members": members,
            "jobs": jobs_n,
            "tasks": total,
            "session_timeout_ms": session.as_millis() as u64,
            "members_registered_ms": members_ms as u64,
            "initial_placement_ms": placed_ms as u64,
            "initial_settled_ms": initial_settled_ms as u64,
            "initial_zk_write_txns": initial_writes,
            "victim_tasks": victim_tasks,
            "tasks_moved": moved,
            "session_expired_after_ms": expired_ms as u64,
            "all_reassigned_after_ms": reassigned_ms as u64,
            "reassigned_after_expiry_ms": (reassigned_ms - expired_ms) as u64,
            "zk_write_txns_for_failover": z3 - z2,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap());
        leader.abort();
        drop(proxy);
        drop(shared);
        let _ = delete_recursive(&admin, &root).await;
        drop(clients);
    });
}
