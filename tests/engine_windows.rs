//! Event-time window semantics end to end, through real actors: tumbling
//! windows over out-of-order input with bounded-out-of-orderness
//! watermarks, late records to the `LateRecords::collect()` side output and
//! in the report's `late_records`, allowed lateness re-firing a window,
//! sliding windows, session merging (including a record that bridges two
//! sessions and one that arrives after its session fired), and idle-source
//! handling: with two source instances of which one never produces,
//! windows fire before the end only when `with_idle_timeout` is set.
//!
//! The ordered tests use `batch_size(1)` and parallelism 1 so every record
//! travels in its own batch followed by its watermark: the order records
//! and watermarks reach the window is then exactly the input order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weir::actors::{JobReport, JobStatus, LocalRuntime};
use weir::connectors::{CollectSink, Collected, VecSource};
use weir::pipeline::{
    Batch, ConnectorError, Count, Job, LateRecords, Session, Sliding, Source, SourceReader,
    SourceStatus, Sum, TaskContext, Tumbling, Watermarks, Windowed, Windows,
};

type Ev = (&'static str, i64);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `(key, start, end, value)`, sorted: a comparable multiset of results.
fn results<V: Ord + Clone>(out: &Collected<Windowed<String, V>>) -> Vec<(String, i64, i64, V)> {
    let mut v: Vec<_> = out
        .take()
        .into_iter()
        .map(|w| (w.key, w.window.start, w.window.end, w.value))
        .collect();
    v.sort();
    v
}

fn exp<V: Ord + Clone>(v: &[(&str, i64, i64, V)]) -> Vec<(String, i64, i64, V)> {
    let mut v: Vec<_> = v
        .iter()
        .map(|(k, s, e, n)| (k.to_string(), *s, *e, n.clone()))
        .collect();
    v.sort();
    v
}

fn late_in(report: &JobReport) -> u64 {
    report.tasks.values().map(|m| m.late_records).sum()
}

/// What [`count_per_key`] observed.
struct Counted {
    report: JobReport,
    /// Sorted `(key, start, end, count)` of every firing.
    fired: Vec<(String, i64, i64, u64)>,
    /// The late side output.
    late: Vec<(Ev, i64)>,
}

/// Counts `input` per key over `windows` with `lateness` allowed, one record
/// per batch at parallelism 1 (so the window sees records and watermarks in
/// input order), late records to a collected side output.
fn count_per_key(
    name: &str,
    input: Vec<Ev>,
    watermarks: Watermarks,
    windows: Windows,
    lateness: Duration,
) -> Counted {
    let (late, late_out) = LateRecords::collect();
    let (sink, out) = CollectSink::new();
    let report = Job::new(name)
        .batch_size(1)
        .source(VecSource::new(input).with_timestamps(|e: &Ev| e.1))
        .watermarks(watermarks)
        .key_by(|e: &Ev| e.0.to_string())
        .window(windows)
        .allowed_lateness(lateness)
        .late_records(late)
        .aggregate(Count)
        .sink(sink)
        .run_local()
        .unwrap();
    Counted {
        report,
        fired: results(&out),
        late: late_out.take(),
    }
}

#[test]
fn tumbling_out_of_order_with_late_records() {
    // Watermark = max timestamp seen - 5 ms.
    let input: Vec<Ev> = vec![
        ("a", 1),
        ("a", 8),
        ("b", 3),
        ("a", 12), // watermark 7
        ("a", 6),  // out of order, within the bound: counted in [0, 10)
        ("a", 16), // watermark 11: [0, 10) fires
        ("a", 9),  // [0, 10) has fired: late
        ("b", 25), // watermark 20: [10, 20) fires
    ];
    let c = count_per_key(
        "tumbling",
        input,
        Watermarks::bounded_out_of_orderness(ms(5)),
        Tumbling::event_time(ms(10)),
        Duration::ZERO,
    );
    assert_eq!(c.report.status, JobStatus::Finished);
    assert_eq!(
        c.fired,
        exp(&[
            ("a", 0, 10, 3),
            ("b", 0, 10, 1),
            ("a", 10, 20, 2),
            ("b", 20, 30, 1)
        ])
    );
    assert_eq!(c.late, vec![(("a", 9), 9)]);
    assert_eq!(
        late_in(&c.report),
        1,
        "late records are counted in the task metrics"
    );
}

#[test]
fn late_records_are_counted_without_a_side_output() {
    let input: Vec<Ev> = vec![("a", 1), ("a", 30), ("a", 2), ("a", 3), ("a", 31)];
    let (sink, out) = CollectSink::new();
    let report = Job::new("late-count-only")
        .batch_size(1)
        .source(VecSource::new(input).with_timestamps(|e: &Ev| e.1))
        .watermarks(Watermarks::ascending())
        .key_by(|e: &Ev| e.0.to_string())
        .window(Tumbling::event_time(ms(10)))
        .aggregate(Count)
        .sink(sink)
        .run_local()
        .unwrap();
    assert_eq!(results(&out), exp(&[("a", 0, 10, 1), ("a", 30, 40, 2)]));
    assert_eq!(late_in(&report), 2);
}

#[test]
fn allowed_lateness_refires_then_expires() {
    let input: Vec<Ev> = vec![
        ("a", 1),
        ("a", 12), // watermark 12: [0, 10) fires with 1
        ("a", 3),  // within lateness (10 + 5 > 12): [0, 10) fires again with 2
        ("a", 20), // watermark 20: [10, 20) fires; [0, 10) expires (10 + 5 <= 20)
        ("a", 4),  // too late even with the lateness
    ];
    let c = count_per_key(
        "lateness",
        input,
        Watermarks::ascending(),
        Tumbling::event_time(ms(10)),
        ms(5),
    );
    assert_eq!(
        c.fired,
        exp(&[
            ("a", 0, 10, 1),
            ("a", 0, 10, 2),
            ("a", 10, 20, 1),
            ("a", 20, 30, 1)
        ])
    );
    assert_eq!(c.late, vec![(("a", 4), 4)]);
    assert_eq!(late_in(&c.report), 1);
}

#[test]
fn sliding_windows_sum_every_overlapping_window() {
    // Slightly out of order (by at most 3 ms), watermark bound 5 ms: no record is late.
    let input: Vec<(&'static str, i64, i64)> = (0..200i64)
        .map(|i| {
            let key = if i % 3 == 0 { "x" } else { "y" };
            (key, i * 2 + (i * 7) % 4, i)
        })
        .collect();
    let mut expected = Vec::new();
    for key in ["x", "y"] {
        let mut start = -10;
        while start < 420 {
            let in_window: Vec<_> = input
                .iter()
                .filter(|r| r.0 == key && r.1 >= start && r.1 < start + 10)
                .collect();
            if !in_window.is_empty() {
                expected.push((
                    key.to_string(),
                    start,
                    start + 10,
                    in_window.iter().map(|r| r.2).sum::<i64>(),
                ));
            }
            start += 5;
        }
    }
    expected.sort();
    let (sink, out) = CollectSink::new();
    let report = Job::new("sliding")
        .batch_size(3)
        .source(VecSource::new(input).with_timestamps(|e: &(&str, i64, i64)| e.1))
        .watermarks(Watermarks::bounded_out_of_orderness(ms(5)))
        .key_by(|e: &(&str, i64, i64)| e.0.to_string())
        .window(Sliding::event_time(ms(10), ms(5)))
        .aggregate(Sum::of(|e: &(&str, i64, i64)| e.2))
        .sink(sink)
        .run_local()
        .unwrap();
    assert_eq!(late_in(&report), 0);
    assert_eq!(results(&out), expected);
}

#[test]
fn sessions_merge_and_late_session_records_go_to_the_side_output() {
    // Gap 10 ms, watermark bound 20 ms.
    let input: Vec<Ev> = vec![
        ("a", 0),  // a: [0, 10)
        ("a", 25), // a: [0, 10), [25, 35); watermark 5
        ("a", 8),  // a: [0, 18), [25, 35)
        ("a", 17), // [17, 27) bridges both: a: [0, 35)
        ("b", 3),  // b: [3, 13)
        ("b", 50), // watermark 30: b [3, 13) fires
        ("b", 5),  // would merge into b's fired session, ending at 15 <= 30: late
        ("a", 2),  // joins a's open session [0, 35)
    ];
    let c = count_per_key(
        "sessions",
        input,
        Watermarks::bounded_out_of_orderness(ms(20)),
        Session::event_time(ms(10)),
        Duration::ZERO,
    );
    assert_eq!(
        c.fired,
        exp(&[("a", 0, 35, 5), ("b", 3, 13, 1), ("b", 50, 60, 1)])
    );
    assert_eq!(c.late, vec![(("b", 5), 5)]);
    assert_eq!(late_in(&c.report), 1);
}

#[test]
fn session_windows_at_parallelism_two() {
    // Many keys over two window instances: each key's sessions are found
    // whole, whichever instance owns it.
    let mut input = Vec::new();
    for user in 0..50u32 {
        for burst in 0..3i64 {
            for click in 0..(user as i64 % 4 + 1) {
                input.push((user, burst * 1_000 + click * 50 + user as i64));
            }
        }
    }
    input.sort_by_key(|r| r.1);
    let (sink, out) = CollectSink::new();
    let report = Job::new("sessions-p2")
        .parallelism(2)
        .batch_size(7)
        .source(VecSource::new(input).with_timestamps(|e: &(u32, i64)| e.1))
        .watermarks(Watermarks::ascending())
        .key_by(|e: &(u32, i64)| e.0)
        .window(Session::event_time(ms(100)))
        .aggregate(Count)
        .sink(sink)
        .run_local()
        .unwrap();
    assert_eq!(late_in(&report), 0);
    let mut got: Vec<_> = out
        .take()
        .into_iter()
        .map(|w| (w.key, w.window.start, w.value))
        .collect();
    got.sort();
    let mut want = Vec::new();
    for user in 0..50u32 {
        for burst in 0..3i64 {
            want.push((user, burst * 1_000 + user as i64, user as u64 % 4 + 1));
        }
    }
    assert_eq!(got, want);
}

/// Subtask 0 produces one record every few milliseconds (event time
/// advancing 100 ms per record, keys 0 and 1 alternating); subtask 1 never
/// produces anything. Unbounded.
struct Trickle;

struct TrickleReader {
    active: bool,
    n: i64,
}

impl Source for Trickle {
    type Out = (u32, i64);
    type Reader = TrickleReader;
    fn open(&self, ctx: &TaskContext) -> Result<TrickleReader, ConnectorError> {
        Ok(TrickleReader {
            active: ctx.subtask == 0,
            n: 0,
        })
    }
}

impl SourceReader for TrickleReader {
    type Out = (u32, i64);
    fn poll(
        &mut self,
        out: &mut Batch<(u32, i64)>,
        _max: usize,
    ) -> Result<SourceStatus, ConnectorError> {
        if !self.active {
            return Ok(SourceStatus::Idle(ms(10)));
        }
        let ts = self.n * 100;
        out.push(((self.n % 2) as u32, ts), ts);
        self.n += 1;
        Ok(SourceStatus::Idle(ms(3)))
    }
}

/// Runs the trickle job on two workers, waits up to `wait` for results,
/// and returns the results seen before cancelling plus the final report.
fn run_trickle(watermarks: Watermarks, wait: Duration) -> (Vec<Windowed<u32, u64>>, JobReport) {
    let (sink, out) = CollectSink::new();
    let job = Job::new("idle")
        .parallelism(2)
        .source(Trickle)
        .watermarks(watermarks)
        .key_by(|e: &(u32, i64)| e.0)
        .window(Tumbling::event_time(Duration::from_secs(1)))
        .aggregate(Count)
        .sink(sink);
    let out = Arc::new(out);
    let seen = out.clone();
    actix::System::new().block_on(async move {
        let rt = LocalRuntime::new(2);
        let handle = rt.start(job).expect("valid job");
        let deadline = Instant::now() + wait;
        while seen.len() < 4 && Instant::now() < deadline {
            tokio::time::sleep(ms(20)).await;
        }
        assert_eq!(handle.status(), JobStatus::Running);
        let before = seen.take();
        handle.cancel();
        let report = tokio::time::timeout(Duration::from_secs(20), handle.wait())
            .await
            .expect("cancel drains in time");
        drop(rt);
        (before, report)
    })
}

#[test]
fn idle_source_instance_does_not_hold_back_windows() {
    let wm = Watermarks::ascending().with_idle_timeout(ms(200));
    let (before, report) = run_trickle(wm, Duration::from_secs(30));
    assert_eq!(report.status, JobStatus::Cancelled);
    assert!(
        before.len() >= 4,
        "windows fired before the end: {before:?}"
    );
    // Windows that fired on the watermark are complete: 10 records per
    // second of event time, alternating between the two keys.
    for w in &before {
        assert_eq!(w.value, 5, "{w:?}");
        assert_eq!(w.window.end - w.window.start, 1_000);
    }
}

#[test]
fn without_idle_timeout_a_silent_instance_holds_windows_until_the_end() {
    // The control for the test above: the same job without the idle
    // timeout fires nothing while running (the silent instance's watermark
    // stays at its minimum), and everything at the drain.
    let (before, report) = run_trickle(Watermarks::ascending(), Duration::from_millis(1_500));
    assert_eq!(report.status, JobStatus::Cancelled);
    assert!(
        before.is_empty(),
        "nothing may fire before the end: {before:?}"
    );
    let read: u64 = report
        .tasks
        .iter()
        .filter(|(k, _)| k.contains("-source#0"))
        .map(|(_, m)| m.records_in)
        .sum();
    assert!(
        read > 20,
        "the active instance kept producing ({read} records)"
    );
    let fired: u64 = report
        .tasks
        .iter()
        .filter(|(k, _)| k.contains("-window#"))
        .map(|(_, m)| m.records_out)
        .sum();
    assert!(fired > 0, "the drain fired the held windows");
}

/// A late-record output that refuses writes, or flushes, or neither, and
/// remembers what it took and how much of it had been flushed.
#[derive(Clone, Default)]
struct LateProbe {
    refuse_write: bool,
    refuse_flush: bool,
    /// Records written.
    written: Arc<std::sync::Mutex<Vec<(Ev, i64)>>>,
    /// At each flush, how many records had been written.
    flushed_at: Arc<std::sync::Mutex<Vec<usize>>>,
}

impl weir::pipeline::LateSink<Ev> for LateProbe {
    fn write(&self, records: Vec<(Ev, i64)>) -> Result<(), ConnectorError> {
        if self.refuse_write {
            return Err(ConnectorError::new("late store offline"));
        }
        self.written.lock().unwrap().extend(records);
        Ok(())
    }

    fn flush(&self) -> Result<(), ConnectorError> {
        if self.refuse_flush {
            return Err(ConnectorError::new("late store lost a write"));
        }
        let n = self.written.lock().unwrap().len();
        self.flushed_at.lock().unwrap().push(n);
        Ok(())
    }
}

/// Tumbling windows over input with one late record, ("a", 9), sent to
/// `late`, restarting by `policy`: the report, whether the job finished or
/// failed.
fn run_with_late_output(
    name: &str,
    late: impl weir::pipeline::LateSink<Ev>,
    policy: weir::actors::RestartPolicy,
) -> JobReport {
    let input: Vec<Ev> = vec![("a", 1), ("a", 16), ("a", 9), ("b", 25)];
    let (sink, _out) = CollectSink::new();
    match Job::new(name)
        .batch_size(1)
        .restart_policy(policy)
        .source(VecSource::new(input).with_timestamps(|e: &Ev| e.1))
        .watermarks(Watermarks::bounded_out_of_orderness(ms(5)))
        .key_by(|e: &Ev| e.0.to_string())
        .window(Tumbling::event_time(ms(10)))
        .late_records(LateRecords::to(late))
        .aggregate(Count)
        .sink(sink)
        .run_local()
    {
        Ok(report) => report,
        Err(weir::actors::RunError::Failed(report)) => *report,
        Err(e) => panic!("{e}"),
    }
}

/// Runs with `late` and no restarts; the job must fail with an error
/// containing each of `needles`.
fn assert_fails_naming(name: &str, late: LateProbe, needles: &[&str]) {
    let report = run_with_late_output(name, late, weir::actors::RestartPolicy::never());
    assert_eq!(
        report.status,
        JobStatus::Failed,
        "a late record the output could not take must not be dropped silently"
    );
    let err = report.last_error.expect("the failure is reported").message;
    for n in needles {
        assert!(err.contains(n), "{err}");
    }
}

#[test]
fn late_records_are_flushed_before_the_job_ends() {
    let probe = LateProbe::default();
    let report = run_with_late_output(
        "late-flushed",
        probe.clone(),
        weir::actors::RestartPolicy::never(),
    );
    assert_eq!(report.status, JobStatus::Finished);
    assert_eq!(*probe.written.lock().unwrap(), vec![(("a", 9), 9)]);
    let flushed = probe.flushed_at.lock().unwrap().clone();
    assert_eq!(
        flushed.last(),
        Some(&1),
        "the late record was flushed before the end was committed (flushes: {flushed:?})"
    );
}

#[test]
fn a_late_output_that_refuses_a_record_fails_the_job() {
    let probe = LateProbe {
        refuse_write: true,
        ..LateProbe::default()
    };
    assert_fails_naming(
        "late-refused",
        probe,
        &["late-record output", "late store offline"],
    );
}

#[test]
fn a_late_output_that_cannot_flush_fails_the_job() {
    let probe = LateProbe {
        refuse_flush: true,
        ..LateProbe::default()
    };
    assert_fails_naming("late-unflushed", probe, &["late store lost a write"]);
}

/// A late output whose connection broke (every write fails from then on):
/// each task opens its own output (`LateSink::for_task`), the first of
/// which is broken too; the restarted task gets a fresh one.
struct BrokenUntilReopened {
    broken: bool,
    opened: Arc<std::sync::atomic::AtomicUsize>,
    written: Arc<std::sync::Mutex<Vec<(Ev, i64)>>>,
}

impl weir::pipeline::LateSink<Ev> for BrokenUntilReopened {
    fn write(&self, records: Vec<(Ev, i64)>) -> Result<(), ConnectorError> {
        if self.broken {
            return Err(ConnectorError::new("late store connection broken"));
        }
        self.written.lock().unwrap().extend(records);
        Ok(())
    }

    fn for_task(
        &self,
        _ctx: &TaskContext,
    ) -> Result<Option<Arc<dyn weir::pipeline::LateSink<Ev>>>, ConnectorError> {
        let n = self
            .opened
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Some(Arc::new(BrokenUntilReopened {
            broken: n == 0,
            opened: self.opened.clone(),
            written: self.written.clone(),
        })))
    }
}

#[test]
fn a_restarted_window_task_writes_late_records_to_a_fresh_output() {
    let late = BrokenUntilReopened {
        broken: true,
        opened: Default::default(),
        written: Default::default(),
    };
    let (opened, written) = (late.opened.clone(), late.written.clone());
    let report = run_with_late_output(
        "late-reopened",
        late,
        weir::actors::RestartPolicy::new(3, Duration::from_secs(60)).with_backoff(ms(10), ms(10)),
    );
    assert_eq!(report.status, JobStatus::Finished);
    assert_eq!(report.restarts, 1, "one failure, then a fresh output");
    assert_eq!(opened.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(*written.lock().unwrap(), vec![(("a", 9), 9)]);
}
