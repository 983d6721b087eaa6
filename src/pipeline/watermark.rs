//! Watermarks: generating them at sources and merging them at inputs.
//!
//! Owns [`Watermarks`] (the strategy a source is configured with: bounded
//! out-of-orderness and an idle timeout), [`WatermarkGenerator`] (its state
//! inside one source task) and [`InputWatermarks`] (the minimum over a
//! task's inputs, leaving idle inputs out). Never reads record payloads:
//! only timestamps.

use std::time::{Duration, Instant};

use super::batch::{Timestamp, MAX_WATERMARK};

/// How a source derives watermarks from its records' timestamps.
///
/// ```
/// use std::time::Duration;
/// use weir::pipeline::Watermarks;
/// let w = Watermarks::bounded_out_of_orderness(Duration::from_secs(2))
///     .with_idle_timeout(Duration::from_secs(5));
/// # let _ = w;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Watermarks {
    bound_ms: Option<i64>,
    idle_timeout: Option<Duration>,
    max_drift_ms: Option<i64>,
}

/// Default watermark alignment: a source instance pauses while its
/// watermark is this far ahead of the slowest active one.
pub const DEFAULT_MAX_DRIFT: Duration = Duration::from_secs(10);

impl Watermarks {
    /// No watermarks until the input ends (then the final one fires all).
    pub fn none() -> Self {
        Watermarks::default()
    }

    /// The out-of-orderness bound in milliseconds (`None`: no watermarks).
    pub fn bound_ms(&self) -> Option<i64> {
        self.bound_ms
    }

    /// Watermark = largest timestamp seen − `bound`: records may arrive up
    /// to `bound` out of order without being late.
    pub fn bounded_out_of_orderness(bound: Duration) -> Self {
        Watermarks {
            bound_ms: Some(i64::try_from(bound.as_millis()).unwrap_or(i64::MAX)),
            idle_timeout: None,
            max_drift_ms: Some(DEFAULT_MAX_DRIFT.as_millis() as i64),
        }
    }

    /// Timestamps only increase (a bound of zero).
    pub fn ascending() -> Self {
        Self::bounded_out_of_orderness(Duration::ZERO)
    }

    /// After `timeout` without records, the source declares itself idle so it
    /// does not hold back the watermark of the tasks it feeds.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Watermark alignment: a source instance whose watermark is more than
    /// `drift` ahead of the slowest active instance of its stage pauses
    /// until the others catch up, so one fast instance cannot pile up
    /// window state downstream (on by default, [`DEFAULT_MAX_DRIFT`]).
    /// Instances that are idle, finished or have not emitted a watermark
    /// yet do not hold the others back.
    pub fn with_alignment(mut self, drift: Duration) -> Self {
        self.max_drift_ms = Some(i64::try_from(drift.as_millis()).unwrap_or(i64::MAX));
        self
    }

    /// Turns watermark alignment off.
    pub fn without_alignment(mut self) -> Self {
        self.max_drift_ms = None;
        self
    }

    /// The alignment drift in milliseconds, if alignment is on.
    pub fn max_drift_ms(&self) -> Option<i64> {
        self.max_drift_ms.filter(|_| self.bound_ms.is_some())
    }

    /// The idle timeout, if any.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// A generator for one source task.
    pub fn generator(&self) -> WatermarkGenerator {
        WatermarkGenerator {
            strategy: *self,
            max_ts: i64::MIN,
            emitted: i64::MIN,
            last_data: Instant::now(),
            idle: false,
        }
    }
}

/// Per-source-task watermark state.
#[derive(Debug, Clone)]
pub struct WatermarkGenerator {
    strategy: Watermarks,
    max_ts: Timestamp,
    emitted: Timestamp,
    last_data: Instant,
    idle: bool,
}

impl WatermarkGenerator {
    /// Observes a batch's timestamps; returns a new watermark if it advanced.
    pub fn on_batch(&mut self, timestamps: &[Timestamp]) -> Option<Timestamp> {
        if timestamps.is_empty() {
            return None;
        }
        self.last_data = Instant::now();
        let was_idle = std::mem::replace(&mut self.idle, false);
        let bound = self.strategy.bound_ms?;
        if let Some(m) = timestamps.iter().copied().max() {
            self.max_ts = self.max_ts.max(m);
        }
        let wm = self.max_ts.saturating_sub(bound);
        if wm > self.emitted || (was_idle && self.emitted > i64::MIN) {
            self.emitted = self.emitted.max(wm);
            Some(self.emitted)
        } else {
            None
        }
    }

    /// Called when the source had nothing to read: true once, when it has
    /// now been quiet for longer than the idle timeout.
    pub fn check_idle(&mut self) -> bool {
        match self.strategy.idle_timeout {
            Some(t) if !self.idle && self.last_data.elapsed() >= t => {
                self.idle = true;
                true
            }
            _ => false,
        }
    }
}

/// The shared watermark slots of one source stage's instances, for
/// alignment. One atomic per instance, written once per batch, and a
/// progress count that every report bumps, so an instance that decides to
/// pause cannot miss a report made in between (it would otherwise sleep out
/// its whole timeout).
#[derive(Debug, Clone)]
pub struct WatermarkAlignment {
    slots: std::sync::Arc<[std::sync::atomic::AtomicI64]>,
    drift: i64,
    reports: std::sync::Arc<std::sync::atomic::AtomicU64>,
    progress: std::sync::Arc<tokio::sync::Notify>,
}

impl WatermarkAlignment {
    /// Slots for `n` instances that may drift `drift_ms` apart.
    pub fn new(n: usize, drift_ms: i64) -> Self {
        WatermarkAlignment {
            slots: (0..n)
                .map(|_| std::sync::atomic::AtomicI64::new(i64::MIN))
                .collect(),
            drift: drift_ms,
            reports: Default::default(),
            progress: std::sync::Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Instance `i` emitted watermark `wm`: wakes paused instances.
    pub fn report(&self, i: usize, wm: Timestamp) {
        self.slots[i].store(wm, std::sync::atomic::Ordering::Relaxed);
        self.progressed();
    }

    /// Instance `i` is idle or finished: it holds no one back.
    pub fn withdraw(&self, i: usize) {
        self.slots[i].store(i64::MIN, std::sync::atomic::Ordering::Relaxed);
        self.progressed();
    }

    fn progressed(&self) {
        self.reports
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        self.progress.notify_waiters();
    }

    /// How many reports (and withdrawals) were made so far: read it before
    /// [`WatermarkAlignment::should_pause`] and hand it to
    /// [`WatermarkAlignment::progress_since`].
    pub fn reports(&self) -> u64 {
        self.reports.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Resolves when another report follows the `seen` first ones (at once
    /// if one already did), or after `at_most`.
    ///
    /// ```
    /// # use weir::pipeline::WatermarkAlignment;
    /// # use std::time::{Duration, Instant};
    /// let a = WatermarkAlignment::new(2, 100);
    /// a.report(1, 0);
    /// let seen = a.reports();
    /// assert!(a.should_pause(0, 1_000));
    /// a.report(1, 950); // between the decision and the wait
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    /// let start = Instant::now();
    /// rt.block_on(a.progress_since(seen, Duration::from_secs(5)));
    /// assert!(start.elapsed() < Duration::from_secs(1), "the report was not missed");
    /// ```
    pub fn progress_since(
        &self,
        seen: u64,
        at_most: std::time::Duration,
    ) -> impl std::future::Future<Output = ()> + 'static {
        let (progress, reports) = (self.progress.clone(), self.reports.clone());
        async move {
            // Registered before the count is read: `notify_waiters` reaches
            // a `Notified` from its creation on, so no report falls between.
            let notified = progress.notified();
            if reports.load(std::sync::atomic::Ordering::Acquire) != seen {
                return;
            }
            let _ = tokio::time::timeout(at_most, notified).await;
        }
    }

    /// True when instance `i`, at watermark `wm`, is too far ahead of the
    /// slowest active instance and should pause.
    pub fn should_pause(&self, i: usize, wm: Timestamp) -> bool {
        if wm == i64::MIN {
            return false;
        }
        let slowest = self
            .slots
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| s.load(std::sync::atomic::Ordering::Relaxed))
            .filter(|w| *w != i64::MIN)
            .min();
        slowest.is_some_and(|m| wm > m.saturating_add(self.drift))
    }
}

/// The watermark of a task with several inputs: the minimum over inputs
/// that are neither idle nor ended.
#[derive(Debug, Clone)]
pub struct InputWatermarks {
    marks: Vec<Timestamp>,
    idle: Vec<bool>,
    ended: Vec<bool>,
    current: Timestamp,
}

impl InputWatermarks {
    /// State for `n` inputs.
    pub fn new(n: usize) -> Self {
        InputWatermarks {
            marks: vec![i64::MIN; n],
            idle: vec![false; n],
            ended: vec![false; n],
            current: i64::MIN,
        }
    }

    /// The combined watermark.
    pub fn current(&self) -> Timestamp {
        self.current
    }

    /// Number of inputs that have not ended.
    pub fn live(&self) -> usize {
        self.ended.iter().filter(|e| !**e).count()
    }

    /// True when input `i` has ended.
    pub fn has_ended(&self, i: usize) -> bool {
        self.ended[i]
    }

    /// True when every input has ended.
    pub fn all_ended(&self) -> bool {
        self.ended.iter().all(|e| *e)
    }

    /// True when every live input is idle.
    pub fn all_idle(&self) -> bool {
        self.idle.iter().zip(&self.ended).all(|(i, e)| *i || *e)
    }

    /// Input `i` sent data: it is active again.
    pub fn on_data(&mut self, i: usize) {
        self.idle[i] = false;
    }

    /// Input `i` sent a watermark; returns the combined one if it advanced.
    pub fn on_watermark(&mut self, i: usize, wm: Timestamp) -> Option<Timestamp> {
        self.idle[i] = false;
        if wm > self.marks[i] {
            self.marks[i] = wm;
        }
        self.recompute()
    }

    /// Input `i` is idle; returns the combined watermark if that advanced it.
    pub fn on_idle(&mut self, i: usize) -> Option<Timestamp> {
        self.idle[i] = true;
        self.recompute()
    }

    /// Input `i` ended; returns the combined watermark if it advanced.
    pub fn on_end(&mut self, i: usize) -> Option<Timestamp> {
        self.ended[i] = true;
        self.marks[i] = MAX_WATERMARK;
        self.recompute()
    }

    fn recompute(&mut self) -> Option<Timestamp> {
        let min = self
            .marks
            .iter()
            .zip(&self.idle)
            .filter(|(_, idle)| !**idle)
            .map(|(m, _)| *m)
            .min()
            // Every input idle: none will move its watermark for now, so
            // the largest any of them reached stands (Flink's valve does
            // the same). Otherwise inputs that went idle one after another
            // (the last one before it had sent any) would leave windows
            // that every input has passed unfired until data resumes.
            .or_else(|| self.marks.iter().copied().max());
        match min {
            Some(m) if m > self.current => {
                self.current = m;
                Some(m)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_generator_trails_max_by_bound() {
        let mut g = Watermarks::bounded_out_of_orderness(Duration::from_millis(100)).generator();
        assert_eq!(g.on_batch(&[1000, 900]), Some(900));
        assert_eq!(g.on_batch(&[950]), None);
        assert_eq!(g.on_batch(&[1200]), Some(1100));
    }

    #[test]
    fn alignment_pauses_only_the_instance_ahead() {
        let a = WatermarkAlignment::new(3, 100);
        a.report(0, 1_000);
        assert!(!a.should_pause(0, 1_000), "alone among active instances");
        a.report(1, 850);
        assert!(a.should_pause(0, 1_000));
        assert!(!a.should_pause(1, 850));
        a.withdraw(1);
        assert!(
            !a.should_pause(0, 1_000),
            "an idle instance holds no one back"
        );
    }

    #[test]
    fn a_pause_wakes_on_a_report_made_before_it_waits() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let a = WatermarkAlignment::new(2, 100);
        a.report(1, 0);
        let seen = a.reports();
        assert!(a.should_pause(0, 1_000));
        // The slow instance reports after the decision, before the wait:
        // the wait must end at once, not sleep out its timeout.
        a.report(1, 950);
        let start = std::time::Instant::now();
        rt.block_on(a.progress_since(seen, Duration::from_secs(5)));
        assert!(start.elapsed() < Duration::from_secs(1), "report missed");
        // With no report since, it waits (here for its timeout).
        let seen = a.reports();
        let start = std::time::Instant::now();
        rt.block_on(a.progress_since(seen, Duration::from_millis(50)));
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn none_strategy_emits_nothing() {
        let mut g = Watermarks::none().generator();
        assert_eq!(g.on_batch(&[1000]), None);
    }

    #[test]
    fn idle_after_timeout_once() {
        let mut g = Watermarks::ascending()
            .with_idle_timeout(Duration::from_millis(0))
            .generator();
        assert!(g.check_idle());
        assert!(!g.check_idle());
        g.on_batch(&[5]);
        assert!(g.check_idle());
    }

    #[test]
    fn when_every_input_is_idle_the_largest_watermark_stands() {
        let mut w = InputWatermarks::new(2);
        assert_eq!(w.on_watermark(0, 358), None, "input 1 holds");
        assert_eq!(w.on_idle(0), None, "input 1 still holds");
        assert_eq!(
            w.on_idle(1),
            Some(358),
            "input 1 idle without ever sending one: input 0's stands"
        );
        assert_eq!(w.on_watermark(1, 100), None, "never back");
    }

    #[test]
    fn min_over_inputs_skips_idle_and_ended() {
        let mut w = InputWatermarks::new(3);
        assert_eq!(w.on_watermark(0, 10), None);
        assert_eq!(w.on_watermark(1, 20), None);
        assert_eq!(w.on_idle(2), Some(10));
        assert_eq!(w.on_end(0), Some(20));
        assert_eq!(
            w.on_watermark(2, 5),
            None,
            "a resumed input cannot move the watermark back"
        );
        assert_eq!(w.current(), 20);
        assert_eq!(w.on_end(1), None);
        assert_eq!(w.on_end(2), Some(MAX_WATERMARK));
        assert!(w.all_ended());
    }
}
