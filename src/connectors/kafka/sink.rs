//! The Kafka sink: batches of records produced to a topic, acknowledged.
//!
//! Owns [`KafkaSink`] (topic, value format, key or round-robin partitioning,
//! client options, transactions on/off) and [`KafkaWriter`] (one producer
//! per parallel instance). `write` hands every record of the batch to
//! librdkafka's queue (which batches per partition), waiting out a full
//! queue; `flush` waits for every delivery report and, with transactions,
//! commits the transaction (a new one begins with the next record). The
//! producer is idempotent with `acks=all` by default.
//!
//! Never drops a record: a failed delivery makes the next `write`/`flush`
//! fail the task (the records are then re-read from the last committed
//! position). Never fails on a transient outage: librdkafka retries until
//! `message.timeout.ms` (default 300 s), and the status shows "waiting".

use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::marker::PhantomData;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::config::{wait_for_topic, KafkaConfig};
use super::dead_letter::{create_producer, flush_producer, send_retrying, PRODUCER_DEFAULTS};
use super::error::KafkaConnectorError;
use super::format::{Bytes, JsonValue, KafkaEncode, TextValue};
use super::status::{KafkaStatus, ProducerCtx};
use super::transaction::CheckpointTransaction;
use crate::pipeline::{
    Batch, BuildError, CheckpointCommitter, ConnectorError, Sink, SinkWriter, TaskContext,
};

/// How a record's Kafka key (and so its partition) is chosen.
pub trait KeyFn<T>: Clone + Send + Sync + 'static {
    /// Writes the key of `value` into `out` (cleared by the caller);
    /// false for "no key" (round-robin).
    fn key(&self, value: &T, out: &mut Vec<u8>) -> bool;

    /// The partition of `value` among `partitions`, when the sink chooses it
    /// itself (repartition topics: the key's stable hash) rather than
    /// librdkafka's partitioner; `None` (the default): by [`key`](Self::key).
    #[inline]
    fn partition(&self, _value: &T, _partitions: u32) -> Option<i32> {
        None
    }
}

/// No key: records are spread round-robin over the partitions.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobin;

impl<T> KeyFn<T> for RoundRobin {
    #[inline]
    fn key(&self, _: &T, _: &mut Vec<u8>) -> bool {
        false
    }
}

/// Key from a closure; librdkafka's default partitioner hashes it.
#[derive(Clone)]
pub struct KeyBy<F>(F);

impl<T, F, K> KeyFn<T> for KeyBy<F>
where
    F: Fn(&T) -> K + Clone + Send + Sync + 'static,
    K: AsRef<[u8]>,
{
    #[inline]
    fn key(&self, value: &T, out: &mut Vec<u8>) -> bool {
        out.extend_from_slice((self.0)(value).as_ref());
        true
    }
}

/// Key written by a closure straight into the producer's key buffer: no
/// allocation per record (see [`KafkaSink::key_into`]).
#[derive(Clone)]
pub struct KeyInto<F>(F);

impl<T, F> KeyFn<T> for KeyInto<F>
where
    F: Fn(&T, &mut Vec<u8>) + Clone + Send + Sync + 'static,
{
    #[inline]
    fn key(&self, value: &T, out: &mut Vec<u8>) -> bool {
        (self.0)(value, out);
        true
    }
}

/// What a [`KafkaSink`] promises about its records when the job fails
/// (Flink's `DeliveryGuarantee`), chosen per sink with
/// [`KafkaSink::delivery`].
///
/// ```
/// use weir::connectors::kafka::{DeliveryGuarantee, KafkaSink};
/// # #[derive(serde::Serialize)] struct Out { n: u64 }
/// let eos = KafkaSink::<Out>::json("127.0.0.1:9092", "out")
///     .delivery(DeliveryGuarantee::ExactlyOnce { transactional_id: "weir-my-job".into() });
/// let fast = KafkaSink::<Out>::json("127.0.0.1:9092", "metrics")
///     .delivery(DeliveryGuarantee::None);
/// assert_eq!("at-least-once".parse::<DeliveryGuarantee>(), Ok(DeliveryGuarantee::AtLeastOnce));
/// # let _ = (eos, fast);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DeliveryGuarantee {
    /// Each record once for `read_committed` readers: the records of a
    /// checkpoint period go in one transaction, committed when the
    /// checkpoint completes ([`KafkaSink::exactly_once`]). Needs durable
    /// checkpoint storage and an exactly-once source.
    ExactlyOnce {
        /// Stable across restarts of the job, unique to it.
        transactional_id: String,
    },
    /// Every record at least once: each checkpoint waits until the broker
    /// acknowledged every record written before it. The default.
    #[default]
    AtLeastOnce,
    /// No promise: checkpoints do not wait for acknowledgements, so records
    /// in flight when the process dies may be lost (end of input and a
    /// drain still deliver everything, and a failure the producer reports
    /// still fails the task).
    None,
}

impl std::str::FromStr for DeliveryGuarantee {
    type Err = String;

    /// `at-least-once` or `none`; `exactly-once` needs a transactional id,
    /// so it is not parsed here (the binaries derive it from the job).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "at-least-once" => Ok(DeliveryGuarantee::AtLeastOnce),
            "none" => Ok(DeliveryGuarantee::None),
            other => Err(format!(
                "{other:?} is not a delivery guarantee this parser takes (at-least-once, none; \
                 exactly-once comes with its transactional id)"
            )),
        }
    }
}

/// Writes records to a Kafka topic.
///
/// ```no_run
/// use weir::connectors::kafka::KafkaSink;
/// #[derive(serde::Serialize)]
/// struct Out { user: String, n: u64 }
/// let sink = KafkaSink::<Out>::json("127.0.0.1:9092", "counts")
///     .key_by(|o: &Out| o.user.clone())
///     .set("linger.ms", "10");
/// # let _ = sink;
/// ```
pub struct KafkaSink<T, E = JsonValue, K = RoundRobin> {
    config: KafkaConfig,
    topic: String,
    encode: E,
    key: K,
    transactional: Option<String>,
    /// Exactly-once: the `transactional.id` of the job's transaction.
    exactly_once: Option<String>,
    /// Whether a checkpoint waits for every acknowledgement (false:
    /// [`DeliveryGuarantee::None`]).
    wait_at_checkpoint: bool,
    /// The transaction, made from the final settings on first use.
    txn: OnceLock<Arc<CheckpointTransaction>>,
    status: KafkaStatus,
    _t: PhantomData<fn(T)>,
}

impl<T> KafkaSink<T, JsonValue, RoundRobin> {
    /// Records as JSON documents.
    pub fn json(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self::with_format(brokers, topic, JsonValue)
    }

    /// Records as their `Display` text.
    pub fn text(
        brokers: impl Into<String>,
        topic: impl Into<String>,
    ) -> KafkaSink<T, TextValue, RoundRobin> {
        Self::with_format(brokers, topic, TextValue)
    }

    /// Records with a custom payload format.
    pub fn with_format<E>(
        brokers: impl Into<String>,
        topic: impl Into<String>,
        encode: E,
    ) -> KafkaSink<T, E, RoundRobin> {
        let brokers = brokers.into();
        KafkaSink {
            status: KafkaStatus::new(&brokers),
            config: KafkaConfig::new(brokers),
            topic: topic.into(),
            encode,
            key: RoundRobin,
            transactional: None,
            exactly_once: None,
            wait_at_checkpoint: true,
            txn: OnceLock::new(),
            _t: PhantomData,
        }
    }
}

impl KafkaSink<Vec<u8>, Bytes, RoundRobin> {
    /// Records are the raw payload bytes.
    pub fn bytes(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        KafkaSink::<Vec<u8>>::with_format(brokers, topic, Bytes)
    }
}

impl<T, E, K> KafkaSink<T, E, K> {
    /// Keys records with `f(record)`: equal keys go to one partition.
    pub fn key_by<F, R>(self, f: F) -> KafkaSink<T, E, KeyBy<F>>
    where
        F: Fn(&T) -> R + Clone + Send + Sync + 'static,
        R: AsRef<[u8]>,
    {
        self.with_key(KeyBy(f))
    }

    /// Places records with `key` (any [`KeyFn`]).
    pub(crate) fn with_key<K2>(self, key: K2) -> KafkaSink<T, E, K2> {
        KafkaSink {
            config: self.config,
            topic: self.topic,
            encode: self.encode,
            key,
            transactional: self.transactional,
            exactly_once: self.exactly_once,
            wait_at_checkpoint: self.wait_at_checkpoint,
            txn: self.txn,
            status: self.status,
            _t: PhantomData,
        }
    }

    /// Keys records with the bytes `f(record, key)` appends to `key` (an
    /// empty buffer it owns and reuses): like [`key_by`](Self::key_by), but
    /// a key borrowed from the record costs no allocation.
    ///
    /// ```
    /// use weir::connectors::kafka::KafkaSink;
    /// # #[derive(serde::Serialize)] struct Click { user: String }
    /// let sink = KafkaSink::<Click>::json("127.0.0.1:9092", "clicks")
    ///     .key_into(|c: &Click, key: &mut Vec<u8>| key.extend_from_slice(c.user.as_bytes()));
    /// ```
    pub fn key_into<F>(self, f: F) -> KafkaSink<T, E, KeyInto<F>>
    where
        F: Fn(&T, &mut Vec<u8>) + Clone + Send + Sync + 'static,
    {
        self.with_key(KeyInto(f))
    }

    /// Sets any librdkafka producer option (overrides weir's defaults).
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config = self.config.set(key, value);
        self
    }

    /// Replaces the client settings (bootstrap servers included).
    pub fn with_config(mut self, config: KafkaConfig) -> Self {
        self.status = KafkaStatus::new(config.brokers());
        self.config = config;
        self
    }

    /// How long opening waits for a broker before failing (default 30 s).
    pub fn startup_timeout(mut self, d: Duration) -> Self {
        self.config = self.config.startup_timeout(d);
        self
    }

    /// Produces in transactions, committed at every flush (checkpoint);
    /// `transactional.id` is `<prefix>-<job>-<stage>-<subtask>`, stable
    /// across restarts so a restarted task fences its predecessor.
    pub fn transactional(mut self, prefix: impl Into<String>) -> Self {
        self.transactional = Some(prefix.into());
        self
    }

    /// Exactly-once output, bound to the job's checkpoints: every instance
    /// writes into one transaction per checkpoint epoch, committed with the
    /// source offsets of the checkpoint once its state is stored (see
    /// [`CheckpointTransaction`]); readers with `read_committed` see each
    /// record once. `transactional_id` must be stable across restarts of
    /// the job and unique to it. Pair it with an exactly-once
    /// [`KafkaSource`](super::KafkaSource) and durable checkpoint storage.
    pub fn exactly_once(mut self, transactional_id: impl Into<String>) -> Self {
        self.exactly_once = Some(transactional_id.into());
        self
    }

    /// Chooses the sink's delivery guarantee (replacing an earlier
    /// [`exactly_once`](Self::exactly_once)).
    pub fn delivery(mut self, guarantee: DeliveryGuarantee) -> Self {
        match guarantee {
            DeliveryGuarantee::ExactlyOnce { transactional_id } => {
                self.exactly_once = Some(transactional_id);
                self.wait_at_checkpoint = true;
            }
            DeliveryGuarantee::AtLeastOnce => {
                self.exactly_once = None;
                self.wait_at_checkpoint = true;
            }
            DeliveryGuarantee::None => {
                self.exactly_once = None;
                self.wait_at_checkpoint = false;
            }
        }
        self
    }

    /// The connection state shared by this sink's writers.
    pub fn status(&self) -> KafkaStatus {
        self.status.clone()
    }

    fn transaction(&self) -> Option<&Arc<CheckpointTransaction>> {
        let id = self.exactly_once.as_ref()?;
        Some(self.txn.get_or_init(|| {
            Arc::new(CheckpointTransaction::new(
                self.config.clone(),
                self.status.clone(),
                id.clone(),
            ))
        }))
    }
}

impl<T, E, K> Sink for KafkaSink<T, E, K>
where
    T: Send + 'static,
    E: KafkaEncode<T>,
    K: KeyFn<T>,
{
    type In = T;
    type Writer = KafkaWriter<T, E, K>;

    fn validate(&self) -> Result<(), BuildError> {
        if self.topic.is_empty() {
            return Err(BuildError::invalid("sink.kafka.topic", "must not be empty"));
        }
        if self.config.brokers().is_empty() {
            return Err(BuildError::invalid(
                "sink.kafka.brokers",
                "must not be empty",
            ));
        }
        self.config
            .check(PRODUCER_DEFAULTS)
            .map_err(|e| e.into_build_error("sink.kafka"))
    }

    fn committer(&self) -> Option<Arc<dyn CheckpointCommitter>> {
        self.transaction()
            .map(|t| t.clone() as Arc<dyn CheckpointCommitter>)
    }

    fn open(&self, ctx: &TaskContext) -> Result<Self::Writer, ConnectorError> {
        if let Some(txn) = self.transaction() {
            let producer = txn.producer_for(ctx.attempt)?;
            let partitions =
                wait_for_topic(producer.client(), &self.config, &self.topic, &self.status)?;
            return Ok(self.writer(producer, partitions, ctx, false));
        }
        let client_id = format!("weir-{}-{}-{}", ctx.job, ctx.stage, ctx.subtask);
        let txn_id = self
            .transactional
            .as_ref()
            .map(|p| format!("{p}-{}-{}-{}", ctx.job, ctx.stage, ctx.subtask));
        let mut extra = vec![("client.id", client_id.as_str())];
        if let Some(id) = &txn_id {
            extra.push(("transactional.id", id));
        }
        let producer = create_producer(&self.config, &extra, &self.status)?;
        let partitions =
            wait_for_topic(producer.client(), &self.config, &self.topic, &self.status)?;
        if txn_id.is_some() {
            producer
                .init_transactions(self.config.startup_wait())
                .map_err(|e| KafkaConnectorError::client("init_transactions", e))?;
        }
        Ok(self.writer(Arc::new(producer), partitions, ctx, txn_id.is_some()))
    }
}

impl<T, E: Clone, K: Clone> KafkaSink<T, E, K> {
    fn writer(
        &self,
        producer: Arc<BaseProducer<ProducerCtx>>,
        partitions: usize,
        ctx: &TaskContext,
        transactional: bool,
    ) -> KafkaWriter<T, E, K> {
        KafkaWriter {
            producer,
            topic: self.topic.clone(),
            encode: self.encode.clone(),
            key: self.key.clone(),
            partitions: partitions as u32,
            rr: ctx.subtask as u32,
            value: Vec::with_capacity(256),
            keybuf: Vec::with_capacity(64),
            transactional,
            in_txn: false,
            wait_at_checkpoint: self.wait_at_checkpoint || transactional,
            status: self.status.clone(),
            future_stamps: 0,
            _t: PhantomData,
        }
    }
}

/// One instance's writer of a [`KafkaSink`].
pub struct KafkaWriter<T, E, K> {
    /// Its own producer, or (exactly-once) the job's shared transactional one.
    producer: Arc<BaseProducer<ProducerCtx>>,
    topic: String,
    encode: E,
    key: K,
    partitions: u32,
    rr: u32,
    value: Vec<u8>,
    keybuf: Vec<u8>,
    transactional: bool,
    in_txn: bool,
    /// Whether `flush` (a checkpoint) waits for every acknowledgement.
    wait_at_checkpoint: bool,
    status: KafkaStatus,
    /// Records whose event time was too far ahead to stamp.
    future_stamps: u64,
    _t: PhantomData<fn(T)>,
}

/// How far ahead of the clock a record's Kafka timestamp may be (below the
/// broker's default `log.message.timestamp.after.max.ms`, an hour).
const FUTURE_STAMP_LIMIT_MS: i64 = 50 * 60 * 1000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl<T, E, K> KafkaWriter<T, E, K> {
    /// A delivery failed: the task must fail (never a silent drop).
    fn check_deliveries(&self) -> Result<(), KafkaConnectorError> {
        let d = &self.producer.context().deliveries;
        let failed = d.failed.load(Relaxed);
        if failed > 0 {
            return Err(KafkaConnectorError::Delivery {
                topic: self.topic.clone(),
                failed,
                reason: d.first_error(),
            });
        }
        Ok(())
    }

    /// Records acknowledged by the broker so far.
    pub fn acknowledged(&self) -> u64 {
        self.producer.context().deliveries.acked.load(Relaxed)
    }

    /// The topic's partition count, as the writer saw it when it opened.
    pub(crate) fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Sends one record with `headers` and `payload` to every partition of
    /// the topic, in the current transaction (repartition control records).
    pub(crate) fn send_to_every_partition(
        &mut self,
        headers: &OwnedHeaders,
        payload: &[u8],
    ) -> Result<(), KafkaConnectorError> {
        self.check_deliveries()?;
        self.begin()?;
        for p in 0..self.partitions as i32 {
            let rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic)
                .payload(payload)
                .partition(p)
                .headers(headers.clone());
            send_retrying(&self.producer, rec, &self.status)?;
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    fn begin(&mut self) -> Result<(), KafkaConnectorError> {
        if self.transactional && !self.in_txn {
            self.producer
                .begin_transaction()
                .map_err(|e| KafkaConnectorError::client("begin_transaction", e))?;
            self.in_txn = true;
        }
        Ok(())
    }

    /// Waits for every delivery; with transactions, commits (or aborts on
    /// failure).
    fn deliver_all(&mut self) -> Result<(), KafkaConnectorError> {
        if let Err(e) = flush_producer(&self.producer, None, &self.status) {
            if self.in_txn {
                self.in_txn = false;
                let _ = self.producer.abort_transaction(Duration::from_secs(30));
            }
            return Err(e);
        }
        let checked = self.check_deliveries();
        if self.in_txn {
            self.in_txn = false;
            if checked.is_err() {
                let _ = self.producer.abort_transaction(Duration::from_secs(30));
                return checked;
            }
            if let Err(e) = self.producer.commit_transaction(Duration::from_secs(60)) {
                let _ = self.producer.abort_transaction(Duration::from_secs(30));
                return Err(KafkaConnectorError::client("commit_transaction", e));
            }
        }
        checked
    }
}

impl<T, E, K> SinkWriter for KafkaWriter<T, E, K>
where
    T: Send + 'static,
    E: KafkaEncode<T>,
    K: KeyFn<T>,
{
    type In = T;

    fn write(&mut self, batch: &mut Batch<T>) -> Result<(), ConnectorError> {
        self.check_deliveries()?;
        self.begin()?;
        // Kafka refuses a record stamped more than
        // `log.message.timestamp.after.max.ms` (an hour by default) ahead of
        // its clock, failing the whole transaction: a record whose event
        // time is that far ahead keeps the producer's time instead (once
        // per batch: no clock read per record).
        let latest_stamp = now_ms().saturating_add(FUTURE_STAMP_LIMIT_MS);
        for (v, ts) in batch.values.drain(..).zip(batch.timestamps.drain(..)) {
            self.value.clear();
            self.encode
                .encode_at(&v, ts, &mut self.value)
                .map_err(|e| ConnectorError::new(format!("kafka sink {}: {e}", self.topic)))?;
            let mut rec: BaseRecord<'_, [u8], [u8]> =
                BaseRecord::to(&self.topic).payload(&self.value[..]);
            if let Some(p) = self.key.partition(&v, self.partitions) {
                rec = rec.partition(p);
                send_retrying(&self.producer, rec, &self.status)?;
                continue;
            }
            self.keybuf.clear();
            let keyed = self.key.key(&v, &mut self.keybuf);
            if keyed {
                rec = rec.key(&self.keybuf[..]);
            } else if self.partitions > 0 {
                rec = rec.partition((self.rr % self.partitions) as i32);
                self.rr = self.rr.wrapping_add(1);
            }
            if ts > 0 && ts <= latest_stamp {
                rec = rec.timestamp(ts);
            } else if ts > latest_stamp {
                self.future_stamps += 1;
                if self.future_stamps == 1 {
                    tracing::warn!(topic = %self.topic, event_time = ts, "kafka sink: event time more than {} min ahead of the clock; the record keeps the producer's timestamp (the broker would refuse it)", FUTURE_STAMP_LIMIT_MS / 60_000);
                }
            }
            send_retrying(&self.producer, rec, &self.status)?;
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        if !self.wait_at_checkpoint {
            // DeliveryGuarantee::None: report what failed so far, wait for nothing.
            self.producer.poll(Duration::ZERO);
            return Ok(self.check_deliveries()?);
        }
        Ok(self.deliver_all()?)
    }

    fn close(&mut self) -> Result<(), ConnectorError> {
        Ok(self.deliver_all()?)
    }
}

impl<T, E, K> Drop for KafkaWriter<T, E, K> {
    fn drop(&mut self) {
        if self.in_txn {
            // Not flushed: whatever this transaction holds is uncommitted.
            let _ = self.producer.abort_transaction(Duration::from_secs(10));
        }
    }
}
