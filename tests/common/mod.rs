//! Shared helpers of the Kafka integration tests.
//!
//! Owns: starting (or reusing) the real services through `scripts/services
//! up`, unique topic and group names, topic creation and deletion, a small
//! rdkafka producer and a reader of whole topics (records with partition,
//! offset, key and headers), and spawning the example binaries as real
//! processes. Never skips: an unreachable broker fails the test with a
//! message saying to run `scripts/services up`.

#![allow(dead_code)]

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `scripts/services <cmd>`; panics with its output on failure.
pub fn services(cmd: &str) {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/services"))
        .arg(cmd)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/services");
    assert!(
        out.status.success(),
        "`scripts/services {cmd}` failed (run `scripts/services up` from the repo root and check target/services/*.log):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The broker address the services script uses.
pub fn brokers() -> String {
    let port = std::env::var("WEIR_KAFKA_PORT").unwrap_or_else(|_| "9092".into());
    format!("127.0.0.1:{port}")
}

/// Makes sure the broker is up and answering; returns its address.
pub fn ensure_kafka() -> String {
    services("up");
    let b = brokers();
    let p: BaseProducer = base_config(&b).create().expect("producer");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match p.client().fetch_metadata(None, Duration::from_secs(2)) {
            Ok(_) => return b,
            Err(e) if Instant::now() > deadline => {
                panic!("Kafka broker {b} unreachable ({e}): run `scripts/services up` from the repo root")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn base_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers).set("log_level", "3");
    c
}

/// A name unique to this process and call: `<prefix>-<pid>-<n>-<nanos>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates `topic` with `partitions` partitions (waits until visible).
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        base_config(brokers).create().expect("admin client");
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let res = futures::executor::block_on(admin.create_topics(
        &[t],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))
    .expect("create_topics");
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while partition_count(brokers, topic) != Some(partitions as usize) {
        assert!(
            Instant::now() < deadline,
            "topic {topic} not visible after creation"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Partition count of `topic`, if it exists.
pub fn partition_count(brokers: &str, topic: &str) -> Option<usize> {
    let p: BaseProducer = base_config(brokers).create().expect("producer");
    let md = p
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()?;
    let t = md.topics().iter().find(|t| t.name() == topic)?;
    (t.error().is_none() && !t.partitions().is_empty()).then(|| t.partitions().len())
}

/// Whether `topic` exists, from the whole cluster's metadata (asking for
/// the topic by name could create it).
pub fn topic_exists(brokers: &str, topic: &str) -> bool {
    let p: BaseProducer = base_config(brokers).create().expect("producer");
    let md = p
        .client()
        .fetch_metadata(None, Duration::from_secs(5))
        .expect("cluster metadata");
    md.topics().iter().any(|t| t.name() == topic)
}

/// Deletes topics (best effort: the broker may already have lost them).
pub fn delete_topics(brokers: &str, topics: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = match base_config(brokers).create() {
        Ok(a) => a,
        Err(_) => return,
    };
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(5)))
        .request_timeout(Some(Duration::from_secs(5)));
    let _ = futures::executor::block_on(admin.delete_topics(topics, &opts));
}

/// Deletes the given topics when dropped (also on panic).
pub struct TopicGuard {
    pub brokers: String,
    pub topics: Vec<String>,
}

/// The topics and group of one example job under test: `<prefix>-in`,
/// `<prefix>-out`, the dead-letter topic `<input>.dlq` and `<prefix>-group`,
/// all unique; every topic is deleted when this is dropped.
pub struct JobTopics {
    pub input: String,
    pub output: String,
    pub dlq: String,
    pub group: String,
    _guard: TopicGuard,
}

impl JobTopics {
    /// Names only (nothing is created: e.g. the broker is down).
    pub fn names(brokers: &str, prefix: &str) -> Self {
        let input = unique(&format!("{prefix}-in"));
        let output = unique(&format!("{prefix}-out"));
        let dlq = format!("{input}.dlq");
        JobTopics {
            _guard: TopicGuard {
                brokers: brokers.to_string(),
                topics: vec![input.clone(), output.clone(), dlq.clone()],
            },
            group: unique(&format!("{prefix}-group")),
            input,
            output,
            dlq,
        }
    }

    /// Creates input and output with 4 partitions each.
    pub fn create(brokers: &str, prefix: &str) -> Self {
        let t = Self::names(brokers, prefix);
        create_topic(brokers, &t.input, 4);
        create_topic(brokers, &t.output, 4);
        t
    }

    /// Starts the Kafka example `example` on these topics and this group
    /// (`--brokers --input --output --group`), followed by `extra` arguments.
    pub fn spawn(&self, example: &str, brokers: &str, extra: &[&str]) -> Proc {
        let mut args = vec![
            "--brokers",
            brokers,
            "--input",
            &self.input,
            "--output",
            &self.output,
            "--group",
            &self.group,
        ];
        args.extend_from_slice(extra);
        Proc::spawn(example, &args)
    }
}

impl Drop for TopicGuard {
    fn drop(&mut self) {
        let t: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        delete_topics(&self.brokers, &t);
    }
}

/// A record to produce.
pub struct Rec {
    pub partition: Option<i32>,
    pub key: Option<String>,
    pub payload: Vec<u8>,
}

impl Rec {
    pub fn to(partition: i32, payload: impl Into<Vec<u8>>) -> Self {
        Rec {
            partition: Some(partition),
            key: None,
            payload: payload.into(),
        }
    }
}

/// Produces `recs` to `topic` and waits until all are acknowledged.
pub fn produce(brokers: &str, topic: &str, recs: &[Rec]) {
    let p: BaseProducer = base_config(brokers)
        .set("linger.ms", "5")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for r in recs {
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(&r.payload[..]);
        if let Some(pt) = r.partition {
            rec = rec.partition(pt);
        }
        if let Some(k) = &r.key {
            rec = rec.key(k.as_bytes());
        }
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(60))
        .expect("test producer flush");
}

/// Produces records with headers (for tests of dead-letter pass-through).
pub fn produce_with_headers(
    brokers: &str,
    topic: &str,
    partition: i32,
    payload: &[u8],
    headers: &[(&str, &str)],
) {
    let p: BaseProducer = base_config(brokers).create().expect("producer");
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header {
            key: k,
            value: Some(*v),
        });
    }
    p.send(
        BaseRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .payload(payload)
            .headers(h),
    )
    .map_err(|(e, _)| e)
    .expect("send");
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// A record read back.
#[derive(Debug, Clone)]
pub struct Got {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Reads `topic` from the beginning of every partition until `want`
/// records arrived (or `timeout`, returning what was read), then keeps
/// reading for `settle` to catch extra (duplicate) records.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    want: usize,
    timeout: Duration,
    settle: Duration,
) -> Vec<Got> {
    let n =
        partition_count(brokers, topic).unwrap_or_else(|| panic!("topic {topic} does not exist"));
    let c: BaseConsumer = base_config(brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..n as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let start = Instant::now();
    let mut reached: Option<Instant> = None;
    loop {
        if out.len() >= want && reached.is_none() {
            reached = Some(Instant::now());
        }
        match reached {
            Some(t) if t.elapsed() >= settle => break,
            None if start.elapsed() >= timeout => break,
            _ => {}
        }
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let mut headers = BTreeMap::new();
            if let Some(h) = m.headers() {
                for hd in h.iter() {
                    headers.insert(
                        hd.key.to_string(),
                        hd.value
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                            .unwrap_or_default(),
                    );
                }
            }
            out.push(Got {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: m.payload().unwrap_or(&[]).to_vec(),
                headers,
            });
        }
    }
    out
}

/// Builds the example binaries once per test process.
pub fn build_examples() {
    static ONCE: Once = Once::new();
    static RESULT: Mutex<Option<String>> = Mutex::new(None);
    ONCE.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--examples", "--features", "kafka"])
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .output()
            .expect("run cargo build --examples");
        if !out.status.success() {
            *RESULT.lock().unwrap() = Some(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    });
    if let Some(e) = RESULT.lock().unwrap().as_ref() {
        panic!("cargo build --examples failed:\n{e}");
    }
}

/// A running example process; killed when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    pub name: String,
}

impl Proc {
    /// Starts `target/debug/examples/<name>` with `args`, stderr to a log file.
    pub fn spawn(name: &str, args: &[&str]) -> Proc {
        Proc::spawn_logging(name, args, None)
    }

    /// [`spawn`](Self::spawn) with its own `RUST_LOG` filter (else
    /// `WEIR_TEST_RUST_LOG`, else `info`).
    pub fn spawn_logging(name: &str, args: &[&str], log_filter: Option<&str>) -> Proc {
        build_examples();
        let bin = repo_root().join("target/debug/examples").join(name);
        let log = std::env::temp_dir().join(format!("{}.log", unique(name)));
        let file = std::fs::File::create(&log).expect("log file");
        // Debugging aid: WEIR_TEST_WRAPPER="gdb -batch -ex run -ex bt --args"
        let wrapper = std::env::var("WEIR_TEST_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut cmd = match words.next() {
            Some(w) => {
                let mut c = Command::new(w);
                c.args(words).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = cmd
            .args(args)
            // Debugging aid: WEIR_TEST_RUST_LOG="info,librdkafka=debug".
            .env(
                "RUST_LOG",
                log_filter.map(str::to_string).unwrap_or_else(|| {
                    std::env::var("WEIR_TEST_RUST_LOG").unwrap_or_else(|_| "info".into())
                }),
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        Proc {
            child,
            log,
            name: name.to_string(),
        }
    }

    /// The process's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (panics after `timeout`).
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            if self.log_text().contains(needle) {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "{} exited ({st}) before logging {needle:?}:\n{}",
                    self.name,
                    tail(&self.log_text())
                );
            }
            assert!(
                start.elapsed() < timeout,
                "{} did not log {needle:?} within {timeout:?}:\n{}",
                self.name,
                tail(&self.log_text())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM (drain), then wait for a clean exit.
    pub fn terminate(mut self, timeout: Duration) -> String {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                let log = self.log_text();
                assert!(
                    st.success(),
                    "{} exited with {st} after SIGTERM:\n{}",
                    self.name,
                    tail(&log)
                );
                return log;
            }
            assert!(
                start.elapsed() < timeout,
                "{} did not exit within {timeout:?} of SIGTERM:\n{}",
                self.name,
                tail(&self.log_text())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL at once.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last 60 lines of a log.
pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Waits until `f()` holds (panics with `what` after `timeout`).
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `path` exists (helper for log files).
pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// Reads `topic` from the beginning of every partition with the given
/// `isolation.level` ("read_committed", librdkafka's default, or
/// "read_uncommitted") until `done(records so far)` holds (or `timeout`,
/// returning what was read), then keeps reading for `settle` to catch
/// extra records. `done` is called after every record and every empty poll.
pub fn read_topic_until(
    brokers: &str,
    topic: &str,
    isolation: &str,
    timeout: Duration,
    settle: Duration,
    mut done: impl FnMut(&[Got]) -> bool,
) -> Vec<Got> {
    let n =
        partition_count(brokers, topic).unwrap_or_else(|| panic!("topic {topic} does not exist"));
    let c: BaseConsumer = base_config(brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..n as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).expect("assign");
    let mut out: Vec<Got> = Vec::new();
    let start = Instant::now();
    let mut reached: Option<Instant> = None;
    loop {
        if reached.is_none() && done(&out) {
            reached = Some(Instant::now());
        }
        match reached {
            Some(t) if t.elapsed() >= settle => break,
            None if start.elapsed() >= timeout => break,
            _ => {}
        }
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let mut headers = BTreeMap::new();
            if let Some(h) = m.headers() {
                for hd in h.iter() {
                    headers.insert(
                        hd.key.to_string(),
                        hd.value
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                            .unwrap_or_default(),
                    );
                }
            }
            out.push(Got {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: m.payload().unwrap_or(&[]).to_vec(),
                headers,
            });
        }
    }
    out
}

/// Keeps `scripts/services` bringing the broker back: on drop (also on
/// panic) runs `scripts/services up`, which thaws or starts what a test
/// froze, stopped or killed.
pub struct BrokerBack;

impl Drop for BrokerBack {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("scripts/services"))
            .arg("up")
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .status();
    }
}

/// SIGKILLs the broker (`scripts/services kill-kafka`: no clean shutdown,
/// its log is recovered on the next start) and starts it again
/// (`start-kafka`, which waits until it answers a metadata request).
/// Returns how long the broker was gone.
pub fn kill_and_restart_kafka() -> Duration {
    let start = Instant::now();
    services("kill-kafka");
    services("start-kafka");
    start.elapsed()
}

/// A small deterministic generator for test data and moments (no test may
/// depend on chance).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// Produces `chunks` to `topic` in the background, one every `every`;
/// the thread ends when all were produced.
pub fn stream(
    brokers: &str,
    topic: &str,
    chunks: Vec<Vec<Rec>>,
    every: Duration,
) -> std::thread::JoinHandle<()> {
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    std::thread::spawn(move || {
        for chunk in chunks {
            produce(&brokers, &topic, &chunk);
            std::thread::sleep(every);
        }
    })
}

/// The clicks jobs' output: (user, window start) -> count.
pub type ClickWindows = BTreeMap<(String, i64), u64>;

/// The windows of JSON `{"user", "window_start", "count"}` records, those
/// of user `skip` left out; asserts none was written twice.
pub fn click_windows(got: &[Got], skip: &str) -> ClickWindows {
    let mut seen = ClickWindows::new();
    let mut twice = Vec::new();
    for g in got {
        let v = g.json();
        let k = (
            v["user"].as_str().expect("user").to_string(),
            v["window_start"].as_i64().expect("window_start"),
        );
        if k.0 == skip {
            continue;
        }
        if let Some(old) = seen.insert(k.clone(), v["count"].as_u64().expect("count")) {
            twice.push((k, old, v["count"].clone()));
        }
    }
    assert!(
        twice.is_empty(),
        "{} windows written more than once (first: {:?})",
        twice.len(),
        &twice[..twice.len().min(10)]
    );
    seen
}

/// Asserts `seen` is exactly `want`; `context` (logs) goes with a failure.
pub fn assert_windows_exact(want: &ClickWindows, seen: &ClickWindows, context: &str) {
    let wrong: Vec<_> = want
        .iter()
        .filter(|(k, v)| seen.get(*k) != Some(v))
        .map(|(k, v)| format!("{k:?}: want {v}, got {:?}", seen.get(k)))
        .collect();
    assert!(
        wrong.is_empty() && seen.len() == want.len(),
        "{} of {} windows wrong or missing ({} seen): {:?}\n{context}",
        wrong.len(),
        want.len(),
        seen.len(),
        &wrong[..wrong.len().min(10)],
    );
}
