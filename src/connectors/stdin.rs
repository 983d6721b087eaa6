//! Standard input as a source.
//!
//! Owns [`StdinSource`]: lines (or JSON lines) from stdin, read by a
//! dedicated thread so the blocking read never holds an arbiter; the thread
//! hands over chunks of lines (not single lines) through a bounded channel,
//! so a slow pipeline slows the reading. Parallelism 1.

use serde::de::DeserializeOwned;
use std::io::BufRead;
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};
use std::time::Duration;

use super::file::now_ms;
use super::format::{Decode, Json, Text};
use crate::pipeline::{
    Batch, ConnectorError, DeadLetter, DeadLetters, Source, SourceReader, SourceStatus,
    TaskContext, Timestamp,
};

/// Reads lines from standard input until it closes.
#[derive(Clone)]
pub struct StdinSource<D: Decode> {
    decode: D,
}

impl StdinSource<Text> {
    /// Each line is a `String`, stamped with the time it is read.
    pub fn lines() -> Self {
        StdinSource { decode: Text }
    }

    /// Each line is a JSON `T`.
    pub fn json<T: DeserializeOwned + Send + 'static>() -> StdinSource<Json<T>> {
        StdinSource {
            decode: Json::default(),
        }
    }
}

impl<D: Decode> Source for StdinSource<D> {
    type Out = D::Out;
    type Reader = StdinReader<D>;

    fn max_parallelism(&self) -> Option<usize> {
        Some(1)
    }

    fn open(&self, ctx: &TaskContext) -> Result<StdinReader<D>, ConnectorError> {
        let (tx, rx) = sync_channel::<Vec<String>>(4);
        std::thread::Builder::new()
            .name("weir-stdin".into())
            .spawn(move || {
                let mut lock = std::io::BufReader::with_capacity(64 * 1024, std::io::stdin());
                let mut chunk = Vec::with_capacity(1024);
                loop {
                    let mut line = String::new();
                    match lock.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => chunk.push(line),
                    }
                    let flush = chunk.len() >= 1024 || lock.buffer().is_empty();
                    if flush && tx.send(std::mem::take(&mut chunk)).is_err() {
                        return;
                    }
                }
                if !chunk.is_empty() {
                    let _ = tx.send(chunk);
                }
            })
            .map_err(|e| ConnectorError::new(format!("stdin reader thread: {e}")))?;
        Ok(StdinReader {
            draining: false,
            rx,
            pending: Vec::new().into_iter(),
            line_no: 0,
            decode: self.decode.clone(),
            dead_letters: ctx.dead_letters.clone(),
            metrics: ctx.metrics.clone(),
        })
    }
}

/// The reader of a [`StdinSource`].
pub struct StdinReader<D> {
    draining: bool,
    rx: Receiver<Vec<String>>,
    pending: std::vec::IntoIter<String>,
    line_no: u64,
    decode: D,
    dead_letters: DeadLetters,
    metrics: std::sync::Arc<crate::pipeline::TaskMetrics>,
}

impl<D: Decode> SourceReader for StdinReader<D> {
    type Out = D::Out;

    fn poll(
        &mut self,
        out: &mut Batch<D::Out>,
        max: usize,
    ) -> Result<SourceStatus, ConnectorError> {
        let now: Timestamp = now_ms();
        let mut bad = Vec::new();
        let mut status = SourceStatus::Ready;
        let mut n = 0;
        while n < max {
            let Some(line) = self.pending.next() else {
                match self.rx.try_recv() {
                    Ok(chunk) => {
                        self.pending = chunk.into_iter();
                        continue;
                    }
                    Err(TryRecvError::Empty) if self.draining => {
                        // Everything read from stdin before the drain is out.
                        status = SourceStatus::Finished;
                        break;
                    }
                    Err(TryRecvError::Empty) => {
                        if n == 0 {
                            status = SourceStatus::Idle(Duration::from_millis(5));
                        }
                        break;
                    }
                    Err(TryRecvError::Disconnected) => {
                        status = SourceStatus::Finished;
                        break;
                    }
                }
            };
            self.line_no += 1;
            let line = line.trim_end_matches(['\n', '\r']);
            match self.decode.decode(line) {
                Ok(v) => {
                    out.push(v, now);
                    n += 1;
                }
                Err(reason) => bad.push(DeadLetter {
                    reason,
                    source: "stdin".into(),
                    position: format!("line {}", self.line_no),
                    payload: line.to_string(),
                }),
            }
        }
        self.dead_letters.send_from(&self.metrics, bad);
        Ok(status)
    }

    fn drain(&mut self) -> bool {
        self.draining = true;
        false
    }
}
