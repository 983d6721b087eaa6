//! Event-time windows: assignment, firing on the watermark, lateness.
//!
//! Owns the window shapes ([`Tumbling`], [`Sliding`], [`Session`],
//! [`Windows::global`]), the result type [`Windowed`], the late-record side
//! output [`LateRecords`] and [`WindowAggregate`], the keyed operator that
//! keeps one accumulator per key and window.
//!
//! Semantics (recorded in ARCHITECTURE.md): a watermark `W` promises no
//! further record with timestamp `< W`. A window `[start, end)` fires when
//! the watermark reaches `end`; its result is stamped `end - 1`. A record is
//! late when every window it belongs to has `end + allowed_lateness <= W`;
//! late records go to the side output and are counted, never dropped
//! silently. A record for a window that fired but is still within the
//! allowed lateness updates it and fires it again.
//!
//! Never reads the clock: everything here is driven by record timestamps and
//! watermarks, so results are deterministic.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::aggregate::Aggregator;
use super::batch::{Batch, Timestamp, MAX_WATERMARK};
use super::context::TaskContext;
use super::error::{BuildError, ConnectorError};
use super::keyed::Key;
use super::metrics::TaskMetrics;
use super::operator::Operator;

/// A half-open interval of event time, `[start, end)`, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TimeWindow {
    /// First millisecond included.
    pub start: Timestamp,
    /// First millisecond excluded.
    pub end: Timestamp,
}

/// One window's result for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Windowed<K, V> {
    /// The key.
    pub key: K,
    /// The window.
    pub window: TimeWindow,
    /// The aggregate.
    pub value: V,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Tumbling { size: i64, offset: i64 },
    Sliding { size: i64, slide: i64 },
    Session { gap: i64 },
    Global,
}

/// A window shape, built by [`Tumbling`], [`Sliding`], [`Session`] or
/// [`Windows::global`]. Invalid sizes are reported when the job is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    shape: Shape,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Fixed-size, non-overlapping windows aligned to multiples of the size.
pub struct Tumbling;

impl Tumbling {
    /// Tumbling windows of `size` over event time.
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir::pipeline::Tumbling;
    /// let w = Tumbling::event_time(Duration::from_secs(10));
    /// assert!(w.validate().is_ok());
    /// assert!(Tumbling::event_time(Duration::ZERO).validate().is_err());
    /// ```
    pub fn event_time(size: Duration) -> Windows {
        Windows {
            shape: Shape::Tumbling {
                size: millis(size),
                offset: 0,
            },
        }
    }
}

/// Fixed-size windows that start every `slide`, so a record is in
/// `size / slide` windows.
pub struct Sliding;

impl Sliding {
    /// Sliding windows of `size` starting every `slide`.
    pub fn event_time(size: Duration, slide: Duration) -> Windows {
        Windows {
            shape: Shape::Sliding {
                size: millis(size),
                slide: millis(slide),
            },
        }
    }
}

/// Per-key windows that close after `gap` without records; overlapping
/// sessions merge.
pub struct Session;

impl Session {
    /// Session windows with inactivity `gap`.
    pub fn event_time(gap: Duration) -> Windows {
        Windows {
            shape: Shape::Session { gap: millis(gap) },
        }
    }
}

impl Windows {
    /// One window over all time, which fires when the input ends.
    pub fn global() -> Windows {
        Windows {
            shape: Shape::Global,
        }
    }

    /// Rejects zero or negative sizes, naming the field.
    pub fn validate(&self) -> Result<(), BuildError> {
        match self.shape {
            Shape::Tumbling { size, .. } if size <= 0 => Err(BuildError::invalid(
                "window.size",
                "a tumbling window must be longer than 0 ms",
            )),
            Shape::Sliding { size, .. } if size <= 0 => Err(BuildError::invalid(
                "window.size",
                "a sliding window must be longer than 0 ms",
            )),
            Shape::Sliding { slide, .. } if slide <= 0 => Err(BuildError::invalid(
                "window.slide",
                "a sliding window's slide must be longer than 0 ms",
            )),
            Shape::Session { gap } if gap <= 0 => Err(BuildError::invalid(
                "window.gap",
                "a session gap must be longer than 0 ms",
            )),
            _ => Ok(()),
        }
    }

    /// The fixed windows containing `ts` (none for sessions), in `out`.
    fn assign(&self, ts: Timestamp, out: &mut Vec<TimeWindow>) {
        out.clear();
        match self.shape {
            Shape::Tumbling { size, offset } => {
                let start = ts - (ts - offset).rem_euclid(size);
                out.push(TimeWindow {
                    start,
                    end: start.saturating_add(size),
                });
            }
            Shape::Sliding { size, slide } => {
                let mut start = ts - ts.rem_euclid(slide);
                while start > ts - size {
                    out.push(TimeWindow {
                        start,
                        end: start.saturating_add(size),
                    });
                    start -= slide;
                }
            }
            Shape::Global => out.push(TimeWindow {
                start: i64::MIN,
                end: i64::MAX,
            }),
            Shape::Session { .. } => {}
        }
    }
}

/// Where late records go.
///
/// A late record is accepted input: a sink that cannot take it returns an
/// error, which fails the window task, and the job restarts from its last
/// checkpoint (the record is read again). [`LateSink::flush`] runs before
/// every checkpoint of the window task and at the end of input, so a
/// checkpoint (and the source positions it commits) never covers a late
/// record the sink has not made durable.
pub trait LateSink<T>: Send + Sync + 'static {
    /// Receives the late records of one batch with their timestamps.
    fn write(&self, records: Vec<(T, Timestamp)>) -> Result<(), ConnectorError>;

    /// Waits until every record written so far is durable; an error if any
    /// was lost or cannot be made so. The default has nothing to wait for.
    fn flush(&self) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// The output one window task (an instance, in one attempt of the job)
    /// writes to, made when the task opens. A sink with per-connection
    /// state (a producer whose errors stick) returns a fresh one here, so a
    /// restarted task does not inherit the failure it restarts from, and
    /// parallel instances do not wait on each other's flushes. `None`, the
    /// default: every task shares this sink.
    fn for_task(&self, _ctx: &TaskContext) -> Result<Option<Arc<dyn LateSink<T>>>, ConnectorError> {
        Ok(None)
    }
}

/// The late-record side output of a window: counted always, and passed to a
/// sink when one is set (otherwise logged).
///
/// ```
/// use weir::pipeline::LateRecords;
/// let (late, seen) = LateRecords::<u32>::collect();
/// # let _ = (late, seen);
/// ```
pub struct LateRecords<T> {
    sink: Option<Arc<dyn LateSink<T>>>,
}

impl<T> Clone for LateRecords<T> {
    fn clone(&self) -> Self {
        LateRecords {
            sink: self.sink.clone(),
        }
    }
}

impl<T: Send + 'static> LateRecords<T> {
    /// Late records are counted and logged.
    pub fn count_only() -> Self {
        LateRecords { sink: None }
    }

    /// Late records go to `sink`.
    pub fn to(sink: impl LateSink<T>) -> Self {
        LateRecords {
            sink: Some(Arc::new(sink)),
        }
    }

    /// Late records are kept in memory; read them from the second value.
    pub fn collect() -> (Self, CollectedLate<T>) {
        let store = CollectedLate(Arc::new(Mutex::new(Vec::new())));
        (LateRecords::to(store.clone()), store)
    }

    fn send(
        &self,
        records: Vec<(T, Timestamp)>,
        ctx: Option<&TaskContext>,
    ) -> Result<(), ConnectorError> {
        match &self.sink {
            Some(s) => s.write(records).map_err(late_output_error),
            None => {
                let task = ctx.map(|c| c.task_name()).unwrap_or_default();
                tracing::warn!(
                    task,
                    n = records.len(),
                    "late records dropped from windows (no late output set)"
                );
                Ok(())
            }
        }
    }

    /// This output as one task uses it (see [`LateSink::for_task`]).
    fn for_task(&self, ctx: &TaskContext) -> Result<Self, ConnectorError> {
        let sink = match &self.sink {
            Some(s) => Some(
                s.for_task(ctx)
                    .map_err(late_output_error)?
                    .unwrap_or_else(|| s.clone()),
            ),
            None => None,
        };
        Ok(LateRecords { sink })
    }

    /// Makes every late record sent so far durable (see [`LateSink::flush`]).
    fn flush(&self) -> Result<(), ConnectorError> {
        match &self.sink {
            Some(s) => s.flush().map_err(late_output_error),
            None => Ok(()),
        }
    }
}

/// An error of the late-record output, saying so.
fn late_output_error(e: ConnectorError) -> ConnectorError {
    ConnectorError::new(format!("late-record output: {e}"))
}

/// Late records kept in memory by [`LateRecords::collect`].
pub struct CollectedLate<T>(Arc<Mutex<Vec<(T, Timestamp)>>>);

impl<T> Clone for CollectedLate<T> {
    fn clone(&self) -> Self {
        CollectedLate(self.0.clone())
    }
}

impl<T> CollectedLate<T> {
    /// Takes the late records collected so far.
    pub fn take(&self) -> Vec<(T, Timestamp)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl<T: Send + 'static> LateSink<T> for CollectedLate<T> {
    fn write(&self, records: Vec<(T, Timestamp)>) -> Result<(), ConnectorError> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(records);
        Ok(())
    }
}

/// Adds `v` to `key`'s accumulator in `map`.
#[inline(always)]
fn add_to<T, K: Key, A: Aggregator<T>>(agg: &A, map: &mut FxHashMap<K, A::Acc>, key: K, v: &T) {
    // One probe whether the key is new or not.
    agg.add(map.entry(key).or_insert_with(|| agg.init()), v);
}

#[derive(Clone, Serialize, Deserialize)]
struct SessionState<Acc> {
    window: TimeWindow,
    acc: Acc,
    fired: bool,
}

/// Keyed window aggregation: one accumulator per key and window, fired by
/// the watermark.
pub struct WindowAggregate<KF, A: Aggregator<T>, T, K> {
    key: KF,
    agg: A,
    windows: Windows,
    lateness: i64,
    late: LateRecords<T>,
    watermark: Timestamp,
    /// Fixed windows by end, then by key.
    fixed: BTreeMap<Timestamp, FxHashMap<K, A::Acc>>,
    /// Emptied maps of fired windows, kept for their capacity.
    spare: Vec<FxHashMap<K, A::Acc>>,
    /// Sessions per key, sorted by start.
    sessions: FxHashMap<K, Vec<SessionState<A::Acc>>>,
    assigned: Vec<TimeWindow>,
    late_buf: Vec<(T, Timestamp)>,
    refire: Vec<(TimeWindow, K)>,
    ctx: Option<TaskContext>,
    metrics: Option<Arc<TaskMetrics>>,
    _types: PhantomData<fn(T)>,
}

impl<KF: Clone, A: Aggregator<T>, T: Send + 'static, K> Clone for WindowAggregate<KF, A, T, K> {
    fn clone(&self) -> Self {
        WindowAggregate::new(
            self.key.clone(),
            self.agg.clone(),
            self.windows,
            self.lateness,
            self.late.clone(),
        )
    }
}

impl<KF, A: Aggregator<T>, T: Send + 'static, K> WindowAggregate<KF, A, T, K> {
    /// Aggregates `agg` per `key(record)` over `windows`, keeping fired
    /// windows open for `lateness_ms` more and sending later records to `late`.
    pub fn new(key: KF, agg: A, windows: Windows, lateness_ms: i64, late: LateRecords<T>) -> Self {
        WindowAggregate {
            key,
            agg,
            windows,
            lateness: lateness_ms.max(0),
            late,
            watermark: i64::MIN,
            fixed: BTreeMap::new(),
            spare: Vec::new(),
            sessions: FxHashMap::default(),
            assigned: Vec::new(),
            late_buf: Vec::new(),
            refire: Vec::new(),
            ctx: None,
            metrics: None,
            _types: PhantomData,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Snapshot<K, Acc> {
    watermark: Timestamp,
    fixed: Vec<(Timestamp, Vec<(K, Acc)>)>,
    sessions: Vec<(K, Vec<SessionState<Acc>>)>,
}

impl<KF, A, T, K> Operator for WindowAggregate<KF, A, T, K>
where
    KF: Fn(&T) -> K + Clone + Send + 'static,
    A: Aggregator<T>,
    T: Send + 'static,
    K: Key,
{
    type In = T;
    type Out = Windowed<K, A::Out>;

    fn open(&mut self, ctx: &TaskContext) -> Result<(), ConnectorError> {
        self.metrics = Some(ctx.metrics.clone());
        self.ctx = Some(ctx.clone());
        self.late = self.late.for_task(ctx)?;
        Ok(())
    }

    fn process(
        &mut self,
        input: &mut Batch<T>,
        out: &mut Batch<Self::Out>,
    ) -> Result<(), ConnectorError> {
        let session_gap = match self.windows.shape {
            Shape::Session { gap } => Some(gap),
            _ => None,
        };
        if let Some(gap) = session_gap {
            for (v, ts) in input.values.drain(..).zip(input.timestamps.drain(..)) {
                let k = (self.key)(&v);
                if !self.add_to_session(k, &v, ts, gap) {
                    self.late_buf.push((v, ts));
                }
            }
        } else {
            self.add_to_fixed(input);
        }
        self.emit_refires(out);
        if !self.late_buf.is_empty() {
            let late = std::mem::take(&mut self.late_buf);
            if let Some(m) = &self.metrics {
                m.late_records.fetch_add(late.len() as u64, Relaxed);
            }
            self.late.send(late, self.ctx.as_ref())?;
        }
        Ok(())
    }

    fn on_watermark(
        &mut self,
        wm: Timestamp,
        out: &mut Batch<Self::Out>,
    ) -> Result<(), ConnectorError> {
        if wm == MAX_WATERMARK {
            // End of input: the final commit follows, so every late record
            // must be durable first. (Also when the watermark was already
            // at the maximum: with the other inputs idle, one that ended
            // brings it there early, and late records may follow.)
            self.late.flush()?;
        }
        if wm <= self.watermark {
            return Ok(());
        }
        let previous = self.watermark;
        self.watermark = wm;
        // Fixed windows: fire those whose end is now reached, purge expired.
        let size_of = |end: Timestamp| -> Timestamp {
            match self.windows.shape {
                Shape::Tumbling { size, .. } | Shape::Sliding { size, .. } => {
                    end.saturating_sub(size)
                }
                _ => i64::MIN,
            }
        };
        for (&end, per_key) in self.fixed.range((previous.saturating_add(1))..=wm) {
            let window = TimeWindow {
                start: size_of(end),
                end,
            };
            for (k, acc) in per_key {
                out.push(
                    Windowed {
                        key: k.clone(),
                        window,
                        value: self.agg.result(acc),
                    },
                    end - 1,
                );
            }
        }
        let lateness = self.lateness;
        // Keep windows with end + lateness > wm; recycle the others' maps.
        // (Popped from the front: `split_off` would move every kept window
        // into a new tree on each watermark.)
        let purge_to = wm.saturating_sub(lateness);
        while let Some(first) = self.fixed.first_entry() {
            if *first.key() > purge_to {
                break;
            }
            let mut map = first.remove();
            if self.spare.len() < 64 {
                map.clear();
                self.spare.push(map);
            }
        }
        // Sessions: fire the ones whose end is reached, purge expired.
        if !self.sessions.is_empty() {
            let agg = &self.agg;
            self.sessions.retain(|k, list| {
                list.retain_mut(|s| {
                    if !s.fired && s.window.end <= wm {
                        s.fired = true;
                        out.push(
                            Windowed {
                                key: k.clone(),
                                window: s.window,
                                value: agg.result(&s.acc),
                            },
                            s.window.end - 1,
                        );
                    }
                    s.window.end.saturating_add(lateness) > wm
                });
                !list.is_empty()
            });
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>, ConnectorError> {
        // The checkpoint commits source positions past every late record
        // sent so far: they must be durable before it can complete.
        self.late.flush()?;
        let snap = Snapshot {
            watermark: self.watermark,
            fixed: self
                .fixed
                .iter()
                .map(|(e, m)| (*e, m.iter().map(|(k, a)| (k.clone(), a.clone())).collect()))
                .collect(),
            sessions: self
                .sessions
                .iter()
                .map(|(k, l)| (k.clone(), l.clone()))
                .collect(),
        };
        serde_json::to_vec(&snap)
            .map_err(|e| ConnectorError::new(format!("window state snapshot: {e}")))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), ConnectorError> {
        let snap: Snapshot<K, A::Acc> = serde_json::from_slice(state)
            .map_err(|e| ConnectorError::new(format!("window state restore: {e}")))?;
        self.watermark = snap.watermark;
        self.fixed = snap
            .fixed
            .into_iter()
            .map(|(e, l)| (e, l.into_iter().collect()))
            .collect();
        self.sessions = snap.sessions.into_iter().collect();
        Ok(())
    }

    /// The owned keys' windows of every snapshot, at the lowest of their
    /// watermarks: the restored sources' event time moves it on, and a
    /// window an earlier owner fired is never opened again, since its
    /// partition's records after the checkpoint are not below that
    /// owner's watermark.
    fn restore_keys(
        &mut self,
        states: &[Vec<u8>],
        keys: Option<&crate::pipeline::keyed::KeyGroups>,
    ) -> Result<(), ConnectorError> {
        let Some(keys) = keys else {
            return crate::pipeline::operator::refuse_split::<Self>(states);
        };
        let mut watermark = None::<Timestamp>;
        self.fixed.clear();
        self.sessions.clear();
        for state in states {
            let snap: Snapshot<K, A::Acc> = serde_json::from_slice(state)
                .map_err(|e| ConnectorError::new(format!("window state restore: {e}")))?;
            watermark = Some(watermark.map_or(snap.watermark, |w| w.min(snap.watermark)));
            for (end, list) in snap.fixed {
                let map = self.fixed.entry(end).or_default();
                map.extend(
                    list.into_iter()
                        .filter(|(k, _)| keys.owns(crate::pipeline::keyed::key_hash(k))),
                );
            }
            self.sessions.extend(
                snap.sessions
                    .into_iter()
                    .filter(|(k, _)| keys.owns(crate::pipeline::keyed::key_hash(k))),
            );
        }
        // Windows of which no owned key was kept.
        self.fixed.retain(|_, m| !m.is_empty());
        if let Some(w) = watermark {
            self.watermark = w;
        }
        Ok(())
    }
}

impl<KF, A, T, K> WindowAggregate<KF, A, T, K>
where
    KF: Fn(&T) -> K + Clone + Send + 'static,
    A: Aggregator<T>,
    T: Send + 'static,
    K: Key,
{
    /// Adds a batch to fixed (tumbling, sliding, global) windows. Consecutive
    /// records usually share a window, so the window's map is looked up once
    /// per run of records, not per record.
    fn add_to_fixed(&mut self, input: &mut Batch<T>) {
        let single = match self.windows.shape {
            Shape::Tumbling { size, offset } => Some((size, offset)),
            Shape::Global => Some((0, 0)),
            _ => None,
        };
        let (watermark, lateness) = (self.watermark, self.lateness);
        let expired = |end: Timestamp| end.saturating_add(lateness) <= watermark;
        let WindowAggregate {
            key,
            agg,
            windows,
            fixed,
            spare,
            assigned,
            late_buf,
            refire,
            ..
        } = self;
        let mut current: Option<(Timestamp, &mut FxHashMap<K, A::Acc>)> = None;
        let mut last: Option<TimeWindow> = None;
        for (v, ts) in input.values.drain(..).zip(input.timestamps.drain(..)) {
            let k = key(&v);
            let mut placed = false;
            match single {
                Some((size, offset)) => {
                    let w = if size == 0 {
                        TimeWindow {
                            start: i64::MIN,
                            end: i64::MAX,
                        }
                    } else if let Some(w) = last.filter(|w| ts >= w.start && ts < w.end) {
                        // Same window as the previous record: skip the division.
                        w
                    } else {
                        let start = ts - (ts - offset).rem_euclid(size);
                        TimeWindow {
                            start,
                            end: start.saturating_add(size),
                        }
                    };
                    last = Some(w);
                    if !expired(w.end) {
                        placed = true;
                        if current.as_ref().is_none_or(|(e, _)| *e != w.end) {
                            let map = fixed
                                .entry(w.end)
                                .or_insert_with(|| spare.pop().unwrap_or_default());
                            current = Some((w.end, map));
                        }
                        let map = &mut current.as_mut().expect("set above").1;
                        if w.end <= watermark {
                            refire.push((w, k.clone()));
                        }
                        add_to(agg, map, k, &v);
                    }
                }
                None => {
                    current = None;
                    windows.assign(ts, assigned);
                    for w in assigned.iter() {
                        if expired(w.end) {
                            continue;
                        }
                        placed = true;
                        let map = fixed
                            .entry(w.end)
                            .or_insert_with(|| spare.pop().unwrap_or_default());
                        add_to(agg, map, k.clone(), &v);
                        if w.end <= watermark {
                            refire.push((*w, k.clone()));
                        }
                    }
                }
            }
            if !placed {
                late_buf.push((v, ts));
            }
        }
    }

    /// Adds a record to its key's sessions, merging overlapping ones.
    /// Returns false when the record is late.
    fn add_to_session(&mut self, k: K, v: &T, ts: Timestamp, gap: i64) -> bool {
        let mut merged = TimeWindow {
            start: ts,
            end: ts.saturating_add(gap),
        };
        let list = self.sessions.entry(k.clone()).or_default();
        // Sessions that touch the new one merge with it (Flink: adjacent too).
        for s in list.iter() {
            if s.window.start <= merged.end && s.window.end >= merged.start {
                merged.start = merged.start.min(s.window.start);
                merged.end = merged.end.max(s.window.end);
            }
        }
        // Merging can chain: repeat until no other session touches the union.
        loop {
            let mut grew = false;
            for s in list.iter() {
                let touches = s.window.start <= merged.end && s.window.end >= merged.start;
                let inside = s.window.start >= merged.start && s.window.end <= merged.end;
                if touches && !inside {
                    merged.start = merged.start.min(s.window.start);
                    merged.end = merged.end.max(s.window.end);
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        if merged.end.saturating_add(self.lateness) <= self.watermark {
            if list.is_empty() {
                self.sessions.remove(&k);
            }
            return false;
        }
        let mut acc = self.agg.init();
        self.agg.add(&mut acc, v);
        list.retain_mut(|s| {
            let inside = s.window.start >= merged.start && s.window.end <= merged.end;
            if inside {
                let old = std::mem::replace(&mut s.acc, self.agg.init());
                self.agg.merge(&mut acc, old);
            }
            !inside
        });
        let pos = list.partition_point(|s| s.window.start < merged.start);
        list.insert(
            pos,
            SessionState {
                window: merged,
                acc,
                fired: false,
            },
        );
        if merged.end <= self.watermark {
            // Within the allowed lateness: fire the updated session again.
            self.refire.push((merged, k));
        }
        true
    }

    fn emit_refires(&mut self, out: &mut Batch<Windowed<K, A::Out>>) {
        if self.refire.is_empty() {
            return;
        }
        let mut refire = std::mem::take(&mut self.refire);
        refire.dedup();
        for (w, k) in refire.drain(..) {
            let value = match self.windows.shape {
                Shape::Session { .. } => self
                    .sessions
                    .get_mut(&k)
                    .and_then(|l| l.iter_mut().find(|s| s.window == w))
                    .map(|s| {
                        s.fired = true;
                        self.agg.result(&s.acc)
                    }),
                _ => self
                    .fixed
                    .get(&w.end)
                    .and_then(|m| m.get(&k))
                    .map(|a| self.agg.result(a)),
            };
            if let Some(value) = value {
                out.push(
                    Windowed {
                        key: k,
                        window: w,
                        value,
                    },
                    w.end - 1,
                );
            }
        }
        self.refire = refire;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::aggregate::{Count, Sum};

    type Ev = (&'static str, i64);

    fn feed<O: Operator<In = Ev>>(op: &mut O, recs: &[Ev]) -> Vec<O::Out> {
        let mut b = Batch::new();
        for r in recs {
            b.push(*r, r.1);
        }
        let mut out = Batch::new();
        op.process(&mut b, &mut out).unwrap();
        out.values
    }

    fn wm<O: Operator>(op: &mut O, w: i64) -> Vec<O::Out> {
        let mut out = Batch::new();
        op.on_watermark(w, &mut out).unwrap();
        out.values
    }

    fn key(e: &Ev) -> String {
        e.0.to_string()
    }

    fn sorted(mut v: Vec<Windowed<String, u64>>) -> Vec<(String, i64, i64, u64)> {
        let mut r: Vec<_> = v
            .drain(..)
            .map(|w| (w.key, w.window.start, w.window.end, w.value))
            .collect();
        r.sort();
        r
    }

    fn exp(v: &[(&str, i64, i64, u64)]) -> Vec<(String, i64, i64, u64)> {
        v.iter()
            .map(|(k, s, e, n)| (k.to_string(), *s, *e, *n))
            .collect()
    }

    #[test]
    fn tumbling_out_of_order_fires_on_watermark() {
        let (late, seen) = LateRecords::collect();
        let mut op = WindowAggregate::new(
            key,
            Count,
            Tumbling::event_time(Duration::from_millis(10)),
            0,
            late,
        );
        assert!(feed(&mut op, &[("a", 5), ("a", 12), ("b", 3), ("a", 1)]).is_empty());
        assert!(sorted(wm(&mut op, 9)).is_empty());
        assert_eq!(
            sorted(wm(&mut op, 10)),
            exp(&[("a", 0, 10, 2), ("b", 0, 10, 1)])
        );
        // Late: window [0,10) has fired and lateness is 0.
        assert!(feed(&mut op, &[("a", 7), ("a", 15)]).is_empty());
        assert_eq!(seen.take(), vec![(("a", 7), 7)]);
        assert_eq!(sorted(wm(&mut op, i64::MAX)), exp(&[("a", 10, 20, 2)]));
    }

    #[test]
    fn allowed_lateness_refires_then_expires() {
        let (late, seen) = LateRecords::collect();
        let mut op = WindowAggregate::new(
            key,
            Count,
            Tumbling::event_time(Duration::from_millis(10)),
            5,
            late,
        );
        feed(&mut op, &[("a", 1)]);
        assert_eq!(sorted(wm(&mut op, 10)), exp(&[("a", 0, 10, 1)]));
        // Within lateness: updates and fires again.
        assert_eq!(sorted(feed(&mut op, &[("a", 2)])), exp(&[("a", 0, 10, 2)]));
        wm(&mut op, 15);
        assert!(feed(&mut op, &[("a", 3)]).is_empty());
        assert_eq!(seen.take().len(), 1);
    }

    #[test]
    fn sliding_counts_each_window() {
        let mut op = WindowAggregate::new(
            key,
            Sum::of(|e: &Ev| e.1),
            Sliding::event_time(Duration::from_millis(10), Duration::from_millis(5)),
            0,
            LateRecords::count_only(),
        );
        feed(&mut op, &[("a", 7)]);
        let mut got: Vec<_> = wm(&mut op, i64::MAX)
            .into_iter()
            .map(|w| (w.window.start, w.value))
            .collect();
        got.sort();
        assert_eq!(got, vec![(0, 7), (5, 7)]);
    }

    #[test]
    fn sessions_merge_when_a_record_bridges_them() {
        let (late, seen) = LateRecords::collect();
        let mut op = WindowAggregate::new(
            key,
            Count,
            Session::event_time(Duration::from_millis(10)),
            0,
            late,
        );
        feed(&mut op, &[("a", 0), ("a", 25), ("b", 3)]);
        // a: [0,10) and [25,35); 8 extends the first to [0,18).
        feed(&mut op, &[("a", 8)]);
        assert_eq!(sorted(wm(&mut op, 14)), exp(&[("b", 3, 13, 1)]));
        // 17 makes [17,27), which touches [0,18) and [25,35): all merge.
        feed(&mut op, &[("a", 17)]);
        assert_eq!(sorted(wm(&mut op, 100)), exp(&[("a", 0, 35, 4)]));
        // Late: the session window [1, 11) would end before the watermark.
        feed(&mut op, &[("a", 1)]);
        assert_eq!(seen.take().len(), 1);
    }

    #[test]
    fn global_window_fires_at_end() {
        let mut op =
            WindowAggregate::new(key, Count, Windows::global(), 0, LateRecords::count_only());
        feed(&mut op, &[("a", 1), ("a", 1_000_000)]);
        assert!(wm(&mut op, 5_000_000).is_empty());
        assert_eq!(wm(&mut op, i64::MAX)[0].value, 2);
    }

    #[test]
    fn snapshot_restore_keeps_open_windows() {
        let mut op = WindowAggregate::new(
            key,
            Count,
            Tumbling::event_time(Duration::from_millis(10)),
            0,
            LateRecords::count_only(),
        );
        feed(&mut op, &[("a", 1), ("a", 2)]);
        let snap = op.snapshot().unwrap();
        let mut fresh = op.clone();
        fresh.restore(&snap).unwrap();
        assert_eq!(sorted(wm(&mut fresh, 10)), exp(&[("a", 0, 10, 2)]));
    }

    /// Two instances' windows, taken over by two new ones after a
    /// rescale: each gets exactly the keys its partitions hold, at the
    /// lower of the old watermarks; nothing is lost or counted twice.
    #[test]
    fn restore_keys_splits_windows_by_partition() {
        use crate::pipeline::keyed::{key_hash, key_partition, KeyGroups};
        let new = || {
            WindowAggregate::new(
                key,
                Count,
                Tumbling::event_time(Duration::from_millis(10)),
                0,
                LateRecords::count_only(),
            )
        };
        let users = ["a", "b", "c", "d", "e", "f", "g", "h"];
        let part = |u: &str| key_partition(key_hash(&u.to_string()), 4) as i32;
        // Old layout: 2 instances over 4 partitions (p % 2).
        let (mut old0, mut old1) = (new(), new());
        for (i, u) in users.iter().enumerate() {
            let recs: Vec<Ev> = (0..=i as i64).map(|t| (*u, t % 10)).collect();
            if part(u) % 2 == 0 {
                feed(&mut old0, &recs);
            } else {
                feed(&mut old1, &recs);
            }
        }
        wm(&mut old0, 3);
        wm(&mut old1, 1);
        let states = vec![old0.snapshot().unwrap(), old1.snapshot().unwrap()];
        // New layout: 3 instances (p % 3).
        let mut got = Vec::new();
        for j in 0..3 {
            let mut op = new();
            let mine: Vec<i32> = (0..4).filter(|p| p % 3 == j).collect();
            op.restore_keys(&states, Some(&KeyGroups::new(4, mine.clone())))
                .unwrap();
            assert_eq!(op.watermark, 1, "the lower of the old watermarks");
            let fired = sorted(wm(&mut op, 10));
            assert!(fired.iter().all(|(k, ..)| mine.contains(&part(k))));
            got.extend(fired);
        }
        got.sort();
        let want: Vec<(String, i64, i64, u64)> = users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.to_string(), 0, 10, i as u64 + 1))
            .collect();
        assert_eq!(got, want);
        let err = new().restore_keys(&states, None).unwrap_err().to_string();
        assert!(err.contains("WindowAggregate"), "{err}");
    }

    /// Counts flushes; fails them when asked.
    struct Flushes(Arc<Mutex<u32>>, bool);

    impl LateSink<Ev> for Flushes {
        fn write(&self, _records: Vec<(Ev, Timestamp)>) -> Result<(), ConnectorError> {
            Ok(())
        }
        fn flush(&self) -> Result<(), ConnectorError> {
            *self.0.lock().unwrap() += 1;
            if self.1 {
                return Err(ConnectorError::new("unacknowledged"));
            }
            Ok(())
        }
    }

    /// Counts per key over 10 ms tumbling windows, late records to a
    /// [`Flushes`] counting into `count` (failing its flushes if `fail`).
    fn with_flushes(
        count: &Arc<Mutex<u32>>,
        fail: bool,
    ) -> impl Operator<In = Ev, Out = Windowed<String, u64>> {
        WindowAggregate::new(
            key,
            Count,
            Tumbling::event_time(Duration::from_millis(10)),
            0,
            LateRecords::to(Flushes(count.clone(), fail)),
        )
    }

    #[test]
    fn a_snapshot_first_makes_late_records_durable() {
        let count = Arc::new(Mutex::new(0));
        let op = with_flushes(&count, false);
        op.snapshot().unwrap();
        assert_eq!(
            *count.lock().unwrap(),
            1,
            "the snapshot flushed the late output"
        );
        let e = with_flushes(&count, true).snapshot().unwrap_err();
        assert!(
            e.to_string().contains("late-record output: unacknowledged"),
            "{e}"
        );
    }

    #[test]
    fn the_end_flushes_late_records_even_at_a_maximal_watermark() {
        let count = Arc::new(Mutex::new(0));
        let mut op = with_flushes(&count, false);
        feed(&mut op, &[("a", 1)]);
        // One input ended while the others are idle: the watermark is
        // already at the maximum before the real end.
        wm(&mut op, i64::MAX);
        let before = *count.lock().unwrap();
        feed(&mut op, &[("a", 2)]); // late
        wm(&mut op, i64::MAX); // the real end
        assert_eq!(*count.lock().unwrap(), before + 1, "flushed at the end");
    }

    #[test]
    fn zero_sizes_are_rejected_naming_the_field() {
        let e = Session::event_time(Duration::ZERO).validate().unwrap_err();
        assert!(e.to_string().contains("window.gap"), "{e}");
        let e = Sliding::event_time(Duration::from_secs(1), Duration::ZERO)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("window.slide"), "{e}");
    }
}
