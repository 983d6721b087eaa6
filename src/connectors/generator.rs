//! A deterministic synthetic source: record `i` is `make(i)`.
//!
//! Owns [`GeneratorSource`]: bounded (`count`) or unbounded, as fast as
//! possible or at a target rate. Instance `s` of `p` generates
//! `i = s, s + p, s + 2p, ..`, so event time advances evenly in every
//! instance. The same settings always give the same records. Seekable (its
//! position is the next `i`). Never sleeps: when ahead of its rate it
//! returns [`SourceStatus::Idle`].

use serde_json::json;
use std::time::{Duration, Instant};

use crate::pipeline::{
    Batch, BuildError, ConnectorError, Emit, Source, SourceReader, SourceStatus, TaskContext,
    Timestamp,
};

/// Generates `make(i)` for `i = 0, 1, 2, ..`.
///
/// ```
/// use weir::connectors::GeneratorSource;
/// // 1,000 events, timestamp i ms, at most 10,000 events/s.
/// let g = GeneratorSource::new(|i| (i % 10, i)).count(1_000).timestamps(|e: &(u64, u64)| e.1 as i64).rate(10_000.0);
/// # let _ = g;
/// ```
#[derive(Clone)]
pub struct GeneratorSource<G, F = fn(&<G as MakeRecord>::Out) -> Timestamp>
where
    G: MakeRecord,
{
    make: G,
    ts: Option<F>,
    count: Option<u64>,
    rate: Option<f64>,
}

/// A record maker `Fn(u64) -> T` (a named bound for [`GeneratorSource`]).
pub trait MakeRecord: Clone + Send + Sync + 'static {
    /// Record type.
    type Out: Send + 'static;
    /// Record number `i`.
    fn make(&self, i: u64) -> Self::Out;
}

impl<T: Send + 'static, G: Fn(u64) -> T + Clone + Send + Sync + 'static> MakeRecord for G {
    type Out = T;
    #[inline(always)]
    fn make(&self, i: u64) -> T {
        self(i)
    }
}

impl<G: MakeRecord> GeneratorSource<G> {
    /// An unbounded generator of `make(i)`, stamped with `i` (ms).
    pub fn new(make: G) -> Self {
        GeneratorSource {
            make,
            ts: None,
            count: None,
            rate: None,
        }
    }
}

impl<G: MakeRecord, F> GeneratorSource<G, F> {
    /// Stops after `n` records in total.
    pub fn count(mut self, n: u64) -> Self {
        self.count = Some(n);
        self
    }

    /// Emits at most `per_second` records per second in total.
    pub fn rate(mut self, per_second: f64) -> Self {
        self.rate = Some(per_second);
        self
    }

    /// Stamps each record with `f(record)`.
    pub fn timestamps<H: Fn(&G::Out) -> Timestamp>(self, f: H) -> GeneratorSource<G, H> {
        GeneratorSource {
            make: self.make,
            ts: Some(f),
            count: self.count,
            rate: self.rate,
        }
    }
}

impl<G, F> Source for GeneratorSource<G, F>
where
    G: MakeRecord,
    F: Fn(&G::Out) -> Timestamp + Clone + Send + Sync + 'static,
{
    type Out = G::Out;
    type Reader = GeneratorReader<G, F>;

    fn validate(&self) -> Result<(), BuildError> {
        match self.rate {
            Some(r) if !(r > 0.0 && r.is_finite()) => Err(BuildError::invalid(
                "generator.rate",
                "must be a positive number of records per second",
            )),
            _ => Ok(()),
        }
    }

    fn open(&self, ctx: &TaskContext) -> Result<Self::Reader, ConnectorError> {
        let p = ctx.parallelism.max(1) as u64;
        Ok(GeneratorReader {
            make: self.make.clone(),
            ts: self.ts.clone(),
            next: ctx.subtask as u64,
            step: p,
            end: self.count.unwrap_or(u64::MAX),
            rate: self.rate.map(|r| r / p as f64),
            started: Instant::now(),
            emitted: 0,
        })
    }
}

/// One instance's reader of a [`GeneratorSource`].
pub struct GeneratorReader<G, F> {
    make: G,
    ts: Option<F>,
    next: u64,
    step: u64,
    end: u64,
    rate: Option<f64>,
    started: Instant,
    emitted: u64,
}

impl<G, F> SourceReader for GeneratorReader<G, F>
where
    G: MakeRecord,
    F: Fn(&G::Out) -> Timestamp + Send + 'static,
{
    type Out = G::Out;

    #[inline]
    fn poll(
        &mut self,
        out: &mut Batch<G::Out>,
        max: usize,
    ) -> Result<SourceStatus, ConnectorError> {
        let n = match self.budget(max) {
            Ok(n) => n,
            Err(idle) => return Ok(idle),
        };
        let (start, step) = (self.next, self.step);
        let make = &self.make;
        let first = out.values.len();
        out.values
            .extend((0..n as u64).map(|k| make.make(start + k * step)));
        match &self.ts {
            Some(f) => out.timestamps.extend(out.values[first..].iter().map(f)),
            None => out
                .timestamps
                .extend((0..n as u64).map(|k| (start + k * step) as Timestamp)),
        }
        Ok(self.advance(n))
    }

    #[inline]
    fn poll_into<E: Emit<G::Out>>(
        &mut self,
        _scratch: &mut Batch<G::Out>,
        out: &mut E,
        max: usize,
    ) -> Result<(SourceStatus, usize), ConnectorError> {
        let n = match self.budget(max) {
            Ok(n) => n,
            Err(idle) => return Ok((idle, 0)),
        };
        let (start, step) = (self.next, self.step);
        for k in 0..n as u64 {
            let i = start + k * step;
            let v = self.make.make(i);
            let ts = match &self.ts {
                Some(f) => f(&v),
                None => i as Timestamp,
            };
            out.emit(v, ts);
        }
        Ok((self.advance(n), n))
    }

    fn position(&self) -> Option<serde_json::Value> {
        Some(json!({ "next": self.next }))
    }

    fn seek(&mut self, position: &serde_json::Value) -> Result<(), ConnectorError> {
        self.next = position
            .get("next")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| ConnectorError::new(format!("generator: bad position {position}")))?;
        Ok(())
    }
}

impl<G: MakeRecord, F> GeneratorReader<G, F> {
    /// How many records this poll may produce (rate and count), or the
    /// status to return when none.
    #[inline]
    fn budget(&mut self, max: usize) -> Result<usize, SourceStatus> {
        let mut n = max as u64;
        if let Some(rate) = self.rate {
            let allowed = (self.started.elapsed().as_secs_f64() * rate) as u64;
            let room = allowed.saturating_sub(self.emitted);
            if room == 0 {
                let wait = Duration::from_secs_f64((1.0 / rate).clamp(0.0005, 0.05));
                return Err(SourceStatus::Idle(wait));
            }
            n = n.min(room);
        }
        let left = (self.end.saturating_sub(self.next)).div_ceil(self.step);
        Ok(n.min(left) as usize)
    }

    /// Moves past `n` produced records; the status after them.
    #[inline]
    fn advance(&mut self, n: usize) -> SourceStatus {
        self.next += n as u64 * self.step;
        self.emitted += n as u64;
        if self.next >= self.end {
            SourceStatus::Finished
        } else {
            SourceStatus::Ready
        }
    }
}
