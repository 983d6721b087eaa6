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
use super::transaction;
use crate::connectors::file::now_ms;
use crate::pipeline::Emit;
use crate::pipeline::{
    Batch, BuildError, CommittedCheckpoint, ConnectorError, DeadLetter, DeadLetters,
    ReaderWatermark, Source, SourceReader, SourceStatus, TaskContext, TaskMetrics, Timestamp,
};

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
        if !self.exactly_once {
            return Ok(CommittedCheckpoint::Untracked);
        }
        let group = self.group_id(job);
        let client = self.config.client_config(&[("group.id", &group)]);
        let consumer: BaseConsumer = client
            .create()
            .map_err(|e| KafkaConnectorError::client("consumer creation", e))?;
        let count = wait_for_topic(consumer.client(), &self.config, &self.topic, &self.status)?;
        // Only this source's partitions: other copies of the job (cluster
        // tasks) commit theirs with their own checkpoint ids.
        let partitions: Vec<i32> = match &self.assignment {
            Assignment::Partitions(list) => list.clone(),
            _ => (0..count as i32).collect(),
        };
        Ok(transaction::committed_checkpoint(
            &self.config,
            job,
            &group,
            &self.topic,
            &partitions,
        )?)
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
            consumer,
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

/// What the rebalance callback shares with the reader.
#[derive(Default)]
struct GroupShared {
    /// Offsets made safe by completed checkpoints, not yet committed on revoke.
    safe: BTreeMap<i32, i64>,
    /// Positions to start from when a partition is (re)assigned.
    pending_seek: BTreeMap<i32, i64>,
    /// Event time a restored checkpoint had reached in partitions not
    /// assigned yet.
    pending_event_time: BTreeMap<i32, Timestamp>,
    /// Each owned partition's event time as of the end of the last poll
    /// (group mode): what the revoke callback hands over, a lower bound of
    /// the exact value the reader adds once it applies the revocation (a
    /// new owner may claim the partition before that).
    event_time: BTreeMap<i32, Timestamp>,
    /// Rebalances the reader has not applied yet.
    events: Vec<Rebalanced>,
}

enum Rebalanced {
    /// Partitions, each with the event time a previous owner reached in it.
    /// Partitions, each with the event time a previous owner reached in
    /// it and the offset it starts at (-1: the committed one).
    Assigned(Vec<(i32, Timestamp, i64)>),
    Revoked(Vec<i32>),
    RevokedAll,
}

/// Connection trouble seen by one consumer's callbacks, for its reader.
/// librdkafka's consumer rides through a lost broker by itself (it
/// reconnects, rejoins its group and fetches on from its positions); weir
/// only has to stop believing what it knew about partitions being caught
/// up while records could be hidden behind the outage.
#[derive(Default)]
struct Outage {
    /// Every broker was lost (transport failure / all brokers down), and
    /// none has answered since.
    down: AtomicBool,
    /// A broker error or request timeout since the reader last looked: what
    /// it knew about partitions being caught up with their logs is stale
    /// (new records may wait behind the outage), so none counts as idle
    /// until librdkafka reports its end again.
    trouble: AtomicBool,
    /// Since when the group membership has not been `steady` (joining,
    /// syncing, waiting for an assignment) while a broker answers, and in
    /// which join state (from the statistics; group mode only).
    unsettled: Mutex<Option<(Instant, String)>>,
}

/// How long a group member may stay out of the `steady` join state while a
/// broker answers before its task fails and the job restarts with new
/// clients. A rebalance among weir's own readers (which poll all the time)
/// takes a few seconds; after a broker restart librdkafka 2.12 members
/// were seen waiting in `wait-join` for minutes, their group's other
/// member never heartbeating again (see ARCHITECTURE.md, "What the broker
/// does").
const GROUP_STALL: Duration = Duration::from_secs(30);

/// A consumer with the state its context shares with the reader.
type NewConsumer = (
    BaseConsumer<SourceCtx>,
    Arc<Mutex<GroupShared>>,
    Arc<Outage>,
);

/// A consumer with weir's context; nothing assigned yet.
fn new_consumer(
    client: &ClientConfig,
    status: &KafkaStatus,
    topic: &str,
    handoffs: &HandoffView,
) -> Result<NewConsumer, KafkaConnectorError> {
    let shared = Arc::new(Mutex::new(GroupShared::default()));
    let outage = Arc::new(Outage::default());
    let context = SourceCtx {
        status: status.clone(),
        topic: topic.to_string(),
        shared: shared.clone(),
        outage: outage.clone(),
        handoffs: handoffs.clone(),
    };
    let consumer = client
        .create_with_context(context)
        .map_err(|e| KafkaConnectorError::client("consumer creation", e))?;
    Ok((consumer, shared, outage))
}

/// Subscribes (group mode, `mine == None`) or assigns `mine`, starting at
/// `positions` where given and at the committed offsets elsewhere.
fn start_consumer(
    consumer: &BaseConsumer<SourceCtx>,
    topic: &str,
    mine: Option<&[i32]>,
    positions: &BTreeMap<i32, i64>,
) -> Result<(), KafkaConnectorError> {
    match mine {
        None => {
            if !positions.is_empty() {
                let ctx = consumer.context();
                let mut g = ctx.shared.lock().unwrap_or_else(|p| p.into_inner());
                g.pending_seek
                    .extend(positions.iter().map(|(p, o)| (*p, *o)));
            }
            consumer
                .subscribe(&[topic])
                .map_err(|e| KafkaConnectorError::client("subscribe", e))
        }
        Some(mine) => {
            let mut tpl = TopicPartitionList::new();
            for &x in mine {
                let off = positions
                    .get(&x)
                    .map_or(Offset::Stored, |o| Offset::Offset(*o));
                tpl.add_partition_offset(topic, x, off)
                    .map_err(|e| KafkaConnectorError::client("assign", e))?;
            }
            consumer
                .assign(&tpl)
                .map_err(|e| KafkaConnectorError::client("assign", e))
        }
    }
}

/// The consumer context: logging, connection state, rebalances.
pub(crate) struct SourceCtx {
    status: KafkaStatus,
    topic: String,
    shared: Arc<Mutex<GroupShared>>,
    outage: Arc<Outage>,
    handoffs: HandoffView,
}

impl SourceCtx {
    fn on_error(&self, error: &KafkaError, reason: &str) {
        if status::code_of(error).is_some_and(hides_records) {
            self.outage.trouble.store(true, Relaxed);
        }
        if matches!(
            status::code_of(error),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
        ) {
            self.outage.down.store(true, Relaxed);
        }
        status::on_error(&self.status, error, reason)
    }
}

impl ClientContext for SourceCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        if fac == "REQTMOUT" || fac == "SESSTMOUT" {
            self.outage.trouble.store(true, Relaxed);
        }
        status::log(&self.status, level, fac, msg)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.on_error(&error, reason)
    }
    fn stats_raw(&self, json: &[u8]) {
        if self.outage.down.load(Relaxed) && status::any_broker_up(json) {
            self.outage.down.store(false, Relaxed);
        }
        if let Some(join) = status::group_join_state(json) {
            let mut u = self
                .outage
                .unsettled
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if join == "steady" || self.outage.down.load(Relaxed) {
                *u = None;
            } else {
                let since = u.as_ref().map_or_else(Instant::now, |(t, _)| *t);
                *u = Some((since, join));
            }
        }
        status::on_stats(&self.status, json)
    }
}

impl ConsumerContext for SourceCtx {
    fn rebalance(&self, c: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(c.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let parts: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let mut g = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // A partition another instance of this job gave up starts
                // where that one stopped; others where the checkpoint says.
                let taken = self
                    .handoffs
                    .with(|h| {
                        parts
                            .iter()
                            .filter_map(|p| h.remove(p).map(|x| (*p, x)))
                            .collect::<BTreeMap<_, _>>()
                    })
                    .unwrap_or_default();
                let mut assigned = Vec::with_capacity(parts.len());
                for p in &parts {
                    let seek = g.pending_seek.remove(p);
                    let restored_ts = g.pending_event_time.remove(p);
                    let handoff = taken.get(p);
                    let at = handoff.map(|h| h.next).filter(|o| *o >= 0).or(seek);
                    if let Some(o) = at {
                        let _ = tpl.set_partition_offset(&self.topic, *p, Offset::Offset(o));
                    }
                    let max_ts = handoff.and_then(|h| h.max_ts).or(restored_ts);
                    assigned.push((*p, max_ts.unwrap_or(i64::MIN), at.unwrap_or(-1)));
                }
                let r = if cooperative {
                    c.incremental_assign(tpl)
                } else {
                    c.assign(tpl)
                };
                if let Err(e) = r {
                    tracing::warn!(error = %e, topic = %self.topic, "kafka source: assign failed");
                }
                tracing::info!(topic = %self.topic, partitions = ?parts, taken = ?assigned, "kafka source: assigned partitions {parts:?}");
                g.events.push(Rebalanced::Assigned(assigned));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Where this instance stopped in each partition (librdkafka's
                // position: after the last record poll returned, all of which
                // went downstream), for the instance the group gives it to.
                let now = Instant::now();
                let positions: BTreeMap<i32, i64> = c
                    .position()
                    .map(|tpl| {
                        tpl.elements_for_topic(&self.topic)
                            .iter()
                            .filter_map(|e| match e.offset() {
                                Offset::Offset(o) => Some((e.partition(), o)),
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.handoffs.with(|h| {
                    for p in &parts {
                        let next = positions.get(p).copied().unwrap_or(-1);
                        h.insert(
                            *p,
                            Handoff {
                                next,
                                max_ts: g.event_time.remove(p),
                                since: now,
                            },
                        );
                    }
                });
                // Commit what completed checkpoints made safe, never more.
                let mut commit = TopicPartitionList::new();
                for p in &parts {
                    if let Some(o) = g.safe.remove(p) {
                        let _ = commit.add_partition_offset(&self.topic, *p, Offset::Offset(o));
                    }
                }
                if commit.count() > 0 && !c.assignment_lost() {
                    match c.commit(&commit, CommitMode::Sync) {
                        Ok(()) => {
                            tracing::info!(topic = %self.topic, offsets = ?commit.to_topic_map(), "kafka source: committed on revocation")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, topic = %self.topic, "kafka source: commit on revocation failed (records will be read again)")
                        }
                    }
                }
                let r = if cooperative {
                    c.incremental_unassign(tpl)
                } else {
                    c.unassign()
                };
                if let Err(e) = r {
                    tracing::warn!(error = %e, topic = %self.topic, "kafka source: unassign failed");
                }
                tracing::info!(topic = %self.topic, partitions = ?parts, "kafka source: revoked partitions {parts:?}");
                g.events.push(Rebalanced::Revoked(parts));
            }
            other => {
                tracing::warn!(error = ?other, topic = %self.topic, "kafka source: rebalance error; unassigning");
                let _ = c.unassign();
                g.events.push(Rebalanced::RevokedAll);
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                tracing::debug!(offsets = ?offsets.to_topic_map(), "kafka source: offsets committed")
            }
            Err(e) => {
                tracing::warn!(error = %e, "kafka source: offset commit failed (records will be read again)")
            }
        }
    }
}

/// One instance's reader of a [`KafkaSource`].
pub struct KafkaReader<D, F> {
    consumer: BaseConsumer<SourceCtx>,
    st: ReaderState<D, F>,
}

struct ReaderState<D, F> {
    config: KafkaConfig,
    topic: String,
    group_mode: bool,
    /// The consumer group (offsets are committed for it).
    group: String,
    /// Offsets are committed by an exactly-once sink, not by the reader.
    exactly_once: bool,
    outage: Arc<Outage>,
    decode: D,
    ts: Option<F>,
    parts: BTreeMap<i32, PartState>,
    shared: Arc<Mutex<GroupShared>>,
    dlq_topic: Option<String>,
    dlq: Option<DlqProducer>,
    job_dead_letters: DeadLetters,
    metrics: Arc<TaskMetrics>,
    status: KafkaStatus,
    /// Event time over the partitions (see `partitions`).
    clock: PartitionClock,
    /// The topic, NUL-terminated, for librdkafka's C calls.
    topic_c: std::ffi::CString,
    /// When broker trouble last cleared the caught-up flags.
    trouble_at: Instant,
    /// When `relearn_caught_up` last looked.
    relearned_at: Instant,
    /// Partitions in transit between this stage's instances (group mode).
    handoffs: HandoffView,
    task: String,
    /// A repartition topic's upstream writer count: records with the
    /// control header are control records (see `repartition`).
    upstream: Option<usize>,
}

impl<D: KafkaDecode, F: Fn(&D::Out) -> Timestamp> ReaderState<D, F> {
    fn apply_rebalances(&mut self) {
        let events =
            std::mem::take(&mut self.shared.lock().unwrap_or_else(|p| p.into_inner()).events);
        let now = Instant::now();
        for e in events {
            match e {
                Rebalanced::Assigned(ps) => {
                    self.clock.assigned();
                    for (p, max_ts, next) in ps {
                        let mut state = PartState::resumed(now, max_ts);
                        // Known where it starts: a partition handed over at
                        // the end of its log is seen to be caught up even
                        // when librdkafka reports no new end (it does not,
                        // to a consumer that already reported it).
                        state.next = next;
                        self.parts.insert(p, state);
                    }
                }
                Rebalanced::Revoked(ps) => {
                    for p in ps {
                        if let Some(state) = self.parts.remove(&p) {
                            self.hand_off(p, &state);
                        }
                    }
                }
                Rebalanced::RevokedAll => {
                    for (p, state) in std::mem::take(&mut self.parts) {
                        self.hand_off(p, &state);
                    }
                }
            }
            if self.parts.is_empty() {
                self.clock.unowned(now);
            }
        }
    }

    /// librdkafka reached the end of partition `p`'s log.
    fn caught_up(&mut self, p: i32) {
        if let Some(state) = self.parts.get_mut(&p) {
            state.caught_up = true;
        }
    }

    /// Completes the handoff entry of a partition this reader gave up with
    /// what only the reader knows (its event time; its position, if
    /// librdkafka had none), unless another instance already took it.
    fn hand_off(&self, p: i32, state: &PartState) {
        self.handoffs.with(|h| {
            if let Some(e) = h.get_mut(&p) {
                e.max_ts = Some(e.max_ts.map_or(state.max_ts, |t| t.max(state.max_ts)));
                if e.next < 0 {
                    e.next = state.next;
                }
            }
        });
    }

    /// Handles one message; true if it became a record.
    #[inline]
    fn on_message<M: Message, E: Emit<D::Out>>(
        &mut self,
        msg: &M,
        out: &mut E,
        now: Instant,
    ) -> Result<bool, ConnectorError> {
        let (p, off) = (msg.partition(), msg.offset());
        if !self.parts.contains_key(&p) {
            // Assigned during this very poll: the assignment (with what a
            // previous owner reached) takes effect before its first record.
            self.apply_rebalances();
        }
        if self.upstream.is_some() {
            if let Some(control) = repartition::control_of(msg) {
                self.on_control(p, off, control, now);
                return Ok(false);
            }
        }
        let payload = msg.payload().unwrap_or(&[]);
        let decoded = self.decode.decode_at(payload, p, off);
        let state = self.parts.entry(p).or_insert_with(|| PartState::new(now));
        match decoded {
            Ok(v) => {
                let ts = match &self.ts {
                    Some(f) => f(&v),
                    None => match self.decode.timestamp(&v) {
                        Some(t) => t,
                        None => match msg.timestamp() {
                            KTimestamp::CreateTime(t) | KTimestamp::LogAppendTime(t) if t >= 0 => t,
                            _ => now_ms(),
                        },
                    },
                };
                state.on_record(off, ts, now);
                out.emit(v, ts);
                Ok(true)
            }
            Err(reason) => {
                state.on_record(off, i64::MIN, now);
                self.dead_letter(payload, msg.key(), &reason, p, off)?;
                Ok(false)
            }
        }
    }

    /// A repartition topic whose every upstream writer wrote its end of
    /// input into each of this reader's partitions, all read to their end:
    /// the input is over.
    fn upstream_ended(&self) -> bool {
        self.upstream.is_some()
            && !self.parts.is_empty()
            && self
                .parts
                .values()
                .all(|s| s.caught_up && s.upstream.as_ref().is_some_and(UpstreamMarks::ended))
    }

    /// A repartition topic's control record at `off` of `p`: the writer's
    /// mark updates the partition's event time; never a record downstream.
    fn on_control(
        &mut self,
        p: i32,
        off: i64,
        control: Result<(repartition::Writer, Mark), String>,
        now: Instant,
    ) {
        let writers = self.upstream.unwrap_or(0);
        if let Ok((w, _)) = &control {
            if w.of.is_some_and(|n| n != writers) {
                // A mark of the upstream stage's earlier (or later) layout:
                // its writer indices mean other partitions of the input.
                tracing::debug!(task = %self.task, partition = p, offset = off, writer = w.index, of = ?w.of, writers, "repartition source: control record of another writer layout (ignored)");
                let state = self.parts.entry(p).or_insert_with(|| PartState::new(now));
                state.next = off + 1;
                state.last_record = now;
                return;
            }
        }
        let state = self.parts.entry(p).or_insert_with(|| PartState::new(now));
        state.next = off + 1;
        state.last_record = now;
        state.caught_up = false;
        let marks = state
            .upstream
            .get_or_insert_with(|| UpstreamMarks::new(writers));
        match control {
            Ok((w, mark)) => {
                let writer = w.index;
                if !marks.apply(writer, mark) {
                    tracing::warn!(task = %self.task, topic = %self.topic, partition = p, offset = off, writer, writers, "repartition source: control record from a writer outside the configured count (ignored)");
                }
            }
            Err(reason) => {
                tracing::warn!(task = %self.task, topic = %self.topic, partition = p, offset = off, reason, "repartition source: malformed control record (ignored)");
            }
        }
    }

    fn dead_letter(
        &mut self,
        payload: &[u8],
        key: Option<&[u8]>,
        reason: &str,
        p: i32,
        off: i64,
    ) -> Result<(), ConnectorError> {
        self.metrics.dead_letters.fetch_add(1, Relaxed);
        match &self.dlq_topic {
            Some(topic) => {
                if self.dlq.is_none() {
                    self.dlq = Some(DlqProducer::new(&self.config, topic, &self.status)?);
                }
                let dlq = self.dlq.as_ref().expect("created above");
                dlq.send(payload, key, reason, (&self.topic, p, off))?;
                tracing::debug!(task = %self.task, partition = p, offset = off, reason, "dead letter");
            }
            None => self.job_dead_letters.send(vec![DeadLetter {
                reason: reason.to_string(),
                source: self.topic.clone(),
                position: format!("partition {p} offset {off}"),
                payload: String::from_utf8_lossy(payload).into_owned(),
            }]),
        }
        Ok(())
    }

    fn on_poll_error(&mut self, e: KafkaError) -> Result<(), ConnectorError> {
        match e {
            KafkaError::PartitionEOF(p) => {
                self.caught_up(p);
                Ok(())
            }
            KafkaError::MessageConsumptionFatal(code) => Err(ConnectorError::new(format!(
                "kafka source {}: fatal consumer error: {code}",
                self.topic
            ))),
            other => {
                if matches!(
                    status::code_of(&other),
                    Some(
                        RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure
                    )
                ) {
                    self.outage.down.store(true, Relaxed);
                }
                if status::code_of(&other).is_some_and(hides_records) {
                    for state in self.parts.values_mut() {
                        state.caught_up = false;
                    }
                }
                match status::code_of(&other) {
                    Some(c) if status::is_transient(c) => {
                        self.status.set_waiting(&other.to_string())
                    }
                    _ => {
                        tracing::warn!(task = %self.task, error = %other, "kafka source: consumer error (retrying)")
                    }
                }
                Ok(())
            }
        }
    }

    fn position(&self) -> Value {
        let offsets: serde_json::Map<String, Value> = self
            .parts
            .iter()
            .filter(|(_, s)| s.next >= 0)
            .map(|(p, s)| (p.to_string(), json!(s.next)))
            .collect();
        // Each partition's event time too: a restored reader must not hold
        // the watermark for partitions it already read to their end.
        let event_time: serde_json::Map<String, Value> = self
            .parts
            .iter()
            .filter(|(_, s)| s.max_ts > i64::MIN)
            .map(|(p, s)| (p.to_string(), json!(s.max_ts)))
            .collect();
        let mut pos = json!({ "topic": self.topic, "group": self.group, "offsets": offsets, "event_time": event_time });
        if self.upstream.is_some() {
            // What each upstream writer last said in each partition: a
            // restored reader must not wait for writers that already ended.
            let marks: serde_json::Map<String, Value> = self
                .parts
                .iter()
                .filter_map(|(p, s)| Some((p.to_string(), s.upstream.as_ref()?.to_json())))
                .collect();
            pos["upstream"] = Value::Object(marks);
        }
        pos
    }

    fn parse(&self, position: &Value) -> Result<BTreeMap<i32, i64>, KafkaConnectorError> {
        let bad = || KafkaConnectorError::BadPosition(position.to_string());
        if position.get("topic").and_then(Value::as_str) != Some(self.topic.as_str()) {
            return Err(bad());
        }
        let offsets = position
            .get("offsets")
            .and_then(Value::as_object)
            .ok_or_else(bad)?;
        offsets
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.parse::<i32>().map_err(|_| bad())?,
                    v.as_i64().filter(|o| *o >= 0).ok_or_else(bad)?,
                ))
            })
            .collect()
    }
}

impl<D, F> SourceReader for KafkaReader<D, F>
where
    D: KafkaDecode,
    F: Fn(&D::Out) -> Timestamp + Send + 'static,
{
    type Out = D::Out;

    fn poll(
        &mut self,
        out: &mut Batch<D::Out>,
        max: usize,
    ) -> Result<SourceStatus, ConnectorError> {
        self.poll_emit(out, max).map(|(s, _)| s)
    }

    #[inline]
    fn poll_into<E: Emit<D::Out>>(
        &mut self,
        _scratch: &mut Batch<D::Out>,
        out: &mut E,
        max: usize,
    ) -> Result<(SourceStatus, usize), ConnectorError> {
        self.poll_emit(out, max)
    }

    fn position(&self) -> Option<Value> {
        Some(self.st.position())
    }

    fn seek(&mut self, position: &Value) -> Result<(), ConnectorError> {
        let offsets = self.st.parse(position)?;
        let event_time: BTreeMap<i32, Timestamp> = position
            .get("event_time")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(p, t)| Some((p.parse().ok()?, t.as_i64()?)))
                    .collect()
            })
            .unwrap_or_default();
        self.st.apply_rebalances();
        if self.st.group_mode {
            // Partitions not assigned yet start there when they are.
            let mut g = self.st.shared.lock().unwrap_or_else(|p| p.into_inner());
            for (p, o) in &offsets {
                if !self.st.parts.contains_key(p) {
                    g.pending_seek.insert(*p, *o);
                }
            }
            for (p, t) in &event_time {
                if !self.st.parts.contains_key(p) {
                    g.pending_event_time.insert(*p, *t);
                }
            }
        }
        let mut tpl = TopicPartitionList::new();
        let mut any = false;
        let upstream = position.get("upstream");
        for (p, state) in self.st.parts.iter_mut() {
            if let Some(t) = event_time.get(p) {
                state.max_ts = state.max_ts.max(*t);
            }
            if let (Some(marks), Some(saved)) = (
                state.upstream.as_mut(),
                upstream.and_then(|u| u.get(p.to_string())),
            ) {
                marks.restore(saved);
            }
            let off = match offsets.get(p) {
                Some(o) => {
                    any = true;
                    state.next = *o;
                    Offset::Offset(*o)
                }
                None if state.next >= 0 => Offset::Offset(state.next),
                None => Offset::Stored,
            };
            tpl.add_partition_offset(&self.st.topic, *p, off)
                .map_err(|e| KafkaConnectorError::client("seek", e))?;
        }
        if any {
            self.consumer
                .assign(&tpl)
                .map_err(|e| KafkaConnectorError::client("seek", e))?;
        }
        Ok(())
    }

    fn commit(&mut self, position: &Value) -> Result<(), ConnectorError> {
        if self.st.exactly_once {
            // The sink's transaction committed these offsets already, with
            // the checkpoint id in their metadata: a plain commit would
            // overwrite that.
            return Ok(());
        }
        let offsets = self.st.parse(position)?;
        self.st.apply_rebalances();
        // Dead letters before these offsets must be durable first.
        if let Some(dlq) = &self.st.dlq {
            if !dlq.flush(Some(Duration::from_secs(10)))? {
                tracing::warn!(task = %self.st.task, "kafka source: dead letters not yet acknowledged; commit postponed");
                return Ok(());
            }
        }
        let mut tpl = TopicPartitionList::new();
        {
            let mut g = self.st.shared.lock().unwrap_or_else(|p| p.into_inner());
            for (p, o) in &offsets {
                // Never commit for a partition another member owns now.
                if self.st.parts.contains_key(p) {
                    g.safe.insert(*p, *o);
                    tpl.add_partition_offset(&self.st.topic, *p, Offset::Offset(*o))
                        .map_err(|e| KafkaConnectorError::client("commit", e))?;
                }
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        match self.consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => Ok(()),
            Err(e) => {
                // A failed commit only means records are read again.
                tracing::warn!(task = %self.st.task, error = %e, "kafka source: commit failed (records will be read again)");
                Ok(())
            }
        }
    }

    fn watermark(&mut self) -> ReaderWatermark {
        let st = &mut self.st;
        let in_transit = if st.group_mode {
            st.handoffs.holding(st.clock.idle_timeout)
        } else {
            None
        };
        st.clock.watermark(&st.parts, in_transit)
    }
}

impl<D, F> KafkaReader<D, F>
where
    D: KafkaDecode,
    F: Fn(&D::Out) -> Timestamp + Send + 'static,
{
    /// The poll loop: up to `max` records handed to `out`.
    pub(crate) fn poll_emit<E: Emit<D::Out>>(
        &mut self,
        out: &mut E,
        max: usize,
    ) -> Result<(SourceStatus, usize), ConnectorError> {
        self.st.apply_rebalances();
        if self.st.outage.trouble.swap(false, Relaxed) {
            // See `Outage::trouble`: caught up no longer, until the next EOF
            // (or `relearn_caught_up`).
            for state in self.st.parts.values_mut() {
                state.caught_up = false;
            }
            self.st.trouble_at = Instant::now();
        }
        if self.st.group_mode {
            let unsettled = self
                .st
                .outage
                .unsettled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some((since, state)) = unsettled {
                if since.elapsed() >= GROUP_STALL {
                    return Err(ConnectorError::new(format!(
                        "kafka source: consumer group {} stuck in join state {state} for {} s with a broker answering; restarting with new clients",
                        self.st.group,
                        GROUP_STALL.as_secs()
                    )));
                }
            }
        }
        if let Some(dlq) = &self.st.dlq {
            dlq.check()?;
        }
        let now = Instant::now();
        let mut seen = 0usize;
        let mut records = 0usize;
        while records < max {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(msg)) => {
                    seen += 1;
                    if self.st.on_message(&msg, out, now)? {
                        records += 1;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => self.st.caught_up(p),
                Some(Err(e)) => {
                    self.st.on_poll_error(e)?;
                    break;
                }
            }
        }
        self.align_partitions();
        if self.st.group_mode && records > 0 {
            // For the revoke callback (see `GroupShared::event_time`): once
            // per poll, never per record.
            let mut g = self.st.shared.lock().unwrap_or_else(|p| p.into_inner());
            g.event_time.clear();
            g.event_time
                .extend(self.st.parts.iter().map(|(p, s)| (*p, s.max_ts)));
        }
        if seen == 0 {
            self.relearn_caught_up();
        }
        if seen > 0 {
            if self.st.status.is_waiting() {
                self.st.status.set_connected();
            }
            self.st.apply_rebalances();
            Ok((SourceStatus::Ready, records))
        } else {
            self.st.apply_rebalances();
            if self.st.upstream_ended() {
                return Ok((SourceStatus::Finished, records));
            }
            Ok((SourceStatus::Idle(Duration::from_millis(5)), records))
        }
    }
}

/// Errors after which records may exist that the reader could not see (a
/// broker unreachable or not answering): what it knew of partitions being
/// caught up is stale. Group rebalancing errors are not among them.
fn hides_records(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::NotLeaderForPartition
    )
}

impl<D, F> KafkaReader<D, F> {
    /// librdkafka reports the end of a partition once: not again after
    /// broker trouble cleared the caught-up flags, nor to a consumer that
    /// gets back a partition it had read to its end, so such a partition
    /// (an empty one included) would hold the watermark for ever. So, at
    /// most twice a second, with every broker answering and no trouble
    /// for a second, a partition quiet for a second whose next offset has
    /// reached librdkafka's cached high watermark (refreshed by every fetch
    /// response; no request) is caught up.
    fn relearn_caught_up(&mut self) {
        let st = &mut self.st;
        let now = Instant::now();
        // Caught-up flags matter for idleness and, in a repartition topic,
        // for seeing that every writer's end was read.
        if (st.clock.idle_timeout.is_none() && st.upstream.is_none())
            || st.outage.down.load(Relaxed)
            || st.status.is_waiting()
            || st.trouble_at.elapsed() < Duration::from_secs(1)
            || now.duration_since(st.relearned_at) < Duration::from_millis(500)
        {
            return;
        }
        st.relearned_at = now;
        for (p, state) in st.parts.iter_mut() {
            if state.caught_up
                || state.paused
                || state.last_record.elapsed() < Duration::from_secs(1)
            {
                continue;
            }
            let (mut lo, mut hi) = (-1i64, -1i64);
            // SAFETY: the client pointer lives as long as `self.consumer`;
            // `topic_c` is NUL-terminated; both out-pointers are valid.
            let err = unsafe {
                rdkafka::bindings::rd_kafka_get_watermark_offsets(
                    self.consumer.client().native_ptr(),
                    st.topic_c.as_ptr(),
                    *p,
                    &mut lo,
                    &mut hi,
                )
            };
            if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || hi < 0 {
                continue;
            }
            // Nothing read yet: at the end only if there is nothing to read
            // (librdkafka learns the low offset only with its statistics).
            let at_end = if state.next >= 0 {
                state.next >= hi
            } else {
                hi == 0 || lo == hi
            };
            tracing::debug!(task = %st.task, partition = p, next = state.next, lo, hi, at_end, "kafka source: caught up again?");
            if at_end {
                state.caught_up = true;
            }
        }
    }

    /// Pauses the partitions that ran too far ahead of the slowest and
    /// resumes those it caught up with (see `ReaderState::alignment_changes`).
    fn align_partitions(&mut self) {
        let (pause, resume) = self.st.clock.alignment_changes(&mut self.st.parts);
        for (list, pausing) in [(pause, true), (resume, false)] {
            if list.is_empty() {
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            for p in &list {
                tpl.add_partition(&self.st.topic, *p);
            }
            let r = if pausing {
                self.consumer.pause(&tpl)
            } else {
                self.consumer.resume(&tpl)
            };
            match r {
                Ok(()) => {
                    tracing::debug!(task = %self.st.task, partitions = ?list, pausing, "kafka source: alignment")
                }
                Err(e) => {
                    tracing::warn!(task = %self.st.task, error = %e, "kafka source: pause/resume for alignment failed")
                }
            }
        }
    }

    /// The partitions this reader currently owns.
    pub fn partitions(&self) -> Vec<i32> {
        self.st.parts.keys().copied().collect()
    }

    /// The connection state.
    pub fn status(&self) -> &KafkaStatus {
        &self.st.status
    }
}
