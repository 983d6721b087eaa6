//! Broker outages against running jobs: frozen mid-run (SIGSTOP past the
//! client timeouts, then SIGCONT), restarted (Kafka keeps its topics and
//! offsets, so nothing may be lost), down at start, and a sink (and a
//! late-record output) whose deliveries time out while the broker is
//! frozen. (SIGKILLs of the broker under running jobs, with input arriving
//! throughout, are in `kafka_broker_restart.rs`.)
//!
//! These tests stop the shared broker, so they are serialised by a static
//! lock within this binary (cargo runs test binaries one after another), and
//! every test brings the broker back (`scripts/services up` thaws or starts
//! it) even when it fails.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use weir::connectors::kafka::KafkaSink;
use weir::pipeline::{Batch, Sink, SinkWriter, TaskContext};

static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the lock; on drop (also on panic) makes sure the broker is up.
struct Outage<'a> {
    _lock: MutexGuard<'a, ()>,
}

impl Outage<'_> {
    fn begin() -> Self {
        let lock = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        ensure_kafka();
        Outage { _lock: lock }
    }
}

impl Drop for Outage<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(repo_root().join("scripts/services"))
            .arg("up")
            .status();
    }
}

fn payments(ids: std::ops::Range<u64>) -> Vec<Rec> {
    ids.map(|id| {
        Rec::to(
            (id % 4) as i32,
            format!(r#"{{"id": {id}, "user": "u{}", "amount": 1.5}}"#, id % 5),
        )
    })
    .collect()
}

fn output_ids(got: &[Got]) -> Vec<u64> {
    got.iter()
        .map(|g| g.json()["id"].as_u64().expect("id"))
        .collect()
}

/// Creates a topic, tolerating one auto-created meanwhile by a client.
fn ensure_topic(brokers: &str, topic: &str, partitions: i32) {
    if partition_count(brokers, topic).is_none() {
        let r = std::panic::catch_unwind(|| create_topic(brokers, topic, partitions));
        if r.is_err() {
            assert!(
                partition_count(brokers, topic).is_some(),
                "topic {topic} could not be created"
            );
        }
    }
}

#[test]
fn broker_frozen_mid_run_loses_nothing() {
    let _o = Outage::begin();
    let brokers = brokers();
    let topics = JobTopics::create(&brokers, "frz");
    let (input, output) = (topics.input.clone(), topics.output.clone());
    let mut p = topics.spawn("kafka_etl", &brokers, &[]);
    p.wait_for_log("assigned partitions", Duration::from_secs(60));
    produce(&brokers, &input, &payments(0..1000));
    let got = read_topic(
        &brokers,
        &output,
        1000,
        Duration::from_secs(60),
        Duration::ZERO,
    );
    assert_eq!(got.len(), 1000, "before the freeze");

    services("freeze-kafka");
    // Records produced while frozen wait in the test producer's queue.
    let b2 = brokers.clone();
    let in2 = input.clone();
    let during = std::thread::spawn(move || produce(&b2, &in2, &payments(1000..2000)));
    std::thread::sleep(Duration::from_secs(15)); // past session.timeout.ms (6 s) and socket.timeout.ms (10 s)
    let frozen_log = p.log_text();
    services("thaw-kafka");
    during.join().expect("producer during the freeze");
    produce(&brokers, &input, &payments(2000..3000));

    let got = read_topic(
        &brokers,
        &output,
        3000,
        Duration::from_secs(120),
        Duration::from_secs(2),
    );
    let exited = p.child.try_wait().unwrap();
    assert!(
        exited.is_none(),
        "the job kept running, but it exited ({exited:?}):\n{}",
        tail(&p.log_text())
    );
    let log = p.terminate(Duration::from_secs(60));
    let ids: BTreeSet<u64> = output_ids(&got).into_iter().collect();
    let missing: Vec<u64> = (0..3000).filter(|i| !ids.contains(i)).collect();
    println!(
        "freeze: {} outputs, {} distinct, {} missing",
        got.len(),
        ids.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "lost {} ids, first {:?}:\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        tail(&log)
    );
    assert!(
        frozen_log.contains("waiting for broker") || log.contains("waiting for broker"),
        "a visible 'waiting for broker' status during the freeze:\n{}",
        tail(&log)
    );
}

/// The broker restarted (graceful stop and start) under a running job that
/// reads by explicit partition assignment, as the ZooKeeper-coordinated
/// workers do: the topics and every record survive the restart, the job
/// carries on by itself, and every record produced before, while it comes
/// back and after is processed (none skipped).
#[test]
fn broker_restarted_job_recovers_by_itself_and_loses_nothing() {
    let _o = Outage::begin();
    let brokers = brokers();
    let topics = JobTopics::create(&brokers, "rst");
    let (input, output) = (topics.input.clone(), topics.output.clone());
    let mut p = topics.spawn("kafka_etl", &brokers, &["--partitions", "0,1,2,3"]);
    p.wait_for_log("assigned partitions", Duration::from_secs(60));
    produce(&brokers, &input, &payments(0..500));
    assert_eq!(
        read_topic(
            &brokers,
            &output,
            500,
            Duration::from_secs(60),
            Duration::ZERO
        )
        .len(),
        500
    );

    let log_before = p.log_text().len();
    services("restart-kafka");
    let restarted = Instant::now();
    // Kafka keeps its log: the topics are still there, with their records.
    assert_eq!(partition_count(&brokers, &input), Some(4), "input kept");
    assert_eq!(partition_count(&brokers, &output), Some(4), "output kept");
    assert_eq!(
        read_topic(
            &brokers,
            &input,
            500,
            Duration::from_secs(30),
            Duration::ZERO
        )
        .len(),
        500,
        "the input's records survived the restart"
    );
    // Probe until the job is processing again; every probe sent while it
    // recovers must be processed too.
    let mut next = 10_000u64;
    loop {
        assert!(
            restarted.elapsed() < Duration::from_secs(120),
            "no recovery within 120 s:\n{}",
            tail(&p.log_text())
        );
        produce(&brokers, &input, &payments(next..next + 40));
        next += 40;
        let got = read_topic(
            &brokers,
            &output,
            usize::MAX,
            Duration::from_secs(3),
            Duration::ZERO,
        );
        let seen: BTreeSet<u64> = output_ids(&got).into_iter().collect();
        if (next - 40..next).all(|i| seen.contains(&i)) {
            break;
        }
    }
    let recovered = restarted.elapsed();
    produce(&brokers, &input, &payments(100_000..100_500));
    let want: BTreeSet<u64> = (0..500)
        .chain(10_000..next)
        .chain(100_000..100_500)
        .collect();
    let mut seen = BTreeSet::new();
    let mut outputs = 0;
    wait_until(
        "every record in the output",
        Duration::from_secs(60),
        || {
            let got = read_topic(
                &brokers,
                &output,
                usize::MAX,
                Duration::from_secs(2),
                Duration::ZERO,
            );
            outputs = got.len();
            seen = output_ids(&got).into_iter().collect();
            want.is_subset(&seen)
        },
    );
    let exited = p.child.try_wait().unwrap();
    assert!(
        exited.is_none(),
        "the job kept running, but it exited ({exited:?}):\n{}",
        tail(&p.log_text())
    );
    let log = p.terminate(Duration::from_secs(60));
    assert!(
        log[log_before..].contains("waiting for broker"),
        "the job saw the broker go:\n{}",
        tail(&log)
    );
    println!(
        "restart: recovered {recovered:?} after the restart; {} ids, {outputs} outputs ({} duplicates)",
        want.len(),
        outputs - want.len()
    );
}

#[test]
fn broker_down_at_start_job_starts_when_it_comes_up() {
    let _o = Outage::begin();
    let brokers = brokers();
    let topics = JobTopics::names(&brokers, "late-start");
    let (input, output) = (topics.input.clone(), topics.output.clone());
    services("stop-kafka");
    let mut p = topics.spawn("kafka_etl", &brokers, &[]);
    p.wait_for_log("waiting for broker", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    services("start-kafka");
    ensure_topic(&brokers, &input, 4);
    ensure_topic(&brokers, &output, 4);
    produce(&brokers, &input, &payments(0..400));
    let got = read_topic(
        &brokers,
        &output,
        400,
        Duration::from_secs(90),
        Duration::from_millis(500),
    );
    let log = p.terminate(Duration::from_secs(60));
    let ids: BTreeSet<u64> = output_ids(&got).into_iter().collect();
    assert_eq!(ids, (0..400).collect::<BTreeSet<u64>>(), "{}", tail(&log));
}

#[test]
fn sink_delivery_timeout_while_frozen_is_an_error_never_a_drop() {
    let _o = Outage::begin();
    let brokers = brokers();
    let topic = unique("frz-sink");
    let _guard = TopicGuard {
        brokers: brokers.clone(),
        topics: vec![topic.clone()],
    };
    create_topic(&brokers, &topic, 1);
    let sink = KafkaSink::<String>::text(&brokers, &topic).set("message.timeout.ms", "4000");
    let status = sink.status();
    let mut w = sink.open(&TaskContext::detached("sink")).expect("open");
    services("freeze-kafka");
    let mut b = Batch::with_capacity(10);
    for i in 0..10 {
        b.push(format!("r{i}"), 0);
    }
    w.write(&mut b).expect("write only queues");
    let start = Instant::now();
    let err = w.flush().expect_err("deliveries time out").to_string();
    let waited = start.elapsed();
    let st = status.describe();
    services("thaw-kafka");
    assert!(
        err.contains("delivery") && err.contains("10 record"),
        "{err}"
    );
    assert!(
        waited < Duration::from_secs(30),
        "flush bounded by message.timeout.ms: {waited:?}"
    );
    assert!(
        st.starts_with("waiting for broker"),
        "status while frozen: {st}"
    );
}

/// Late records are accepted input: a late record whose delivery times out
/// while the broker is frozen fails the flush (the window task then
/// replays), and the failure sticks to that task's producer, so a restarted
/// task's fresh output (`LateSink::for_task`) is what writes again.
#[test]
fn late_delivery_timeout_is_an_error_and_a_new_task_output_recovers() {
    use weir::connectors::kafka::{KafkaConfig, KafkaLateSink};
    use weir::pipeline::LateSink;
    let _o = Outage::begin();
    let brokers = brokers();
    let input = unique("frz-late");
    let dlq = format!("{input}.dlq");
    let _guard = TopicGuard {
        brokers: brokers.clone(),
        topics: vec![dlq.clone()],
    };
    create_topic(&brokers, &dlq, 1);
    let late = KafkaLateSink::<serde_json::Value>::json(&brokers, &dlq, &input)
        .with_config(KafkaConfig::new(&brokers).set("message.timeout.ms", "4000"));
    let ctx = TaskContext::detached("window");
    let first = late.for_task(&ctx).expect("open").expect("its own output");
    services("freeze-kafka");
    first
        .write(vec![(serde_json::json!({"n": 1}), 1)])
        .expect("write only queues");
    let flushed = first.flush();
    services("thaw-kafka");
    let err = flushed.expect_err("the delivery timed out").to_string();
    assert!(err.contains("deliver"), "{err}");
    let again = first
        .write(vec![(serde_json::json!({"n": 2}), 2)])
        .expect_err("the failure sticks to this task's producer")
        .to_string();
    assert!(again.contains("deliver"), "{again}");

    let second = late.for_task(&ctx).expect("open").expect("its own output");
    second
        .write(vec![(serde_json::json!({"n": 3}), 3)])
        .expect("a fresh output writes");
    second.flush().expect("and is acknowledged");
    let got = read_topic(
        &brokers,
        &dlq,
        1,
        Duration::from_secs(20),
        Duration::from_secs(1),
    );
    let ns: Vec<i64> = got
        .iter()
        .map(|g| g.json()["n"].as_i64().unwrap())
        .collect();
    assert!(
        ns.contains(&3),
        "the restarted output's record is in {dlq}: {ns:?}"
    );
}
