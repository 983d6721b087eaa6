//! The dead-letter output: where input that cannot be processed goes.
//!
//! Owns [`DeadLetter`] (the raw payload, why it was rejected, where it came
//! from) and [`DeadLetters`], the job-wide handle sources and operators send
//! them to. A malformed record never panics a task and is never dropped
//! unrecorded: it is counted and written here, and the job goes on.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use super::error::ConnectorError;

/// One rejected input record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Why it was rejected (e.g. the parse error, or `late`).
    pub reason: String,
    /// Where it came from (file path, topic, stage name).
    pub source: String,
    /// Where in the source (e.g. `line 17`, `partition 3 offset 12`).
    pub position: String,
    /// The record as received.
    pub payload: String,
}

/// Where dead letters are written.
pub trait DeadLetterSink: Send + Sync + 'static {
    /// Writes a batch of dead letters.
    fn write(&self, letters: &[DeadLetter]) -> Result<(), ConnectorError>;
}

/// The job's dead-letter output: cheap to clone, shared by every task.
///
/// ```
/// use weir::pipeline::{DeadLetter, DeadLetters};
/// let (dl, seen) = DeadLetters::collect();
/// dl.send(vec![DeadLetter { reason: "bad".into(), source: "in.txt".into(),
///     position: "line 3".into(), payload: "{".into() }]);
/// assert_eq!(dl.count(), 1);
/// assert_eq!(seen.take()[0].position, "line 3");
/// ```
#[derive(Clone)]
pub struct DeadLetters {
    sink: Arc<dyn DeadLetterSink>,
    count: Arc<AtomicU64>,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("count", &self.count())
            .finish()
    }
}

impl Default for DeadLetters {
    fn default() -> Self {
        DeadLetters::log()
    }
}

impl DeadLetters {
    /// A handle over any sink.
    pub fn new(sink: impl DeadLetterSink) -> Self {
        DeadLetters {
            sink: Arc::new(sink),
            count: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Logs each dead letter as a `tracing` warning (the default).
    pub fn log() -> Self {
        DeadLetters::new(LogDeadLetters)
    }

    /// Appends dead letters as JSON lines to a file.
    pub fn file(path: impl AsRef<Path>) -> Result<Self, ConnectorError> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                ConnectorError::new(format!("dead-letter file {}: {e}", path.display()))
            })?;
        Ok(DeadLetters::new(FileDeadLetters(Mutex::new(file))))
    }

    /// Keeps dead letters in memory (tests); the second value reads them.
    pub fn collect() -> (Self, CollectedDeadLetters) {
        let store = CollectedDeadLetters(Arc::new(Mutex::new(Vec::new())));
        (DeadLetters::new(store.clone()), store)
    }

    /// Counts and writes `letters`. A failing dead-letter sink is logged,
    /// never allowed to stop the job.
    pub fn send(&self, letters: Vec<DeadLetter>) {
        if letters.is_empty() {
            return;
        }
        self.count.fetch_add(letters.len() as u64, Relaxed);
        if let Err(e) = self.sink.write(&letters) {
            tracing::error!(error = %e, n = letters.len(), "dead-letter output failed; letters logged instead");
            let _ = LogDeadLetters.write(&letters);
        }
    }

    /// Like [`DeadLetters::send`], also counting them in a task's metrics.
    pub fn send_from(&self, task: &super::metrics::TaskMetrics, letters: Vec<DeadLetter>) {
        task.dead_letters.fetch_add(letters.len() as u64, Relaxed);
        self.send(letters);
    }

    /// Dead letters sent so far.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }
}

struct LogDeadLetters;

impl DeadLetterSink for LogDeadLetters {
    fn write(&self, letters: &[DeadLetter]) -> Result<(), ConnectorError> {
        for l in letters {
            tracing::warn!(reason = %l.reason, source = %l.source, position = %l.position, payload = %l.payload, "dead letter");
        }
        Ok(())
    }
}

struct FileDeadLetters(Mutex<File>);

impl DeadLetterSink for FileDeadLetters {
    fn write(&self, letters: &[DeadLetter]) -> Result<(), ConnectorError> {
        let mut buf = Vec::with_capacity(letters.len() * 128);
        for l in letters {
            serde_json::to_writer(&mut buf, l).map_err(|e| ConnectorError::new(e.to_string()))?;
            buf.push(b'\n');
        }
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&buf)?;
        f.flush()?;
        Ok(())
    }
}

/// Dead letters kept in memory by [`DeadLetters::collect`].
#[derive(Clone, Default)]
pub struct CollectedDeadLetters(Arc<Mutex<Vec<DeadLetter>>>);

impl CollectedDeadLetters {
    /// Takes the letters collected so far.
    pub fn take(&self) -> Vec<DeadLetter> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl DeadLetterSink for CollectedDeadLetters {
    fn write(&self, letters: &[DeadLetter]) -> Result<(), ConnectorError> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(letters);
        Ok(())
    }
}
