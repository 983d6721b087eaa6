//! Dead-letter and late-record outputs that write to Kafka topics.
//!
//! Owns the small producer a source reader uses for records it cannot
//! decode ([`DlqProducer`]: raw payload unchanged, headers `error`,
//! `source.topic`, `source.partition`, `source.offset`), [`KafkaLateSink`]
//! (records too late for every window, header `error: late`) and
//! [`KafkaDeadLetters`] (the job-wide dead-letter output on a topic). Never
//! drops a letter silently: a full queue is waited out, a failed delivery is
//! counted and reported.

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use std::marker::PhantomData;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::config::KafkaConfig;
use super::error::KafkaConnectorError;
use super::format::{FromKafka, JsonValue, KafkaEncode};
use super::headers;
use super::status::{KafkaStatus, ProducerCtx};
use crate::pipeline::{ConnectorError, DeadLetter, DeadLetterSink, LateSink, Timestamp};

/// Producer defaults for weir's producers (sink and dead letters).
pub(crate) const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("acks", "all"),
    ("enable.idempotence", "true"),
    ("linger.ms", "5"),
    ("batch.num.messages", "10000"),
    ("statistics.interval.ms", "1000"),
    ("socket.timeout.ms", "10000"),
    ("topic.metadata.refresh.interval.ms", "5000"),
];

/// Creates a weir producer with `extra` settings on top of the defaults.
pub(crate) fn create_producer(
    config: &KafkaConfig,
    extra: &[(&str, &str)],
    status: &KafkaStatus,
) -> Result<BaseProducer<ProducerCtx>, KafkaConnectorError> {
    let mut defaults: Vec<(&str, &str)> = PRODUCER_DEFAULTS.to_vec();
    defaults.extend_from_slice(extra);
    config
        .client_config(&defaults)
        .create_with_context(ProducerCtx::new(status.clone()))
        .map_err(|e| KafkaConnectorError::client("producer creation", e))
}

/// Sends one record, waiting out a full local queue (never dropping it).
pub(crate) fn send_retrying(
    producer: &BaseProducer<ProducerCtx>,
    mut record: BaseRecord<'_, [u8], [u8]>,
    status: &KafkaStatus,
) -> Result<(), KafkaConnectorError> {
    let mut since: Option<Instant> = None;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((e, back)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                record = back;
                let start = *since.get_or_insert_with(Instant::now);
                if start.elapsed() > Duration::from_secs(5) {
                    status.set_waiting("local produce queue full: broker not acknowledging");
                }
                producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => return Err(KafkaConnectorError::client("produce", e)),
        }
    }
}

/// Waits until every produced record is acknowledged or failed; `Ok(false)`
/// if `limit` passed first. Reports "waiting for broker" while it waits.
/// Through a broker outage the idempotent producer retries on its own and
/// the broker (which keeps producer state across restarts) acknowledges
/// the retries; a record it cannot deliver fails its delivery within
/// `message.timeout.ms`, which the caller sees in the delivery counts.
pub(crate) fn flush_producer(
    producer: &BaseProducer<ProducerCtx>,
    limit: Option<Duration>,
    status: &KafkaStatus,
) -> Result<bool, KafkaConnectorError> {
    let start = Instant::now();
    let mut told = Duration::ZERO;
    loop {
        match producer.flush(Duration::from_millis(500)) {
            Ok(()) => {
                if told > Duration::ZERO {
                    tracing::info!(
                        waited_s = start.elapsed().as_secs(),
                        "kafka producer: every record acknowledged"
                    );
                }
                return Ok(true);
            }
            Err(_) => {
                let n = producer.in_flight_count();
                if start.elapsed() > Duration::from_secs(2) && n > 0 {
                    status.set_waiting(&format!("{n} record(s) not yet acknowledged"));
                }
                // A long wait holds the actor's thread (and the other
                // actors of its slice): say so every 10 s.
                if start.elapsed() >= told + Duration::from_secs(10) {
                    told = start.elapsed();
                    tracing::warn!(
                        waited_s = told.as_secs(),
                        in_flight = n,
                        "kafka producer: still waiting for acknowledgements"
                    );
                }
                if limit.is_some_and(|l| start.elapsed() >= l) {
                    return Ok(false);
                }
            }
        }
    }
}

/// The dead-letter producer a source reader owns.
pub(crate) struct DlqProducer {
    producer: BaseProducer<ProducerCtx>,
    topic: String,
    status: KafkaStatus,
}

impl DlqProducer {
    pub(crate) fn new(
        config: &KafkaConfig,
        topic: &str,
        status: &KafkaStatus,
    ) -> Result<Self, KafkaConnectorError> {
        Ok(DlqProducer {
            producer: create_producer(config, &[], status)?,
            topic: topic.to_string(),
            status: status.clone(),
        })
    }

    /// Produces `payload` unchanged with its provenance headers.
    pub(crate) fn send(
        &self,
        payload: &[u8],
        key: Option<&[u8]>,
        error: &str,
        source: (&str, i32, i64),
    ) -> Result<(), KafkaConnectorError> {
        let (partition, offset) = (source.1.to_string(), source.2.to_string());
        let hdrs = OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: headers::ERROR,
                value: Some(error),
            })
            .insert(Header {
                key: headers::SOURCE_TOPIC,
                value: Some(source.0),
            })
            .insert(Header {
                key: headers::SOURCE_PARTITION,
                value: Some(&partition),
            })
            .insert(Header {
                key: headers::SOURCE_OFFSET,
                value: Some(&offset),
            });
        let mut rec = BaseRecord::to(&self.topic).payload(payload).headers(hdrs);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        send_retrying(&self.producer, rec, &self.status)
    }

    /// Serves delivery reports; an error if any dead letter was lost.
    pub(crate) fn check(&self) -> Result<(), KafkaConnectorError> {
        self.producer.poll(Duration::ZERO);
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

    /// Waits (up to `limit`, if any) for every dead letter to be
    /// acknowledged; an error if any was lost. `Ok(false)`: the limit
    /// passed first.
    pub(crate) fn flush(&self, limit: Option<Duration>) -> Result<bool, KafkaConnectorError> {
        let done = flush_producer(&self.producer, limit, &self.status)?;
        self.check()?;
        Ok(done)
    }
}

impl Drop for DlqProducer {
    fn drop(&mut self) {
        if !flush_producer(&self.producer, Some(Duration::from_secs(10)), &self.status)
            .unwrap_or(false)
        {
            tracing::error!(topic = %self.topic, n = self.producer.in_flight_count(), "dead letters not acknowledged before close");
        }
    }
}

/// The partition and offset a record was read from.
type PositionOf<T> = fn(&T) -> (i32, i64);

/// Late records (too late for every window) written to a topic, encoded
/// with `E` (JSON by default), with headers `error: late` and
/// `source.topic`, and `source.partition` / `source.offset` (`-1` unless the
/// records carry them: [`KafkaLateSink::json_with_positions`]). A record it
/// cannot take, or a lost delivery, is an error for the window task;
/// [`LateSink::flush`] (before each window snapshot and at the end of
/// input) waits for every acknowledgement.
///
/// ```no_run
/// use weir::connectors::kafka::KafkaLateSink;
/// use weir::pipeline::LateRecords;
/// #[derive(serde::Serialize)]
/// struct Click { user: String, ts: i64 }
/// let late = LateRecords::to(KafkaLateSink::<Click>::json("127.0.0.1:9092", "clicks.dlq", "clicks"));
/// # let _ = late;
/// ```
pub struct KafkaLateSink<T, E = JsonValue> {
    config: KafkaConfig,
    topic: String,
    source_topic: String,
    /// Where a record was read, when records know it.
    position: Option<PositionOf<T>>,
    encode: E,
    status: KafkaStatus,
    producer: Mutex<Option<Arc<DlqProducer>>>,
    _t: PhantomData<fn(T)>,
}

impl<T> KafkaLateSink<T, JsonValue> {
    /// Late records as JSON to `topic`; `source_topic` is their input.
    pub fn json(
        brokers: impl Into<String>,
        topic: impl Into<String>,
        source_topic: impl Into<String>,
    ) -> Self {
        let brokers = brokers.into();
        KafkaLateSink {
            status: KafkaStatus::new(&brokers),
            config: KafkaConfig::new(brokers),
            topic: topic.into(),
            source_topic: source_topic.into(),
            position: None,
            encode: JsonValue,
            producer: Mutex::new(None),
            _t: PhantomData,
        }
    }
}

impl<T> KafkaLateSink<FromKafka<T>, JsonValue> {
    /// Late records that know where they were read (a source with
    /// `KafkaSource::with_positions`) as JSON of their value, with headers
    /// `source.partition` and `source.offset` naming the input record.
    pub fn json_with_positions(
        brokers: impl Into<String>,
        topic: impl Into<String>,
        source_topic: impl Into<String>,
    ) -> Self {
        let mut late = KafkaLateSink::json(brokers, topic, source_topic);
        late.position = Some(|r: &FromKafka<T>| (r.partition, r.offset));
        late
    }
}

impl<T, E> KafkaLateSink<T, E> {
    /// Uses these client settings (bootstrap servers included).
    pub fn with_config(mut self, config: KafkaConfig) -> Self {
        self.status = KafkaStatus::new(config.brokers());
        self.config = config;
        self
    }

    fn producer(&self) -> Result<Arc<DlqProducer>, KafkaConnectorError> {
        let mut p = self.producer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = p.as_ref() {
            return Ok(p.clone());
        }
        let made = Arc::new(DlqProducer::new(&self.config, &self.topic, &self.status)?);
        *p = Some(made.clone());
        Ok(made)
    }
}

impl<T: Send + 'static, E: KafkaEncode<T>> LateSink<T> for KafkaLateSink<T, E> {
    /// Each window task gets its own producer (made at its first late
    /// record): a delivery failure that failed one attempt is not inherited
    /// by the next, and instances flush only their own records.
    fn for_task(
        &self,
        _ctx: &crate::pipeline::TaskContext,
    ) -> Result<Option<Arc<dyn LateSink<T>>>, ConnectorError> {
        Ok(Some(Arc::new(KafkaLateSink {
            config: self.config.clone(),
            topic: self.topic.clone(),
            source_topic: self.source_topic.clone(),
            position: self.position,
            encode: self.encode.clone(),
            status: self.status.clone(),
            producer: Mutex::new(None),
            _t: PhantomData,
        })))
    }

    /// Produces each record; an error (failing the window task, which then
    /// replays from its last checkpoint) if the producer cannot be made, a
    /// record cannot be encoded or queued, or an earlier one was lost.
    fn write(&self, records: Vec<(T, Timestamp)>) -> Result<(), ConnectorError> {
        let producer = self.producer()?;
        let mut buf = Vec::with_capacity(128);
        for (r, ts) in &records {
            buf.clear();
            self.encode.encode(r, &mut buf).map_err(|e| {
                ConnectorError::new(format!(
                    "late record (ts {ts}) for {} could not be encoded: {e}",
                    self.topic
                ))
            })?;
            let (partition, offset) = self.position.map_or((-1, -1), |at| at(r));
            producer.send(&buf, None, "late", (&self.source_topic, partition, offset))?;
        }
        producer.check()?;
        Ok(())
    }

    /// Waits for every late record to be acknowledged or failed, as the
    /// output sink's flush does: a frozen broker is waited out (status
    /// "waiting for broker"), a delivery that fails (`message.timeout.ms`)
    /// or a broker that came back without the producer's state is an error.
    fn flush(&self) -> Result<(), ConnectorError> {
        let producer = self
            .producer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(p) = producer {
            p.flush(None)?;
        }
        Ok(())
    }
}

/// The job-wide dead-letter output on a Kafka topic: payload as received,
/// headers `error` (the reason), `source.topic` (the source description)
/// and `source.position`. Each write waits for the broker's acknowledgement.
pub struct KafkaDeadLetters {
    producer: DlqProducer,
}

impl KafkaDeadLetters {
    /// Dead letters to `topic` on `brokers`.
    pub fn new(config: &KafkaConfig, topic: &str) -> Result<Self, KafkaConnectorError> {
        let status = KafkaStatus::new(config.brokers());
        Ok(KafkaDeadLetters {
            producer: DlqProducer::new(config, topic, &status)?,
        })
    }
}

impl DeadLetterSink for KafkaDeadLetters {
    fn write(&self, letters: &[DeadLetter]) -> Result<(), ConnectorError> {
        for l in letters {
            let hdrs = OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: headers::ERROR,
                    value: Some(&l.reason),
                })
                .insert(Header {
                    key: headers::SOURCE_TOPIC,
                    value: Some(&l.source),
                })
                .insert(Header {
                    key: "source.position",
                    value: Some(&l.position),
                });
            let rec = BaseRecord::to(&self.producer.topic)
                .payload(l.payload.as_bytes())
                .headers(hdrs);
            send_retrying(&self.producer.producer, rec, &self.producer.status)?;
        }
        if !self.producer.flush(Some(Duration::from_secs(30)))? {
            return Err(ConnectorError::new(format!(
                "dead letters to {} not acknowledged within 30 s",
                self.producer.topic
            )));
        }
        Ok(())
    }
}
