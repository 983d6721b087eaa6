//! The transactional `KafkaSink` against a broker that honours
//! transactions (Apache Kafka): records of an aborted transaction, and of a
//! writer fenced by a newer one with the same `transactional.id`, are in
//! the log but never visible to a `read_committed` reader; committed ones
//! are, once each. Every test reads the topic both ways: what
//! `read_uncommitted` shows proves the hidden records were really written.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use weir::connectors::kafka::{KafkaSink, KafkaWriter};
use weir::pipeline::{Batch, Sink, SinkWriter, TaskContext};

fn ctx() -> TaskContext {
    let mut c = TaskContext::detached("sink");
    c.job = "kafka-broker-transactions".into();
    c
}

fn topic(brokers: &str, prefix: &str) -> (String, TopicGuard) {
    let t = unique(prefix);
    create_topic(brokers, &t, 4);
    let g = TopicGuard {
        brokers: brokers.to_string(),
        topics: vec![t.clone()],
    };
    (t, g)
}

fn batch(prefix: &str, n: usize) -> Batch<String> {
    let mut b = Batch::with_capacity(n);
    for i in 0..n {
        b.push(format!("{prefix}-{i}"), 0);
    }
    b
}

fn names(prefix: &str, n: usize) -> BTreeSet<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Writes `n` records and waits until the broker acknowledged every one
/// (empty writes serve the delivery reports), without committing: they are
/// in the log, in the open transaction.
fn write_acknowledged<E, K>(w: &mut KafkaWriter<String, E, K>, prefix: &str, n: usize)
where
    KafkaWriter<String, E, K>: SinkWriter<In = String>,
{
    let before = w.acknowledged();
    w.write(&mut batch(prefix, n)).expect("write");
    let start = Instant::now();
    while w.acknowledged() < before + n as u64 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "only {} of {n} records acknowledged",
            w.acknowledged() - before
        );
        std::thread::sleep(Duration::from_millis(20));
        w.write(&mut Batch::with_capacity(0))
            .expect("serve delivery reports");
    }
}

/// Every record of `topic` as text, read with `isolation`, until `want`
/// records arrived (then 1 s more for extras) or 30 s passed.
fn read_all(brokers: &str, topic: &str, isolation: &str, want: usize) -> Vec<String> {
    read_topic_until(
        brokers,
        topic,
        isolation,
        Duration::from_secs(30),
        Duration::from_secs(1),
        |g| g.len() >= want,
    )
    .iter()
    .map(Got::text)
    .collect()
}

fn set(v: &[String]) -> BTreeSet<String> {
    v.iter().cloned().collect()
}

/// A writer dropped without a flush aborts its transaction; the next
/// writer's records commit at its flush. `read_committed` sees exactly the
/// committed records, once each; `read_uncommitted` sees both, so the
/// aborted ones were written and only hidden. Fails if aborted records leak
/// to `read_committed` (a broker or sink that does not abort), if they
/// never reached the log (the test would prove nothing), or if a committed
/// one is missing or doubled.
#[test]
fn aborted_transaction_is_invisible_to_read_committed() {
    let brokers = ensure_kafka();
    let (topic, _g) = topic(&brokers, "txn-abort");
    let sink = KafkaSink::<String>::text(&brokers, &topic).transactional(unique("txn-abort"));

    let mut first = sink.open(&ctx()).expect("open transactional writer");
    write_acknowledged(&mut first, "aborted", 50);
    drop(first); // not flushed: the transaction is aborted

    let mut second = sink.open(&ctx()).expect("open again");
    second.write(&mut batch("committed", 30)).expect("write");
    second.flush().expect("flush commits the transaction");
    // A second transaction of the same writer, committed too.
    second.write(&mut batch("later", 20)).expect("write");
    second.close().expect("close commits");

    let committed = read_all(&brokers, &topic, "read_committed", 50);
    let mut want = names("committed", 30);
    want.extend(names("later", 20));
    assert_eq!(
        committed.len(),
        want.len(),
        "read_committed: each committed record once, nothing else: {committed:?}"
    );
    assert_eq!(
        set(&committed),
        want,
        "read_committed sees the committed records only"
    );

    let everything = read_all(&brokers, &topic, "read_uncommitted", 100);
    let mut all = want.clone();
    all.extend(names("aborted", 50));
    assert_eq!(
        set(&everything),
        all,
        "read_uncommitted also sees the aborted records: they were written"
    );
    assert_eq!(everything.len(), 100, "{everything:?}");
}

/// Two writers of the same task (same `transactional.id`), the older one a
/// zombie: opening the newer one fences the older (a new producer epoch)
/// and aborts its open transaction. The zombie's flush fails, and its
/// records, though in the log, never become visible to `read_committed`.
#[test]
fn a_fenced_writer_cannot_commit_and_its_records_stay_invisible() {
    let brokers = ensure_kafka();
    let (topic, _g) = topic(&brokers, "txn-fence");
    let sink = KafkaSink::<String>::text(&brokers, &topic).transactional(unique("txn-fence"));

    let mut zombie = sink.open(&ctx()).expect("open the first writer");
    write_acknowledged(&mut zombie, "zombie", 40);

    let mut successor = sink.open(&ctx()).expect("open its successor");
    successor.write(&mut batch("successor", 25)).expect("write");
    successor.flush().expect("the successor commits");

    let err = zombie
        .flush()
        .expect_err("the fenced writer cannot commit")
        .to_string();
    println!("the zombie's flush: {err}");
    drop(zombie);
    successor.close().expect("close");

    let committed = read_all(&brokers, &topic, "read_committed", 25);
    assert_eq!(
        set(&committed),
        names("successor", 25),
        "read_committed sees only the successor's records"
    );
    assert_eq!(committed.len(), 25, "{committed:?}");

    let everything = read_all(&brokers, &topic, "read_uncommitted", 65);
    let mut all = names("successor", 25);
    all.extend(names("zombie", 40));
    assert_eq!(
        set(&everything),
        all,
        "read_uncommitted also sees the zombie's records: they were written"
    );
}
