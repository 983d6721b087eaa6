//! Real worker processes, real ZooKeeper: a task that fails on one worker past its restart
//! policy is restarted in place by its supervisor (restarts published), then FAILED, and the
//! leader moves it to another worker, where it runs with its last error and restarts kept,
//! and stays. A task that fails on every worker is given up on after the leader's limit.
//!
//! Uses the service example's test-only job type `failing` (`--test-job-types`): its tasks
//! panic on every record on the worker named by `fail_on` and run normally elsewhere.

mod service_common;

use std::time::Duration;

use serde_json::Value;
use service_common::*;

const TIMEOUT_MS: u64 = 3000;

fn task(c: &Cluster, job: &str, name: &str) -> Option<Value> {
    c.job(job)?["tasks"]
        .as_array()?
        .iter()
        .find(|t| t["task"] == name)
        .cloned()
}

/// A cluster of `workers` that run the test-only job types.
fn cluster(name: &str, workers: [&str; 2]) -> Cluster {
    let mut c = Cluster::new(name, TIMEOUT_MS);
    for w in workers {
        c.start_worker_with(w, &["--test-job-types"]);
    }
    c
}

/// Submits a `failing` job whose tasks fail on worker `fail_on` (`*`: on every worker).
fn submit_failing(c: &Cluster, job: &str, parallelism: u32, fail_on: &str) {
    let parallelism = parallelism.to_string();
    let fail_on = format!("fail_on={fail_on}");
    c.weir_ok(&[
        "submit",
        "failing",
        "--name",
        job,
        "--parallelism",
        &parallelism,
        "--set",
        &fail_on,
    ]);
}

#[test]
fn failed_task_moves_to_another_worker_and_keeps_its_error() {
    let c = cluster("failover", ["f1", "f2"]);
    submit_failing(&c, "fl", 2, "f1");
    // One task each at first; the one on f1 fails past its policy (2 restarts) and moves.
    let reported = c.wait(
        "f1 reporting a task FAILED past its restart policy",
        Duration::from_secs(40),
        |c| {
            c.workers["f1"]
                .log_text()
                .contains("task FAILED past its restart policy: reporting it to the leader")
        },
    );
    eprintln!("failover: FAILED reported after {reported:?}");
    let log = c.workers["f1"].log_text();
    let failed_task = ["fl-0", "fl-1"]
        .into_iter()
        .find(|t| {
            log.lines()
                .any(|l| l.contains("reporting it to the leader") && l.contains(t))
        })
        .unwrap_or_else(|| panic!("which task failed?\n{}", c.logs()));
    let moved = c.wait(
        "the failed task RUNNING on f2 with its error and restarts",
        Duration::from_secs(30),
        |c| {
            task(c, "fl", failed_task).is_some_and(|t| {
                t["worker"] == "f2"
                    && t["state"] == "RUNNING"
                    && t["restarts"].as_u64() >= Some(2)
                    && t["last_error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("refused on worker f1"))
            })
        },
    );
    eprintln!("failover: {failed_task} RUNNING on f2 {moved:?} later");
    // The leader said why it moved it.
    assert!(
        c.logs().contains("moved to another worker"),
        "leader log\n{}",
        c.logs()
    );
    // It stays there (not moved back onto f1), and keeps running; the other task too.
    std::thread::sleep(Duration::from_secs(3));
    let t = task(&c, "fl", failed_task).unwrap();
    assert_eq!(
        (t["worker"].as_str(), t["state"].as_str()),
        (Some("f2"), Some("RUNNING")),
        "{t}"
    );
    let other = if failed_task == "fl-0" {
        "fl-1"
    } else {
        "fl-0"
    };
    let o = task(&c, "fl", other).unwrap();
    assert_eq!(o["state"], "RUNNING", "{o}");
    assert!(
        o["last_error"].is_null(),
        "the other task never failed: {o}"
    );
    // f1 stopped its instance: it runs nothing now.
    let api: Value =
        serde_json::from_str(&http_get(&c.http_of("f1"), "/api/tasks").unwrap()).unwrap();
    assert!(api["tasks"].as_array().unwrap().is_empty(), "{api}");
    // `weir status` shows the kept error.
    let out = c.weir_ok(&["status", "fl"]);
    assert!(out.contains("refused on worker f1"), "{out}");
}

#[test]
fn task_failing_on_every_worker_is_given_up_after_the_limit() {
    let c = cluster("giveup", ["g1", "g2"]);
    submit_failing(&c, "gu", 1, "*");
    // It fails past its policy, moves, fails on the other worker, moves back, fails a third
    // time (the limit): then the leader gives up and its state stays FAILED with the reason.
    let given_up = c.wait(
        "the task FAILED and given up on",
        Duration::from_secs(90),
        |c| {
            task(c, "gu", "gu-0").is_some_and(|t| {
                t["state"] == "FAILED"
                    && t["last_error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("given up: FAILED 3 times"))
            })
        },
    );
    eprintln!("giveup: given up after {given_up:?}");
    let t = task(&c, "gu", "gu-0").unwrap();
    let msg = t["last_error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("refused on worker"),
        "keeps the last error: {t}"
    );
    assert!(
        t["restarts"].as_u64() >= Some(6),
        "3 failures x 2 restarts: {t}"
    );
    // It moved between the workers before: both logged a failure.
    for w in ["g1", "g2"] {
        assert!(
            c.workers[w]
                .log_text()
                .contains("task FAILED past its restart policy: reporting it to the leader"),
            "{w} never ran it\n{}",
            c.logs()
        );
    }
    assert!(
        c.logs().contains("given up: FAILED 3 times"),
        "leader log\n{}",
        c.logs()
    );
    // It stays given up: still FAILED a few seconds later, placed nowhere, run by no worker.
    std::thread::sleep(Duration::from_secs(4));
    let t = task(&c, "gu", "gu-0").unwrap();
    assert_eq!(t["state"], "FAILED", "{t}");
    assert!(t["worker"].is_null(), "placed nowhere: {t}");
    assert_eq!(c.job("gu").unwrap()["state"], "FAILED");
    for w in ["g1", "g2"] {
        let api: Value =
            serde_json::from_str(&http_get(&c.http_of(w), "/api/tasks").unwrap()).unwrap();
        assert!(api["tasks"].as_array().unwrap().is_empty(), "{w}: {api}");
    }
    // Submitted again (after a cancel), it gets a fresh budget: placed and failing again.
    c.weir_ok(&["cancel", "gu"]);
    c.wait("the job gone", Duration::from_secs(30), |c| {
        c.job("gu").is_none()
    });
    submit_failing(&c, "gu", 1, "*");
    c.wait(
        "the resubmitted task placed again",
        Duration::from_secs(30),
        |c| task(c, "gu", "gu-0").is_some_and(|t| !t["worker"].is_null()),
    );
}
