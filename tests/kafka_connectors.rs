//! Library-level tests of the Kafka source and sink against the real
//! broker: positions, commit and seek; explicit partition assignment;
//! per-partition watermarks with idle partitions; transactions; delivery
//! failures; delivery guarantees; and configuration errors that name what
//! is wrong.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};
use weir::connectors::kafka::{DeliveryGuarantee, KafkaSink, KafkaSource};
use weir::pipeline::{
    Batch, ReaderWatermark, Sink, SinkWriter, Source, SourceReader, SourceStatus, TaskContext,
    Watermarks,
};

fn ctx(subtask: usize, parallelism: usize) -> TaskContext {
    let mut c = TaskContext::detached("source");
    c.job = "kafka-connectors-test".into();
    c.subtask = subtask;
    c.parallelism = parallelism;
    c
}

/// Polls until `n` records arrived (or panics after `timeout`).
fn poll_n<R: SourceReader>(r: &mut R, n: usize, timeout: Duration) -> Batch<R::Out> {
    let mut out = Batch::with_capacity(n);
    let start = Instant::now();
    while out.len() < n {
        assert!(
            start.elapsed() < timeout,
            "only {} of {n} records within {timeout:?}",
            out.len()
        );
        let room = n - out.len();
        if let SourceStatus::Idle(d) = r.poll(&mut out, room).expect("poll") {
            std::thread::sleep(d);
        }
    }
    out
}

/// Polls for `d` and returns whatever arrived.
fn poll_for<R: SourceReader>(r: &mut R, d: Duration) -> Batch<R::Out> {
    let mut out = Batch::with_capacity(16);
    let start = Instant::now();
    while start.elapsed() < d {
        if let SourceStatus::Idle(d) = r.poll(&mut out, 1000).expect("poll") {
            std::thread::sleep(d);
        }
    }
    out
}

fn topic_with(brokers: &str, prefix: &str, partitions: i32) -> (String, TopicGuard) {
    let t = unique(prefix);
    create_topic(brokers, &t, partitions);
    let g = TopicGuard {
        brokers: brokers.to_string(),
        topics: vec![t.clone(), format!("{t}.dlq")],
    };
    (t, g)
}

#[test]
fn explicit_assignment_position_commit_and_seek() {
    let brokers = ensure_kafka();
    let (topic, _g) = topic_with(&brokers, "pos", 2);
    let recs: Vec<Rec> = (0..20).map(|i| Rec::to(i % 2, format!("r{i}"))).collect();
    produce(&brokers, &topic, &recs);
    let group = unique("pos-group");
    let source = KafkaSource::text(&brokers, &topic)
        .group(&group)
        .partitions(vec![0, 1]);
    source.validate().expect("valid");

    let mut r = source.open(&ctx(0, 1)).expect("open");
    let first = poll_n(&mut r, 8, Duration::from_secs(30));
    let pos = r.position().expect("position");
    let offsets = pos["offsets"].as_object().unwrap();
    let total: i64 = offsets.values().map(|v| v.as_i64().unwrap()).sum();
    assert_eq!(pos["topic"], json!(topic));
    assert!(total >= 8, "position after the records returned: {pos}");
    assert_eq!(first.len(), 8);
    r.commit(&pos).expect("commit");
    std::thread::sleep(Duration::from_millis(500)); // async commit
    drop(r);

    // A new reader of the group starts at the committed position.
    let mut r2 = source.open(&ctx(0, 1)).expect("reopen");
    let rest = poll_n(&mut r2, 20 - total as usize, Duration::from_secs(30));
    let extra = poll_for(&mut r2, Duration::from_millis(500));
    assert_eq!(
        extra.len(),
        0,
        "nothing before the committed position is read again"
    );
    let mut seen: Vec<String> = first.values.to_vec();
    seen.extend(rest.values.iter().cloned());
    // first batch may hold records past the committed offsets only if
    // position counted them: every record is seen at least once.
    for i in 0..20 {
        assert!(
            seen.contains(&format!("r{i}")),
            "r{i} missing from {seen:?}"
        );
    }

    // Seek back to the start of partition 1 only.
    r2.seek(&json!({"topic": topic, "offsets": {"1": 0}}))
        .expect("seek");
    let again = poll_n(&mut r2, 10, Duration::from_secs(30));
    let mut vals: Vec<String> = again.values.clone();
    vals.sort();
    let mut want: Vec<String> = (0..20)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("r{i}"))
        .collect();
    want.sort();
    assert_eq!(vals, want);
    assert!(
        r2.seek(&json!({"topic": "other", "offsets": {}})).is_err(),
        "a position of another topic is rejected"
    );
}

#[test]
fn explicit_assignment_splits_partitions_between_instances() {
    let brokers = ensure_kafka();
    let (topic, _g) = topic_with(&brokers, "split", 4);
    produce(
        &brokers,
        &topic,
        &(0..40)
            .map(|i| Rec::to(i % 4, format!("{}", i % 4)))
            .collect::<Vec<_>>(),
    );
    let source = KafkaSource::text(&brokers, &topic)
        .group(unique("split"))
        .partitions(vec![0, 1, 2, 3]);
    assert_eq!(source.max_parallelism(), Some(4));
    let mut r = source.open(&ctx(1, 2)).expect("open");
    assert_eq!(r.partitions(), vec![1, 3]);
    let got = poll_n(&mut r, 20, Duration::from_secs(30));
    assert!(
        got.values.iter().all(|v| v == "1" || v == "3"),
        "{:?}",
        got.values
    );
    assert_eq!(poll_for(&mut r, Duration::from_millis(300)).len(), 0);

    let bad = KafkaSource::text(&brokers, &topic).partitions(vec![7]);
    let err = bad
        .open(&ctx(0, 1))
        .err()
        .expect("partition 7 does not exist")
        .to_string();
    assert!(err.contains("no partition 7"), "{err}");
}

#[test]
fn group_subscription_reads_everything_and_reports_assignment() {
    let brokers = ensure_kafka();
    let (topic, _g) = topic_with(&brokers, "grp", 4);
    produce(
        &brokers,
        &topic,
        &(0..100)
            .map(|i| Rec::to(i % 4, format!("{i}")))
            .collect::<Vec<_>>(),
    );
    let source = KafkaSource::text(&brokers, &topic).group(unique("grp"));
    let mut r = source.open(&ctx(0, 1)).expect("open");
    let got = poll_n(&mut r, 100, Duration::from_secs(30));
    assert_eq!(got.len(), 100);
    assert_eq!(r.partitions(), vec![0, 1, 2, 3]);
    assert_eq!(source.status().describe(), "connected");
}

#[test]
fn watermark_is_the_minimum_over_active_partitions() {
    let brokers = ensure_kafka();
    let (topic, _g) = topic_with(&brokers, "wm", 2);
    #[derive(serde::Deserialize)]
    struct E {
        ts: i64,
    }
    let source = KafkaSource::json::<E>(&brokers, &topic)
        .partitions(vec![0, 1])
        .with_timestamps(|e: &E| e.ts);
    let mut c = ctx(0, 1);
    c.watermarks = Watermarks::bounded_out_of_orderness(Duration::from_millis(100))
        .with_idle_timeout(Duration::from_secs(2));
    let mut r = source.open(&c).expect("open");
    assert_eq!(
        r.watermark(),
        ReaderWatermark::Held,
        "partitions that have not delivered hold the watermark"
    );
    produce(
        &brokers,
        &topic,
        &[
            Rec::to(0, r#"{"ts": 5000}"#),
            Rec::to(1, r#"{"ts": 1000}"#),
            Rec::to(0, r#"{"ts": 9000}"#),
        ],
    );
    let got = poll_n(&mut r, 3, Duration::from_secs(30));
    assert_eq!(got.timestamps.iter().copied().max(), Some(9000));
    assert_eq!(
        r.watermark(),
        ReaderWatermark::At(900),
        "min(9000, 1000) - 100: the slow partition holds it back"
    );
    // Partition 1 goes quiet past the idle timeout; partition 0 moves on.
    std::thread::sleep(Duration::from_millis(1500));
    produce(&brokers, &topic, &[Rec::to(0, r#"{"ts": 12000}"#)]);
    poll_n(&mut r, 1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        r.watermark(),
        ReaderWatermark::At(11_900),
        "caught-up and idle partition 1 no longer holds the watermark"
    );
    // Decode failures go to the dead-letter topic, not into the batch.
    produce(&brokers, &topic, &[Rec::to(1, "nope")]);
    assert_eq!(poll_for(&mut r, Duration::from_millis(800)).len(), 0);
    assert_eq!(c.metrics.snapshot().dead_letters, 1);
    // The dead-letter topic was not created by the test: produced to, it
    // is auto-created by the broker.
    let dlq = format!("{topic}.dlq");
    let dead = read_topic(&brokers, &dlq, 1, Duration::from_secs(30), Duration::ZERO);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].text(), "nope");
    assert_eq!(dead[0].headers["source.partition"], "1");
    assert_eq!(dead[0].headers["source.offset"], "1");
}

#[test]
fn sink_keyed_and_round_robin_and_transactional() {
    let brokers = ensure_kafka();
    let (topic, _g) = topic_with(&brokers, "sink", 4);
    // Round-robin: spread over all partitions.
    let sink = KafkaSink::<String>::text(&brokers, &topic);
    sink.validate().expect("valid");
    let mut w = sink.open(&ctx(0, 1)).expect("open");
    let mut b = Batch::with_capacity(8);
    for i in 0..8 {
        b.push(format!("rr{i}"), 1_700_000_000_000 + i);
    }
    w.write(&mut b).expect("write");
    assert!(b.is_empty(), "write drains the batch");
    w.flush().expect("flush");
    assert_eq!(w.acknowledged(), 8);
    // Keyed, in a transaction committed at flush.
    let sink = KafkaSink::<String>::text(&brokers, &topic)
        .key_by(|s: &String| s[..2].to_string())
        .transactional(unique("txn"));
    let mut w = sink.open(&ctx(0, 1)).expect("open transactional");
    for i in 0..12 {
        b.push(format!("k{}-{i}", i % 3), 0);
    }
    w.write(&mut b).expect("write");
    w.flush().expect("commit transaction");
    w.write(&mut Batch::with_capacity(0)).expect("empty write");
    w.close().expect("close");
    let got = read_topic(
        &brokers,
        &topic,
        20,
        Duration::from_secs(30),
        Duration::from_millis(500),
    );
    assert_eq!(got.len(), 20);
    let rr: std::collections::BTreeSet<i32> = got
        .iter()
        .filter(|g| g.text().starts_with("rr"))
        .map(|g| g.partition)
        .collect();
    assert_eq!(rr.len(), 4, "round-robin uses every partition");
    for k in ["k0", "k1", "k2"] {
        let parts: std::collections::BTreeSet<i32> = got
            .iter()
            .filter(|g| g.key.as_deref() == Some(k))
            .map(|g| g.partition)
            .collect();
        assert_eq!(parts.len(), 1, "key {k} in one partition");
    }
}

/// A record whose event time is hours ahead of the clock (a bad input
/// record, a far-future sentinel window) is written: Kafka would refuse its
/// timestamp (`log.message.timestamp.after.max.ms`, an hour) and fail the
/// task again at every restart, so it keeps the producer's time instead.
#[test]
fn sink_writes_a_record_whose_event_time_is_hours_ahead() {
    let brokers = ensure_kafka();
    let (topic, _g) = topic_with(&brokers, "future", 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let sink = KafkaSink::<String>::text(&brokers, &topic);
    let mut w = sink.open(&ctx(0, 1)).expect("open");
    let mut b = Batch::with_capacity(2);
    b.push("now".to_string(), now);
    b.push("in three hours".to_string(), now + 3 * 3_600_000);
    w.write(&mut b).expect("write");
    w.flush().expect("both acknowledged");
    assert_eq!(w.acknowledged(), 2);
    let got = read_topic(&brokers, &topic, 2, Duration::from_secs(30), Duration::ZERO);
    let texts: Vec<String> = got.iter().map(|g| g.text()).collect();
    assert_eq!(texts, vec!["now", "in three hours"]);
}

#[test]
fn sink_rejected_record_is_a_task_error() {
    let brokers = ensure_kafka();
    let (topic, _g) = topic_with(&brokers, "big", 1);
    // A record the client refuses (over message.max.bytes) fails the write:
    // never dropped silently. (Delivery-report failures are tested in
    // kafka_outage, with the broker frozen past message.timeout.ms.)
    let sink = KafkaSink::<String>::text(&brokers, &topic).set("message.max.bytes", "10000");
    let mut w = sink.open(&ctx(0, 1)).expect("open");
    let mut b = Batch::with_capacity(2);
    b.push("small".to_string(), 0);
    b.push("x".repeat(20_000), 0);
    let err = w.write(&mut b).expect_err("too large").to_string();
    assert!(err.contains("produce"), "{err}");
}

/// Late records are accepted input: the late output acknowledges what it
/// took when flushed (before a checkpoint or the end commits past them),
/// and a record it cannot take is an error for the window task, never a
/// log line.
#[test]
fn late_sink_flushes_what_it_took_and_refuses_loudly() {
    use weir::connectors::kafka::{KafkaConfig, KafkaLateSink};
    use weir::pipeline::LateSink;
    let brokers = ensure_kafka();
    let (input, _g) = topic_with(&brokers, "late-in", 1);
    let dlq = format!("{input}.dlq");
    create_topic(&brokers, &dlq, 1);
    let late = KafkaLateSink::<serde_json::Value>::json(&brokers, &dlq, &input)
        .with_config(KafkaConfig::new(&brokers).set("message.max.bytes", "10000"));
    late.write(vec![(json!({"user": "u1", "ts": 5}), 5)])
        .expect("a late record is taken");
    late.flush().expect("and acknowledged");
    let got = read_topic(&brokers, &dlq, 1, Duration::from_secs(20), Duration::ZERO);
    assert_eq!(got.len(), 1, "the flushed late record is in {dlq}");
    assert_eq!(got[0].json(), json!({"user": "u1", "ts": 5}));
    assert_eq!(
        got[0].headers.get("error").map(String::as_str),
        Some("late")
    );
    assert_eq!(got[0].headers.get("source.topic"), Some(&input));

    let err = late
        .write(vec![(json!({"user": "x".repeat(20_000), "ts": 6}), 6)])
        .expect_err("a record the client refuses is an error")
        .to_string();
    assert!(err.contains("produce"), "{err}");
}

#[test]
fn bad_configuration_errors_name_the_problem() {
    let brokers = ensure_kafka();
    // Unknown option.
    let e = KafkaSource::text(&brokers, "t")
        .set("no.such.option", "1")
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("no.such.option"), "{e}");
    // Invalid value.
    let e = KafkaSource::text(&brokers, "t")
        .set("fetch.wait.max.ms", "soon")
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("fetch.wait.max.ms"), "{e}");
    let e = KafkaSink::<String>::text(&brokers, "t")
        .set("acks", "most")
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("acks"), "{e}");
    // Unreachable bootstrap servers: a bounded wait, then a clear error.
    let start = Instant::now();
    let e = KafkaSource::text("127.0.0.1:1", "t")
        .startup_timeout(Duration::from_secs(2))
        .open(&ctx(0, 1))
        .err()
        .expect("unreachable")
        .to_string();
    assert!(
        e.contains("127.0.0.1:1") && e.contains("unreachable"),
        "{e}"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    let e = KafkaSink::<String>::text("127.0.0.1:1", "t")
        .startup_timeout(Duration::from_secs(2))
        .open(&ctx(0, 1))
        .err()
        .expect("unreachable")
        .to_string();
    assert!(e.contains("127.0.0.1:1"), "{e}");
    // Empty topic name.
    let e = KafkaSource::text(&brokers, "")
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("source.kafka.topic"), "{e}");
}

#[test]
fn unknown_topic_is_reported_when_not_auto_created() {
    let brokers = ensure_kafka();
    let topic = unique("missing");
    let _g = TopicGuard {
        brokers: brokers.clone(),
        topics: vec![topic.clone()],
    };
    match KafkaSource::text(&brokers, &topic)
        .startup_timeout(Duration::from_secs(3))
        .open(&ctx(0, 1))
    {
        Err(e) => assert!(
            e.to_string()
                .contains(&format!("unknown Kafka topic `{topic}`")),
            "{e}"
        ),
        // The broker auto-created it on the metadata request: then it must
        // be a usable, empty topic.
        Ok(mut r) => {
            assert!(partition_count(&brokers, &topic).is_some(), "auto-created");
            assert_eq!(poll_for(&mut r, Duration::from_millis(300)).len(), 0);
            println!(
                "broker auto-creates topics on metadata requests: unknown topic not reportable"
            );
        }
    }
}

/// A sink's delivery guarantee: at least once, a checkpoint (`flush`) waits
/// until the broker acknowledged every record written before it; with
/// `None` it waits for nothing (the records linger in the producer for
/// 10 s, so none is acknowledged when it returns). End of input (`close`)
/// delivers everything either way.
#[test]
fn delivery_guarantee_none_does_not_wait_at_checkpoints() {
    let brokers = ensure_kafka();
    let topic = unique("delivery");
    create_topic(&brokers, &topic, 1);
    let _g = TopicGuard {
        brokers: brokers.clone(),
        topics: vec![topic.clone()],
    };
    for (guarantee, waits) in [
        (DeliveryGuarantee::AtLeastOnce, true),
        (DeliveryGuarantee::None, false),
    ] {
        let sink = KafkaSink::<u64>::json(&brokers, &topic)
            .set("linger.ms", "10000")
            .delivery(guarantee.clone());
        let mut w = sink.open(&ctx(0, 1)).expect("open writer");
        let mut b = Batch::with_capacity(100);
        for i in 0..100u64 {
            b.push(i, 0);
        }
        w.write(&mut b).expect("write");
        w.flush().expect("checkpoint flush");
        let at_checkpoint = w.acknowledged();
        if waits {
            assert_eq!(at_checkpoint, 100, "{guarantee:?}: the checkpoint waited");
        } else {
            assert_eq!(
                at_checkpoint, 0,
                "{guarantee:?}: the checkpoint did not wait"
            );
        }
        w.close().expect("close");
        assert_eq!(
            w.acknowledged(),
            100,
            "{guarantee:?}: end of input delivers all"
        );
    }
}

/// librdkafka keeps a partition's pause across a rebalance that revokes it
/// and gives it back to the same consumer (librdkafka #1849), while the
/// reader starts every partition it is assigned unpaused. Partition 1 runs
/// far ahead of partition 0 in event time, so watermark alignment pauses
/// it; then a second member joins the group and takes partition 0 (its
/// client id sorts first: the range assignor gives it the first
/// partition), leaving the reader partition 1 alone, with nothing slower
/// to wait for. The reader must read partition 1 again. (Before the fix,
/// partition 1 stayed paused for good: a clicks job's windows stopped
/// firing after a broker restart's rebalance.)
#[test]
fn a_partition_paused_for_alignment_is_read_again_when_a_rebalance_gives_it_back() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use weir::connectors::kafka::FromKafka;
    #[derive(serde::Deserialize)]
    struct E {
        ts: i64,
    }
    let brokers = ensure_kafka();
    let (topic, _g) = topic_with(&brokers, "pause", 2);
    let group = unique("pause");
    let mut recs: Vec<Rec> = (0..3000).map(|_| Rec::to(0, r#"{"ts": 1000}"#)).collect();
    recs.extend((0..300).map(|i| Rec::to(1, format!(r#"{{"ts": {}}}"#, 100_000 + i))));
    produce(&brokers, &topic, &recs);
    let source = KafkaSource::json::<E>(&brokers, &topic)
        .with_positions()
        .group(&group)
        .with_timestamps(|e: &FromKafka<E>| e.value.ts);
    let mut c = ctx(0, 1);
    c.watermarks =
        Watermarks::bounded_out_of_orderness(Duration::ZERO).with_alignment(Duration::from_secs(1));
    let mut r = source.open(&c).expect("open");
    // One record at a time: partition 0's backlog stays unread, so
    // partition 1, 99 s ahead of it, is paused once both delivered.
    let mut out: Batch<FromKafka<E>> = Batch::with_capacity(16);
    let read_of =
        |out: &Batch<FromKafka<E>>, p: i32| out.values.iter().filter(|e| e.partition == p).count();
    let start = Instant::now();
    while read_of(&out, 0) == 0 || read_of(&out, 1) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "both partitions did not deliver within 30 s: {} and {} records",
            read_of(&out, 0),
            read_of(&out, 1)
        );
        if let SourceStatus::Idle(d) = r.poll(&mut out, 1).expect("poll") {
            std::thread::sleep(d);
        }
    }
    for _ in 0..20 {
        r.poll(&mut out, 1).expect("poll");
    }
    assert!(read_of(&out, 1) < 300, "partition 1 was read to its end");

    // A second member takes partition 0.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let other = {
        let (brokers, group, topic, stop) =
            (brokers.clone(), group.clone(), topic.clone(), stop.clone());
        std::thread::spawn(move || {
            let c: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", &group)
                .set("client.id", "aaa-second-member")
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .set("log_level", "3")
                .create()
                .expect("second member");
            c.subscribe(&[&topic]).expect("subscribe");
            let mut assigned = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = c.poll(Duration::from_millis(100));
                if let Ok(a) = c.assignment() {
                    assigned = a.elements().iter().map(|e| e.partition()).collect();
                }
            }
            assigned
        })
    };
    let start = Instant::now();
    while r.partitions() != vec![1] {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the reader was not left partition 1 alone within 60 s: it has {:?}",
            r.partitions()
        );
        // Slowly (the rebalance takes seconds): partition 0's backlog must
        // outlast it, or partition 0 catches up and partition 1 resumes.
        r.poll(&mut out, 1).expect("poll");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(read_of(&out, 0) < 3000, "partition 0 was read to its end");
    let before = read_of(&out, 1);
    let start = Instant::now();
    while read_of(&out, 1) < before + 20 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "partition 1, given back by the rebalance, delivered {} records in 30 s: still paused",
            read_of(&out, 1) - before
        );
        if let SourceStatus::Idle(d) = r.poll(&mut out, 100).expect("poll") {
            std::thread::sleep(d);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let theirs = other.join().expect("second member");
    assert_eq!(theirs, vec![0], "the second member held partition 0");
}
