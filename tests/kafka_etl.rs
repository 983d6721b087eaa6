//! End-to-end tests of the `kafka_etl` example against the real broker:
//! exact output at parallelism 1 and 4 on a 4-partition topic, malformed
//! input in the dead-letter topic with its headers, and two processes in
//! one group with one SIGKILLed mid-stream (nothing lost).

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// The expected output of one input payment, computed here independently.
fn expected_out(id: u64, user: &str, amount: f64) -> Option<(u64, String, i64)> {
    if amount < 0.0 {
        return None;
    }
    Some((id, user.to_string(), (amount * 100.0).round() as i64))
}

fn payment(id: u64) -> (String, f64) {
    let user = format!("user-{}", id % 7);
    let amount = if id % 10 == 3 {
        -(id as f64) / 4.0
    } else {
        (id % 1000) as f64 / 8.0 + 0.01
    };
    (user, amount)
}

fn input_records(ids: std::ops::Range<u64>) -> Vec<Rec> {
    ids.map(|id| {
        let (user, amount) = payment(id);
        Rec::to(
            (id % 4) as i32,
            format!(r#"{{"id": {id}, "user": "{user}", "amount": {amount}}}"#),
        )
    })
    .collect()
}

fn expected(ids: std::ops::Range<u64>) -> BTreeSet<(u64, String, i64)> {
    ids.filter_map(|id| {
        let (user, amount) = payment(id);
        expected_out(id, &user, amount)
    })
    .collect()
}

fn parse_output(got: &[Got]) -> Vec<(u64, String, i64)> {
    got.iter()
        .map(|g| {
            let v = g.json();
            let user = v["user"].as_str().expect("user").to_string();
            assert_eq!(
                g.key.as_deref(),
                Some(user.as_str()),
                "output keyed by user"
            );
            (
                v["id"].as_u64().expect("id"),
                user,
                v["amount_cents"].as_i64().expect("amount_cents"),
            )
        })
        .collect()
}

fn run_exact(parallelism: usize) {
    let brokers = ensure_kafka();
    let topics = JobTopics::create(&brokers, "etl");
    let (input, output, dlq) = (
        topics.input.clone(),
        topics.output.clone(),
        topics.dlq.clone(),
    );
    create_topic(&brokers, &dlq, 1);

    let n = 2000;
    let mut recs = input_records(0..n);
    let malformed: Vec<(i32, Vec<u8>)> = vec![
        (0, b"not json".to_vec()),
        (1, br#"{"id": 1}"#.to_vec()),
        (2, vec![0xff, 0xfe, 0x00]),
        (3, br#"{"id": "x", "user": "u", "amount": 1}"#.to_vec()),
    ];
    for (p, m) in &malformed {
        recs.push(Rec::to(*p, m.clone()));
    }
    produce(&brokers, &input, &recs);

    let p = parallelism.to_string();
    let proc_ = topics.spawn("kafka_etl", &brokers, &["--parallelism", &p]);
    let want = expected(0..n);
    let got = read_topic(
        &brokers,
        &output,
        want.len(),
        Duration::from_secs(90),
        Duration::from_secs(1),
    );
    let log = proc_.terminate(Duration::from_secs(30));
    let out = parse_output(&got);
    let set: BTreeSet<_> = out.iter().cloned().collect();
    assert_eq!(out.len(), set.len(), "no duplicates in a clean run");
    assert_eq!(
        set,
        want,
        "exact output (parallelism {parallelism}); log:\n{}",
        tail(&log)
    );

    // Keyed by user: one user, one partition.
    let mut user_parts: HashMap<String, BTreeSet<i32>> = HashMap::new();
    for g in &got {
        user_parts
            .entry(g.key.clone().unwrap())
            .or_default()
            .insert(g.partition);
    }
    assert!(
        user_parts.values().all(|s| s.len() == 1),
        "each user in one partition: {user_parts:?}"
    );

    // Malformed input: unchanged in the dead-letter topic, with headers.
    let dead = read_topic(
        &brokers,
        &dlq,
        malformed.len(),
        Duration::from_secs(30),
        Duration::from_millis(500),
    );
    assert_eq!(dead.len(), malformed.len(), "dead letters: {dead:?}");
    let by_payload: BTreeMap<Vec<u8>, &Got> = dead.iter().map(|g| (g.payload.clone(), g)).collect();
    for (p, m) in &malformed {
        let g = by_payload
            .get(m)
            .unwrap_or_else(|| panic!("malformed {m:?} not in {dlq}"));
        assert_eq!(g.headers["source.topic"], input);
        assert_eq!(g.headers["source.partition"], p.to_string());
        let off: i64 = g.headers["source.offset"].parse().unwrap();
        assert!(off >= n as i64 / 4, "offset after the valid records: {off}");
        assert!(
            g.headers["error"].contains("invalid JSON"),
            "error header: {}",
            g.headers["error"]
        );
    }
}

#[test]
fn etl_exact_output_parallelism_1() {
    run_exact(1);
}

#[test]
fn etl_exact_output_parallelism_4() {
    run_exact(4);
}

/// Two `kafka_etl` processes in one group; one is SIGKILLed mid-stream.
/// Every input id must appear in the output (duplicates are allowed and
/// reported, never losses).
#[test]
fn etl_two_processes_one_killed_loses_nothing() {
    let brokers = ensure_kafka();
    let topics = JobTopics::create(&brokers, "etl2");
    let (input, output) = (topics.input.clone(), topics.output.clone());
    let mut a = topics.spawn("kafka_etl", &brokers, &[]);
    let mut b = topics.spawn("kafka_etl", &brokers, &[]);
    a.wait_for_log("assigned partitions", Duration::from_secs(60));
    b.wait_for_log("assigned partitions", Duration::from_secs(60));
    let mut b = Some(b);

    // Stream input in slices while the processes run; kill one midway.
    let n: u64 = 6000;
    let slice = 500;
    let mut killed = false;
    for start in (0..n).step_by(slice) {
        produce(
            &brokers,
            &input,
            &input_records(start..(start + slice as u64).min(n)),
        );
        std::thread::sleep(Duration::from_millis(150));
        if !killed && start >= n / 2 {
            b.take().expect("second process").kill9();
            killed = true;
        }
    }
    let want = expected(0..n);
    let wanted_ids: BTreeSet<u64> = want.iter().map(|w| w.0).collect();
    let got = read_topic(
        &brokers,
        &output,
        want.len(),
        Duration::from_secs(120),
        Duration::from_secs(2),
    );
    let log = a.terminate(Duration::from_secs(30));
    let out = parse_output(&got);
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for (id, _, _) in &out {
        *counts.entry(*id).or_default() += 1;
    }
    let missing: Vec<u64> = wanted_ids
        .iter()
        .filter(|id| !counts.contains_key(id))
        .copied()
        .collect();
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    println!(
        "two processes, one SIGKILLed: {} outputs for {} expected ids, {} duplicates, {} missing",
        out.len(),
        wanted_ids.len(),
        duplicates,
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "lost ids {:?}..; survivor log:\n{}",
        &missing[..missing.len().min(20)],
        tail(&log)
    );
    let set: BTreeSet<_> = out.into_iter().collect();
    assert_eq!(set, want, "every output correct");
}

/// SIGTERM drains and commits: a restarted process in the same group reads
/// only what came after (no duplicates across a graceful restart).
#[test]
fn etl_sigterm_commits_so_a_restart_reads_only_new_records() {
    let brokers = ensure_kafka();
    let topics = JobTopics::create(&brokers, "etl3");
    let (input, output) = (topics.input.clone(), topics.output.clone());
    produce(&brokers, &input, &input_records(0..1000));
    let first = topics.spawn("kafka_etl", &brokers, &[]);
    let want1 = expected(0..1000);
    let got = read_topic(
        &brokers,
        &output,
        want1.len(),
        Duration::from_secs(60),
        Duration::from_millis(200),
    );
    assert_eq!(got.len(), want1.len());
    first.terminate(Duration::from_secs(30));

    produce(&brokers, &input, &input_records(1000..1500));
    let second = topics.spawn("kafka_etl", &brokers, &[]);
    let want = expected(0..1500);
    let got = read_topic(
        &brokers,
        &output,
        want.len(),
        Duration::from_secs(60),
        Duration::from_secs(2),
    );
    let log = second.terminate(Duration::from_secs(30));
    let out = parse_output(&got);
    let set: BTreeSet<_> = out.iter().cloned().collect();
    assert_eq!(set, want);
    assert_eq!(
        out.len(),
        want.len(),
        "no record of the first run processed again; log:\n{}",
        tail(&log)
    );
}

/// `--delivery exactly-once` without checkpoint storage is refused before
/// anything starts, naming the flag and what it needs; a guarantee it does
/// not know is refused naming the three it does.
#[test]
fn delivery_flag_is_checked_before_the_job_starts() {
    let bin = repo_root().join("target/debug/examples/kafka_etl");
    let run = |extra: &[&str]| {
        let mut args = vec!["--brokers", "127.0.0.1:1", "--input", "a", "--output", "b"];
        args.extend_from_slice(extra);
        std::process::Command::new(&bin)
            .args(&args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("run kafka_etl")
    };
    let out = run(&["--delivery", "exactly-once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--delivery exactly-once needs durable checkpoints (--checkpoint-dir or --checkpoint-url)"),
        "{err}"
    );
    let out = run(&["--delivery", "sometimes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("want exactly-once, at-least-once or none"),
        "{err}"
    );
}
