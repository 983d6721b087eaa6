//! Event time across the partitions of one Kafka reader.
//!
//! Owns [`PartState`] (one assigned partition's position, largest event
//! time, caught-up and paused flags), [`PartitionClock`] (the reader's
//! watermark over its partitions and the alignment that pauses partitions
//! running ahead) and [`Handoffs`] (partitions in transit between the
//! instances of one source stage during a group rebalance). Pure
//! bookkeeping: never talks to librdkafka, never reads payloads.
//!
//! The rules, so that a job's windows do not depend on whether its input
//! is live or a backlog:
//! - a partition that has not delivered holds the watermark;
//! - a partition is idle (and stops holding) only when it is caught up
//!   with its log (librdkafka's end-of-partition event) *and* has been
//!   quiet for the idle timeout;
//! - a partition in transit to another instance holds every instance;
//! - a partition more than the drift ahead of the slowest partition that
//!   still has records to fetch is paused until that one catches up.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::repartition::UpstreamMarks;
use crate::pipeline::{ReaderWatermark, TaskContext, Timestamp};

/// Per-partition progress of one reader.
#[derive(Debug, Clone)]
pub(crate) struct PartState {
    /// Offset of the next record to read (-1: unknown yet).
    pub next: i64,
    /// Largest event time seen (`i64::MIN`: nothing delivered yet, so the
    /// partition holds the watermark).
    pub max_ts: Timestamp,
    /// When the partition last delivered a record (or was assigned).
    pub last_record: Instant,
    /// librdkafka reported the end of the partition's log and no record
    /// came since: nothing more to fetch now.
    pub caught_up: bool,
    /// Paused by the reader's alignment (too far ahead of the slowest).
    pub paused: bool,
    /// A repartition topic's partition: its event time is what its upstream
    /// writers' control records say, not its records' timestamps.
    pub upstream: Option<UpstreamMarks>,
}

impl PartState {
    /// A partition assigned now, with nothing delivered.
    pub fn new(now: Instant) -> Self {
        Self::resumed(now, i64::MIN)
    }

    /// A partition taken over with the event time its previous owner had
    /// reached in it.
    pub fn resumed(now: Instant, max_ts: Timestamp) -> Self {
        PartState {
            next: -1,
            max_ts,
            last_record: now,
            caught_up: false,
            paused: false,
            upstream: None,
        }
    }

    /// The event time this partition has reached: its largest record
    /// timestamp, or, in a repartition topic, the minimum over its upstream
    /// writers of the watermark each wrote into it (`i64::MIN` while one
    /// has not written yet).
    #[inline]
    pub fn event_time(&self) -> Timestamp {
        match &self.upstream {
            None => self.max_ts,
            Some(u) => u.watermark(),
        }
    }

    /// A record at `offset` with event time `ts` was read now.
    #[inline]
    pub fn on_record(&mut self, offset: i64, ts: Timestamp, now: Instant) {
        self.next = offset + 1;
        self.last_record = now;
        self.caught_up = false;
        if ts > self.max_ts {
            self.max_ts = ts;
        }
    }

    /// Idle: caught up with its log and quiet for the idle timeout. Never
    /// merely because its data has not arrived yet. In a repartition topic: when every upstream writer said it is idle
    /// or ended, whatever the timeout.
    pub fn is_idle(&self, idle_timeout: Option<Duration>) -> bool {
        if let Some(u) = &self.upstream {
            return u.quiet();
        }
        self.caught_up && idle_timeout.is_some_and(|t| self.last_record.elapsed() >= t)
    }
}

/// The watermark strategy of one reader and what it has emitted.
#[derive(Debug, Clone)]
pub(crate) struct PartitionClock {
    /// The out-of-orderness bound (`None`: no watermarks).
    pub bound_ms: Option<i64>,
    /// Quiet time after which a caught-up partition stops holding.
    pub idle_timeout: Option<Duration>,
    /// Partitions more than this far ahead of the slowest are paused.
    pub max_drift_ms: Option<i64>,
    /// The last watermark computed (monotonic).
    emitted: Timestamp,
    /// Since when the reader owns no partition.
    unowned_since: Instant,
    /// The reader has had an assignment (perhaps an empty one): until
    /// then, owning no partition means a group join under way, which holds.
    assigned: bool,
}

impl PartitionClock {
    /// The clock of a reader opened now, from its task's strategy.
    pub fn new(ctx: &TaskContext, now: Instant) -> Self {
        PartitionClock {
            bound_ms: ctx.watermarks.bound_ms(),
            idle_timeout: ctx.watermarks.idle_timeout(),
            max_drift_ms: ctx.watermarks.max_drift_ms(),
            emitted: i64::MIN,
            unowned_since: now,
            assigned: false,
        }
    }

    /// The reader now owns no partition.
    pub fn unowned(&mut self, now: Instant) {
        self.unowned_since = now;
    }

    /// The reader got an assignment (explicit partitions, or the group's,
    /// which may be empty: more instances than partitions).
    pub fn assigned(&mut self) {
        self.assigned = true;
    }

    /// The reader's watermark: the minimum, over partitions that are not
    /// idle and over partitions in transit to another instance
    /// (`in_transit`: the smallest event time among them), of their largest
    /// event time, minus the bound. A partition that has not delivered
    /// holds it. Never moves back.
    pub fn watermark(
        &mut self,
        parts: &BTreeMap<i32, PartState>,
        in_transit: Option<Timestamp>,
    ) -> ReaderWatermark {
        let Some(bound) = self.bound_ms else {
            return ReaderWatermark::Derived;
        };
        let idle_timeout = self.idle_timeout;
        let owned = parts
            .values()
            .filter(|s| !s.is_idle(idle_timeout))
            .map(PartState::event_time)
            .min();
        let min = match (owned, in_transit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match min {
            None if parts.is_empty()
                && (!self.assigned
                    || idle_timeout.is_none_or(|t| self.unowned_since.elapsed() < t)) =>
            {
                // No partition yet: a group join under way (its first
                // assignment may bring any partition, at its start) holds
                // however long it takes; an instance left without one
                // holds for the idle timeout.
                ReaderWatermark::Held
            }
            None => ReaderWatermark::Idle,
            Some(i64::MIN) if self.emitted == i64::MIN => ReaderWatermark::Held,
            Some(i64::MIN) => ReaderWatermark::At(self.emitted),
            Some(m) => {
                self.emitted = self.emitted.max(m.saturating_sub(bound));
                ReaderWatermark::At(self.emitted)
            }
        }
    }

    /// Watermark alignment between a reader's partitions: a partition more
    /// than the drift ahead of the slowest partition that still has records
    /// to fetch (one that has not delivered counts as the slowest of all)
    /// is paused until that one catches up. Updates the flags and returns
    /// the partitions to pause and to resume.
    pub fn alignment_changes(&self, parts: &mut BTreeMap<i32, PartState>) -> (Vec<i32>, Vec<i32>) {
        let Some(drift) = self.max_drift_ms else {
            return Default::default();
        };
        let slowest = parts
            .values()
            .filter(|s| !s.caught_up && !s.paused)
            .map(|s| s.max_ts)
            .min();
        let (mut pause, mut resume) = (Vec::new(), Vec::new());
        for (p, s) in parts.iter_mut() {
            let ahead = slowest.is_some_and(|m| s.max_ts > m.saturating_add(drift));
            if ahead && !s.paused {
                s.paused = true;
                pause.push(*p);
            } else if !ahead && s.paused {
                s.paused = false;
                resume.push(*p);
            }
        }
        (pause, resume)
    }
}

/// Partitions in transit between the instances of one source stage, in
/// group mode: the group revoked them from one instance and has not yet
/// assigned them to another. The new owner starts where the old one
/// stopped (not at the committed offset: what came after it already went
/// downstream), with the old owner's event time, and every instance's
/// watermark holds for a partition in transit, so no one runs past records
/// no one owns. Keyed by job attempt: a restart starts afresh.
#[derive(Debug, Default)]
pub(crate) struct Handoffs {
    job: String,
    attempt: u32,
    parts: BTreeMap<i32, Handoff>,
}

/// One partition in transit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Handoff {
    /// Where the old owner stopped (-1: not known yet).
    pub next: i64,
    /// The old owner's largest event time in it (`None`: not known yet).
    pub max_ts: Option<Timestamp>,
    /// When it was revoked.
    pub since: Instant,
}

/// One reader's (and its consumer context's) view of its stage's handoffs.
#[derive(Debug, Clone)]
pub(crate) struct HandoffView {
    map: Arc<Mutex<Handoffs>>,
    attempt: u32,
}

impl HandoffView {
    /// The view of instance `ctx`; the first instance of a new attempt
    /// clears what an older attempt left.
    pub fn open(map: &Arc<Mutex<Handoffs>>, ctx: &TaskContext) -> Self {
        {
            let mut h = map.lock().unwrap_or_else(|p| p.into_inner());
            if h.job != ctx.job || h.attempt != ctx.attempt {
                h.job = ctx.job.clone();
                h.attempt = ctx.attempt;
                h.parts.clear();
            }
        }
        HandoffView {
            map: map.clone(),
            attempt: ctx.attempt,
        }
    }

    /// Runs `f` on the partitions in transit if the map still belongs to
    /// this view's attempt (an old attempt's consumer closing late must not
    /// touch a new attempt's handoffs).
    pub fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<i32, Handoff>) -> R) -> Option<R> {
        let mut h = self.map.lock().unwrap_or_else(|p| p.into_inner());
        (h.attempt == self.attempt).then(|| f(&mut h.parts))
    }

    /// The smallest event time among partitions in transit that still
    /// hold (revoked within the idle timeout; one whose time is not known
    /// yet holds at `i64::MIN`), or `None` when none is in transit.
    pub fn holding(&self, idle_timeout: Option<Duration>) -> Option<Timestamp> {
        self.with(|h| {
            h.values()
                .filter(|x| idle_timeout.is_none_or(|t| x.since.elapsed() < t))
                .map(|x| x.max_ts.unwrap_or(i64::MIN))
                .min()
        })
        .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Watermarks;

    fn clock(idle: Option<Duration>) -> PartitionClock {
        let mut w = Watermarks::bounded_out_of_orderness(Duration::from_millis(100));
        if let Some(t) = idle {
            w = w.with_idle_timeout(t);
        }
        let mut ctx = TaskContext::detached("test");
        ctx.watermarks = w;
        PartitionClock::new(&ctx, Instant::now())
    }

    fn parts(ids: &[i32]) -> BTreeMap<i32, PartState> {
        let now = Instant::now();
        ids.iter().map(|p| (*p, PartState::new(now))).collect()
    }

    /// Whatever order the partitions deliver in, the watermark never passes
    /// a partition that has not delivered, and ends at the minimum.
    #[test]
    fn a_partition_that_has_not_delivered_holds_the_watermark_in_any_order() {
        let orders: [[i32; 3]; 6] = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        let latest = [5_000, 60_000, 1_000];
        for order in orders {
            let mut c = clock(Some(Duration::ZERO));
            let mut ps = parts(&[0, 1, 2]);
            let now = Instant::now();
            for (k, p) in order.iter().enumerate() {
                // The whole partition at once, as a backlog is read.
                for (off, ts) in [(0, latest[*p as usize] - 500), (1, latest[*p as usize])] {
                    ps.get_mut(p).unwrap().on_record(off, ts, now);
                }
                let wm = c.watermark(&ps, None);
                if k < 2 {
                    assert_eq!(wm, ReaderWatermark::Held, "order {order:?} after {k}");
                } else {
                    assert_eq!(wm, ReaderWatermark::At(1_000 - 100), "order {order:?}");
                }
            }
        }
    }

    #[test]
    fn only_a_caught_up_and_quiet_partition_is_idle() {
        let mut c = clock(Some(Duration::ZERO));
        let mut ps = parts(&[0, 1]);
        ps.get_mut(&0).unwrap().on_record(0, 10_000, Instant::now());
        // Partition 1 is quiet (timeout zero) but not caught up: it holds.
        assert_eq!(c.watermark(&ps, None), ReaderWatermark::Held);
        // Caught up (an empty partition): it stops holding.
        ps.get_mut(&1).unwrap().caught_up = true;
        assert_eq!(c.watermark(&ps, None), ReaderWatermark::At(9_900));
        // A record makes it active again; it cannot move the watermark back.
        ps.get_mut(&1).unwrap().on_record(0, 500, Instant::now());
        assert_eq!(c.watermark(&ps, None), ReaderWatermark::At(9_900));
        // Both caught up and quiet: the reader is idle.
        ps.values_mut().for_each(|s| s.caught_up = true);
        assert_eq!(c.watermark(&ps, None), ReaderWatermark::Idle);
    }

    #[test]
    fn without_an_idle_timeout_a_caught_up_partition_still_holds() {
        let mut c = clock(None);
        let mut ps = parts(&[0, 1]);
        ps.get_mut(&0).unwrap().on_record(0, 10_000, Instant::now());
        ps.get_mut(&1).unwrap().caught_up = true;
        assert_eq!(c.watermark(&ps, None), ReaderWatermark::Held);
    }

    #[test]
    fn a_partition_in_transit_holds_and_a_reader_without_partitions_waits() {
        let mut c = clock(Some(Duration::from_secs(3600)));
        let mut ps = parts(&[0]);
        ps.get_mut(&0).unwrap().on_record(0, 10_000, Instant::now());
        assert_eq!(c.watermark(&ps, Some(4_000)), ReaderWatermark::At(3_900));
        assert_eq!(c.watermark(&ps, None), ReaderWatermark::At(9_900));
        // Before the first assignment: hold, however long the join takes.
        let mut c = clock(Some(Duration::ZERO));
        assert_eq!(c.watermark(&BTreeMap::new(), None), ReaderWatermark::Held);
        // Assigned nothing (more instances than partitions): hold for the
        // idle timeout, then idle.
        c.assigned();
        assert_eq!(c.watermark(&BTreeMap::new(), None), ReaderWatermark::Idle);
        let mut c = clock(Some(Duration::from_secs(3600)));
        c.assigned();
        assert_eq!(c.watermark(&BTreeMap::new(), None), ReaderWatermark::Held);
    }

    #[test]
    fn a_repartition_partition_follows_its_writers_not_its_records() {
        use crate::connectors::kafka::repartition::{Mark, UpstreamMarks};
        let mut c = clock(Some(Duration::ZERO));
        c.bound_ms = Some(0);
        let mut ps = parts(&[0, 1]);
        for s in ps.values_mut() {
            s.upstream = Some(UpstreamMarks::new(2));
            // Records (even caught up and quiet) say nothing about time.
            s.on_record(0, 50_000, Instant::now());
            s.caught_up = true;
        }
        assert_eq!(c.watermark(&ps, None), ReaderWatermark::Held);
        for (p, s) in ps.iter_mut() {
            let u = s.upstream.as_mut().unwrap();
            u.apply(0, Mark::Watermark(8_000 + *p as i64));
            u.apply(1, Mark::Watermark(6_000));
        }
        assert_eq!(c.watermark(&ps, None), ReaderWatermark::At(6_000));
        // Writer 1 idle in partition 0 only: partition 1 still holds at 6 s.
        ps.get_mut(&0)
            .unwrap()
            .upstream
            .as_mut()
            .unwrap()
            .apply(1, Mark::Idle);
        assert_eq!(c.watermark(&ps, None), ReaderWatermark::At(6_000));
        ps.get_mut(&1)
            .unwrap()
            .upstream
            .as_mut()
            .unwrap()
            .apply(1, Mark::End);
        assert_eq!(c.watermark(&ps, None), ReaderWatermark::At(8_000));
        for s in ps.values_mut() {
            s.upstream.as_mut().unwrap().apply(0, Mark::End);
        }
        assert_eq!(c.watermark(&ps, None), ReaderWatermark::Idle);
    }

    #[test]
    fn alignment_pauses_partitions_ahead_of_the_slowest_until_it_catches_up() {
        let mut c = clock(None);
        c.max_drift_ms = Some(1_000);
        let mut ps = parts(&[0, 1, 2]);
        let now = Instant::now();
        ps.get_mut(&0).unwrap().on_record(0, 10_000, now);
        // 1 and 2 have not delivered: 0 waits for them.
        assert_eq!(c.alignment_changes(&mut ps), (vec![0], vec![]));
        ps.get_mut(&1).unwrap().on_record(0, 9_500, now);
        ps.get_mut(&2).unwrap().on_record(0, 7_000, now);
        // 2 is the slowest: 0 and 1 are more than 1 s ahead.
        assert_eq!(c.alignment_changes(&mut ps), (vec![1], vec![]));
        ps.get_mut(&2).unwrap().on_record(1, 8_600, now);
        assert_eq!(c.alignment_changes(&mut ps), (vec![], vec![1]));
        // 2 reaches the end of its log: nothing to wait for.
        ps.get_mut(&2).unwrap().caught_up = true;
        assert_eq!(c.alignment_changes(&mut ps), (vec![], vec![0]));
    }
}
