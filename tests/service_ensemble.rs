//! The coordinated service on a real three-server ZooKeeper ensemble
//! (`WEIR_ZK_ENSEMBLE=3 scripts/services up`): workers and the CLI connect with
//! `127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/<chroot>`; an etl job runs with data
//! flowing through all of it.
//! 1. SIGKILL the ensemble's leader: no task moves, every input record reaches the output.
//! 2. Quorum lost: two of the three servers frozen (SIGSTOP) for longer than the session
//!    timeout, then thawed: every worker's write lease runs out (its sinks refuse writes)
//!    and the output stops growing meanwhile; after the thaw the leases come back, and
//!    nothing is lost. No task is ever RUNNING on two workers at once. (Seen so far: the
//!    client gives up the sessions it could not renew within their timeout, so both
//!    workers rejoin with new sessions and the leader places the tasks again; tasks may
//!    move in this phase.)
//! 3. A rolling restart of all three servers moves no task.
//!
//! One test, in phases: they share the ensemble, which it starts through the services
//! script and stops at the end (`stop-ensemble`), whatever happens.

mod service_common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use service_common::*;

const SESSION_MS: u64 = 6000;

/// `WEIR_ZK_ENSEMBLE=3 scripts/services <cmd>`.
fn ensemble_raw(cmd: &str) -> std::process::Output {
    Command::new("bash")
        .arg(kafka::repo_root().join("scripts/services"))
        .arg(cmd)
        .env("WEIR_ZK_ENSEMBLE", "3")
        .current_dir(kafka::repo_root())
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/services")
}

/// `WEIR_ZK_ENSEMBLE=3 scripts/services <cmd>`; its stdout. Fails the test loudly.
fn ensemble(cmd: &str) -> String {
    let out = ensemble_raw(cmd);
    assert!(
        out.status.success(),
        "`WEIR_ZK_ENSEMBLE=3 scripts/services {cmd}` failed (see target/services/zk[1-3].log):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deletes the test's chroot and stops the ensemble when dropped (after the cluster).
struct Ensemble {
    servers: String,
    chroot: String,
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        for n in 1..=3 {
            // a frozen server cannot serve the cleanup (stopping thaws it anyway)
            let _ = ensemble_raw(&format!("thaw-zk{n}"));
        }
        let (servers, chroot) = (self.servers.clone(), self.chroot.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut cfg = weir::coord::session::SessionConfig::new(servers);
                cfg.session_timeout = Duration::from_secs(5);
                if let Ok(c) = weir::coord::session::connect_once(&cfg).await {
                    let _ = weir::coord::store::delete_recursive(&c, &chroot).await;
                }
            });
        })
        .join();
        let out = ensemble_raw("stop-ensemble");
        if !out.status.success() {
            eprintln!(
                "stop-ensemble failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn epochs(c: &Cluster, job: &str) -> Vec<(String, String, u64)> {
    c.job(job).unwrap()["tasks"]
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
}

/// Each worker's own view (`/api/tasks`), read directly (works while ZooKeeper is down).
fn views(http: &BTreeMap<String, String>) -> BTreeMap<String, Value> {
    http.iter()
        .filter_map(|(id, addr)| {
            let v = http_get(addr, "/api/tasks")?;
            Some((id.clone(), serde_json::from_str(&v).ok()?))
        })
        .collect()
}

/// Panics if one task is RUNNING on two workers in these views.
fn assert_no_task_twice(views: &BTreeMap<String, Value>) {
    let mut on: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (w, v) in views {
        for t in v["tasks"].as_array().into_iter().flatten() {
            if t["state"] == "RUNNING" {
                let id = t["task"].as_str().unwrap_or_default().to_string();
                on.entry(id).or_default().push(w.clone());
            }
        }
    }
    for (t, ws) in on {
        assert!(ws.len() < 2, "task {t} RUNNING on {ws:?} at once");
    }
}

fn all_running(c: &Cluster, job: &str, n: usize) -> bool {
    let p = c.placement(job);
    p.len() == n && p.values().all(|(_, s)| s == "RUNNING")
}

/// Distinct output ids now.
fn output_count(brokers: &str, topic: &str) -> usize {
    read_topic(
        brokers,
        topic,
        usize::MAX,
        Duration::from_secs(2),
        Duration::ZERO,
    )
    .iter()
    .map(|g| g.json()["id"].as_u64().expect("id"))
    .collect::<BTreeSet<u64>>()
    .len()
}

fn all_out(c: &Cluster, output: &str, ids: std::ops::Range<u64>, phase: &str) {
    let want: BTreeSet<u64> = ids.collect();
    let (got, dups) = output_ids(&c.brokers, output, &want, Duration::from_secs(60));
    let missing: Vec<u64> = want.difference(&got).copied().collect();
    eprintln!(
        "ensemble {phase}: {} of {} ids out, {dups} duplicates",
        want.len() - missing.len(),
        want.len()
    );
    assert!(
        missing.is_empty(),
        "{phase}: {} ids lost (first {:?})\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        c.logs()
    );
}

#[test]
fn ensemble_leader_kill_quorum_loss_and_rolling_restart() {
    let t0 = Instant::now();
    // What the script did (started or reused each server) is the first
    // thing to read when a later step finds no server.
    eprintln!("{}", ensemble("up"));
    let servers = ensemble("env")
        .lines()
        .find_map(|l| l.strip_prefix("WEIR_ZK_CONNECT=").map(str::to_string))
        .expect("env prints WEIR_ZK_CONNECT");
    assert_eq!(servers.split(',').count(), 3, "three servers: {servers}");
    let chroot = format!("/{}", unique("weir-ensemble"));
    let _ens = Ensemble {
        servers: servers.clone(),
        chroot: chroot.clone(),
    };
    // Workers, the CLI and the cluster's cleanup all use the ensemble, under the chroot.
    std::env::set_var("WEIR_TEST_ZK_CONNECT", format!("{servers}{chroot}"));
    eprintln!("ensemble up after {:?}: {servers}{chroot}", t0.elapsed());

    let mut c = Cluster::new("ens", SESSION_MS);
    for w in ["e1", "e2"] {
        c.start_worker(w);
    }
    let http: BTreeMap<String, String> = ["e1", "e2"]
        .iter()
        .map(|w| (w.to_string(), c.http_of(w)))
        .collect();
    let input = c.topic("ens-in", 4);
    let output = c.topic("ens-out", 4);
    c.weir_ok(&[
        "submit",
        "etl",
        "--name",
        "ens",
        "--parallelism",
        "4",
        "--set",
        &format!("input={input}"),
        "--set",
        &format!("output={output}"),
    ]);
    c.wait("4 tasks RUNNING", Duration::from_secs(30), |c| {
        all_running(c, "ens", 4)
    });
    produce(&c.brokers, &input, &payments(0..1000, 4));
    all_out(&c, &output, 0..1000, "start");

    // 1. SIGKILL the ZooKeeper leader.
    let before = epochs(&c, "ens");
    let leader: u32 = ensemble("zk-leader").trim().parse().expect("leader number");
    ensemble(&format!("kill-zk{leader}"));
    eprintln!("ensemble: killed leader zk{leader}");
    produce(&c.brokers, &input, &payments(1000..2000, 4));
    all_out(&c, &output, 0..2000, "leader killed");
    c.wait(
        "all RUNNING with the leader gone",
        Duration::from_secs(20),
        |c| all_running(c, "ens", 4),
    );
    assert_eq!(
        epochs(&c, "ens"),
        before,
        "a task moved when the ZooKeeper leader died\n{}",
        c.logs()
    );
    ensemble(&format!("start-zk{leader}"));

    // 2. Quorum lost for longer than the session timeout: the leader and one follower.
    let leader: u32 = ensemble("zk-leader").trim().parse().expect("leader number");
    let other = (1..=3).find(|n| *n != leader).unwrap();
    let before_out = output_count(&c.brokers, &output);
    ensemble(&format!("freeze-zk{leader}"));
    ensemble(&format!("freeze-zk{other}"));
    let frozen = Instant::now();
    eprintln!("ensemble: froze zk{leader} and zk{other}");
    produce(&c.brokers, &input, &payments(2000..3000, 4));
    // Every worker's lease runs out within the session timeout (and the margin) ...
    let deadline = frozen + Duration::from_millis(SESSION_MS + 3000);
    loop {
        let v = views(&http);
        assert_no_task_twice(&v);
        if v.len() == 2 && v.values().all(|w| w["lease_ms"] == 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leases still valid {:?} into the quorum loss: {v:?}",
            frozen.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "ensemble: every lease ran out {:?} into the quorum loss",
        frozen.elapsed()
    );
    // ... and, while they cannot prove it, nothing more is written, until the freeze has
    // outlasted the session timeout by 2 s.
    let stalled = output_count(&c.brokers, &output);
    while frozen.elapsed() < Duration::from_millis(SESSION_MS + 2000) {
        let v = views(&http);
        assert_no_task_twice(&v);
        assert!(
            v.values().all(|w| w["lease_ms"] == 0),
            "a lease came back without a quorum: {v:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let still = output_count(&c.brokers, &output);
    assert_eq!(
        still,
        stalled,
        "{} records written without a lease (before the freeze: {before_out})",
        still - stalled
    );
    ensemble(&format!("thaw-zk{leader}"));
    ensemble(&format!("thaw-zk{other}"));
    eprintln!("ensemble: thawed after {:?}", frozen.elapsed());
    let back = Instant::now();
    loop {
        let v = views(&http);
        assert_no_task_twice(&v);
        if v.len() == 2 && v.values().all(|w| w["lease_ms"].as_u64().unwrap_or(0) > 0) {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "leases not back 30 s after the thaw: {v:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.wait("all RUNNING after the thaw", Duration::from_secs(60), |c| {
        assert_no_task_twice(&views(&http));
        all_running(c, "ens", 4)
    });
    all_out(&c, &output, 0..3000, "quorum back");

    // 3. Rolling restart of all three servers.
    let before = epochs(&c, "ens");
    for n in 1..=3 {
        ensemble(&format!("restart-zk{n}"));
        assert_no_task_twice(&views(&http));
    }
    produce(&c.brokers, &input, &payments(3000..4000, 4));
    all_out(&c, &output, 0..4000, "rolling restart");
    c.wait(
        "all RUNNING after the rolling restart",
        Duration::from_secs(20),
        |c| all_running(c, "ens", 4),
    );
    assert_eq!(
        epochs(&c, "ens"),
        before,
        "a task moved in the rolling restart\n{}",
        c.logs()
    );
    for (id, p) in &c.workers {
        let log = p.log_text();
        eprintln!(
            "ensemble: {id} saw {} session expiries",
            log.matches("session expired").count()
        );
    }
    eprintln!("ensemble test took {:?}", t0.elapsed());
}
