//! The `weir` CLI and the worker against bad input: clear messages, the
//! documented exit codes, never a panic. Real ZooKeeper; a fake worker
//! registration advertises the job types.

mod service_common;

use std::process::Output;
use std::time::Duration;

use service_common::*;
use weir::coord::membership::register;
use weir::coord::session::{connect_once, SessionConfig};
use weir::coord::store::{ensure_layout, persistent};
use weir::coord::{WorkerInfo, ZkPaths};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn expect(o: Output, code: i32, needle: &str) {
    let t = text(&o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "expected exit {code} with {needle:?}, got:\n{t}"
    );
    assert!(t.contains(needle), "expected {needle:?} in:\n{t}");
    assert!(!t.contains("panicked"), "a panic:\n{t}");
}

#[test]
fn zookeeper_unreachable_is_a_clear_bounded_error() {
    let t0 = std::time::Instant::now();
    let o = weir_raw(&["--zk", "127.0.0.1:1", "--zk-wait-s", "2", "workers"]);
    assert!(t0.elapsed() < Duration::from_secs(10));
    let t = text(&o);
    expect(o, 3, "unreachable");
    assert!(t.contains("waiting for ZooKeeper at 127.0.0.1:1"), "{t}");
}

#[test]
fn worker_waits_for_zookeeper_and_says_so() {
    let mut p = Proc::spawn(
        "service",
        &[
            "worker",
            "--zk",
            "127.0.0.1:1",
            "--brokers",
            "127.0.0.1:9092",
            "--id",
            "lonely",
            "--session-timeout-ms",
            "2000",
        ],
    );
    p.wait_for_log(
        "waiting for ZooKeeper at 127.0.0.1:1",
        Duration::from_secs(15),
    );
    let log = p.terminate(Duration::from_secs(10));
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn bad_submissions_and_malformed_nodes() {
    let _ = ensure_services();
    let root = format!("/{}", unique("weir-test-cli"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let paths = ZkPaths::new(&root).unwrap();
    let client = rt.block_on(async {
        let mut cfg = SessionConfig::new(zk_addr());
        cfg.session_timeout = std::time::Duration::from_secs(10);
        let c = connect_once(&cfg)
            .await
            .expect("ZooKeeper: run scripts/services up");
        ensure_layout(&c, &paths).await.unwrap();
        c
    });
    let zk = zk_addr();
    let weir = |args: &[&str]| {
        let mut all = vec!["--zk", zk.as_str(), "--root", root.as_str()];
        all.extend_from_slice(args);
        weir_raw(&all)
    };
    let sets = ["--set", "input=a", "--set", "output=b"];
    let submit = |ty: &str, name: &str, p: &str| {
        let mut a = vec!["submit", ty, "--name", name, "--parallelism", p];
        a.extend_from_slice(&sets);
        weir(&a)
    };

    // No worker yet: the job type cannot be checked.
    expect(submit("etl", "j1", "2"), 1, "no worker is running");
    // A (fake) worker advertising etl and clicks.
    rt.block_on(async {
        let w = WorkerInfo {
            id: "fake".into(),
            address: "127.0.0.1:0".into(),
            capacity: 4,
            job_types: vec!["clicks".into(), "etl".into()],
            version: "test".into(),
            stages: Default::default(),
            brokers: String::new(),
        };
        register(&client, &paths, &w, Duration::from_secs(1))
            .await
            .unwrap();
    });
    expect(submit("nope", "j1", "2"), 1, "unknown job type \"nope\"");
    expect(submit("nope", "j1", "2"), 1, "clicks, etl");
    expect(submit("etl", "j1", "0"), 2, "--parallelism");
    expect(submit("etl", "bad/name", "1"), 2, "--name");
    expect(
        weir(&[
            "submit",
            "etl",
            "--name",
            "j1",
            "--parallelism",
            "1",
            "--set",
            "novalue",
        ]),
        2,
        "key=value",
    );
    expect(
        weir(&["submit", "etl", "--name", "j1", "--parallelism", "-3"]),
        2,
        "",
    );
    expect(submit("etl", "j1", "2"), 0, "submitted job j1");
    expect(submit("etl", "j1", "2"), 1, "already exists");
    expect(weir(&["workers"]), 0, "fake");
    expect(weir(&["cancel", "ghost"]), 1, "no job named \"ghost\"");
    expect(
        weir(&["rescale", "ghost", "3"]),
        1,
        "no job named \"ghost\"",
    );
    expect(weir(&["rescale", "j1", "0"]), 2, "at least 1");
    expect(weir(&["rescale", "j1", "3"]), 0, "parallelism 2 -> 3");
    expect(weir(&["status", "ghost"]), 1, "no job named \"ghost\"");
    expect(weir(&["status", "j1", "--json"]), 0, "\"parallelism\": 3");

    // Malformed nodes found in ZooKeeper: named in the error, exit 1.
    rt.block_on(async {
        client
            .create(&format!("{root}/jobs/broken"), b"", &persistent())
            .await
            .unwrap();
        client
            .create(
                &format!("{root}/jobs/broken/spec"),
                b"{not json",
                &persistent(),
            )
            .await
            .unwrap();
    });
    expect(
        weir(&["status"]),
        1,
        &format!("malformed data in znode {root}/jobs/broken/spec"),
    );
    let o = weir(&["status", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON even with a bad job");
    assert!(v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["name"] == "broken" && j["state"] == "ERROR"));
    expect(weir(&["status", "j1"]), 0, "j1-2");
    rt.block_on(async {
        client
            .create(&format!("{root}/jobs/j1/tasks/j1-0"), b"", &persistent())
            .await
            .unwrap();
        client
            .create(
                &format!("{root}/jobs/j1/tasks/j1-0/state"),
                b"{\"state\":\"DANCING\"}",
                &persistent(),
            )
            .await
            .unwrap();
    });
    expect(
        weir(&["status", "j1"]),
        1,
        &format!("{root}/jobs/j1/tasks/j1-0/state"),
    );
    expect(
        weir(&["cancel", "j1", "--no-wait"]),
        0,
        "cancellation requested",
    );
    drop(client);
    delete_root(&root);
}
