//! Real worker processes, real ZooKeeper, real broker: placement, failover,
//! rebalancing, graceful leave and cancellation of a distributed `etl` job.
//!
//! The scenarios run one at a time (they share two cores and each starts
//! several workers).

mod service_common;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use service_common::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

const TIMEOUT_MS: u64 = 3000;

fn submit_etl(c: &mut Cluster, name: &str, parallelism: u32, partitions: i32) -> (String, String) {
    let input = c.topic("svc-in", partitions);
    let output = c.topic("svc-out", partitions);
    let set_in = format!("input={input}");
    let set_out = format!("output={output}");
    let p = parallelism.to_string();
    c.weir_ok(&[
        "submit",
        "etl",
        "--name",
        name,
        "--parallelism",
        &p,
        "--set",
        &set_in,
        "--set",
        &set_out,
    ]);
    (input, output)
}

fn all_running(c: &Cluster, job: &str, n: usize) -> bool {
    let p = c.placement(job);
    p.len() == n && p.values().all(|(w, s)| !w.is_empty() && s == "RUNNING")
}

/// Three workers, a 6-task job over 6 partitions: 2/2/2 and RUNNING. Then, mid-stream, the
/// leader is SIGKILLed: another worker leads, its tasks run elsewhere within the session
/// timeout + 1 s, and every input id reaches the output (duplicates reported). A fourth
/// worker joins: exactly two tasks move. SIGTERM of a worker: it exits within 10 s and its
/// tasks move. Cancel: tasks stop and the job's znodes are removed.
#[test]
fn placement_failover_join_leave_cancel() {
    let _g = serial();
    let mut c = Cluster::new("cluster", TIMEOUT_MS);
    for w in ["w1", "w2", "w3"] {
        c.start_worker(w);
    }
    let (input, output) = submit_etl(&mut c, "pay", 6, 6);
    c.wait("6 tasks RUNNING", Duration::from_secs(30), |c| {
        all_running(c, "pay", 6)
    });
    let loads = c.loads("pay");
    assert_eq!(
        loads.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "balanced 2/2/2: {loads:?}"
    );

    // A stream of ids, produced while the leader dies.
    let total = 30_000u64;
    let brokers = c.brokers.clone();
    let in_topic = input.clone();
    let producer = std::thread::spawn(move || {
        for chunk in 0..30u64 {
            produce(
                &brokers,
                &in_topic,
                &payments(chunk * 1000..(chunk + 1) * 1000, 6),
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let leader = c.leader().expect("a leader");
    let before = c.placement("pay");
    let orphans: BTreeSet<String> = before
        .iter()
        .filter(|(_, (w, _))| *w == leader)
        .map(|(t, _)| t.clone())
        .collect();
    assert_eq!(orphans.len(), 2);
    let killed_at = Instant::now();
    c.workers.remove(&leader).unwrap().kill9();
    let took = c.wait(
        "the killed leader's tasks RUNNING elsewhere",
        Duration::from_secs(20),
        |c| {
            let p = c.placement("pay");
            orphans.iter().all(|t| {
                p.get(t)
                    .is_some_and(|(w, s)| *w != leader && !w.is_empty() && s == "RUNNING")
            })
        },
    );
    let moved_in = killed_at.elapsed().max(took);
    eprintln!("failover: tasks of killed leader {leader} RUNNING elsewhere after {moved_in:?} (session timeout {TIMEOUT_MS} ms)");
    assert!(
        moved_in <= Duration::from_millis(TIMEOUT_MS + 1000),
        "tasks took {moved_in:?} to move (limit: session timeout + 1 s)\n{}",
        c.logs()
    );
    c.wait("another worker leads", Duration::from_secs(10), |c| {
        c.leader().is_some_and(|l| l != leader)
    });
    producer.join().unwrap();
    let want: BTreeSet<u64> = (0..total).collect();
    let (ids, dups) = output_ids(&c.brokers, &output, &want, Duration::from_secs(60));
    let missing: Vec<u64> = want.difference(&ids).copied().collect();
    eprintln!(
        "failover: {} of {total} ids in the output, {dups} duplicates",
        ids.len()
    );
    assert!(
        missing.is_empty(),
        "ids lost: {:?}... ({})\n{}",
        &missing[..missing.len().min(10)],
        describe_missing(&c.brokers, &output, &missing, 6),
        c.logs()
    );
    c.wait("all RUNNING on 2 workers", Duration::from_secs(10), |c| {
        all_running(c, "pay", 6)
    });
    assert_eq!(
        c.loads("pay").values().copied().collect::<Vec<_>>(),
        vec![3, 3]
    );

    // A fourth worker joins: the fewest tasks move (3/3 -> 2/2/2: two).
    let before = c.placement("pay");
    c.start_worker("w4");
    c.wait("w4 takes tasks", Duration::from_secs(15), |c| {
        c.loads("pay").get("w4") == Some(&2) && all_running(c, "pay", 6)
    });
    let after = c.placement("pay");
    let moved = before
        .iter()
        .filter(|(t, (w, _))| after[*t].0 != *w)
        .count();
    assert_eq!(
        moved, 2,
        "a join moves exactly two tasks: {before:?} -> {after:?}"
    );

    // SIGTERM: drains, leaves, exits within 10 s; its tasks move.
    let leaving = c.placement("pay").values().next().unwrap().0.clone();
    let p = c.workers.remove(&leaving).unwrap();
    let t0 = Instant::now();
    let log = p.terminate(Duration::from_secs(10));
    eprintln!("SIGTERM: {leaving} exited after {:?}", t0.elapsed());
    assert!(log.contains("left the cluster"), "{}", log);
    c.wait(
        "tasks of the leaving worker RUNNING elsewhere",
        Duration::from_secs(15),
        |c| all_running(c, "pay", 6) && !c.loads("pay").contains_key(&leaving),
    );

    // Cancel: tasks stop, znodes removed.
    let out = c.weir_ok(&["cancel", "pay"]);
    assert!(out.contains("cancelled"), "{out}");
    assert!(c.job("pay").is_none());
    let ids = c.weir(&["status", "pay"]);
    assert_eq!(ids.status.code(), Some(1));
    c.wait(
        "workers stopped their tasks",
        Duration::from_secs(15),
        |c| {
            c.workers.keys().all(|id| {
                http_get(&c.http_of(id), "/api/tasks")
                    .map(|b| {
                        serde_json::from_str::<serde_json::Value>(&b).unwrap()["tasks"]
                            .as_array()
                            .unwrap()
                            .is_empty()
                    })
                    .unwrap_or(false)
            })
        },
    );
}

/// The worker's HTTP endpoint: metrics, health, tasks JSON, dashboard.
#[test]
fn worker_http_endpoint() {
    let _g = serial();
    let mut c = Cluster::new("http", TIMEOUT_MS);
    c.start_worker("h1");
    let (input, _output) = submit_etl(&mut c, "web", 2, 2);
    c.wait("2 tasks RUNNING", Duration::from_secs(30), |c| {
        all_running(c, "web", 2)
    });
    produce(&c.brokers, &input, &payments(0..500, 2));
    let addr = c.http_of("h1");
    c.wait(
        "records counted in /metrics",
        Duration::from_secs(20),
        |_| {
            http_get(&addr, "/metrics").is_some_and(|m| {
                m.lines()
                    .filter(|l| l.starts_with("weir_task_records_out_total"))
                    .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
                    .sum::<f64>()
                    >= 500.0
            })
        },
    );
    let m = http_get(&addr, "/metrics").unwrap();
    for needle in [
        "weir_session_connected{worker=\"h1\"} 1",
        "weir_task_records_in_total{worker=\"h1\",job=\"web\",task=\"web-0\"}",
        "weir_task_lag_records{",
        "weir_task_batches_total{",
        "weir_task_backpressure_seconds_total{",
        "weir_task_restarts_total{",
        "weir_task_state{worker=\"h1\",job=\"web\",task=\"web-1\",state=\"RUNNING\"} 1",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    assert!(http_get(&addr, "/healthz").unwrap().starts_with("ok"));
    let api: serde_json::Value =
        serde_json::from_str(&http_get(&addr, "/api/tasks").unwrap()).unwrap();
    assert_eq!(api["tasks"].as_array().unwrap().len(), 2);
    // The worker's page lists its tasks; the overview links to the job.
    assert!(http_get(&addr, "/workers/h1")
        .unwrap()
        .contains("<td>web-0</td>"));
    assert!(http_get(&addr, "/").unwrap().contains("href=\"/jobs/web\""));
    assert!(http_get(&addr, "/nope").is_none());
    // Progress reaches ZooKeeper (rate-limited): records and lag in `weir status`.
    c.wait("records in ZooKeeper", Duration::from_secs(15), |c| {
        c.job("web")
            .is_some_and(|j| j["records_out"].as_u64() >= Some(500))
    });
    let human = c.weir_ok(&["status", "web"]);
    assert!(
        human.contains("web-0") && human.contains("RUNNING") && human.contains("LAG"),
        "{human}"
    );
}

/// `weir rescale`: 2 -> 4 tasks; every task RUNNING and every id reaches the output.
#[test]
fn rescale_restarts_tasks_on_new_partitions() {
    let _g = serial();
    let mut c = Cluster::new("rescale", TIMEOUT_MS);
    for w in ["s1", "s2"] {
        c.start_worker(w);
    }
    let (input, output) = submit_etl(&mut c, "rs", 2, 4);
    c.wait("2 tasks RUNNING", Duration::from_secs(30), |c| {
        all_running(c, "rs", 2)
    });
    produce(&c.brokers, &input, &payments(0..2000, 4));
    let out = c.weir_ok(&["rescale", "rs", "4"]);
    assert!(out.contains("2 -> 4"), "{out}");
    c.wait("4 tasks RUNNING", Duration::from_secs(30), |c| {
        all_running(c, "rs", 4)
    });
    assert_eq!(
        c.loads("rs").values().copied().collect::<Vec<_>>(),
        vec![2, 2]
    );
    produce(&c.brokers, &input, &payments(2000..4000, 4));
    let want: BTreeSet<u64> = (0..4000).collect();
    let (ids, dups) = output_ids(&c.brokers, &output, &want, Duration::from_secs(60));
    eprintln!("rescale: {} of 4000 ids out, {dups} duplicates", ids.len());
    let missing: Vec<u64> = want.difference(&ids).copied().collect();
    assert!(
        missing.is_empty(),
        "ids lost ({})\n{}",
        describe_missing(&c.brokers, &output, &missing, 4),
        c.logs()
    );
}
