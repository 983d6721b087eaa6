//! Watermark alignment: a source instance far ahead in event time pauses
//! until the slowest active instance catches up, so windows downstream do
//! not pile up state for the fast one.

use std::time::Duration;

use weir::actors::{JobStatus, LocalRuntime};
use weir::connectors::CollectSink;
use weir::pipeline::{
    Batch, ConnectorError, Job, Source, SourceReader, SourceStatus, TaskContext, Watermarks,
};

/// Instance 0 is fast (1,000 records per poll); instance 1 is slow (10
/// records, then 1 ms idle). Each record is `(instance, ts)`, ts = 1 ms apart.
struct Skewed;

struct SkewedReader {
    instance: usize,
    next_ts: i64,
}

impl Source for Skewed {
    type Out = (usize, i64);
    type Reader = SkewedReader;
    fn open(&self, ctx: &TaskContext) -> Result<SkewedReader, ConnectorError> {
        Ok(SkewedReader {
            instance: ctx.subtask,
            next_ts: 0,
        })
    }
}

impl SourceReader for SkewedReader {
    type Out = (usize, i64);
    fn poll(
        &mut self,
        out: &mut Batch<(usize, i64)>,
        max: usize,
    ) -> Result<SourceStatus, ConnectorError> {
        let n = if self.instance == 0 {
            max.min(1000)
        } else {
            10
        };
        for _ in 0..n {
            out.push((self.instance, self.next_ts), self.next_ts);
            self.next_ts += 1;
        }
        Ok(if self.instance == 0 {
            SourceStatus::Ready
        } else {
            SourceStatus::Idle(Duration::from_millis(1))
        })
    }
}

/// How far each instance advanced in event time between 300 ms and 700 ms
/// into the run (after start-up, when every instance has reported).
fn progress_per_instance(aligned: bool) -> (i64, i64) {
    let (sink, out) = CollectSink::new();
    let watermarks = Watermarks::ascending();
    let watermarks = if aligned {
        watermarks.with_alignment(Duration::from_millis(1000))
    } else {
        watermarks.without_alignment()
    };
    let job = Job::new("alignment")
        .parallelism(2)
        .batch_size(1000)
        .source(Skewed)
        .watermarks(watermarks)
        .sink(sink);
    let max = |recs: &[(usize, i64)], i: usize| {
        recs.iter()
            .filter(|r| r.0 == i)
            .map(|r| r.1)
            .max()
            .unwrap_or(-1)
    };
    let (early, late, status) = actix::System::new().block_on(async move {
        let rt = LocalRuntime::new(2);
        let handle = rt.start(job).expect("valid job");
        let mut seen = Vec::new();
        tokio::time::sleep(Duration::from_millis(300)).await;
        seen.extend(out.take());
        let early = (max(&seen, 0), max(&seen, 1));
        tokio::time::sleep(Duration::from_millis(400)).await;
        seen.extend(out.take());
        let late = (max(&seen, 0), max(&seen, 1));
        handle.cancel();
        (early, late, handle.wait().await.status)
    });
    assert_eq!(status, JobStatus::Cancelled);
    (late.0 - early.0, late.1 - early.1)
}

#[test]
fn a_fast_instance_waits_for_the_slow_one() {
    let (fast, slow) = progress_per_instance(true);
    assert!(slow > 100, "the slow instance made progress ({slow} ms)");
    // Once paused, the fast instance advances only as the slow one does
    // (give or take the drift and one batch).
    assert!(
        fast <= slow + 1000 + 1000,
        "fast instance ran ahead: {fast} ms vs slow {slow} ms"
    );
}

#[test]
fn without_alignment_the_fast_instance_runs_ahead() {
    // The control: the same job without alignment drifts far apart.
    let (fast, slow) = progress_per_instance(false);
    assert!(
        fast > slow + 100_000,
        "expected a large drift without alignment: {fast} ms vs {slow} ms"
    );
}
