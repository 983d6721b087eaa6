//! Per-task counters, updated once per batch.
//!
//! Owns [`TaskMetrics`] (atomics shared between a task's actor and whoever
//! reads them: the job handle, the HTTP endpoint) and its serialisable
//! [`TaskMetricsSnapshot`]. Counters are bumped per batch with relaxed
//! atomics; never per record, never under a lock.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Live counters of one task (one parallel instance of one stage).
#[derive(Debug)]
pub struct TaskMetrics {
    /// Records received (or read, for a source).
    pub records_in: AtomicU64,
    /// Records emitted (or written, for a sink).
    pub records_out: AtomicU64,
    /// Batches received.
    pub batches_in: AtomicU64,
    /// Batches sent.
    pub batches_out: AtomicU64,
    /// Records that arrived after their window closed.
    pub late_records: AtomicU64,
    /// Records sent to the dead-letter output.
    pub dead_letters: AtomicU64,
    /// Nanoseconds spent waiting for a full downstream mailbox.
    pub backpressure_ns: AtomicU64,
    /// The task's current input watermark (`i64::MIN` before the first).
    pub watermark: AtomicI64,
}

impl Default for TaskMetrics {
    fn default() -> Self {
        TaskMetrics {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            batches_in: AtomicU64::new(0),
            batches_out: AtomicU64::new(0),
            late_records: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            backpressure_ns: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
        }
    }
}

impl TaskMetrics {
    /// A point-in-time copy.
    pub fn snapshot(&self) -> TaskMetricsSnapshot {
        TaskMetricsSnapshot {
            records_in: self.records_in.load(Relaxed),
            records_out: self.records_out.load(Relaxed),
            batches_in: self.batches_in.load(Relaxed),
            batches_out: self.batches_out.load(Relaxed),
            late_records: self.late_records.load(Relaxed),
            dead_letters: self.dead_letters.load(Relaxed),
            backpressure_ms: self.backpressure_ns.load(Relaxed) / 1_000_000,
            watermark: self.watermark.load(Relaxed),
        }
    }

    /// Adds `n` to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

/// A copy of [`TaskMetrics`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMetricsSnapshot {
    /// Records received.
    pub records_in: u64,
    /// Records emitted.
    pub records_out: u64,
    /// Batches received.
    pub batches_in: u64,
    /// Batches sent.
    pub batches_out: u64,
    /// Late records.
    pub late_records: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Milliseconds blocked on backpressure.
    pub backpressure_ms: u64,
    /// Current watermark.
    pub watermark: i64,
}
