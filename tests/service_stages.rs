//! A three-stage job on the cluster: `clicks-totals` (parse → key_by user →
//! count per user and window → key_by window → total per window), each
//! stage its own tasks, connected by two repartition topics, exactly-once
//! with checkpoints shared by three workers. Half of the input is a
//! backlog produced before the job is submitted, clicks land in the input
//! partitions without regard to their user, and the worker running the
//! most tasks is SIGKILLed while the rest streams in. Read
//! `read_committed`, every window's total is in the output exactly once
//! and equals the clicks produced into it (computed here).

mod service_common;

use std::collections::BTreeMap;
use std::time::Duration;

use service_common::*;

/// A base time aligned to the 10 s windows.
const T0: i64 = 1_700_000_000_000;
/// 2 tasks in each of the 3 stages.
const TASKS: usize = 6;

/// Every placed task of `job` RUNNING, `n` of them.
fn running(c: &Cluster, job: &str, n: usize) -> bool {
    let p = c.placement(job);
    p.len() == n && p.values().all(|(w, s)| !w.is_empty() && s == "RUNNING")
}

/// 6,000 clicks of 9 users over 150 s of event time in 12 chunks, each in a
/// pseudo-random partition of 4, up to 900 ms out of order; and the true
/// total of every 10 s window.
fn clicks() -> (Vec<Vec<Rec>>, BTreeMap<i64, u64>) {
    let mut totals = BTreeMap::new();
    let mut chunks = Vec::new();
    for k in 0..12i64 {
        let mut chunk = Vec::new();
        for j in 0..500i64 {
            let i = k * 500 + j;
            let ts = T0 + i * 25 + (i * 37) % 900;
            *totals.entry(ts - ts.rem_euclid(10_000)).or_insert(0) += 1;
            chunk.push(Rec::to(
                ((i * 1_103_515_245 + 12_345) >> 8).rem_euclid(4) as i32,
                format!(r#"{{"user": "u{}", "ts": {ts}}}"#, (i * 5) % 9),
            ));
        }
        chunks.push(chunk);
    }
    (chunks, totals)
}

#[test]
fn three_stages_total_every_window_exactly_once_from_a_backlog_through_a_worker_kill() {
    const JOB: &str = "totals3";
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let mut c = Cluster::new("stages3", 3000);
    for w in ["s1", "s2", "s3"] {
        c.start_worker_with(w, &["--checkpoint-url", &url]);
    }
    let input = c.topic("totals-in", 4);
    let output = c.topic("totals-out", 4);
    for t in [
        format!("{input}.dlq"),
        format!("weir-{JOB}-count-repartition"),
        format!("weir-{JOB}-total-repartition"),
    ] {
        c.topics.push(t);
    }
    let (mut chunks, want) = clicks();
    let live = chunks.split_off(chunks.len() / 2);
    for chunk in &chunks {
        produce(&c.brokers, &input, chunk);
    }
    let (set_in, set_out) = (format!("input={input}"), format!("output={output}"));
    c.weir_ok(&[
        "submit",
        "clicks-totals",
        "--name",
        JOB,
        "--parallelism",
        "2",
        "--set",
        &set_in,
        "--set",
        &set_out,
    ]);
    c.wait("every task RUNNING", Duration::from_secs(60), |c| {
        running(c, JOB, TASKS)
    });
    let text = c.weir_ok(&["status", JOB]);
    assert!(
        text.contains("stages parse=2 -> count=2 -> total=2") && text.contains("total[1]"),
        "status shows the three stages:\n{text}"
    );
    // The API and /metrics know the stages too.
    let any = c.workers.keys().next().cloned().expect("a worker");
    let api = get_json(&c.http_of(&any), &format!("/api/jobs/{JOB}"));
    assert_eq!(
        api["job_stages"].as_array().map(Vec::len),
        Some(3),
        "/api/jobs/{JOB}: {api:#}"
    );
    let metrics: String = c
        .workers
        .keys()
        .filter_map(|w| http_get(&c.http_of(w), "/metrics"))
        .collect();
    for stage in ["parse", "count", "total"] {
        assert!(
            metrics.contains(&format!("job_stage=\"{stage}\"")),
            "/metrics labels the {stage} tasks:\n{metrics}"
        );
    }
    let producer = produce_slowly(&c.brokers, &input, live);
    // Some of the backlog through all three stages first: windows totalled.
    read_topic(
        &c.brokers,
        &output,
        1,
        Duration::from_secs(60),
        Duration::ZERO,
    );
    let loads = c.loads(JOB);
    let victim = loads
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(w, _)| w.clone())
        .expect("a worker with tasks");
    eprintln!("kill -9 {victim} (loads {loads:?})");
    c.workers.remove(&victim).unwrap().kill9();
    c.wait("every task RUNNING again", Duration::from_secs(60), |c| {
        running(c, JOB, TASKS) && c.placement(JOB).values().all(|(w, _)| *w != victim)
    });
    producer.join().expect("producer");
    assert_every_window_once(
        &c,
        (&input, &output),
        T0,
        &want,
        |v| Some(v["window_start"].as_i64().expect("window_start")),
        "clicks",
    );
}

/// Three workers sharing checkpoint storage, and the input, output, dead
/// letter and repartition topics of the two-stage `clicks` job `job`
/// (`prefix` names the cluster and the topics). Keep the directory alive.
fn clicks_cluster(prefix: &str, job: &str) -> (Cluster, String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let mut c = Cluster::new(&format!("stages-{prefix}"), 3000);
    for w in ["w1", "w2", "w3"] {
        c.start_worker_with(w, &["--checkpoint-url", &url]);
    }
    let input = c.topic(&format!("{prefix}-in"), 4);
    let output = c.topic(&format!("{prefix}-out"), 4);
    c.topics.push(format!("{input}.dlq"));
    c.topics.push(format!("weir-{job}-count-repartition"));
    (c, input, output, dir)
}

/// Clicks per (user, window start) of the clicks in `chunks`.
fn user_windows<'a>(chunks: impl IntoIterator<Item = &'a Rec>) -> BTreeMap<(String, i64), u64> {
    let mut want = BTreeMap::new();
    for r in chunks {
        let v: serde_json::Value = serde_json::from_slice(&r.payload).expect("click JSON");
        let ts = v["ts"].as_i64().expect("ts");
        let user = v["user"].as_str().expect("user").to_string();
        *want.entry((user, ts - ts.rem_euclid(10_000))).or_insert(0) += 1;
    }
    want
}

/// The stateless `parse` stage of `clicks` rescaled twice while clicks
/// stream in (4 → 2 → 3 tasks), with input partitions 2 and 3 25 s of event
/// time behind 0 and 1: the count tasks restart with the new writer count
/// and their own state, ignore the earlier layout's watermarks (writer 0
/// read partition 0 only; now it reads 0 and 2, which is behind) and hold
/// until the new writers are heard; read `read_committed`, every
/// (user, window) count is there exactly once and exact. (Taking the old
/// layout's watermarks over makes partition 2's and 3's clicks late.)
#[test]
fn rescaling_the_parse_stage_mid_stream_changes_no_window() {
    const JOB: &str = "rescaled";
    let (c, input, output, _dir) = clicks_cluster("rescale", JOB);
    let (set_in, set_out) = (format!("input={input}"), format!("output={output}"));
    c.weir_ok(&[
        "submit",
        "clicks",
        "--name",
        JOB,
        "--parallelism",
        "2",
        "--stage-parallelism",
        "parse=4",
        "--set",
        &set_in,
        "--set",
        &set_out,
    ]);
    c.wait("6 tasks RUNNING", Duration::from_secs(60), |c| {
        running(c, JOB, 6)
    });
    // The three-stage test's clicks, partitions 2 and 3 25 s behind,
    // counted per user and window.
    let (mut chunks, _) = clicks();
    for r in chunks.iter_mut().flatten() {
        if r.partition >= Some(2) {
            let mut v: serde_json::Value = serde_json::from_slice(&r.payload).expect("click JSON");
            v["ts"] = (v["ts"].as_i64().expect("ts") - 25_000).into();
            r.payload = serde_json::to_vec(&v).unwrap();
        }
    }
    let want = user_windows(chunks.iter().flatten());
    let producer = produce_slowly(&c.brokers, &input, chunks);
    for (n, tasks) in [("2", 4), ("3", 5)] {
        std::thread::sleep(Duration::from_secs(3));
        let text = c.weir_ok(&["rescale", JOB, n, "--stage", "parse"]);
        assert!(text.contains("stage parse"), "{text}");
        c.wait(
            &format!("parse at {n}: {tasks} tasks RUNNING"),
            Duration::from_secs(60),
            |c| running(c, JOB, tasks),
        );
    }
    producer.join().expect("producer");
    assert_every_window_once(&c, (&input, &output), T0, &want, user_window, "count");
}

/// Every `stage` task of `job` has recorded a checkpoint taken under its
/// current layout (`n` tasks: stored under `<job>-<stage>-task-<i>-of-<n>/`).
fn stage_checkpointed(c: &Cluster, job: &str, stage: &str, n: usize) -> bool {
    let Some(j) = c.job(job) else { return false };
    let suffix = format!("-of-{n}/");
    let tasks: Vec<&serde_json::Value> = j["tasks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|t| {
                    t["stage"]
                        .as_str()
                        .is_some_and(|s| s.starts_with(&format!("{stage}[")))
                })
                .collect()
        })
        .unwrap_or_default();
    tasks.len() == n
        && tasks.iter().all(|t| {
            t["recorded_checkpoint"]["state_paths"]
                .as_object()
                .is_some_and(|m| {
                    m.values()
                        .any(|p| p.as_str().is_some_and(|p| p.contains(&suffix)))
                })
        })
}

/// The stateful `count` stage of `clicks` rescaled up and down (2 → 3 → 2
/// tasks over a 6-partition repartition topic, then 3 and 2 again at once)
/// while its windows are open:
/// each new task takes its partitions over from the tasks that had them,
/// with their checkpoints, and of their window state the users its
/// partitions hold (the old tasks' writers fenced first). A third of the
/// clicks is a backlog produced before the job is submitted, the rest
/// streams in around the rescales; read `read_committed`, every (user,
/// window) count is there exactly once and exact. (Started afresh, the new
/// tasks emitted the windows open at each rescale partially, and twice.)
#[test]
fn rescaling_the_count_stage_moves_its_window_state_with_its_partitions() {
    const JOB: &str = "recount";
    let (c, input, output, dir) = clicks_cluster("recount", JOB);
    let (chunks, _) = clicks();
    let want = user_windows(chunks.iter().flatten());
    let mut chunks = chunks.into_iter();
    for chunk in chunks.by_ref().take(4) {
        produce(&c.brokers, &input, &chunk);
    }
    let (set_in, set_out) = (format!("input={input}"), format!("output={output}"));
    c.weir_ok(&[
        "submit",
        "clicks",
        "--name",
        JOB,
        "--parallelism",
        "2",
        "--set",
        &set_in,
        "--set",
        &set_out,
        "--set",
        "repartition_partitions=6",
    ]);
    c.wait("4 tasks RUNNING", Duration::from_secs(60), |c| {
        running(c, JOB, 4)
    });
    for (n, tasks) in [(3, 5), (2, 4)] {
        for chunk in chunks.by_ref().take(2) {
            produce(&c.brokers, &input, &chunk);
        }
        let before = if n == 3 { 2 } else { 3 };
        c.wait(
            &format!("count's {before} tasks checkpointed"),
            Duration::from_secs(60),
            |c| stage_checkpointed(c, JOB, "count", before),
        );
        let text = c.weir_ok(&["rescale", JOB, &n.to_string(), "--stage", "count"]);
        assert!(text.contains("stage count"), "{text}");
        for chunk in chunks.by_ref().take(2) {
            produce(&c.brokers, &input, &chunk);
        }
        c.wait(
            &format!("count at {n}: {tasks} tasks RUNNING, checkpointed"),
            Duration::from_secs(90),
            |c| running(c, JOB, tasks) && stage_checkpointed(c, JOB, "count", n),
        );
    }
    // Two rescales in a row, the second as soon as the first layout's
    // tasks run (before they committed anything): the last layout must
    // wait until every task of the others stopped, or one of them could
    // commit after the take-over read what was committed.
    for chunk in chunks.by_ref().take(2) {
        produce(&c.brokers, &input, &chunk);
    }
    c.weir_ok(&["rescale", JOB, "3", "--stage", "count"]);
    c.wait(
        "count at 3 again: 5 tasks RUNNING",
        Duration::from_secs(60),
        |c| running(c, JOB, 5),
    );
    c.weir_ok(&["rescale", JOB, "2", "--stage", "count"]);
    c.wait(
        "count back at 2 after a burst: 4 tasks RUNNING, checkpointed",
        Duration::from_secs(90),
        |c| running(c, JOB, 4) && stage_checkpointed(c, JOB, "count", 2),
    );
    for chunk in chunks {
        produce(&c.brokers, &input, &chunk);
    }
    let logs = c.full_logs();
    assert!(
        logs.contains("taking over other copies' checkpoints"),
        "the rescaled count tasks took their partitions' checkpoints over\n{}",
        c.logs()
    );
    assert!(
        logs.contains("the stage's previous layout stopped: starting"),
        "a rescaled count task waited for the previous layout to stop\n{}",
        c.logs()
    );
    assert_every_window_once(&c, (&input, &output), T0, &want, user_window, "count");
    // The earlier layouts' checkpoints go once no committed position of
    // the repartition topic names them: only the current layout's copies
    // keep any.
    let count_copies =
        |dir: &std::path::Path| checkpointed_copies(dir, &format!("{JOB}-count-task-"));
    c.wait(
        "only the current count layout keeps checkpoints",
        Duration::from_secs(60),
        |_| {
            let copies = count_copies(dir.path());
            !copies.is_empty() && copies.iter().all(|c| c.ends_with("-of-2"))
        },
    );
    let logs = c.full_logs();
    assert!(
        logs.contains("deleted the checkpoints of a copy no committed position names any more"),
        "the superseded copies' checkpoints were deleted by the tasks that took over\n{}",
        c.logs()
    );
}

/// The copies named `<prefix>..` with a completed checkpoint (a
/// `chk-<id>/_metadata`) under the checkpoint storage directory `dir`.
fn checkpointed_copies(dir: &std::path::Path, prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut copies: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let completed = std::fs::read_dir(e.path())
                .ok()?
                .filter_map(Result::ok)
                .any(|c| {
                    c.file_name().to_string_lossy().starts_with("chk-")
                        && c.path().join("_metadata").exists()
                });
            (name.starts_with(prefix) && completed).then_some(name)
        })
        .collect();
    copies.sort();
    copies
}
