//! Durable checkpoints (file:// storage): a job stopped with a savepoint
//! and started again with the same storage gives each window exactly once
//! with its exact count (nothing fired early at the stop, nothing counted
//! twice or lost across it); a checkpoint torn mid-upload is never
//! restored; a job whose operator changed refuses the checkpoint before it
//! runs, naming the task and both operators.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use weir::actors::{JobReport, JobStatus, LocalJob, LocalRuntime};
use weir::connectors::{CollectSink, Collected, GeneratorSource};
use weir::pipeline::{
    CheckpointConfig, CheckpointingMode, Count, Job, Sum, Tumbling, Watermarks, Windowed,
};

const N: u64 = 40_000;
const KEYS: u64 = 7;

/// Record `i` is `(i % KEYS, i)` at event time `i` ms, at `rate` per
/// second, keyed and counted per 1 s window at parallelism 2 (a keyed
/// exchange with two inputs per window task: barriers are aligned there).
fn counting_job(url: &str, rate: f64) -> (LocalJob, Collected<Windowed<u64, u64>>) {
    counting_job_shaped(url, rate, Shape::Plain)
}

/// How [`counting_job_shaped`] builds its graph.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// source → window (stage `1-window`).
    Plain,
    /// source → window with uid `counts` (stage `counts-window`).
    Uid,
    /// source → rebalance → window with uid `counts`: one stage more
    /// before the window, which would make it `2-window` without its uid.
    UidAfterRebalance,
    /// source → rebalance → window (stage `2-window`).
    Rebalanced,
}

fn counting_job_shaped(
    url: &str,
    rate: f64,
    shape: Shape,
) -> (LocalJob, Collected<Windowed<u64, u64>>) {
    let (sink, out) = CollectSink::new();
    let job = Job::new("durable-count")
        .parallelism(2)
        .batch_size(256)
        .checkpointing(CheckpointConfig {
            interval: Some(Duration::from_millis(50)),
            storage_url: Some(url.to_string()),
            retain: 3,
            mode: CheckpointingMode::ExactlyOnce,
        })
        .source(
            GeneratorSource::new(|i| (i % KEYS, i))
                .count(N)
                .rate(rate)
                .timestamps(|e: &(u64, u64)| e.1 as i64),
        )
        .watermarks(Watermarks::ascending());
    let job = match shape {
        Shape::Plain => job
            .key_by(|e: &(u64, u64)| e.0)
            .window(Tumbling::event_time(Duration::from_secs(1)))
            .aggregate(Count)
            .sink(sink)
            .into(),
        Shape::Uid => job
            .key_by(|e: &(u64, u64)| e.0)
            .window(Tumbling::event_time(Duration::from_secs(1)))
            .aggregate(Count)
            .uid("counts")
            .sink(sink)
            .into(),
        Shape::UidAfterRebalance => job
            .rebalance()
            .key_by(|e: &(u64, u64)| e.0)
            .window(Tumbling::event_time(Duration::from_secs(1)))
            .aggregate(Count)
            .uid("counts")
            .sink(sink)
            .into(),
        Shape::Rebalanced => job
            .rebalance()
            .key_by(|e: &(u64, u64)| e.0)
            .window(Tumbling::event_time(Duration::from_secs(1)))
            .aggregate(Count)
            .sink(sink)
            .into(),
    };
    (job, out)
}

/// (key, window start) -> count, computed here.
fn expected() -> BTreeMap<(u64, i64), u64> {
    let mut m = BTreeMap::new();
    for i in 0..N {
        *m.entry((i % KEYS, (i - i % 1000) as i64)).or_insert(0) += 1;
    }
    m
}

fn completed_checkpoints(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("durable-count"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().join("_metadata").exists())
                .count()
        })
        .unwrap_or(0)
}

/// Runs `job` until `n` checkpoints are stored under `dir`, then stops it
/// (a savepoint).
fn stop_after_checkpoints(job: LocalJob, dir: &Path, n: usize) -> JobReport {
    actix::System::new().block_on(async {
        let rt = LocalRuntime::new(2);
        let handle = rt.start(job).expect("valid job");
        let deadline = Instant::now() + Duration::from_secs(30);
        while completed_checkpoints(dir) < n {
            assert!(
                Instant::now() < deadline,
                "no checkpoint stored in 30 s: {:?}",
                handle.report()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        handle.cancel();
        handle.wait().await
    })
}

/// Adds each fired window to `all`, failing on a second firing.
fn merge(all: &mut BTreeMap<(u64, i64), u64>, out: &Collected<Windowed<u64, u64>>, run: &str) {
    for w in out.take() {
        let k = (w.key, w.window.start);
        assert!(
            all.insert(k, w.value).is_none(),
            "window {k:?} fired twice (again in {run})"
        );
    }
}

#[test]
fn a_savepoint_stop_and_a_restart_count_every_window_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let mut all = BTreeMap::new();

    // Run 1: stopped with a savepoint after a few checkpoints.
    let (job, out) = counting_job(&url, 10_000.0);
    let report = stop_after_checkpoints(job, dir.path(), 2);
    assert_eq!(
        report.status,
        JobStatus::Cancelled,
        "{:?}",
        report.last_error
    );
    merge(&mut all, &out, "run 1");
    let read_1: u64 = source_records(&report);
    assert!(
        read_1 < N,
        "run 1 was stopped before the end ({read_1} read)"
    );

    // Run 2: same storage, runs to the end of the bounded input.
    let (job, out) = counting_job(&url, 1_000_000.0);
    let report = job.run_local().expect("valid job");
    assert_eq!(
        report.status,
        JobStatus::Finished,
        "{:?}",
        report.last_error
    );
    merge(&mut all, &out, "run 2");
    let read_2 = source_records(&report);
    assert_eq!(
        read_1 + read_2,
        N,
        "run 2 resumed where the savepoint stopped run 1"
    );
    assert_eq!(all, expected(), "every window once, exact");
}

/// A stage added before the window between a savepoint and the restart:
/// with its uid, the window's state is found again and every window comes
/// out once, exact; without one, the restore refuses (the window stage
/// moved from `1-window` to `2-window`).
#[test]
fn a_window_with_a_uid_restores_after_a_stage_is_added_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let mut all = BTreeMap::new();
    let (job, out) = counting_job_shaped(&url, 10_000.0, Shape::Uid);
    let report = stop_after_checkpoints(job, dir.path(), 2);
    assert_eq!(
        report.status,
        JobStatus::Cancelled,
        "{:?}",
        report.last_error
    );
    merge(&mut all, &out, "run 1");
    assert!(source_records(&report) < N, "run 1 stopped before the end");
    let (job, out) = counting_job_shaped(&url, 1_000_000.0, Shape::UidAfterRebalance);
    let report = job.run_local().expect("valid job");
    assert_eq!(
        report.status,
        JobStatus::Finished,
        "{:?}",
        report.last_error
    );
    merge(&mut all, &out, "run 2");
    assert_eq!(all, expected(), "every window once, exact");

    // The same change without uids: refused, naming the task.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let (job, _out) = counting_job_shaped(&url, 10_000.0, Shape::Plain);
    stop_after_checkpoints(job, dir.path(), 2);
    let (moved, _out) = counting_job_shaped(&url, 1_000_000.0, Shape::Rebalanced);
    let report = match moved.run_local() {
        Err(weir::actors::RunError::Failed(report)) => report,
        other => panic!("the moved window restored someone else's state: {other:?}"),
    };
    let msg = report.last_error.expect("an error").message;
    assert!(msg.contains("durable-count/1-window#0"), "{msg}");
}

fn source_records(report: &JobReport) -> u64 {
    report
        .tasks
        .iter()
        .filter(|(k, _)| k.contains("-source#"))
        .map(|(_, m)| m.records_in)
        .sum()
}

#[test]
fn a_torn_checkpoint_is_ignored_and_an_incompatible_job_refuses_to_restore() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let (job, _out) = counting_job(&url, 10_000.0);
    stop_after_checkpoints(job, dir.path(), 1);
    // A newer checkpoint that died before its metadata: its state object
    // is garbage and must never be read.
    let torn = dir.path().join("durable-count/chk-999999");
    std::fs::create_dir_all(&torn).unwrap();
    std::fs::write(torn.join("state"), b"torn upload").unwrap();
    let (job, out) = counting_job(&url, 1_000_000.0);
    let report = job.run_local().expect("valid job");
    assert_eq!(
        report.status,
        JobStatus::Finished,
        "the torn checkpoint was read: {:?}",
        report.last_error
    );
    assert!(!out.take().is_empty());

    // The same job name with another aggregate over the stored state.
    let (sink, _out) = CollectSink::new();
    let other = Job::new("durable-count")
        .parallelism(2)
        .checkpointing(CheckpointConfig {
            storage_url: Some(url.clone()),
            ..CheckpointConfig::default()
        })
        .source(GeneratorSource::new(|i| (i % KEYS, i)).count(10))
        .watermarks(Watermarks::ascending())
        .key_by(|e: &(u64, u64)| e.0)
        .window(Tumbling::event_time(Duration::from_secs(1)))
        .aggregate(Sum::of(|e: &(u64, u64)| e.1))
        .sink(sink);
    let report = match other.run_local() {
        Err(weir::actors::RunError::Failed(report)) => report,
        other => panic!("the incompatible job ran: {other:?}"),
    };
    let msg = report.last_error.expect("an error").message;
    assert!(
        msg.contains("durable-count/1-window#0")
            && msg.contains("aggregate::Count")
            && msg.contains("aggregate::Sum<{closure}"),
        "names the task and both operators: {msg}"
    );
    assert_eq!(report.restarts, 0, "refused before it ran: {msg}");
}
