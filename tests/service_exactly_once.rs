//! The cluster's `clicks` job with durable checkpoints shared by its
//! workers (`--checkpoint-url`): a worker SIGKILLed in the middle of the
//! stream, and another stopped with SIGTERM, and their tasks restored on
//! the others from the checkpoints their transactions committed. Read
//! `read_committed`, the output holds every window exactly once with its
//! exact count (computed here). And a worker frozen (SIGSTOP) past its
//! session, its tasks moved, then thawed: it commits nothing more (its
//! lease stops it, and the broker fences its transactional producers by
//! their epoch), and the output is still exact. Clicks land in the input's
//! partitions without regard to their user (as producers without keys
//! do): the job runs as two stages, `parse` and `count`, its clicks
//! repartitioned by user through `weir-<job>-count-repartition`, so every
//! window is still counted by one task.

mod service_common;

use std::collections::BTreeMap;
use std::time::Duration;

use service_common::*;

const TIMEOUT_MS: u64 = 3000;
/// Tasks of the job: 2 of stage `parse` and 2 of stage `count` (each parse
/// task reads two of the input's 4 partitions, each count task two of the
/// repartition topic's).
const TASKS: usize = 4;
/// A base time aligned to the 10 s windows.
const T0: i64 = 1_700_000_000_000;

fn all_running(c: &Cluster, job: &str, n: usize) -> bool {
    let p = c.placement(job);
    p.len() == n && p.values().all(|(w, s)| !w.is_empty() && s == "RUNNING")
}

type Windows = BTreeMap<(String, i64), u64>;

/// The topic between the job's two stages.
fn repartition_topic(job: &str) -> String {
    format!("weir-{job}-count-repartition")
}

/// `weir submit clicks --name ck --parallelism 2` on `input` and `output`.
fn submit_clicks(c: &Cluster, job: &str, input: &str, output: &str) {
    let (set_in, set_out) = (format!("input={input}"), format!("output={output}"));
    c.weir_ok(&[
        "submit",
        "clicks",
        "--name",
        job,
        "--parallelism",
        "2",
        "--set",
        &set_in,
        "--set",
        &set_out,
    ]);
}

/// Three workers sharing checkpoint storage in `dir`, the `clicks` job `ck`
/// (2 tasks per stage) submitted and RUNNING; returns the cluster and its topics.
fn clicks_cluster(name: &str, job: &str, dir: &std::path::Path) -> (Cluster, String, String) {
    clicks_cluster_logging(name, job, dir, None)
}

/// [`clicks_cluster`] with the workers' `RUST_LOG`.
fn clicks_cluster_logging(
    name: &str,
    job: &str,
    dir: &std::path::Path,
    log_filter: Option<&str>,
) -> (Cluster, String, String) {
    let url = format!("file://{}", dir.display());
    let mut c = Cluster::new(name, TIMEOUT_MS);
    c.log_filter = log_filter.map(str::to_string);
    for w in ["e1", "e2", "e3"] {
        c.start_worker_with(w, &["--checkpoint-url", &url]);
    }
    let input = c.topic("eos-clicks-in", 4);
    let output = c.topic("eos-clicks-out", 4);
    let dlq = format!("{input}.dlq");
    create_topic(&c.brokers, &dlq, 1);
    c.topics.push(dlq);
    // Made by the job; deleted here too should the test fail first.
    c.topics.push(repartition_topic(job));
    submit_clicks(&c, job, &input, &output);
    c.wait("every task RUNNING", Duration::from_secs(60), |c| {
        all_running(c, job, TASKS)
    });
    (c, input, output)
}

/// 8,000 clicks of 12 users (in turn) over 200 s of event time, in 20 chunks,
/// each in a pseudo-random partition (whatever its user); up to 900 ms out
/// of order. Returns the chunks
/// and the true count of every (user, 10 s window).
fn click_chunks() -> (Vec<Vec<Rec>>, Windows) {
    let mut want: Windows = BTreeMap::new();
    let mut chunks = Vec::new();
    for k in 0..20i64 {
        let mut chunk = Vec::new();
        for j in 0..400i64 {
            let i = k * 400 + j;
            let u = (i * 7) % 12;
            let ts = T0 + i * 25 + (i * 37) % 900;
            let user = format!("u{u}");
            *want
                .entry((user.clone(), ts - ts.rem_euclid(10_000)))
                .or_insert(0) += 1;
            chunk.push(Rec::to(
                ((i * 1_103_515_245 + 12_345) >> 8).rem_euclid(4) as i32,
                format!(r#"{{"user": "{user}", "ts": {ts}}}"#),
            ));
        }
        chunks.push(chunk);
    }
    (chunks, want)
}

/// Every window of `want` in the output exactly once, exact (see
/// [`assert_every_window_once`]).
fn check_every_window_once(c: &Cluster, input: &str, output: &str, want: &Windows) {
    assert_every_window_once(c, (input, output), T0, want, user_window, "count");
}

#[test]
fn killed_and_stopped_workers_move_clicks_tasks_without_a_wrong_window() {
    // Its own job name: a job's transactional ids and group derive from
    // it, and the tests of this binary share the broker.
    const JOB: &str = "ck_kill";
    let dir = tempfile::tempdir().unwrap();
    let (mut c, input, output) = clicks_cluster("eos", JOB, dir.path());
    let (chunks, want) = click_chunks();
    let producer = produce_slowly(&c.brokers, &input, chunks);
    // 4 s in: SIGKILL the worker running the most tasks.
    std::thread::sleep(Duration::from_secs(4));
    let loads = c.loads(JOB);
    let victim = loads
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(w, _)| w.clone())
        .expect("a worker with tasks");
    eprintln!("kill -9 {victim} (loads {loads:?})");
    c.workers.remove(&victim).unwrap().kill9();
    c.wait("every task RUNNING again", Duration::from_secs(60), |c| {
        all_running(c, JOB, TASKS) && c.placement(JOB).values().all(|(w, _)| *w != victim)
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
        |c| all_running(c, JOB, TASKS) && c.placement(JOB).values().all(|(w, _)| *w != other),
    );
    producer.join().expect("producer");
    // `weir status` shows each task's latest checkpoint (published fenced
    // with the task's state), in JSON and as text.
    c.wait(
        "every task showing a checkpoint",
        Duration::from_secs(30),
        |c| {
            c.job(JOB).is_some_and(|j| {
                j["tasks"].as_array().is_some_and(|ts| {
                    ts.len() == TASKS && ts.iter().all(|t| t["checkpoint"]["id"].as_u64() > Some(0))
                })
            })
        },
    );
    // Each task's checkpoint is recorded in ZooKeeper, fenced by its
    // current epoch, with ids of that epoch (above epoch * 10^9), and the
    // checkpoint it names is in the shared storage, complete.
    c.wait(
        "every task's checkpoint recorded under its current epoch",
        Duration::from_secs(30),
        |c| {
            c.job(JOB).is_some_and(|j| {
                j["tasks"].as_array().is_some_and(|ts| {
                    ts.iter().all(|t| {
                        let r = &t["recorded_checkpoint"];
                        r["epoch"] == t["epoch"]
                            && r["id"].as_u64()
                                > Some(t["epoch"].as_u64().unwrap_or(0) * 1_000_000_000)
                    })
                })
            })
        },
    );
    let job = c.job(JOB).unwrap();
    for t in job["tasks"].as_array().unwrap() {
        let r = &t["recorded_checkpoint"];
        let location = r["state_paths"]
            .as_object()
            .and_then(|m| m.values().next())
            .and_then(|v| v.as_str())
            .expect("a state path");
        let dir = location
            .strip_prefix("file://")
            .expect("a file:// location");
        assert!(
            std::path::Path::new(dir).join("_metadata").exists(),
            "the recorded checkpoint {location} is stored and complete"
        );
        assert!(
            r["offsets"].as_object().is_some_and(|o| !o.is_empty()),
            "{job:#}\n{}",
            c.logs()
        );
    }
    let text = c.weir_ok(&["status", JOB]);
    assert!(
        text.contains("CHECKPOINT") && text.contains("s ago)"),
        "status shows checkpoint ids and ages:\n{text}"
    );
    assert!(
        text.contains("stages parse=2 -> count=2") && text.contains("count[1]"),
        "status shows the job's stages and each task's:\n{text}"
    );
    check_every_window_once(&c, &input, &output, &want);
    // The repartition topic has the count stage's parallelism as its
    // partition count; cancelling the job (not with a savepoint, whose
    // positions point into it) deletes it.
    let internal = repartition_topic(JOB);
    assert_eq!(
        service_common::kafka::partition_count(&c.brokers, &internal),
        Some(2)
    );
    c.weir_ok(&["cancel", JOB, "--abort"]);
    c.wait(
        "the repartition topic deleted with the job",
        Duration::from_secs(30),
        |c| !service_common::kafka::topic_exists(&c.brokers, &internal),
    );
}

fn signal(p: &Proc, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([sig, &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {sig}");
}

/// A worker frozen past its session while clicks stream in: its tasks move
/// and restore from their checkpoints elsewhere; thawed, it commits no
/// transaction for the tasks it ran before (its lease ran out, and the new
/// owners' producers fenced its own) until it is given tasks again under a
/// new epoch, and every window is in the output exactly once, exact.
#[test]
fn a_frozen_and_thawed_worker_commits_nothing() {
    // Its own job name: a job's transactional ids and group derive from
    // it, and the tests of this binary share the broker.
    const JOB: &str = "ck_frozen";
    let dir = tempfile::tempdir().unwrap();
    // Each transaction commit is logged (at debug) by the workers.
    let (c, input, output) = clicks_cluster_logging(
        "eos-frozen",
        JOB,
        dir.path(),
        Some("info,weir::connectors::kafka::transaction=debug"),
    );
    let (chunks, want) = click_chunks();
    let producer = produce_slowly(&c.brokers, &input, chunks);
    // Once a checkpoint has committed everywhere, freeze the worker with
    // the most tasks (not the leader: the leader's own freeze is another
    // test's).
    c.wait(
        "every task showing a checkpoint",
        Duration::from_secs(60),
        |c| {
            c.job(JOB).is_some_and(|j| {
                j["tasks"].as_array().is_some_and(|ts| {
                    ts.len() == TASKS && ts.iter().all(|t| t["checkpoint"]["id"].as_u64() > Some(0))
                })
            })
        },
    );
    let leader = c.leader().expect("a leader");
    let loads = c.loads(JOB);
    let victim = loads
        .iter()
        .filter(|(w, n)| **w != leader && **n > 0)
        .max_by_key(|(_, n)| **n)
        .map(|(w, _)| w.clone())
        .expect("a worker with tasks that does not lead");
    assert!(
        c.workers[&victim]
            .log_text()
            .contains("kafka sink: checkpoint committed"),
        "the victim logs its commits (so their absence later means something)"
    );
    eprintln!("SIGSTOP {victim} (loads {loads:?}, leader {leader})");
    signal(&c.workers[&victim], "-STOP");
    c.wait(
        "the frozen worker's tasks RUNNING elsewhere",
        Duration::from_secs(60),
        |c| all_running(c, JOB, TASKS) && c.placement(JOB).values().all(|(w, _)| *w != victim),
    );
    let log_before = c.workers[&victim].log_text().len();
    signal(&c.workers[&victim], "-CONT");
    c.wait(
        "the thawed worker registered again",
        Duration::from_secs(30),
        |c| c.workers().iter().any(|w| w["id"] == victim.as_str()),
    );
    producer.join().expect("producer");
    check_every_window_once(&c, &input, &output, &want);
    let log = c.workers[&victim].log_text();
    let thawed = &log[log_before..];
    assert!(
        thawed.contains("write lease ran out") || thawed.contains("session expired"),
        "the zombie did not notice it lost its lease:\n{thawed}"
    );
    // Until it is given a task again (a new epoch, after it registered
    // again), it commits nothing: what it ran before the freeze is aborted.
    let zombie_part = thawed
        .find("starting task")
        .map_or(thawed, |i| &thawed[..i]);
    assert!(
        zombie_part.contains("aborting every task"),
        "the zombie aborted its old tasks:\n{thawed}"
    );
    // A commit the broker had already taken when the process froze ends
    // after the thaw (its response arrives then): at most the one checkpoint
    // after the last it logged before the freeze, per transactional id.
    // Nothing newer: that would be a commit begun after the thaw.
    let before = commits(&log[..log_before]);
    for (txn, id) in commits(zombie_part) {
        let last = before.get(&txn).copied().unwrap_or(0);
        assert!(
            id <= last + 1,
            "the zombie committed checkpoint {id} of {txn} after the thaw (its last before the freeze: {last}):\n{thawed}"
        );
    }
}

/// The highest checkpoint id committed per transactional id, from a worker
/// log's `kafka sink: checkpoint committed` lines.
fn commits(log: &str) -> BTreeMap<String, u64> {
    let mut m: BTreeMap<String, u64> = BTreeMap::new();
    for line in log
        .lines()
        .filter(|l| l.contains("kafka sink: checkpoint committed"))
    {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_string)
        };
        if let (Some(txn), Some(id)) = (
            field("transactional_id="),
            field("id=").and_then(|i| i.parse::<u64>().ok()),
        ) {
            let e = m.entry(txn).or_insert(0);
            *e = (*e).max(id);
        }
    }
    m
}

/// `weir cancel --savepoint` mid-stream: the tasks stop with a final
/// checkpoint and fire no open window (every window in the output so far
/// is complete and there once); the job submitted again under the same
/// name resumes from it, and in the end every window is there exactly
/// once, exact. Then `weir cancel --drain` on the resumed job, with all
/// input read and no sentinel: every remaining window fires, exact, and
/// the job's repartition topic is deleted once its tasks stopped.
#[test]
fn cancel_with_a_savepoint_then_resubmit_then_drain_counts_every_window_once() {
    // Its own job name: a job's transactional ids and group derive from
    // it, and the tests of this binary share the broker.
    const JOB: &str = "ck_cancel";
    let dir = tempfile::tempdir().unwrap();
    let (c, input, output) = clicks_cluster("eos-cancel", JOB, dir.path());
    let (chunks, want) = click_chunks();
    let (first, second) = chunks.split_at(chunks.len() / 2);
    for chunk in first {
        produce(&c.brokers, &input, chunk);
    }
    // Windows fire, and a checkpoint covers some input on every task.
    let early = read_topic(
        &c.brokers,
        &output,
        12,
        Duration::from_secs(60),
        Duration::ZERO,
    );
    assert!(early.len() >= 12, "windows fire before the cancel");
    let text = c.weir_ok(&["cancel", JOB, "--savepoint"]);
    assert!(text.contains("cancelled"), "{text}");
    let before = windows_by_key(
        &read_topic(
            &c.brokers,
            &output,
            usize::MAX,
            Duration::from_secs(5),
            Duration::from_secs(3),
        ),
        user_window,
        "count",
    );
    let partial: Vec<String> = before
        .iter()
        .filter(|(k, counts)| counts.as_slice() != [want[*k]])
        .map(|(k, counts)| format!("{k:?}: {counts:?}, want {}", want[k]))
        .collect();
    assert!(
        partial.is_empty() && !before.is_empty(),
        "a savepoint stop writes no partial or repeated window: {partial:?}\n{}",
        c.logs()
    );
    // Open windows stayed in the savepoint: the same job resumes them.
    submit_clicks(&c, JOB, &input, &output);
    c.wait("every task RUNNING again", Duration::from_secs(60), |c| {
        all_running(c, JOB, TASKS)
    });
    let rest: u64 = second.iter().map(|c| c.len() as u64).sum();
    for chunk in second {
        produce(&c.brokers, &input, chunk);
    }
    // The second half read by the resumed parse tasks (as many records in
    // as it holds) and checkpointed to its end (no lag: the offsets their
    // transactions committed are the topic's end), then drain: the parse
    // tasks end, the count tasks read on to their end marks, and the
    // windows still open fire although no record closes them.
    c.wait(
        "the second half read and checkpointed",
        Duration::from_secs(60),
        |c| {
            c.job(JOB).is_some_and(|j| {
                j["tasks"].as_array().is_some_and(|ts| {
                    let parse: Vec<&serde_json::Value> = ts
                        .iter()
                        .filter(|t| t["stage"].as_str().is_some_and(|s| s.starts_with("parse[")))
                        .collect();
                    parse.len() == 2
                        && parse
                            .iter()
                            .map(|t| t["records_in"].as_u64().unwrap_or(0))
                            .sum::<u64>()
                            >= rest
                        && parse.iter().all(|t| t["lag"].as_u64() == Some(0))
                })
            })
        },
    );
    let text = c.weir_ok(&["cancel", JOB, "--drain"]);
    assert!(text.contains("cancelled"), "{text}");
    // Once its tasks stopped draining, the job's repartition topic went.
    let internal = repartition_topic(JOB);
    c.wait(
        "the repartition topic deleted after the drain",
        Duration::from_secs(30),
        |c| !service_common::kafka::topic_exists(&c.brokers, &internal),
    );
    let got = windows_by_key(
        &read_topic(
            &c.brokers,
            &output,
            want.len(),
            Duration::from_secs(30),
            Duration::from_secs(3),
        ),
        user_window,
        "count",
    );
    let wrong = wrong_windows(&want, &got);
    assert!(
        wrong.is_empty() && got.len() == want.len(),
        "wrong or missing (first 10): {wrong:?}; {} of {}\n{}",
        got.len(),
        want.len(),
        c.logs()
    );
}
