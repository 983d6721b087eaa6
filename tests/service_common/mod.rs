//! Shared helpers of the service tests: a cluster of real worker processes
//! (`target/debug/examples/service`) under a unique ZooKeeper root, the real
//! `weir` CLI, and readers of what the cluster published.
//!
//! Never skips: a missing ZooKeeper or broker fails the test and says to run
//! `scripts/services up`.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../common/mod.rs"]
pub mod kafka;

#[allow(unused_imports)]
pub use kafka::{create_topic, delete_topics, produce, read_topic, unique, Got, Proc, Rec};

/// `127.0.0.1:${WEIR_ZK_PORT:-2181}`, or `WEIR_TEST_ZK_CONNECT` when a test binary set it
/// (the ensemble test: several servers and a chroot).
pub fn zk_addr() -> String {
    if let Ok(connect) = std::env::var("WEIR_TEST_ZK_CONNECT") {
        return connect;
    }
    format!(
        "127.0.0.1:{}",
        std::env::var("WEIR_ZK_PORT").unwrap_or_else(|_| "2181".into())
    )
}

/// Makes sure ZooKeeper and the broker answer (starting them through the services script).
pub fn ensure_services() -> String {
    let b = kafka::ensure_kafka();
    // A root of this call's own: tests run in parallel, and one's cleanup
    // must not delete the root another is probing.
    let root = format!("/{}", unique("weir-test-probe"));
    let out = weir_raw(&[
        "--zk",
        &zk_addr(),
        "--root",
        &root,
        "--zk-wait-s",
        "10",
        "workers",
    ]);
    assert!(
        out.status.success(),
        "ZooKeeper at {} is not usable: run `scripts/services up`\n{}",
        zk_addr(),
        String::from_utf8_lossy(&out.stderr)
    );
    delete_root(&root);
    b
}

/// Runs the real `weir` binary with exactly `args`.
pub fn weir_raw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run weir")
}

/// Deletes a root recursively (through a throwaway tokio runtime).
pub fn delete_root(root: &str) {
    let root = root.to_string();
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut cfg = weir::coord::session::SessionConfig::new(zk_addr());
            cfg.session_timeout = Duration::from_secs(5);
            if let Ok(c) = weir::coord::session::connect_once(&cfg).await {
                let _ = weir::coord::store::delete_recursive(&c, &root).await;
            }
        });
    })
    .join();
}

/// A test cluster: a unique root, worker processes, topics; all cleaned up on drop.
pub struct Cluster {
    pub root: String,
    pub brokers: String,
    pub session_timeout_ms: u64,
    pub workers: BTreeMap<String, Proc>,
    pub topics: Vec<String>,
    /// The workers' `RUST_LOG` (default: `info`).
    pub log_filter: Option<String>,
}

impl Cluster {
    pub fn new(name: &str, session_timeout_ms: u64) -> Cluster {
        let brokers = ensure_services();
        Cluster {
            root: format!("/{}", unique(&format!("weir-test-{name}"))),
            brokers,
            session_timeout_ms,
            workers: BTreeMap::new(),
            topics: Vec::new(),
            log_filter: None,
        }
    }

    /// Creates a topic owned by the test.
    pub fn topic(&mut self, prefix: &str, partitions: i32) -> String {
        let t = unique(prefix);
        create_topic(&self.brokers, &t, partitions);
        self.topics.push(t.clone());
        t
    }

    /// Starts worker `id` (HTTP on an ephemeral port) and waits until it registered.
    pub fn start_worker(&mut self, id: &str) {
        self.start_worker_with(id, &[]);
    }

    /// [`start_worker`](Self::start_worker) with extra arguments (e.g. `--test-job-types`).
    pub fn start_worker_with(&mut self, id: &str, extra: &[&str]) {
        let st = self.session_timeout_ms.to_string();
        let zk = zk_addr();
        let mut args = vec![
            "worker",
            "--zk",
            &zk,
            "--brokers",
            &self.brokers,
            "--id",
            id,
            "--session-timeout-ms",
            &st,
            "--root",
            &self.root,
            "--http",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let p = Proc::spawn_logging("service", &args, self.log_filter.as_deref());
        self.workers.insert(id.to_string(), p);
        let want = id.to_string();
        self.wait("worker registration", Duration::from_secs(20), |c| {
            c.workers().iter().any(|w| w["id"] == want.as_str())
        });
    }

    /// `weir --zk .. --root .. <args>`.
    pub fn weir(&self, args: &[&str]) -> Output {
        let zk = zk_addr();
        let mut all = vec![
            "--zk",
            zk.as_str(),
            "--root",
            self.root.as_str(),
            "--zk-wait-s",
            "5",
        ];
        all.extend_from_slice(args);
        weir_raw(&all)
    }

    /// `weir .. <args>` that must succeed; its stdout.
    pub fn weir_ok(&self, args: &[&str]) -> String {
        let out = self.weir(args);
        assert!(
            out.status.success(),
            "weir {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `weir status --json`.
    pub fn status(&self) -> Value {
        serde_json::from_str(&self.weir_ok(&["status", "--json"])).expect("status JSON")
    }

    /// The live workers (from `weir status --json`).
    pub fn workers(&self) -> Vec<Value> {
        self.status()["workers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// One job's status, if it exists.
    pub fn job(&self, name: &str) -> Option<Value> {
        self.status()["jobs"]
            .as_array()?
            .iter()
            .find(|j| j["name"] == name)
            .cloned()
    }

    /// task -> (worker, state) of a job.
    pub fn placement(&self, name: &str) -> BTreeMap<String, (String, String)> {
        let Some(j) = self.job(name) else {
            return BTreeMap::new();
        };
        j["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["task"].as_str().unwrap().to_string(),
                    (
                        t["worker"].as_str().unwrap_or("").to_string(),
                        t["state"].as_str().unwrap().to_string(),
                    ),
                )
            })
            .collect()
    }

    /// Tasks per worker of a job.
    pub fn loads(&self, name: &str) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for (w, _) in self.placement(name).values() {
            *m.entry(w.clone()).or_default() += 1;
        }
        m
    }

    /// Polls `f` every 100 ms; panics after `timeout`.
    pub fn wait(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Cluster) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            if f(self) {
                return start.elapsed();
            }
            if start.elapsed() > timeout {
                let logs: String = self
                    .workers
                    .iter()
                    .map(|(id, p)| format!("--- {id} ---\n{}\n", kafka::tail(&p.log_text())))
                    .collect();
                panic!(
                    "timed out after {timeout:?} waiting for {what}\nstatus: {}\n{logs}",
                    self.status()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The worker that leads (from the workers' `/api/tasks`).
    pub fn leader(&self) -> Option<String> {
        for w in self.workers() {
            if let Some(addr) = w["address"].as_str() {
                if let Some(v) = http_get(addr, "/api/tasks")
                    .and_then(|b| serde_json::from_str::<Value>(&b).ok())
                {
                    if v["leader"] == true {
                        return Some(w["id"].as_str().unwrap().to_string());
                    }
                }
            }
        }
        None
    }

    /// HTTP address of a worker (from its znode).
    pub fn http_of(&self, id: &str) -> String {
        self.workers()
            .iter()
            .find(|w| w["id"] == id)
            .and_then(|w| w["address"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("worker {id} not registered"))
    }

    /// Every worker's whole log.
    pub fn full_logs(&self) -> String {
        self.workers.values().map(|p| p.log_text()).collect()
    }

    /// Dumps every worker's log tail (for failures and reports).
    pub fn logs(&self) -> String {
        self.workers
            .iter()
            .map(|(id, p)| format!("--- {id} ---\n{}\n", kafka::tail(&p.log_text())))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, p) in std::mem::take(&mut self.workers) {
            p.kill9();
        }
        delete_root(&self.root);
        let t: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        delete_topics(&self.brokers, &t);
    }
}

/// A plain HTTP GET on `addr` (`host:port`); the body on 2xx.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 2").then(|| body.to_string())
}

/// Payment records with ids `ids`, spread over `partitions` partitions.
pub fn payments(ids: std::ops::Range<u64>, partitions: i32) -> Vec<Rec> {
    ids.map(|i| {
        Rec::to(
            (i % partitions as u64) as i32,
            format!(
                "{{\"id\":{i},\"user\":\"{}\",\"amount\":{}.25}}",
                payment_user(i),
                i % 7
            ),
        )
    })
    .collect()
}

/// The user of payment `id` (the etl sink's output key).
pub fn payment_user(id: u64) -> String {
    format!("u{}", id % 50)
}

/// Output ids read from `topic` until every id of `want` arrived (or `timeout`); returns
/// (distinct ids, duplicates).
pub fn output_ids(
    brokers: &str,
    topic: &str,
    want: &BTreeSet<u64>,
    timeout: Duration,
) -> (BTreeSet<u64>, usize) {
    let start = Instant::now();
    loop {
        let left = timeout
            .saturating_sub(start.elapsed())
            .max(Duration::from_secs(1));
        let got = read_topic(brokers, topic, want.len(), left, Duration::from_secs(1));
        let mut ids = BTreeSet::new();
        let mut dups = 0;
        for g in got {
            let id = g.json()["id"].as_u64().expect("id");
            if !ids.insert(id) {
                dups += 1;
            }
        }
        if want.is_subset(&ids) || start.elapsed() >= timeout {
            return (ids, dups);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Where the `missing` payment ids would have come from and gone to: their
/// input partition (`id % input_partitions`) and the output partition that
/// holds the other records of their user (the sink keys by user), counted
/// per pair. Tells a lost input batch (one input partition, every user)
/// from records one writer lost on one output partition.
pub fn describe_missing(
    brokers: &str,
    output: &str,
    missing: &[u64],
    input_partitions: u64,
) -> String {
    let got = read_topic(
        brokers,
        output,
        usize::MAX,
        Duration::from_secs(5),
        Duration::ZERO,
    );
    let mut user_partition = BTreeMap::new();
    for g in &got {
        if let Some(user) = g.json()["user"].as_str() {
            user_partition.insert(user.to_string(), g.partition);
        }
    }
    let mut pairs: BTreeMap<(u64, Option<i32>), usize> = BTreeMap::new();
    for id in missing {
        let out = user_partition.get(&payment_user(*id)).copied();
        *pairs.entry((id % input_partitions, out)).or_default() += 1;
    }
    let pairs: Vec<String> = pairs
        .iter()
        .map(|((i, o), n)| format!("input partition {i} -> output partition {o:?}: {n}"))
        .collect();
    format!("{} missing ids: {}", missing.len(), pairs.join("; "))
}

/// A plain HTTP request on `addr`: (status code, body); `None` when nothing answered.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    let ct = content_type
        .map(|c| format!("Content-Type: {c}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// `GET addr path` as JSON (panics naming the page when it does not answer 2xx JSON).
pub fn get_json(addr: &str, path: &str) -> Value {
    let (code, body) = http_request(addr, "GET", path, None, "")
        .unwrap_or_else(|| panic!("{addr}{path}: no answer"));
    assert!(
        (200..300).contains(&code),
        "{addr}{path}: HTTP {code}: {body}"
    );
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{addr}{path}: {e}: {body}"))
}

/// Produces the chunks 0.5 s apart on a thread (input streaming in while a
/// test kills, freezes or rescales).
pub fn produce_slowly(
    brokers: &str,
    topic: &str,
    chunks: Vec<Vec<Rec>>,
) -> std::thread::JoinHandle<()> {
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    std::thread::spawn(move || {
        for chunk in chunks {
            produce(&brokers, &topic, &chunk);
            std::thread::sleep(Duration::from_millis(500));
        }
    })
}

/// Sentinels five minutes of event time past `t0` in each of the input's 4
/// partitions close every window in every stage; then the output, read
/// `read_committed`, must hold each window of `want` (its key from
/// `key_of`, `None` for the sentinels' own windows, its value in `field`)
/// exactly once with its exact value. On failure it says which windows are
/// wrong, why records went to the dead-letter topic `<input>.dlq`, the
/// job's status and the workers' logs.
pub fn assert_every_window_once<K: Ord + std::fmt::Debug>(
    c: &Cluster,
    (input, output): (&str, &str),
    t0: i64,
    want: &BTreeMap<K, u64>,
    key_of: impl Fn(&Value) -> Option<K>,
    field: &str,
) {
    let sentinels: Vec<Rec> = (0..4)
        .map(|p| Rec::to(p, format!(r#"{{"user": "~s", "ts": {}}}"#, t0 + 300_000)))
        .collect();
    produce(&c.brokers, input, &sentinels);
    let got = read_topic(
        &c.brokers,
        output,
        want.len(),
        Duration::from_secs(120),
        Duration::from_secs(3),
    );
    let seen = windows_by_key(&got, key_of, field);
    let wrong = wrong_windows(want, &seen);
    let twice = seen.values().filter(|v| v.len() > 1).count();
    if wrong.is_empty() && seen.len() == want.len() {
        return;
    }
    // What went where: dead letters (late records?) and the job.
    let dead = read_topic(
        &c.brokers,
        &format!("{input}.dlq"),
        usize::MAX,
        Duration::from_secs(3),
        Duration::ZERO,
    );
    let reasons: BTreeMap<String, usize> = dead.iter().fold(BTreeMap::new(), |mut m, d| {
        *m.entry(d.headers.get("error").cloned().unwrap_or_default())
            .or_default() += 1;
        m
    });
    panic!(
        "every window once and exact: {twice} windows written more than once; wrong or missing \
         (first 10): {wrong:?}; {} of {}; {} dead letters {reasons:?}; the cluster: {}\n{}",
        seen.len(),
        want.len(),
        dead.len(),
        c.status(),
        c.logs()
    );
}

/// The values (in `field`) the output records `got` hold for each window,
/// in the order read, the window from `key_of` (`None`: not a window of
/// the test's, skipped).
pub fn windows_by_key<K: Ord>(
    got: &[Got],
    key_of: impl Fn(&Value) -> Option<K>,
    field: &str,
) -> BTreeMap<K, Vec<u64>> {
    let mut seen: BTreeMap<K, Vec<u64>> = BTreeMap::new();
    for g in got {
        let v = g.json();
        let Some(k) = key_of(&v) else { continue };
        seen.entry(k).or_default().push(
            v[field]
                .as_u64()
                .unwrap_or_else(|| panic!("{field} in {v}")),
        );
    }
    seen
}

/// The first 10 windows of `want` that `seen` does not hold exactly once
/// with their exact value, each described.
pub fn wrong_windows<K: Ord + std::fmt::Debug>(
    want: &BTreeMap<K, u64>,
    seen: &BTreeMap<K, Vec<u64>>,
) -> Vec<String> {
    want.iter()
        .filter(|(k, n)| seen.get(*k).map(Vec::as_slice) != Some(&[**n][..]))
        .take(10)
        .map(|(k, n)| format!("{k:?}: want [{n}], got {:?}", seen.get(k)))
        .collect()
}

/// The `(user, window_start)` of one per-user window count; `None` for
/// the sentinels' (user `~s`).
pub fn user_window(v: &Value) -> Option<(String, i64)> {
    let user = v["user"].as_str().expect("user");
    (user != "~s").then(|| {
        (
            user.to_string(),
            v["window_start"].as_i64().expect("window_start"),
        )
    })
}
