//! ZooKeeper restarted within the session timeout: sessions survive, so no
//! task moves (same workers, same epochs) and data keeps flowing.
//!
//! Restarts the shared ZooKeeper (`scripts/services restart-zk`): this binary
//! holds the only test of its kind, and cargo runs test binaries one at a time.

mod service_common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use service_common::*;

#[test]
fn zookeeper_restart_within_session_timeout_moves_no_task() {
    let mut c = Cluster::new("zkrestart", 10_000);
    for w in ["r1", "r2"] {
        c.start_worker(w);
    }
    let input = c.topic("zkr-in", 4);
    let output = c.topic("zkr-out", 4);
    c.weir_ok(&[
        "submit",
        "etl",
        "--name",
        "zkr",
        "--parallelism",
        "4",
        "--set",
        &format!("input={input}"),
        "--set",
        &format!("output={output}"),
    ]);
    c.wait("4 tasks RUNNING", Duration::from_secs(30), |c| {
        let p = c.placement("zkr");
        p.len() == 4 && p.values().all(|(_, s)| s == "RUNNING")
    });
    let epochs = |c: &Cluster| -> Vec<(String, String, u64)> {
        c.job("zkr").unwrap()["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["task"].as_str().unwrap().into(),
                    t["worker"].as_str().unwrap().into(),
                    t["epoch"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let before = epochs(&c);
    let job_epoch = c.job("zkr").unwrap()["epoch"].as_u64().unwrap();

    let t0 = Instant::now();
    kafka::services("restart-zk");
    eprintln!("zk restart: ZooKeeper back after {:?}", t0.elapsed());
    produce(&c.brokers, &input, &payments(0..2000, 4));
    std::thread::sleep(Duration::from_secs(4));
    c.wait(
        "all RUNNING after the restart",
        Duration::from_secs(20),
        |c| {
            let p = c.placement("zkr");
            p.len() == 4 && p.values().all(|(_, s)| s == "RUNNING")
        },
    );
    assert_eq!(epochs(&c), before, "a task moved\n{}", c.logs());
    assert_eq!(
        c.job("zkr").unwrap()["epoch"].as_u64().unwrap(),
        job_epoch,
        "assignment rewritten"
    );
    for (id, p) in &c.workers {
        let log = p.log_text();
        assert!(
            !log.contains("session expired"),
            "{id}'s session expired:\n{}",
            kafka::tail(&log)
        );
    }
    let want: BTreeSet<u64> = (0..2000).collect();
    let (ids, dups) = output_ids(&c.brokers, &output, &want, Duration::from_secs(30));
    eprintln!(
        "zk restart: {} of 2000 ids out, {dups} duplicates",
        ids.len()
    );
    assert!(want.is_subset(&ids), "ids lost");
}
