//! The dashboard's JSON API and its read-only default, against real worker
//! processes, a real ZooKeeper and a real broker: `/api/cluster`,
//! `/api/jobs/NAME`, `/api/workers/ID` read the whole cluster from any
//! worker; cancel and rescale are refused without `--http-admin` (and the
//! job is untouched), accepted with it; `/metrics` carries every engine
//! counter; `weir status` shows records per second per task.
//!
//! The job is the test-only `failing` type with no failing worker: a
//! generator of 200 records/s per task into a blackhole (no topic needed).

mod service_common;

use std::time::Duration;

use serde_json::Value;
use service_common::*;

const TIMEOUT_MS: u64 = 3000;

fn submit_gen(c: &Cluster, name: &str, parallelism: u32) {
    let p = parallelism.to_string();
    c.weir_ok(&[
        "submit",
        "failing",
        "--name",
        name,
        "--parallelism",
        &p,
        "--set",
        "fail_on=nobody",
    ]);
}

fn all_running(c: &Cluster, job: &str, n: usize) -> bool {
    let p = c.placement(job);
    p.len() == n && p.values().all(|(w, s)| !w.is_empty() && s == "RUNNING")
}

fn task<'a>(job: &'a Value, id: &str) -> &'a Value {
    job["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == id)
        .unwrap_or_else(|| panic!("no task {id} in {job}"))
}

#[test]
fn cluster_job_and_worker_api_read_only_by_default() {
    let mut c = Cluster::new("web-api", TIMEOUT_MS);
    c.start_worker_with("a1", &["--test-job-types"]);
    c.start_worker_with("a2", &["--test-job-types"]);
    submit_gen(&c, "gen", 2);
    c.wait("2 tasks RUNNING", Duration::from_secs(30), |c| {
        all_running(c, "gen", 2)
    });
    let placement = c.placement("gen");
    let a1 = c.http_of("a1");

    // Any worker serves the whole cluster: both workers, the leader, the job.
    c.wait(
        "both tasks' rates in /api/cluster",
        Duration::from_secs(20),
        |_| {
            let v = get_json(&a1, "/api/cluster");
            v["jobs"][0]["records_in_per_s"].as_f64().unwrap_or(0.0) > 200.0
        },
    );
    let v = get_json(&a1, "/api/cluster");
    assert_eq!(v["served_by"], "a1");
    assert_eq!(v["admin"], false);
    let ids: Vec<&str> = v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a1", "a2"], "{v}");
    assert!(
        v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["reachable"] == true && w["assigned"] == 1),
        "{v}"
    );
    let leader = v["leader"].as_str().expect("a leader").to_string();
    assert_eq!(Some(leader.clone()), c.leader());
    let job = &v["jobs"][0];
    assert_eq!(
        (&job["name"], &job["state"], &job["running"], &job["tasks"]),
        (
            &Value::from("gen"),
            &Value::from("RUNNING"),
            &Value::from(2),
            &Value::from(2)
        ),
        "{v}"
    );

    // The job: every task with its worker, state, epoch and live counters (the one on a2
    // read from a2's API), its stages, and a history for the chart.
    c.wait(
        "history points and each task at its generator's rate",
        Duration::from_secs(30),
        |_| {
            let j = get_json(&a1, "/api/jobs/gen");
            j["history"].as_array().is_some_and(|h| h.len() >= 2)
                && j["tasks"].as_array().unwrap().iter().all(|t| {
                    (100.0..=400.0).contains(&t["records_in_per_s"].as_f64().unwrap_or(0.0))
                })
        },
    );
    let j = get_json(&a1, "/api/jobs/gen");
    for (id, (worker, _)) in &placement {
        let t = task(&j, id);
        assert_eq!(t["worker"], worker.as_str(), "{t}");
        assert_eq!(t["state"], "RUNNING", "{t}");
        assert_eq!(t["live"], true, "{t}");
        assert_eq!(t["worker_reachable"], true, "{t}");
        assert!(t["epoch"].as_u64() >= Some(1), "{t}");
        let rate = t["records_in_per_s"].as_f64().unwrap();
        assert!((100.0..=400.0).contains(&rate), "200/s generator: {t}");
        assert!(t["records_out"].as_u64() > Some(0), "{t}");
        assert_eq!(t["restarts"], 0, "{t}");
    }
    assert!(j["stages"].as_array().is_some_and(|s| !s.is_empty()), "{j}");
    let last = j["history"].as_array().unwrap().last().unwrap().clone();
    assert!(last["records_in_per_s"].as_f64() > Some(100.0), "{j}");
    assert!(j["errors"].as_array().unwrap().is_empty(), "{j}");

    // A worker: its summary, what the leader assigned to it and its own task view.
    let w = get_json(&a1, "/api/workers/a2");
    assert_eq!(w["worker"]["id"], "a2");
    assert_eq!(w["assigned"].as_array().unwrap().len(), 1, "{w}");
    assert_eq!(w["tasks"].as_array().unwrap().len(), 1, "{w}");
    assert_eq!(w["tasks"][0]["state"], "RUNNING", "{w}");

    // Unknown names: 404 with a JSON error.
    let (code, body) = http_request(&a1, "GET", "/api/jobs/nope", None, "").unwrap();
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no job named"), "{body}");
    assert_eq!(
        http_request(&a1, "GET", "/api/workers/nope", None, "")
            .unwrap()
            .0,
        404
    );

    // Pages: the overview links the job, the job page lists its tasks, the worker page its own.
    let overview = http_get(&a1, "/").unwrap();
    assert!(overview.contains("href=\"/jobs/gen\""), "{overview}");
    assert!(overview.contains("read-only"));
    let page = http_get(&a1, "/jobs/gen").unwrap();
    assert!(page.contains("data-task=\"gen-0\"") && page.contains("data-task=\"gen-1\""));
    assert!(!page.contains("data-action"), "no admin buttons: {page}");
    assert!(http_get(&a1, "/jobs/gen?part=live")
        .unwrap()
        .starts_with("<h1>"));
    assert!(http_get(&a1, "/assets/app.js")
        .unwrap()
        .contains("part=live"));

    // Read-only: cancel and rescale are refused, and the job is untouched.
    for (path, body) in [
        ("/api/jobs/gen/cancel", "{}"),
        ("/api/jobs/gen/rescale", "{\"parallelism\":1}"),
    ] {
        let (code, answer) =
            http_request(&a1, "POST", path, Some("application/json"), body).unwrap();
        assert_eq!(code, 403, "{path}: {answer}");
        assert!(answer.contains("read-only"), "{answer}");
    }
    assert_eq!(
        http_request(&a1, "GET", "/api/jobs/gen/cancel", None, "")
            .unwrap()
            .0,
        405
    );
    let after = c.job("gen").expect("the job is still there");
    assert_eq!(after["parallelism"], 2, "{after}");
    assert!(all_running(&c, "gen", 2));

    // /metrics: every engine counter, per task and per stage.
    let m = http_get(&a1, "/metrics").unwrap();
    for name in [
        "weir_task_records_in_total{",
        "weir_task_late_records_total{",
        "weir_task_dead_letters_total{",
        "weir_task_backpressure_seconds_total{",
        "weir_task_records_in_per_second{",
        "weir_stage_records_in_total{",
        "weir_stage_batches_out_total{",
        "weir_stage_backpressure_seconds_total{",
        "weir_task_checkpoint_id{",
        "weir_session_connected{worker=\"a1\"} 1",
    ] {
        assert!(m.contains(name), "missing {name} in\n{m}");
    }

    // `weir status`: the IN/S column, about 200 per task.
    c.wait("IN/S in weir status", Duration::from_secs(15), |c| {
        c.job("gen").is_some_and(|j| {
            j["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["records_in_per_s"].as_u64().unwrap_or(0) >= 100)
        })
    });
    let human = c.weir_ok(&["status", "gen"]);
    let header = human.lines().find(|l| l.contains("TASK")).unwrap();
    assert!(header.contains("IN/S"), "{human}");
    let col = header.find("IN/S").unwrap() + 4;
    for line in human.lines().filter(|l| l.trim_start().starts_with("gen-")) {
        let rate: u64 = line[..col]
            .split_whitespace()
            .last()
            .unwrap()
            .parse()
            .unwrap_or_else(|e| panic!("{e}: {line}\n{human}"));
        assert!((100..=400).contains(&rate), "{line}\n{human}");
    }
}

#[test]
fn admin_endpoint_rescales_and_cancels() {
    let mut c = Cluster::new("web-admin", TIMEOUT_MS);
    c.start_worker_with("b1", &["--test-job-types", "--http-admin"]);
    submit_gen(&c, "adm", 1);
    c.wait("1 task RUNNING", Duration::from_secs(30), |c| {
        all_running(c, "adm", 1)
    });
    let b1 = c.http_of("b1");
    assert_eq!(get_json(&b1, "/api/cluster")["admin"], true);
    assert!(http_get(&b1, "/jobs/adm")
        .unwrap()
        .contains("data-action=\"cancel\""));
    // Not JSON (what a cross-site form would send): refused.
    let (code, body) = http_request(
        &b1,
        "POST",
        "/api/jobs/adm/rescale",
        Some("application/x-www-form-urlencoded"),
        "parallelism=2",
    )
    .unwrap();
    assert_eq!(code, 400, "{body}");
    let (code, body) = http_request(
        &b1,
        "POST",
        "/api/jobs/adm/rescale",
        Some("application/json"),
        "{\"parallelism\":0}",
    )
    .unwrap();
    assert_eq!(code, 400, "{body}");
    let (code, body) = http_request(
        &b1,
        "POST",
        "/api/jobs/adm/rescale",
        Some("application/json"),
        "{\"parallelism\":2}",
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"from\":1") && body.contains("\"to\":2"),
        "{body}"
    );
    c.wait("2 tasks RUNNING", Duration::from_secs(30), |c| {
        all_running(c, "adm", 2)
    });
    let (code, body) = http_request(
        &b1,
        "POST",
        "/api/jobs/adm/cancel",
        Some("application/json"),
        "{}",
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(c.job("adm").is_none());
    let (code, _) = http_request(
        &b1,
        "POST",
        "/api/jobs/adm/cancel",
        Some("application/json"),
        "{}",
    )
    .unwrap();
    assert_eq!(code, 404);
}
