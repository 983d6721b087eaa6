//! The cluster's `clicks` job with durable checkpoints shared by its
//! workers (`--checkpoint-url`): a worker SIGKILLed in the middle of the
//! stream, and another stopped with SIGTERM, and their tasks restored on
//! the others from the checkpoints their transactions committed. Read
//! `read_committed`, the output holds every window exactly once with its
//! exact count (computed here). Clicks are keyed by user into partitions
//! (each user's clicks in one partition, so one task holds each window:
//! repartitioning between tasks is another issue's work).

mod service_common;

use std::collections::BTreeMap;
use std::time::Duration;

use service_common::*;

const TIMEOUT_MS: u64 = 3000;
/// A base time aligned to the 10 s windows.
const T0: i64 = 1_700_000_000_000;

fn all_running(c: &Cluster, job: &str, n: usize) -> bool {
    let p = c.placement(job);
    p.len() == n && p.values().all(|(w, s)| !w.is_empty() && s == "RUNNING")
}

#[test]
fn killed_and_stopped_workers_move_clicks_tasks_without_a_wrong_window() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let mut c = Cluster::new("eos", TIMEOUT_MS);
    for w in ["e1", "e2", "e3"] {
        c.start_worker_with(w, &["--checkpoint-url", &url]);
    }
    let input = c.topic("eos-clicks-in", 4);
    let output = c.topic("eos-clicks-out", 4);
    let dlq = format!("{input}.dlq");
    create_topic(&c.brokers, &dlq, 1);
    c.topics.push(dlq);
    let (set_in, set_out) = (format!("input={input}"), format!("output={output}"));
    c.weir_ok(&[
        "submit",
        "clicks",
        "--name",
        "ck",
        "--parallelism",
        "4",
        "--set",
        &set_in,
        "--set",
        &set_out,
    ]);
    c.wait("4 tasks RUNNING", Duration::from_secs(60), |c| {
        all_running(c, "ck", 4)
    });

    // 8,000 clicks of 12 users over 200 s of event time, in 20 chunks 0.5 s
    // apart; user u lives in partition u % 4; up to 900 ms out of order.
    let mut want: BTreeMap<(String, i64), u64> = BTreeMap::new();
    let mut chunks = Vec::new();
    for k in 0..20i64 {
        let mut chunk = Vec::new();
        for j in 0..400i64 {
            let i = k * 400 + j;
            let u = (i * 7 + j) % 12;
            let ts = T0 + i * 25 + (i * 37) % 900;
            let user = format!("u{u}");
            *want
                .entry((user.clone(), ts - ts.rem_euclid(10_000)))
                .or_insert(0) += 1;
            chunk.push(Rec::to(
                (u % 4) as i32,
                format!(r#"{{"user": "{user}", "ts": {ts}}}"#),
            ));
        }
        chunks.push(chunk);
    }
    let brokers = c.brokers.clone();
    let topic = input.clone();
    let producer = std::thread::spawn(move || {
        for chunk in chunks {
            produce(&brokers, &topic, &chunk);
            std::thread::sleep(Duration::from_millis(500));
        }
    });

    // 4 s in: SIGKILL the worker running the most tasks.
    std::thread::sleep(Duration::from_secs(4));
    let loads = c.loads("ck");
    let victim = loads
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(w, _)| w.clone())
        .expect("a worker with tasks");
    eprintln!("kill -9 {victim} (loads {loads:?})");
    c.workers.remove(&victim).unwrap().kill9();
    c.wait("every task RUNNING again", Duration::from_secs(60), |c| {
        all_running(c, "ck", 4) && c.placement("ck").values().all(|(w, _)| *w != victim)
    });
    // Then a graceful stop (SIGTERM: its tasks stop with a savepoint).
    let other = c.workers.keys().next().cloned().expect("a worker left");
    eprintln!("SIGTERM {other}");
    c.workers
        .remove(&other)
        .unwrap()
        .terminate(Duration::from_secs(30));
    c.wait(
        "every task RUNNING on the last worker",
        Duration::from_secs(60),
        |c| all_running(c, "ck", 4) && c.placement("ck").values().all(|(w, _)| *w != other),
    );
    producer.join().expect("producer");
    // `weir status` shows each task's latest checkpoint (published fenced
    // with the task's state), in JSON and as text.
    c.wait(
        "every task showing a checkpoint",
        Duration::from_secs(30),
        |c| {
            c.job("ck").is_some_and(|j| {
                j["tasks"].as_array().is_some_and(|ts| {
                    ts.len() == 4 && ts.iter().all(|t| t["checkpoint"]["id"].as_u64() > Some(0))
                })
            })
        },
    );
    let text = c.weir_ok(&["status", "ck"]);
    assert!(
        text.contains("CHECKPOINT") && text.contains("s ago)"),
        "status shows checkpoint ids and ages:\n{text}"
    );
    // A minute later in every partition: every window closes.
    let sentinels: Vec<Rec> = (0..4)
        .map(|p| Rec::to(p, format!(r#"{{"user": "~s", "ts": {}}}"#, T0 + 300_000)))
        .collect();
    produce(&c.brokers, &input, &sentinels);

    let got = read_topic(
        &c.brokers,
        &output,
        want.len(),
        Duration::from_secs(120),
        Duration::from_secs(3),
    );
    let mut seen: BTreeMap<(String, i64), u64> = BTreeMap::new();
    let mut twice = 0;
    for g in &got {
        let v = g.json();
        let k = (
            v["user"].as_str().expect("user").to_string(),
            v["window_start"].as_i64().expect("window_start"),
        );
        if k.0 == "~s" {
            continue;
        }
        if seen
            .insert(k, v["count"].as_u64().expect("count"))
            .is_some()
        {
            twice += 1;
        }
    }
    let wrong: Vec<String> = want
        .iter()
        .filter(|(k, v)| seen.get(*k) != Some(v))
        .take(10)
        .map(|(k, v)| format!("{k:?}: want {v}, got {:?}", seen.get(k)))
        .collect();
    assert!(
        twice == 0 && wrong.is_empty() && seen.len() == want.len(),
        "{twice} windows written twice; wrong or missing (first 10): {wrong:?}; {} of {}\n{}",
        seen.len(),
        want.len(),
        c.logs()
    );
}
