//! The downstream side of a repartition topic.
//!
//! Owns [`RepartitionSource`] and [`RepartitionReader`]: a [`KafkaSource`]
//! over the repartition format, every partition (or the listed ones)
//! assigned explicitly and split over the instances, read
//! `read_committed`. The Kafka reader does the work (positions, seeks,
//! outages, exactly-once offsets in the sink's transaction, restore): it
//! sees the topic's upstream writer count, takes control records out of
//! the stream into each partition's `UpstreamMarks`
//! and reports the watermark rule through `ReaderWatermark`; once every
//! writer wrote its end of input into each of its partitions and they are
//! read to their end, the reader is finished. This module
//! only strips the event time off each record on its way to user code.
//!
//! Never hands a control record to user code, never lets the watermark
//! pass an upstream writer not heard from yet, never joins a consumer
//! group (whose rebalances would move partitions between tasks).

use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::{Duration, Instant};

use super::record::{Repartitioned, Stamped};
use crate::connectors::kafka::{KafkaConfig, KafkaReader, KafkaSource, KafkaStatus};
use crate::pipeline::{
    Batch, BuildError, CommittedCheckpoint, ConnectorError, Emit, ReaderWatermark, Source,
    SourceReader, SourceStatus, TaskContext, Timestamp,
};

type Inner<T> = KafkaSource<Repartitioned<T>>;
/// The Kafka reader underneath (no timestamp extractor: the codec
/// carries each record's time).
type InnerReader<T> = KafkaReader<Repartitioned<T>, fn(&Stamped<T>) -> Timestamp>;

/// Reads a repartition topic written by `writers` upstream writers.
///
/// ```no_run
/// use weir::connectors::kafka::repartition::RepartitionSource;
/// #[derive(serde::Deserialize)]
/// struct Click { user: String, ts: i64 }
/// // Two upstream writers; this process reads partition 1 of 2.
/// let clicks = RepartitionSource::<Click>::new("127.0.0.1:9092",
///         "weir-clicks-count-repartition", 2)
///     .partitions([1])
///     .exactly_once();
/// # let _ = clicks;
/// ```
#[derive(Clone)]
pub struct RepartitionSource<T: DeserializeOwned + Send + 'static> {
    inner: Inner<T>,
}

impl<T: DeserializeOwned + Send + 'static> RepartitionSource<T> {
    /// Every partition of `topic`, split over the instances; `writers`
    /// upstream writers (numbered `0..writers`) hold its watermark.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>, writers: usize) -> Self {
        let inner = KafkaSource::with_format(brokers, topic, Repartitioned::new(writers))
            .dead_letters_to_job()
            .assign_all();
        RepartitionSource { inner }
    }

    /// Only these partitions, split over the instances (`i, i + p, ..`).
    pub fn partitions(mut self, partitions: impl Into<Vec<i32>>) -> Self {
        self.inner = self.inner.partitions(partitions);
        self
    }

    /// Exactly-once, as [`KafkaSource::exactly_once`]: positions committed
    /// in the transaction of the job's exactly-once sink.
    pub fn exactly_once(mut self) -> Self {
        self.inner = self.inner.exactly_once();
        self
    }

    /// Lets a rescale hand other copies' partitions and keyed state to
    /// this one, as [`KafkaSource::take_over_from`]; keys split by the
    /// topic's placement.
    pub fn take_over_from(mut self, prefix: impl Into<String>) -> Self {
        self.inner = self.inner.take_over_from(prefix);
        self
    }

    /// The group its positions are committed for (default `weir-<job>`).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.inner = self.inner.group(group);
        self
    }

    /// Sets any librdkafka consumer option.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.inner = self.inner.set(key, value);
        self
    }

    /// Replaces the client settings.
    pub fn with_config(mut self, config: KafkaConfig) -> Self {
        self.inner = self.inner.with_config(config);
        self
    }

    /// How long opening waits for a broker before failing (default 30 s).
    pub fn startup_timeout(mut self, d: Duration) -> Self {
        self.inner = self.inner.startup_timeout(d);
        self
    }

    /// The connection state shared by this source's readers.
    pub fn status(&self) -> KafkaStatus {
        self.inner.status()
    }
}

impl<T: DeserializeOwned + Send + 'static> Source for RepartitionSource<T> {
    type Out = T;
    type Reader = RepartitionReader<T>;

    fn validate(&self) -> Result<(), BuildError> {
        self.inner.validate()
    }

    fn max_parallelism(&self) -> Option<usize> {
        self.inner.max_parallelism()
    }

    fn committed_checkpoint(&self, job: &str) -> Result<CommittedCheckpoint, ConnectorError> {
        self.inner.committed_checkpoint_keyed(job, true)
    }

    fn positions_by_partition(&self) -> bool {
        self.inner.positions_by_partition()
    }

    fn checkpoint_owners(&self, job: &str) -> Option<crate::pipeline::CheckpointOwners> {
        self.inner.checkpoint_owners(job)
    }

    fn open(&self, ctx: &TaskContext) -> Result<Self::Reader, ConnectorError> {
        Ok(RepartitionReader {
            inner: self.inner.open(ctx)?,
            last: ReaderWatermark::Held,
            drain_until: None,
        })
    }
}

/// One instance's reader of a [`RepartitionSource`].
pub struct RepartitionReader<T: DeserializeOwned + Send + 'static> {
    inner: InnerReader<T>,
    /// The last watermark reported (logged when it changes).
    last: ReaderWatermark,
    /// Draining: read on until every upstream writer has ended (they drain
    /// too when their job is cancelled with `--drain`), at most until then.
    drain_until: Option<Instant>,
}

/// How long a draining downstream stage reads on for its upstream
/// writers' end marks before it ends anyway (an upstream that is not
/// draining, e.g. one worker's own stop, never sends them).
pub const UPSTREAM_DRAIN_WAIT: Duration = Duration::from_secs(20);

/// Hands a stamped record's value on, with its time.
struct Unstamp<'a, E>(&'a mut E);

impl<T, E: Emit<T>> Emit<Stamped<T>> for Unstamp<'_, E> {
    #[inline(always)]
    fn emit(&mut self, value: Stamped<T>, ts: Timestamp) {
        self.0.emit(value.value, ts)
    }
}

impl<T: DeserializeOwned + Send + 'static> SourceReader for RepartitionReader<T> {
    type Out = T;

    fn poll(&mut self, out: &mut Batch<T>, max: usize) -> Result<SourceStatus, ConnectorError> {
        self.poll_into(&mut Batch::default(), out, max)
            .map(|(s, _)| s)
    }

    #[inline]
    fn poll_into<E: Emit<T>>(
        &mut self,
        _scratch: &mut Batch<T>,
        out: &mut E,
        max: usize,
    ) -> Result<(SourceStatus, usize), ConnectorError> {
        if self.drain_until.is_some_and(|d| Instant::now() >= d) {
            tracing::warn!(
                wait_s = UPSTREAM_DRAIN_WAIT.as_secs(),
                "repartition source: draining without every upstream writer's end"
            );
            return Ok((SourceStatus::Finished, 0));
        }
        self.inner.poll_emit(&mut Unstamp(out), max)
    }

    /// A downstream stage drains with its upstream: what the upstream
    /// writers wrote before their end marks is read and counted first
    /// (bounded by [`UPSTREAM_DRAIN_WAIT`]), so a job drained as a whole
    /// fires windows with every record its first stage read.
    fn drain(&mut self) -> bool {
        self.drain_until = Some(Instant::now() + UPSTREAM_DRAIN_WAIT);
        false
    }

    fn position(&self) -> Option<Value> {
        self.inner.position()
    }

    fn seek(&mut self, position: &Value) -> Result<(), ConnectorError> {
        self.inner.seek(position)
    }

    fn commit(&mut self, position: &Value) -> Result<(), ConnectorError> {
        self.inner.commit(position)
    }

    fn watermark(&mut self) -> ReaderWatermark {
        let w = self.inner.watermark();
        if w != self.last {
            tracing::debug!(watermark = ?w, "repartition source: watermark");
            self.last = w;
        }
        w
    }
}
