//! Event time on a backlog, against the real broker: a topic filled before
//! `kafka_clicks` starts gives the same windows as live input.
//!
//! The backlog has skewed partitions (partition 0 holds ten times as many
//! clicks as partitions 1 and 2, over the same event-time span; partition 3
//! is empty), clicks out of order by less than the 2 s bound within each
//! partition, a few malformed records, and one click per non-empty
//! partition 60 s past the end to close the last windows. Nothing is late,
//! so every window must be exact (checked against counts computed here),
//! fire once, and the dead-letter topic must hold the malformed records
//! and nothing else. Before the fix, a reader that took partition 0 first
//! derived its watermark from partition 0 alone and sent most of the other
//! partitions to the dead-letter topic as late.
//!
//! The empty partition must not stall the job: it is caught up with its
//! log from the start and, quiet for the idle timeout, stops holding the
//! watermark (without the idle rule the last windows would never fire).
//! At parallelism 2 and 4 the source instances join the consumer group one
//! after another, so the group moves partitions between them while the
//! backlog is read: the new owner must take over where the old one stopped.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// A base time aligned to the 10 s windows.
const T0: i64 = 1_700_000_000_000;
/// Event-time span of the backlog.
const SPAN_MS: i64 = 300_000;
const SENTINEL: &str = "~sentinel";
const USERS: u64 = 20;

struct Backlog {
    recs: Vec<Rec>,
    /// (user, window_start) -> clicks, computed here.
    want: BTreeMap<(String, i64), u64>,
    malformed: usize,
}

/// `counts[p]` clicks in partition `p`, evenly over the span, each up to
/// 900 ms out of order; a malformed record every 997 clicks; a sentinel
/// 60 s past the end in each non-empty partition.
fn backlog(counts: [usize; 4]) -> Backlog {
    let mut rng = Lcg(42);
    let (mut recs, mut want, mut malformed) = (Vec::new(), BTreeMap::new(), 0);
    for (p, &n) in counts.iter().enumerate() {
        let p = p as i32;
        for i in 0..n as i64 {
            let ts = T0 + i * SPAN_MS / n as i64 + (rng.next() % 900) as i64;
            let user = format!("u{}", rng.next() % USERS);
            recs.push(Rec::to(p, format!(r#"{{"user": "{user}", "ts": {ts}}}"#)));
            *want.entry((user, ts - ts.rem_euclid(10_000))).or_insert(0) += 1;
            if i % 997 == 500 {
                recs.push(Rec::to(p, format!("not json {p}/{i}")));
                malformed += 1;
            }
        }
        if n > 0 {
            let ts = T0 + SPAN_MS + 60_000;
            recs.push(Rec::to(
                p,
                format!(r#"{{"user": "{SENTINEL}", "ts": {ts}}}"#),
            ));
        }
    }
    Backlog {
        recs,
        want,
        malformed,
    }
}

fn parse_counts(got: &[Got]) -> Vec<((String, i64), u64)> {
    got.iter()
        .map(|g| {
            let v = g.json();
            (
                (
                    v["user"].as_str().expect("user").to_string(),
                    v["window_start"].as_i64().expect("window_start"),
                ),
                v["count"].as_u64().expect("count"),
            )
        })
        .collect()
}

/// The dead letters in `dlq` (waiting for at least `expected`), and how
/// many of them are late records.
fn dead_letters(brokers: &str, dlq: &str, expected: usize) -> (usize, usize) {
    let dead = read_topic(
        brokers,
        dlq,
        expected,
        Duration::from_secs(30),
        Duration::from_secs(1),
    );
    let late = dead
        .iter()
        .filter(|d| d.headers.get("error").map(String::as_str) == Some("late"))
        .count();
    (dead.len(), late)
}

/// Fills the input, then runs `kafka_clicks` at `parallelism` over it and
/// checks every window and the dead-letter topic. Returns the job's log.
fn run_on_backlog(parallelism: usize, counts: [usize; 4]) -> String {
    let brokers = ensure_kafka();
    let topics = JobTopics::create(&brokers, "backlog");
    create_topic(&brokers, &topics.dlq, 1);
    let b = backlog(counts);
    produce(&brokers, &topics.input, &b.recs);

    let p = parallelism.to_string();
    let proc_ = topics.spawn(
        "kafka_clicks",
        &brokers,
        &["--parallelism", &p, "--idle-timeout-ms", "3000"],
    );
    // Every window fires on the watermark (the sentinels' windows do not):
    // read until all are there, then a little longer for duplicates.
    let fired = read_topic(
        &brokers,
        &topics.output,
        b.want.len(),
        Duration::from_secs(180),
        Duration::from_secs(2),
    );
    let log = proc_.terminate(Duration::from_secs(30));
    let got: Vec<_> = parse_counts(&fired)
        .into_iter()
        .filter(|((u, _), _)| u != SENTINEL)
        .collect();
    let as_map: BTreeMap<_, _> = got.iter().cloned().collect();
    let wrong: Vec<_> = b
        .want
        .iter()
        .filter(|(k, v)| as_map.get(*k) != Some(v))
        .take(10)
        .map(|(k, v)| format!("{k:?}: want {v}, got {:?}", as_map.get(k)))
        .collect();
    assert!(
        wrong.is_empty() && as_map.len() == b.want.len(),
        "parallelism {parallelism}: {} of {} windows wrong or missing (first: {wrong:#?}); {} extra\n{}",
        b.want.iter().filter(|(k, v)| as_map.get(*k) != Some(v)).count(),
        b.want.len(),
        as_map.keys().filter(|k| !b.want.contains_key(*k)).count(),
        tail(&log)
    );
    assert_eq!(got.len(), as_map.len(), "each window fired once");

    // The dead-letter topic: the malformed records, and nothing late.
    let (dead, late) = dead_letters(&brokers, &topics.dlq, b.malformed);
    assert_eq!(late, 0, "no click is late at parallelism {parallelism}");
    assert_eq!(dead, b.malformed, "the malformed records, once each");
    log
}

#[test]
fn backlog_with_skewed_and_empty_partitions_at_parallelism_1() {
    run_on_backlog(1, [20_000, 2_000, 2_000, 0]);
}

#[test]
fn backlog_with_skewed_and_empty_partitions_at_parallelism_2() {
    let log = run_on_backlog(2, [20_000, 2_000, 2_000, 0]);
    eprintln!(
        "partitions moved between instances during the backlog: {}",
        log.contains("revoked partitions")
    );
}

#[test]
fn backlog_with_skewed_and_empty_partitions_at_parallelism_4() {
    let log = run_on_backlog(4, [20_000, 2_000, 2_000, 0]);
    eprintln!(
        "partitions moved between instances during the backlog: {}",
        log.contains("revoked partitions")
    );
}

/// Completed checkpoints of `job` under a `--checkpoint-dir`.
fn completed_checkpoints(dir: &std::path::Path, job: &str) -> usize {
    std::fs::read_dir(dir.join(job))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().join("_metadata").exists())
                .count()
        })
        .unwrap_or(0)
}

/// The job stopped (SIGTERM: a savepoint) after its first checkpoint, in
/// the middle of the backlog, and started again with the same arguments:
/// every window once, exact, nothing late — across both runs' output.
#[test]
fn backlog_stopped_midway_and_started_again_is_exact() {
    let brokers = ensure_kafka();
    let topics = JobTopics::create(&brokers, "backlog-stop");
    create_topic(&brokers, &topics.dlq, 1);
    let b = backlog([40_000, 10_000, 10_000, 0]);
    produce(&brokers, &topics.input, &b.recs);
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().display().to_string();
    let args = [
        "--parallelism",
        "2",
        "--idle-timeout-ms",
        "3000",
        "--checkpoint-dir",
        &dir_arg,
    ];

    let first = topics.spawn("kafka_clicks", &brokers, &args);
    wait_until("a first checkpoint", Duration::from_secs(120), || {
        completed_checkpoints(dir.path(), "kafka-clicks") >= 1
    });
    let log1 = first.terminate(Duration::from_secs(60));
    assert!(
        log1.contains("stopped with a savepoint"),
        "SIGTERM took a savepoint:\n{}",
        tail(&log1)
    );
    let before = read_topic(
        &brokers,
        &topics.output,
        b.want.len(),
        Duration::from_secs(2),
        Duration::ZERO,
    )
    .len();
    eprintln!(
        "windows written before the stop: {before} of {}",
        b.want.len()
    );

    let second = topics.spawn("kafka_clicks", &brokers, &args);
    let fired = read_topic(
        &brokers,
        &topics.output,
        b.want.len(),
        Duration::from_secs(180),
        Duration::from_secs(2),
    );
    let log2 = second.terminate(Duration::from_secs(60));
    assert!(log2.contains("resuming from checkpoint"), "{}", tail(&log2));
    let got: Vec<_> = parse_counts(&fired)
        .into_iter()
        .filter(|((u, _), _)| u != SENTINEL)
        .collect();
    let as_map: BTreeMap<_, _> = got.iter().cloned().collect();
    assert_eq!(got.len(), as_map.len(), "each window written once");
    let wrong = b
        .want
        .iter()
        .filter(|(k, v)| as_map.get(*k) != Some(v))
        .count();
    assert!(
        wrong == 0 && as_map.len() == b.want.len(),
        "{wrong} of {} windows wrong or missing after a stop and a restart\n{}",
        b.want.len(),
        tail(&log2)
    );
    let (_, late) = dead_letters(&brokers, &topics.dlq, b.malformed);
    assert_eq!(late, 0, "nothing late across the stop");
}

/// Partitions each source instance owned, in the order they changed.
type Owned = std::sync::Arc<std::sync::Mutex<Vec<(usize, Vec<i32>)>>>;

/// Opens the wrapped Kafka source's instance 1 only after `delay`, so the
/// two instances join the group apart: the first served takes every
/// partition and reads the backlog until the group moves some to the
/// other;
/// records which partitions each instance owned after each poll.
struct LateSecondInstance<S> {
    inner: S,
    delay: Duration,
    owned: Owned,
}

struct Recording<R> {
    inner: R,
    subtask: usize,
    owned: Owned,
}

type Clicks =
    weir::connectors::kafka::KafkaSource<weir::connectors::kafka::Json<Click>, fn(&Click) -> i64>;

#[derive(serde::Deserialize, Clone, Debug)]
struct Click {
    user: String,
    ts: i64,
}

impl weir::pipeline::Source for LateSecondInstance<Clicks> {
    type Out = Click;
    type Reader = Recording<<Clicks as weir::pipeline::Source>::Reader>;
    fn open(
        &self,
        ctx: &weir::pipeline::TaskContext,
    ) -> Result<Self::Reader, weir::pipeline::ConnectorError> {
        if ctx.subtask == 1 {
            std::thread::sleep(self.delay);
        }
        Ok(Recording {
            inner: self.inner.open(ctx)?,
            subtask: ctx.subtask,
            owned: self.owned.clone(),
        })
    }
}

impl weir::pipeline::SourceReader for Recording<<Clicks as weir::pipeline::Source>::Reader> {
    type Out = Click;
    fn poll(
        &mut self,
        out: &mut weir::pipeline::Batch<Click>,
        max: usize,
    ) -> Result<weir::pipeline::SourceStatus, weir::pipeline::ConnectorError> {
        let s = self.inner.poll(out, max)?;
        let mine = self.inner.partitions();
        let mut owned = self.owned.lock().unwrap();
        if owned
            .iter()
            .rev()
            .find(|(i, _)| *i == self.subtask)
            .map(|(_, p)| p)
            != Some(&mine)
        {
            owned.push((self.subtask, mine));
        }
        Ok(s)
    }
    fn position(&self) -> Option<serde_json::Value> {
        self.inner.position()
    }
    fn seek(&mut self, p: &serde_json::Value) -> Result<(), weir::pipeline::ConnectorError> {
        self.inner.seek(p)
    }
    fn commit(&mut self, p: &serde_json::Value) -> Result<(), weir::pipeline::ConnectorError> {
        self.inner.commit(p)
    }
    fn watermark(&mut self) -> weir::pipeline::ReaderWatermark {
        self.inner.watermark()
    }
}

/// A second source instance joins the group while the first is in the
/// middle of the backlog: the group moves partitions from the first to the
/// second, which must take over where the first stopped (not replay from
/// the committed offsets into the same windows) and must not make records
/// late. Every window exactly once, exact.
#[test]
fn a_second_instance_joining_mid_backlog_is_exact() {
    use weir::connectors::CollectSink;
    use weir::pipeline::{Count, Job, Tumbling, Watermarks};
    let brokers = ensure_kafka();
    let topics = JobTopics::create(&brokers, "backlog-join");
    let b = backlog([40_000, 10_000, 10_000, 0]);
    produce(&brokers, &topics.input, &b.recs);
    let owned = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let source: Clicks =
        weir::connectors::kafka::KafkaSource::json::<Click>(&brokers, &topics.input)
            .group(&topics.group)
            .dead_letters_to_job()
            .with_timestamps(|c: &Click| c.ts);
    let (sink, out) = CollectSink::new();
    let job = Job::new("backlog-join")
        .parallelism(2)
        .batch_size(512)
        .source(LateSecondInstance {
            inner: source,
            delay: Duration::from_millis(1500),
            owned: owned.clone(),
        })
        .watermarks(
            Watermarks::bounded_out_of_orderness(Duration::from_secs(2))
                .with_idle_timeout(Duration::from_secs(3)),
        )
        .key_by(|c: &Click| c.user.clone())
        .window(Tumbling::event_time(Duration::from_secs(10)))
        .aggregate(Count)
        .sink(sink);
    let (want, n_want) = (b.want.clone(), b.want.len());
    let report = actix::System::new().block_on(async move {
        let rt = weir::actors::LocalRuntime::new(2);
        let handle = rt.start(job).expect("valid job");
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        // Every window fires on the watermark (sentinels close the last).
        while out.len() < n_want && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await; // duplicates, if any
        let got = out.take();
        handle.drain();
        (handle.wait().await, got)
    });
    let (report, got) = report;
    let owned = owned.lock().unwrap().clone();
    // Whichever instance the group served first read every partition, and
    // then the other took some of them.
    let first_all = owned
        .iter()
        .position(|(_, p)| p.len() == 4)
        .map(|at| (at, owned[at].0));
    assert!(
        first_all.is_some_and(|(at, i)| owned[at..].iter().any(|(j, p)| *j != i && !p.is_empty())),
        "one instance read every partition before the other took some: {owned:?}"
    );
    let mut seen = BTreeMap::new();
    for w in got {
        let k = (w.key.clone(), w.window.start);
        assert!(
            seen.insert(k.clone(), w.value).is_none(),
            "window {k:?} fired twice"
        );
    }
    seen.retain(|(u, _), _| u != SENTINEL);
    let late: u64 = report.tasks.values().map(|m| m.late_records).sum();
    let wrong = want.iter().filter(|(k, v)| seen.get(*k) != Some(v)).count();
    assert_eq!(late, 0, "no record late; partitions owned: {owned:?}");
    assert!(
        wrong == 0 && seen.len() == want.len(),
        "{wrong} of {} windows wrong or missing; partitions owned: {owned:?}",
        want.len()
    );
}
