//! The Kafka source: records from a topic, in batches, at least once.
//!
//! Owns [`KafkaSource`] (the description: topic, group, assignment, format,
//! event-time extractor, dead-letter route, client options) and
//! [`KafkaReader`] (one consumer per parallel instance). Two assignment
//! modes: a consumer-group subscription (library use; the group balances
//! partitions between instances and processes) and explicit partitions
//! (the coordinated service: instance `i` of `p` reads the given partitions
//! at positions `i, i + p, ..`).
//!
//! The reader polls librdkafka without blocking (`poll(0)` up to `max`
//! records), tracks event time per partition (watermark = minimum over
//! non-idle partitions minus the bound), sends undecodable payloads
//! unchanged to the dead-letter topic, and reports/seeks positions
//! (`{"topic": .., "offsets": {"<partition>": next_offset}}`). It never
//! auto-commits: offsets are committed only by [`SourceReader::commit`]
//! (a completed checkpoint; synchronous, so a drained job has committed
//! when it stops) and, for those same safe positions, when a
//! rebalance revokes partitions. Transient broker errors never fail it.
//!
//! Files: the description and its `Source` impl here; the consumer and its
//! librdkafka context (rebalance handoffs, outage tracking) in
//! `consumer.rs`; the reader in `reader.rs`.

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Message, Timestamp as KTimestamp};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::config::{wait_for_topic, KafkaConfig};
use super::dead_letter::DlqProducer;
use super::error::KafkaConnectorError;
use super::format::{Bytes, Json, KafkaDecode, Text, WithPositions};
use super::partitions::{Handoff, HandoffView, Handoffs, PartState, PartitionClock};
use super::repartition::{self, Mark, UpstreamMarks};
use super::status::{self, KafkaStatus};
use super::transaction::{self, OffsetsConsumer};
use crate::connectors::file::now_ms;
use crate::pipeline::Emit;
use crate::pipeline::{
    Batch, BuildError, CommittedCheckpoint, ConnectorError, DeadLetter, DeadLetters,
    ReaderWatermark, Source, SourceReader, SourceStatus, TaskContext, TaskMetrics, Timestamp,
};

mod consumer;
mod reader;

use consumer::*;
pub use reader::KafkaReader;
use reader::*;

/// Consumer defaults (user `.set(..)` overrides win).
const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    // Never see records of aborted (or still open) transactions.
    ("isolation.level", "read_committed"),
    ("fetch.wait.max.ms", "100"),
    // librdkafka postpones the next fetch by this much whenever its local
    // queue is over `queued.min.messages` (default 1 s). While the broker is
    // also taking our sink's writes that queue drains in steps, and the 1 s
    // pauses cut a Kafka-to-Kafka copy to a seventh (see BENCHMARKS.md).
    ("fetch.queue.backoff.ms", "10"),
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "2000"),
    ("statistics.interval.ms", "1000"),
    // Notice a frozen broker (and a recreated topic) within seconds.
    ("socket.timeout.ms", "10000"),
    ("topic.metadata.refresh.interval.ms", "5000"),
];

/// Options weir sets after the user's: the reader's idle rule needs
/// librdkafka's end-of-partition events (a partition is idle only once it
/// is caught up with its log).
const CONSUMER_FORCED: &[(&str, &str)] = &[("enable.partition.eof", "true")];

/// How an instance gets its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// Subscribe with the consumer group; the group balances partitions.
    Group,
    /// These partitions, split over the instances (`i, i + p, ..`).
    Partitions(Vec<i32>),
    /// Every partition of the topic, split over the instances, no group
    /// membership (exactly-once: offsets are committed in the sink's
    /// transactions, never by the group).
    All,
}

/// Where records that fail to decode go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DeadLetterRoute {
    /// Unchanged to this topic, with provenance headers.
    Topic(String),
    /// To the job's dead-letter output (payload as lossy UTF-8).
    Job,
}

/// Reads a Kafka topic.
///
/// ```no_run
/// use weir::connectors::kafka::KafkaSource;
/// #[derive(serde::Deserialize)]
/// struct Click { user: String, ts: i64 }
/// let clicks = KafkaSource::json::<Click>("127.0.0.1:9092", "clicks")
///     .group("clicks-per-user")
///     .with_timestamps(|c: &Click| c.ts)
///     .set("fetch.wait.max.ms", "50");
/// let status = clicks.status(); // "connected" / "waiting for broker .."
/// # let _ = (clicks, status);
/// ```
#[derive(Clone)]
pub struct KafkaSource<D: KafkaDecode, F = fn(&<D as KafkaDecode>::Out) -> Timestamp> {
    config: KafkaConfig,
    topic: String,
    group: Option<String>,
    assignment: Assignment,
    decode: D,
    ts: Option<F>,
    dead_letters: DeadLetterRoute,
    status: KafkaStatus,
    /// Partitions moving between this source's instances (group mode).
    handoffs: Arc<Mutex<Handoffs>>,
    /// Offsets go into an exactly-once sink's transactions (never
    /// committed by the reader itself).
    exactly_once: bool,
    /// Copies of the job whose name starts with this may hand their
    /// partitions (and checkpoints) over to this one (a rescale).
    adopt: Option<String>,
}

impl KafkaSource<Bytes> {
    /// Records with a custom payload format.
    pub fn with_format<D: KafkaDecode>(
        brokers: impl Into<String>,
        topic: impl Into<String>,
        decode: D,
    ) -> KafkaSource<D> {
        let (brokers, topic) = (brokers.into(), topic.into());
        KafkaSource {
            status: KafkaStatus::new(&brokers),
            config: KafkaConfig::new(brokers),
            dead_letters: DeadLetterRoute::Topic(format!("{topic}.dlq")),
            topic,
            group: None,
            assignment: Assignment::Group,
            decode,
            ts: None,
            handoffs: Default::default(),
            exactly_once: false,
            adopt: None,
        }
    }

    /// Payloads as raw bytes.
    pub fn bytes(brokers: impl Into<String>, topic: impl Into<String>) -> KafkaSource<Bytes> {
        Self::with_format(brokers, topic, Bytes)
    }

    /// Payloads as UTF-8 text (invalid UTF-8 goes to the dead-letter topic).
    pub fn text(brokers: impl Into<String>, topic: impl Into<String>) -> KafkaSource<Text> {
        Self::with_format(brokers, topic, Text)
    }

    /// Payloads as JSON `T` (malformed ones go to the dead-letter topic).
    pub fn json<T: DeserializeOwned + Send + 'static>(
        brokers: impl Into<String>,
        topic: impl Into<String>,
    ) -> KafkaSource<Json<T>> {
        Self::with_format(brokers, topic, Json::default())
    }
}

impl<D: KafkaDecode> KafkaSource<D> {
    /// Records keep their partition and offset: the source yields
    /// [`FromKafka`](super::FromKafka)`<D::Out>`, so a record that goes
    /// astray later (a late record, say) can name where it came from. Call
    /// it before [`KafkaSource::with_timestamps`].
    ///
    /// ```
    /// use weir::connectors::kafka::{FromKafka, KafkaSource};
    /// #[derive(serde::Deserialize)]
    /// struct Click { user: String, ts: i64 }
    /// let clicks = KafkaSource::json::<Click>("127.0.0.1:9092", "clicks")
    ///     .with_positions()
    ///     .with_timestamps(|c: &FromKafka<Click>| c.value.ts);
    /// # let _ = clicks;
    /// ```
    pub fn with_positions(self) -> KafkaSource<WithPositions<D>> {
        KafkaSource {
            config: self.config,
            topic: self.topic,
            group: self.group,
            assignment: self.assignment,
            decode: WithPositions(self.decode),
            ts: None,
            dead_letters: self.dead_letters,
            status: self.status,
            handoffs: self.handoffs,
            exactly_once: self.exactly_once,
            adopt: self.adopt,
        }
    }
}

impl<D: KafkaDecode, F> KafkaSource<D, F> {
    /// Exactly-once input: every partition is assigned explicitly (no group
    /// rebalancing; explicit [`partitions`](Self::partitions) stay), split
    /// over the instances, read `read_committed`; the
    /// offsets of each checkpoint are committed in the transaction of an
    /// exactly-once [`KafkaSink`](super::KafkaSink) of the same job (never
    /// by the reader), with the checkpoint's id in their metadata, and a
    /// restarted job restores the checkpoint they name. Needs durable
    /// checkpoint storage (`Job::checkpointing`).
    pub fn exactly_once(mut self) -> Self {
        self.exactly_once = true;
        self.assign_all()
    }
    /// Exactly-once copies of one job that split its partitions between
    /// them (cluster tasks, named `<prefix><task>-of-<count>`) may be
    /// rescaled: a copy whose partitions were committed by other copies
    /// named with `prefix` takes over, partition by partition, the
    /// checkpoints those commits name (their writers fenced first, so none
    /// commits after the hand-over). Without it, another copy's commits
    /// count as nothing committed.
    pub fn take_over_from(mut self, prefix: impl Into<String>) -> Self {
        self.adopt = Some(prefix.into());
        self
    }

    /// Every partition of the topic, split over the instances, without
    /// group membership (explicit partitions stay).
    pub(crate) fn assign_all(mut self) -> Self {
        if self.assignment == Assignment::Group {
            self.assignment = Assignment::All;
        }
        self
    }

    /// The consumer group (default `weir-<job name>`): commits go there.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Reads exactly these partitions instead of subscribing with the
    /// group; instance `i` of `p` takes those at positions `i, i + p, ..`.
    pub fn partitions(mut self, partitions: impl Into<Vec<i32>>) -> Self {
        self.assignment = Assignment::Partitions(partitions.into());
        self
    }

    /// Sets any librdkafka consumer option (overrides weir's defaults).
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

    /// Records that fail to decode go to `topic` (default `<input>.dlq`).
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letters = DeadLetterRoute::Topic(topic.into());
        self
    }

    /// Records that fail to decode go to the job's dead-letter output.
    pub fn dead_letters_to_job(mut self) -> Self {
        self.dead_letters = DeadLetterRoute::Job;
        self
    }

    /// The topic read.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The connection state shared by this source's readers.
    pub fn status(&self) -> KafkaStatus {
        self.status.clone()
    }

    /// Event time from the record (default: the Kafka record timestamp).
    pub fn with_timestamps<G: Fn(&D::Out) -> Timestamp>(self, f: G) -> KafkaSource<D, G> {
        KafkaSource {
            config: self.config,
            topic: self.topic,
            group: self.group,
            assignment: self.assignment,
            decode: self.decode,
            ts: Some(f),
            dead_letters: self.dead_letters,
            status: self.status,
            handoffs: self.handoffs,
            exactly_once: self.exactly_once,
            adopt: self.adopt,
        }
    }

    fn group_id(&self, job: &str) -> String {
        self.group
            .clone()
            .or_else(|| self.config.get("group.id").map(str::to_string))
            .unwrap_or_else(|| format!("weir-{job}"))
    }
}

impl<D, F> Source for KafkaSource<D, F>
where
    D: KafkaDecode,
    F: Fn(&D::Out) -> Timestamp + Clone + Send + Sync + 'static,
{
    type Out = D::Out;
    type Reader = KafkaReader<D, F>;

    fn validate(&self) -> Result<(), BuildError> {
        if self.topic.is_empty() {
            return Err(BuildError::invalid(
                "source.kafka.topic",
                "must not be empty",
            ));
        }
        if self.config.brokers().is_empty() {
            return Err(BuildError::invalid(
                "source.kafka.brokers",
                "must not be empty",
            ));
        }
        if let Assignment::Partitions(p) = &self.assignment {
            if p.is_empty() || p.iter().any(|x| *x < 0) {
                return Err(BuildError::invalid(
                    "source.kafka.partitions",
                    format!("{p:?}: need at least one partition, none negative"),
                ));
            }
        }
        if self.decode.upstream_writers().is_some() && self.assignment == Assignment::Group {
            return Err(BuildError::invalid(
                "source.kafka.partitions",
                "a repartition topic is read by explicit assignment, not a group",
            ));
        }
        if let DeadLetterRoute::Topic(t) = &self.dead_letters {
            if t.is_empty() {
                return Err(BuildError::invalid(
                    "source.kafka.dead_letter_topic",
                    "must not be empty",
                ));
            }
        }
        self.config
            .check(CONSUMER_DEFAULTS)
            .map_err(|e| e.into_build_error("source.kafka"))
    }

    fn committed_checkpoint(&self, job: &str) -> Result<CommittedCheckpoint, ConnectorError> {
        self.committed_checkpoint_keyed(job, false)
    }

    fn positions_by_partition(&self) -> bool {
        true
    }

    fn checkpoint_owners(&self, job: &str) -> Option<crate::pipeline::CheckpointOwners> {
        // Only a copy that takes partitions over shares them with others.
        if !self.exactly_once || self.adopt.is_none() {
            return None;
        }
        let group = self.group_id(job);
        let (config, topic, status) =
            (self.config.clone(), self.topic.clone(), self.status.clone());
        Some(Box::new(move || {
            let consumer = OffsetsConsumer::new(&config, &group)?;
            let count = wait_for_topic(consumer.client(), &config, &topic, &status)?;
            let every: Vec<i32> = (0..count as i32).collect();
            Ok(transaction::checkpoint_owners(
                &consumer, &config, &topic, &every,
            )?)
        }))
    }

    fn max_parallelism(&self) -> Option<usize> {
        match &self.assignment {
            Assignment::Group | Assignment::All => None,
            Assignment::Partitions(p) => Some(p.len().max(1)),
        }
    }

    fn open(&self, ctx: &TaskContext) -> Result<Self::Reader, ConnectorError> {
        let group = self.group_id(&ctx.job);
        let client_id = format!("weir-{}-{}-{}", ctx.job, ctx.stage, ctx.subtask);
        let mut defaults = CONSUMER_DEFAULTS.to_vec();
        defaults.push(("group.id", &group));
        defaults.push(("client.id", &client_id));
        let mut client = self.config.client_config(&defaults);
        for (k, v) in CONSUMER_FORCED {
            client.set(*k, *v);
        }
        let handoffs = HandoffView::open(&self.handoffs, ctx);
        let (consumer, shared, outage) =
            new_consumer(&client, &self.status, &self.topic, &handoffs)?;
        let count = wait_for_topic(consumer.client(), &self.config, &self.topic, &self.status)?;
        let mut parts = BTreeMap::new();
        let now = Instant::now();
        // A repartition topic: event time from its writers' control records.
        let upstream = self.decode.upstream_writers();
        let every: Vec<i32>;
        let listed = match &self.assignment {
            Assignment::Group => None,
            Assignment::Partitions(all) => Some(all),
            Assignment::All => {
                every = (0..count as i32).collect();
                Some(&every)
            }
        };
        let mine = match listed {
            None => None,
            Some(all) => {
                let p = ctx.parallelism.max(1);
                let mine: Vec<i32> = all
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % p == ctx.subtask)
                    .map(|(_, x)| *x)
                    .collect();
                if let Some(&x) = mine.iter().find(|x| **x as usize >= count) {
                    return Err(KafkaConnectorError::UnknownPartition {
                        topic: self.topic.clone(),
                        partition: x,
                        count,
                    }
                    .into());
                }
                for &x in &mine {
                    let mut part = PartState::new(now);
                    part.upstream = upstream.map(UpstreamMarks::new);
                    parts.insert(x, part);
                }
                Some(mine)
            }
        };
        start_consumer(&consumer, &self.topic, mine.as_deref(), &BTreeMap::new())?;
        match &mine {
            None => {
                tracing::info!(task = %ctx.task_name(), topic = %self.topic, group = %group, "kafka source: subscribed")
            }
            Some(m) => {
                tracing::info!(task = %ctx.task_name(), topic = %self.topic, partitions = ?m, "kafka source: assigned partitions {m:?}")
            }
        }
        let dlq_topic = match &self.dead_letters {
            DeadLetterRoute::Topic(t) => Some(t.clone()),
            DeadLetterRoute::Job => None,
        };
        let mut clock = PartitionClock::new(ctx, now);
        if mine.is_some() {
            clock.assigned();
        }
        if upstream.is_some() {
            // The writers' watermarks already allow for out-of-orderness.
            clock.bound_ms = Some(0);
        }
        Ok(KafkaReader {
            consumer: ClosedElsewhere::new(consumer),
            commit_in_flight: None,
            st: ReaderState {
                config: self.config.clone(),
                topic: self.topic.clone(),
                group_mode: self.assignment == Assignment::Group,
                group: group.clone(),
                exactly_once: self.exactly_once,
                outage,
                decode: self.decode.clone(),
                ts: self.ts.clone(),
                parts,
                shared,
                dlq_topic,
                dlq: None,
                job_dead_letters: ctx.dead_letters.clone(),
                metrics: ctx.metrics.clone(),
                status: self.status.clone(),
                clock,
                topic_c: std::ffi::CString::new(self.topic.clone())
                    .map_err(|_| ConnectorError::new("kafka source: topic name contains NUL"))?,
                trouble_at: now,
                relearned_at: now,
                handoffs,
                task: ctx.task_name(),
                upstream,
            },
        })
    }
}

impl<D: KafkaDecode, F> KafkaSource<D, F> {
    /// [`Source::committed_checkpoint`]; `keyed`: the topic's partitions
    /// hold keys placed by `key_partition` over its partition count (a
    /// repartition topic), so taken-over keyed state splits by it.
    pub(crate) fn committed_checkpoint_keyed(
        &self,
        job: &str,
        keyed: bool,
    ) -> Result<CommittedCheckpoint, ConnectorError> {
        if !self.exactly_once {
            return Ok(CommittedCheckpoint::Untracked);
        }
        let consumer = OffsetsConsumer::new(&self.config, &self.group_id(job))?;
        let count = wait_for_topic(consumer.client(), &self.config, &self.topic, &self.status)?;
        // Only this source's partitions: other copies of the job (cluster
        // tasks) commit theirs with their own checkpoint ids.
        let partitions: Vec<i32> = match &self.assignment {
            Assignment::Partitions(list) => list.clone(),
            _ => (0..count as i32).collect(),
        };
        Ok(transaction::committed_checkpoint(
            &consumer,
            &self.config,
            job,
            &self.topic,
            &partitions,
            self.adopt.as_deref(),
            keyed.then(|| crate::pipeline::KeyGroups::new(count, partitions.clone())),
        )?)
    }
}
