//! Zombie fencing with real processes: a worker frozen (SIGSTOP) past its
//! session timeout loses its tasks to the others, and after SIGCONT it writes
//! nothing more, neither to the output topic nor to ZooKeeper.

mod service_common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use service_common::*;

const TIMEOUT_MS: u64 = 2000;

fn signal(p: &Proc, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {sig}");
}

#[test]
fn frozen_worker_writes_nothing_after_sigcont() {
    let mut c = Cluster::new("zombie", TIMEOUT_MS);
    for w in ["z1", "z2", "z3"] {
        c.start_worker(w);
    }
    let input = c.topic("zmb-in", 6);
    let output = c.topic("zmb-out", 6);
    c.weir_ok(&[
        "submit",
        "etl",
        "--name",
        "zmb",
        "--parallelism",
        "6",
        "--set",
        &format!("input={input}"),
        "--set",
        &format!("output={output}"),
    ]);
    c.wait("6 tasks RUNNING", Duration::from_secs(30), |c| {
        let p = c.placement("zmb");
        p.len() == 6 && p.values().all(|(_, s)| s == "RUNNING")
    });
    produce(&c.brokers, &input, &payments(0..3000, 6));
    let want: BTreeSet<u64> = (0..3000).collect();
    let (ids, _) = output_ids(&c.brokers, &output, &want, Duration::from_secs(30));
    assert!(want.is_subset(&ids), "first batch incomplete");

    // Freeze a worker that is not the leader (the leader case is covered by the SIGKILL test).
    let leader = c.leader().expect("leader");
    let victim = ["z1", "z2", "z3"]
        .into_iter()
        .find(|w| *w != leader)
        .unwrap()
        .to_string();
    let epoch_before = c.job("zmb").unwrap()["epoch"].as_u64().unwrap();
    signal(&c.workers[&victim], "-STOP");
    let stopped_at = Instant::now();
    c.wait(
        "the frozen worker's tasks RUNNING elsewhere",
        Duration::from_secs(20),
        |c| {
            let p = c.placement("zmb");
            p.len() == 6 && p.values().all(|(w, s)| *w != victim && s == "RUNNING")
        },
    );
    eprintln!(
        "zombie: tasks of frozen {victim} moved after {:?}",
        stopped_at.elapsed()
    );
    let epoch_moved = c.job("zmb").unwrap()["epoch"].as_u64().unwrap();
    assert!(epoch_moved > epoch_before);

    // New input while it is frozen: the new owners process it and commit.
    produce(&c.brokers, &input, &payments(3000..6000, 6));
    let want: BTreeSet<u64> = (0..6000).collect();
    let (ids, _) = output_ids(&c.brokers, &output, &want, Duration::from_secs(30));
    assert!(want.is_subset(&ids), "second batch incomplete");
    std::thread::sleep(Duration::from_millis(2500)); // a couple of checkpoints: offsets committed
    let before = read_topic(
        &c.brokers,
        &output,
        6000,
        Duration::from_secs(30),
        Duration::from_secs(2),
    )
    .len();
    let log_before = c.workers[&victim].log_text().len();

    // Thaw: its consumers would find the second batch on its old partitions; the lease
    // must stop every write.
    signal(&c.workers[&victim], "-CONT");
    std::thread::sleep(Duration::from_secs(6));
    let after = read_topic(
        &c.brokers,
        &output,
        before,
        Duration::from_secs(30),
        Duration::from_secs(2),
    )
    .len();
    let log = c.workers[&victim].log_text();
    let thawed = &log[log_before..];
    eprintln!("zombie: output records before SIGCONT {before}, 6 s after {after}");
    assert_eq!(
        after, before,
        "the thawed zombie (or a hand-back) wrote to the output\n{thawed}"
    );
    assert!(
        thawed.contains("write lease ran out") || thawed.contains("session expired"),
        "the zombie did not notice it lost its lease:\n{thawed}"
    );
    assert!(
        !thawed.contains("deferred task-state write failed")
            && !thawed.contains("fenced: the task moved away"),
        "the zombie tried to write task state to ZooKeeper:\n{thawed}"
    );
    // ZooKeeper: every state the thawed worker published is for a task (re)assigned to it
    // after the move (a newer epoch), never one of its old tasks.
    let job = c.job("zmb").unwrap();
    for t in job["tasks"].as_array().unwrap() {
        if t["worker"] == victim.as_str() {
            assert!(
                t["epoch"].as_u64().unwrap() > epoch_before,
                "stale epoch for {t}"
            );
        }
    }
    // It rejoined as a new member.
    c.wait(
        "the thawed worker registered again",
        Duration::from_secs(15),
        |c| c.workers().iter().any(|w| w["id"] == victim.as_str()),
    );
}
