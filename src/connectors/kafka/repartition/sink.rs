//! The upstream side of a repartition topic.
//!
//! Owns [`RepartitionSink`] (a [`KafkaSink`] with the repartition format,
//! records placed by their key's stable hash, the writer index of its
//! instances) and [`RepartitionWriter`] (a [`KafkaWriter`] that also writes
//! control records). Each record goes to partition
//! `key_partition(key_hash(key), partitions)`, the placement the in-process
//! exchange uses, so a key reaches the same downstream task wherever it was
//! written. When the input's watermark advances (at most once per
//! [`RepartitionSink::control_interval`], and always before a flush), when
//! the input goes idle and when it ends, the writer writes a control
//! record into every partition: in the same transaction as the data
//! before it, when exactly-once.
//!
//! Never writes a control record whose watermark is behind one it wrote
//! (in this run), never writes data after its end-of-input record, and
//! never chooses a partition any other way than the pinned key hash.

use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::marks::Mark;
use super::record::{control_payload, Repartitioned, Writer};
use crate::connectors::kafka::{KafkaConfig, KafkaSink, KafkaStatus, KafkaWriter, KeyFn};
use crate::pipeline::keyed::{key_hash, key_partition};
use crate::pipeline::partition::Partitioner;
use crate::pipeline::{
    Batch, BuildError, CheckpointCommitter, ConnectorError, Sink, SinkWriter, TaskContext,
    Timestamp,
};

/// Places a record by the stable hash of the key `F` borrows from it.
pub struct ByKey<F, K: ?Sized>(F, PhantomData<fn(&K)>);

impl<F: Clone, K: ?Sized> Clone for ByKey<F, K> {
    fn clone(&self) -> Self {
        ByKey(self.0.clone(), PhantomData)
    }
}

impl<T, F, K> KeyFn<T> for ByKey<F, K>
where
    F: Fn(&T) -> &K + Clone + Send + Sync + 'static,
    K: Hash + ?Sized + 'static,
{
    #[inline]
    fn key(&self, _: &T, _: &mut Vec<u8>) -> bool {
        false
    }

    #[inline]
    fn partition(&self, value: &T, partitions: u32) -> Option<i32> {
        Some(key_partition(key_hash((self.0)(value)), partitions.max(1) as usize) as i32)
    }
}

/// Places a record as a job graph's exchange `X` would place it among the
/// topic's partitions (`HashBy`: its key's stable hash); an exchange that
/// does not route by record (`RoundRobin`) leaves the choice to
/// librdkafka's partitioner.
#[derive(Clone)]
pub struct ByExchange<X>(X);

impl<T, X> KeyFn<T> for ByExchange<X>
where
    X: Partitioner<T> + Sync,
{
    #[inline]
    fn key(&self, _: &T, _: &mut Vec<u8>) -> bool {
        false
    }

    #[inline]
    fn partition(&self, value: &T, partitions: u32) -> Option<i32> {
        self.0
            .routes_records()
            .then(|| self.0.route(value, partitions.max(1) as usize) as i32)
    }
}

/// Writes a stage's output to a repartition topic.
///
/// ```no_run
/// use weir::connectors::kafka::repartition::RepartitionSink;
/// #[derive(serde::Serialize)]
/// struct Click { user: String, ts: i64 }
/// let sink = RepartitionSink::new("127.0.0.1:9092", "weir-clicks-count-repartition",
///         |c: &Click| &c.user)
///     .first_writer(0) // this process's instances are writers 0, 1, ..
///     .exactly_once("weir-clicks-parse-0");
/// # let _ = sink;
/// ```
pub struct RepartitionSink<T, K> {
    inner: KafkaSink<T, Repartitioned<T>, K>,
    first_writer: usize,
    /// The upstream stage's writer count, written into control records.
    writers: Option<usize>,
    control_interval: Duration,
}

impl<T, F, K> RepartitionSink<T, ByKey<F, K>>
where
    F: Fn(&T) -> &K + Clone + Send + Sync + 'static,
    K: Hash + ?Sized + 'static,
{
    /// Records to `topic`, placed by the key `key` borrows from each.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>, key: F) -> Self {
        Self::placed_by(brokers, topic, ByKey(key, PhantomData))
    }
}

impl<T, X: Partitioner<T> + Sync> RepartitionSink<T, ByExchange<X>> {
    /// Records to `topic`, each to the partition the graph's exchange `X`
    /// routes it to (the cluster's stage planner cuts a graph there).
    pub fn by_exchange(brokers: impl Into<String>, topic: impl Into<String>, exchange: X) -> Self {
        Self::placed_by(brokers, topic, ByExchange(exchange))
    }
}

impl<T, K> RepartitionSink<T, K> {
    /// Records to `topic`, each to the partition `placement` picks.
    fn placed_by(brokers: impl Into<String>, topic: impl Into<String>, placement: K) -> Self {
        // A deleted repartition topic (its job cancelled) must not come
        // back with the broker's default partition count because a writer
        // still flushing asked for its metadata.
        let inner = KafkaSink::<T>::with_format(brokers, topic, Repartitioned::new(0))
            .set("allow.auto.create.topics", "false");
        RepartitionSink {
            inner: inner.with_key(placement),
            first_writer: 0,
            writers: None,
            control_interval: Duration::from_millis(200),
        }
    }

    /// The writer index of this sink's instance 0 (instance `i` is writer
    /// `first + i`): writers are numbered `0..n` over every process of the
    /// upstream stage, and the downstream source is told `n`.
    pub fn first_writer(mut self, first: usize) -> Self {
        self.first_writer = first;
        self
    }

    /// How many writers the upstream stage has in all (its parallelism):
    /// written into every control record, so a reader configured for
    /// another count (a layout before or after a rescale) ignores them.
    pub fn writers(mut self, n: usize) -> Self {
        self.writers = Some(n);
        self
    }

    /// The shortest time between two watermark control records (default
    /// 200 ms); a flush (checkpoint) always writes the latest.
    pub fn control_interval(mut self, d: Duration) -> Self {
        self.control_interval = d;
        self
    }

    /// Exactly-once, as [`KafkaSink::exactly_once`]: the records and control
    /// records of a checkpoint period are committed in one transaction
    /// when the checkpoint completes.
    pub fn exactly_once(mut self, transactional_id: impl Into<String>) -> Self {
        self.inner = self.inner.exactly_once(transactional_id);
        self
    }

    /// Sets any librdkafka producer option.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.inner = self.inner.set(key, value);
        self
    }

    /// Replaces the client settings.
    pub fn with_config(mut self, config: KafkaConfig) -> Self {
        self.inner = self.inner.with_config(config);
        self
    }

    /// The connection state shared by this sink's writers.
    pub fn status(&self) -> KafkaStatus {
        self.inner.status()
    }
}

impl<T, K> Sink for RepartitionSink<T, K>
where
    T: Serialize + Send + 'static,
    K: KeyFn<T>,
{
    type In = T;
    type Writer = RepartitionWriter<T, K>;

    fn validate(&self) -> Result<(), BuildError> {
        self.inner.validate()
    }

    fn committer(&self) -> Option<Arc<dyn CheckpointCommitter>> {
        self.inner.committer()
    }

    fn open(&self, ctx: &TaskContext) -> Result<Self::Writer, ConnectorError> {
        let inner = self.inner.open(ctx)?;
        let writer = Writer {
            index: self.first_writer + ctx.subtask,
            of: self.writers,
        };
        tracing::info!(task = %ctx.task_name(), writer = writer.index, writers = ?writer.of, partitions = inner.partitions(), "repartition sink: writing");
        Ok(RepartitionWriter {
            inner,
            writer,
            interval: self.control_interval,
            sent: None,
            sent_at: Instant::now(),
            pending: None,
            ended: false,
        })
    }
}

/// One instance's writer of a [`RepartitionSink`].
pub struct RepartitionWriter<T, K> {
    inner: KafkaWriter<T, Repartitioned<T>, K>,
    /// This instance's writer index (and its stage's writer count).
    writer: Writer,
    interval: Duration,
    /// The last mark written.
    sent: Option<Mark>,
    sent_at: Instant,
    /// A mark not written yet (rate limit).
    pending: Option<Mark>,
    ended: bool,
}

impl<T, K> RepartitionWriter<T, K>
where
    T: Serialize + Send + 'static,
    K: KeyFn<T>,
{
    /// Writes the pending mark into every partition, if due (or `now`).
    fn send_pending(&mut self, now: bool) -> Result<(), ConnectorError> {
        let Some(mark) = self.pending else {
            return Ok(());
        };
        if !now && self.sent_at.elapsed() < self.interval {
            return Ok(());
        }
        self.pending = None;
        if self.sent == Some(mark) {
            return Ok(());
        }
        let (headers, payload) = control_payload(self.writer, mark);
        self.inner.send_to_every_partition(&headers, &payload)?;
        tracing::debug!(
            writer = self.writer.index,
            ?mark,
            "repartition sink: control record"
        );
        self.sent = Some(mark);
        self.sent_at = Instant::now();
        Ok(())
    }
}

impl<T, K> SinkWriter for RepartitionWriter<T, K>
where
    T: Serialize + Send + 'static,
    K: KeyFn<T>,
{
    type In = T;

    fn write(&mut self, batch: &mut Batch<T>) -> Result<(), ConnectorError> {
        if self.ended && !batch.is_empty() {
            return Err(ConnectorError::new(
                "repartition sink: records after end of input",
            ));
        }
        self.inner.write(batch)?;
        self.send_pending(false)
    }

    fn watermark(&mut self, watermark: Timestamp) -> Result<(), ConnectorError> {
        // The sink actor calls this only when its input's watermark advanced.
        self.pending = Some(Mark::Watermark(watermark));
        self.send_pending(false)
    }

    fn idle(&mut self) -> Result<(), ConnectorError> {
        self.pending = Some(Mark::Idle);
        self.send_pending(true)
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        self.send_pending(true)?;
        self.inner.flush()
    }

    fn close(&mut self) -> Result<(), ConnectorError> {
        self.send_pending(true)?;
        if !self.ended {
            self.pending = Some(Mark::End);
            self.send_pending(true)?;
            self.ended = true;
        }
        self.inner.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::partition::{HashBy, RoundRobin};

    /// A record cut into a repartition topic lands on the partition the
    /// in-process exchange would send it to: a key meets the same task
    /// whichever launcher runs the graph.
    #[test]
    fn by_exchange_places_records_as_the_in_process_exchange_routes_them() {
        let hash = HashBy::new(|r: &(String, u64)| r.0.clone());
        let placed = ByExchange(hash.clone());
        for n in [1usize, 2, 3, 7, 16] {
            for i in 0..500u64 {
                let r = (format!("user-{i}"), i);
                let routed = Partitioner::route(&hash, &r, n) as i32;
                assert_eq!(placed.partition(&r, n as u32), Some(routed));
                fn user(r: &(String, u64)) -> &String {
                    &r.0
                }
                let by_key: ByKey<_, String> = ByKey(user, PhantomData);
                assert_eq!(by_key.partition(&r, n as u32), Some(routed));
            }
        }
        // An exchange that does not route by record leaves it to librdkafka.
        let spread = ByExchange(RoundRobin::default());
        assert_eq!(KeyFn::<u64>::partition(&spread, &1, 4), None);
    }
}
