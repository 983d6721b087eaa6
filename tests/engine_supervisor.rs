//! The per-job supervisor: a panic in a user closure restarts the job and
//! loses no input (at-least-once); a closure that always panics fails the
//! job after exactly `max_restarts` restarts with `RunError::Failed`; an
//! error returned by a source reader is retried and given up on the same
//! way, and one returned by a sink writer is retried; and the lifecycle
//! (RUNNING, RESTARTING, CANCELLED) is observable through `JobHandle` while
//! the job runs.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir::actors::{JobHandle, JobStatus, LocalRuntime, RestartPolicy, RunError};
use weir::connectors::{BlackholeSink, CollectSink, GeneratorSource, VecSource};
use weir::pipeline::{
    Batch, ConnectorError, Job, Sink, SinkWriter, Source, SourceReader, SourceStatus, TaskContext,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn quick(max_restarts: u32) -> RestartPolicy {
    RestartPolicy::new(max_restarts, Duration::from_secs(60)).with_backoff(ms(10), ms(50))
}

#[test]
fn a_panic_restarts_the_job_and_loses_nothing() {
    let panicked = Arc::new(AtomicBool::new(false));
    let p = panicked.clone();
    let (sink, out) = CollectSink::new();
    let report = Job::new("panic-once")
        .parallelism(2)
        .batch_size(50)
        .restart_policy(quick(3))
        .source(VecSource::new((0..5_000u64).collect()))
        .map(move |x: u64| {
            if x == 2_500 && !p.swap(true, SeqCst) {
                panic!("boom at record {x}");
            }
            x * 10
        })
        .sink(sink)
        .run_local()
        .expect("the job recovers from one panic");
    assert!(panicked.load(SeqCst), "the failure was injected");
    assert_eq!(report.status, JobStatus::Finished);
    assert_eq!(report.restarts, 1);
    let err = report.last_error.expect("the panic is recorded").message;
    assert!(err.contains("boom at record 2500"), "{err}");
    let got: BTreeSet<u64> = out.take().into_iter().collect();
    let want: BTreeSet<u64> = (0..5_000u64).map(|x| x * 10).collect();
    assert_eq!(
        got, want,
        "every input record reached the sink (duplicates allowed)"
    );
}

#[test]
fn a_panic_in_a_keyed_stage_restarts_too() {
    let panicked = Arc::new(AtomicBool::new(false));
    let p = panicked.clone();
    let (sink, out) = CollectSink::new();
    let report = Job::new("panic-keyed")
        .parallelism(2)
        .batch_size(20)
        .restart_policy(quick(3))
        .source(VecSource::new((0..2_000u64).collect()))
        .key_by(|x: &u64| x % 5)
        .reduce(move |a: &u64, b: &u64| {
            if *b == 1_234 && !p.swap(true, SeqCst) {
                panic!("reduce exploded");
            }
            a + b
        })
        .sink(sink)
        .run_local()
        .expect("recovers");
    assert_eq!(report.restarts, 1);
    assert!(report
        .last_error
        .unwrap()
        .message
        .contains("reduce exploded"));
    // The last update per key is the full sum: nothing was lost, nothing
    // counted twice in the final state.
    let finals: std::collections::BTreeMap<u64, u64> = out.take().into_iter().collect();
    for k in 0..5 {
        let want: u64 = (0..2_000u64).filter(|x| x % 5 == k).sum();
        assert_eq!(finals[&k], want, "key {k}");
    }
}

#[test]
fn a_closure_that_always_panics_fails_the_job_after_max_restarts() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let result = Job::new("panic-always")
        .restart_policy(quick(2))
        .source(VecSource::new(vec![1u32, 2, 3]))
        .map(move |x: u32| -> u32 {
            c.fetch_add(1, SeqCst);
            panic!("always broken ({x})")
        })
        .sink(BlackholeSink::new())
        .run_local();
    let report = match result {
        Err(RunError::Failed(report)) => report,
        other => panic!("expected RunError::Failed, got {other:?}"),
    };
    assert_eq!(report.status, JobStatus::Failed);
    assert_eq!(report.restarts, 2);
    assert!(report.last_error.unwrap().message.contains("always broken"));
    assert_eq!(calls.load(SeqCst), 3, "one attempt plus two restarts");
}

/// A source whose reader returns an error on its first poll in the first
/// `failures` opens, then reads `0..n`.
struct Flaky {
    failures: u32,
    opened: Arc<AtomicU32>,
    n: u64,
}

struct FlakyReader {
    fail: bool,
    next: u64,
    n: u64,
}

impl Source for Flaky {
    type Out = u64;
    type Reader = FlakyReader;
    fn open(&self, _ctx: &TaskContext) -> Result<FlakyReader, ConnectorError> {
        let k = self.opened.fetch_add(1, SeqCst);
        Ok(FlakyReader {
            fail: k < self.failures,
            next: 0,
            n: self.n,
        })
    }
}

impl SourceReader for FlakyReader {
    type Out = u64;
    fn poll(&mut self, out: &mut Batch<u64>, max: usize) -> Result<SourceStatus, ConnectorError> {
        if self.fail {
            return Err(ConnectorError::new("disk on fire"));
        }
        while self.next < self.n && out.len() < max {
            out.push(self.next, self.next as i64);
            self.next += 1;
        }
        Ok(if self.next == self.n {
            SourceStatus::Finished
        } else {
            SourceStatus::Ready
        })
    }
}

#[test]
fn a_failing_source_reader_is_retried() {
    let opened = Arc::new(AtomicU32::new(0));
    let (sink, out) = CollectSink::new();
    let report = Job::new("flaky-source")
        .restart_policy(quick(2))
        .source(Flaky {
            failures: 2,
            opened: opened.clone(),
            n: 1_000,
        })
        .sink(sink)
        .run_local()
        .expect("succeeds on the third attempt");
    assert_eq!(report.status, JobStatus::Finished);
    assert_eq!(report.restarts, 2);
    let err = report.last_error.unwrap().message;
    assert!(
        err.contains("disk on fire") && err.contains("connector error"),
        "{err}"
    );
    assert_eq!(opened.load(SeqCst), 3);
    let mut got = out.take();
    got.sort();
    assert_eq!(got, (0..1_000).collect::<Vec<_>>());
}

#[test]
fn a_source_that_keeps_failing_fails_the_job() {
    let opened = Arc::new(AtomicU32::new(0));
    let result = Job::new("broken-source")
        .restart_policy(quick(2))
        .source(Flaky {
            failures: u32::MAX,
            opened: opened.clone(),
            n: 10,
        })
        .sink(BlackholeSink::new())
        .run_local();
    let Err(RunError::Failed(report)) = result else {
        panic!("expected the job to fail: {result:?}");
    };
    assert_eq!(report.status, JobStatus::Failed);
    assert_eq!(report.restarts, 2);
    assert!(report
        .last_error
        .as_ref()
        .unwrap()
        .message
        .contains("disk on fire"));
    assert_eq!(opened.load(SeqCst), 3);
    assert!(RunError::Failed(report)
        .to_string()
        .contains("disk on fire"));
}

/// A sink whose first `failures` writes (over all instances) fail.
struct FailingSink {
    failures: u32,
    writes: Arc<AtomicU32>,
    out: weir::connectors::CollectSink<u64>,
}

struct FailingWriter {
    failures: u32,
    writes: Arc<AtomicU32>,
    inner: weir::connectors::Collected<u64>,
}

impl Sink for FailingSink {
    type In = u64;
    type Writer = FailingWriter;
    fn open(&self, ctx: &TaskContext) -> Result<FailingWriter, ConnectorError> {
        Ok(FailingWriter {
            failures: self.failures,
            writes: self.writes.clone(),
            inner: self.out.open(ctx)?,
        })
    }
}

impl SinkWriter for FailingWriter {
    type In = u64;
    fn write(&mut self, batch: &mut Batch<u64>) -> Result<(), ConnectorError> {
        if self.writes.fetch_add(1, SeqCst) < self.failures {
            return Err(ConnectorError::new("sink refused the batch"));
        }
        self.inner.write(batch)
    }
}

#[test]
fn a_failing_sink_write_is_retried() {
    let (out, got) = CollectSink::new();
    let report = Job::new("flaky-sink")
        .parallelism(2)
        .batch_size(100)
        .restart_policy(quick(3))
        .source(VecSource::new((0..3_000u64).collect()))
        .sink(FailingSink {
            failures: 1,
            writes: Arc::new(AtomicU32::new(0)),
            out,
        })
        .run_local()
        .expect("recovers from one failed write");
    assert_eq!(report.restarts, 1);
    assert!(report
        .last_error
        .unwrap()
        .message
        .contains("sink refused the batch"));
    let got: BTreeSet<u64> = got.take().into_iter().collect();
    assert_eq!(got, (0..3_000).collect::<BTreeSet<u64>>());
}

async fn wait_for(handle: &JobHandle, status: JobStatus, within: Duration) {
    let deadline = Instant::now() + within;
    while handle.status() != status {
        assert!(
            Instant::now() < deadline,
            "status stayed {:?}, expected {status:?}",
            handle.status()
        );
        tokio::time::sleep(ms(5)).await;
    }
}

#[test]
fn lifecycle_running_then_cancelled() {
    let (sink, out) = CollectSink::new();
    let job = Job::new("lifecycle")
        .source(GeneratorSource::new(|i| i).rate(5_000.0))
        .sink(sink);
    actix::System::new().block_on(async move {
        let rt = LocalRuntime::new(2);
        let handle = rt.start(job).unwrap();
        wait_for(&handle, JobStatus::Running, Duration::from_secs(10)).await;
        // Still running once records flow.
        while out.len() < 100 {
            tokio::time::sleep(ms(10)).await;
        }
        assert_eq!(handle.status(), JobStatus::Running);
        assert_eq!(handle.restarts(), 0);
        handle.cancel();
        let report = tokio::time::timeout(Duration::from_secs(20), handle.wait())
            .await
            .expect("drains in time");
        assert_eq!(report.status, JobStatus::Cancelled);
        assert_eq!(handle.status(), JobStatus::Cancelled);
        // The drain delivered everything the source read.
        let read: u64 = report
            .tasks
            .iter()
            .filter(|(k, _)| k.contains("-source#"))
            .map(|(_, m)| m.records_out)
            .sum();
        assert_eq!(out.len() as u64, read);
        drop(rt);
    });
}

#[test]
fn lifecycle_restarting_is_observable_and_cancel_ends_it() {
    let job = Job::new("restarting")
        .restart_policy(
            RestartPolicy::new(5, Duration::from_secs(60))
                .with_backoff(Duration::from_secs(1), Duration::from_secs(5)),
        )
        .source(VecSource::new(vec![1u8]))
        .map(|_: u8| -> u8 { panic!("not today") })
        .sink(BlackholeSink::new());
    actix::System::new().block_on(async move {
        let rt = LocalRuntime::new(1);
        let handle = rt.start(job).unwrap();
        wait_for(&handle, JobStatus::Restarting, Duration::from_secs(10)).await;
        assert_eq!(handle.restarts(), 1);
        assert!(handle.last_error().unwrap().message.contains("not today"));
        handle.cancel();
        let report = tokio::time::timeout(Duration::from_secs(10), handle.wait())
            .await
            .expect("cancel in time");
        assert_eq!(report.status, JobStatus::Cancelled);
        assert_eq!(
            report.restarts, 1,
            "cancelled during the backoff: no further attempt"
        );
        drop(rt);
    });
}
