//! Draining on cancel: a source that already took records in (like the
//! stdin reader thread) gets to emit them before end-of-input, so a cancel
//! loses nothing that was accepted.

use std::time::Duration;

use weir::actors::{JobStatus, LocalRuntime};
use weir::connectors::CollectSink;
use weir::pipeline::{Batch, ConnectorError, Job, Source, SourceReader, SourceStatus, TaskContext};

/// Emits nothing until drained, then its 500 buffered records.
struct Buffered;

struct BufferedReader {
    draining: bool,
    left: u64,
}

impl Source for Buffered {
    type Out = u64;
    type Reader = BufferedReader;
    fn max_parallelism(&self) -> Option<usize> {
        Some(1)
    }
    fn open(&self, _ctx: &TaskContext) -> Result<BufferedReader, ConnectorError> {
        Ok(BufferedReader {
            draining: false,
            left: 500,
        })
    }
}

impl SourceReader for BufferedReader {
    type Out = u64;
    fn poll(&mut self, out: &mut Batch<u64>, max: usize) -> Result<SourceStatus, ConnectorError> {
        if !self.draining {
            return Ok(SourceStatus::Idle(Duration::from_millis(5)));
        }
        let n = self.left.min(max as u64);
        for i in 0..n {
            out.push(self.left - i, 0);
        }
        self.left -= n;
        Ok(if self.left == 0 {
            SourceStatus::Finished
        } else {
            SourceStatus::Ready
        })
    }
    fn drain(&mut self) -> bool {
        self.draining = true;
        false
    }
}

#[test]
fn cancel_emits_what_the_source_already_took_in() {
    let (sink, out) = CollectSink::new();
    let job = Job::new("drain-buffered")
        .batch_size(64)
        .source(Buffered)
        .map(|x: u64| x * 10)
        .sink(sink);
    let report = actix::System::new().block_on(async move {
        let rt = LocalRuntime::new(1);
        let handle = rt.start(job).expect("valid job");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(handle.status(), JobStatus::Running);
        handle.cancel();
        handle.wait().await
    });
    assert_eq!(report.status, JobStatus::Cancelled);
    let mut got = out.take();
    got.sort();
    assert_eq!(got, (1..=500).map(|x| x * 10).collect::<Vec<u64>>());
}
