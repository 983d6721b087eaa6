//! An in-memory source over a vector, for tests and examples.
//!
//! Owns [`VecSource`]: instance `s` of `p` reads the records at indices
//! `s, s + p, s + 2p, ..`; timestamps are the record's index unless an
//! extractor is given. Seekable (its position is the next index). Never
//! mutates the shared vector.

use serde_json::json;
use std::sync::Arc;

use crate::pipeline::{
    Batch, ConnectorError, Source, SourceReader, SourceStatus, TaskContext, Timestamp,
};

/// Reads a vector of records.
///
/// ```
/// use weir::connectors::VecSource;
/// let s = VecSource::new(vec![(1, "a"), (5, "b")]).with_timestamps(|r: &(i64, &str)| r.0);
/// # let _ = s;
/// ```
pub struct VecSource<T, F = fn(&T) -> Timestamp> {
    records: Arc<Vec<T>>,
    ts: Option<F>,
}

impl<T> VecSource<T> {
    /// A source over `records`, each stamped with its index.
    pub fn new(records: Vec<T>) -> Self {
        VecSource {
            records: Arc::new(records),
            ts: None,
        }
    }
}

impl<T, F> VecSource<T, F> {
    /// Stamps each record with `f(record)`.
    pub fn with_timestamps<G: Fn(&T) -> Timestamp>(self, f: G) -> VecSource<T, G> {
        VecSource {
            records: self.records,
            ts: Some(f),
        }
    }
}

impl<T, F> Source for VecSource<T, F>
where
    T: Clone + Send + Sync + 'static,
    F: Fn(&T) -> Timestamp + Clone + Send + Sync + 'static,
{
    type Out = T;
    type Reader = VecReader<T, F>;

    fn open(&self, ctx: &TaskContext) -> Result<VecReader<T, F>, ConnectorError> {
        Ok(VecReader {
            records: self.records.clone(),
            ts: self.ts.clone(),
            next: ctx.subtask,
            step: ctx.parallelism.max(1),
        })
    }
}

/// One instance's reader of a [`VecSource`].
pub struct VecReader<T, F> {
    records: Arc<Vec<T>>,
    ts: Option<F>,
    next: usize,
    step: usize,
}

impl<T, F> SourceReader for VecReader<T, F>
where
    T: Clone + Send + Sync + 'static,
    F: Fn(&T) -> Timestamp + Send + 'static,
{
    type Out = T;

    fn poll(&mut self, out: &mut Batch<T>, max: usize) -> Result<SourceStatus, ConnectorError> {
        let mut n = 0;
        while n < max && self.next < self.records.len() {
            let v = &self.records[self.next];
            let ts = match &self.ts {
                Some(f) => f(v),
                None => self.next as Timestamp,
            };
            out.push(v.clone(), ts);
            self.next += self.step;
            n += 1;
        }
        Ok(if self.next >= self.records.len() {
            SourceStatus::Finished
        } else {
            SourceStatus::Ready
        })
    }

    fn position(&self) -> Option<serde_json::Value> {
        Some(json!({ "next": self.next }))
    }

    fn seek(&mut self, position: &serde_json::Value) -> Result<(), ConnectorError> {
        self.next = position
            .get("next")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| ConnectorError::new(format!("vec source: bad position {position}")))?
            as usize;
        Ok(())
    }
}
