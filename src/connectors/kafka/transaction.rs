//! Exactly-once Kafka output: one transaction per checkpoint epoch,
//! committed together with the source offsets of the checkpoint.
//!
//! Owns [`CheckpointTransaction`]: one transactional producer per job
//! attempt, shared by every instance of an exactly-once [`KafkaSink`]
//! (`transactional.id` stable per job, so a restarted process or a zombie
//! is fenced by the broker's producer epoch, and `init_transactions` aborts
//! whatever a dead predecessor left open). Sinks write into the open
//! transaction; at checkpoint `n`, after the sinks flushed and the state
//! of `n` is stored, [`CheckpointCommitter::commit`] sends the offsets of
//! `n` to the transaction (`send_offsets_to_transaction`, each offset's
//! metadata `weir-chk=<n>@<job>`) and commits it: the records of the epoch and
//! the offsets become visible together, or neither does. That commit is
//! the commit point (see DESIGN.md, "Exactly-once with librdkafka"): a
//! restoring job reads the committed offsets' metadata
//! ([`committed_checkpoint`]) to know which checkpoint to restore. Never
//! commits a transaction a previous producer began.
//!
//! [`KafkaSink`]: super::KafkaSink

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::config::KafkaConfig;
use super::dead_letter::{create_producer, flush_producer};
use super::error::KafkaConnectorError;
use super::status::{KafkaStatus, ProducerCtx};
use crate::pipeline::{CheckpointCommitter, CommittedCheckpoint, ConnectorError};

/// The prefix of the offset metadata naming a checkpoint:
/// `weir-chk=<id>@<job>` (the job name, so a job reading offsets that
/// another job committed, e.g. cluster tasks after a rescale, does not
/// take that job's checkpoint for its own).
const CHECKPOINT_METADATA: &str = "weir-chk=";

/// The attempt number of a producer `fence_predecessors` made, whose first
/// transaction is begun by the attempt that takes it.
const FENCED_NOT_BEGUN: u32 = u32::MAX;

/// How long transaction calls may block.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// The shared transactional producer of one exactly-once sink.
pub struct CheckpointTransaction {
    transactional_id: String,
    config: KafkaConfig,
    status: KafkaStatus,
    /// The producer of the current job attempt.
    producer: Mutex<Option<(u32, Arc<BaseProducer<ProducerCtx>>)>>,
    /// Consumers that only lend their group's metadata (never subscribe).
    groups: Mutex<BTreeMap<String, BaseConsumer>>,
    committed: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for CheckpointTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointTransaction")
            .field("transactional_id", &self.transactional_id)
            .finish()
    }
}

impl CheckpointTransaction {
    pub(crate) fn new(config: KafkaConfig, status: KafkaStatus, transactional_id: String) -> Self {
        CheckpointTransaction {
            transactional_id,
            config,
            status,
            producer: Mutex::new(None),
            groups: Mutex::new(BTreeMap::new()),
            committed: tokio::sync::watch::channel(0).0,
        }
    }

    /// The `transactional.id`.
    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    /// A new producer of the transactional id, initialised: its
    /// `init_transactions` bumps the producer epoch, fencing every older
    /// producer of the id (and aborting what it left open).
    fn fencing_producer(&self) -> Result<BaseProducer<ProducerCtx>, KafkaConnectorError> {
        let producer = create_producer(
            &self.config,
            &[
                ("transactional.id", &self.transactional_id),
                ("client.id", &self.transactional_id),
            ],
            &self.status,
        )?;
        producer
            .init_transactions(self.config.startup_wait())
            .map_err(|e| KafkaConnectorError::client("init_transactions", e))?;
        Ok(producer)
    }

    /// The producer of job attempt `attempt`, with a transaction open: the
    /// first instance of an attempt creates it (fencing the previous
    /// attempt's or process's producer and aborting what it left open).
    pub(crate) fn producer_for(
        &self,
        attempt: u32,
    ) -> Result<Arc<BaseProducer<ProducerCtx>>, KafkaConnectorError> {
        let mut current = self.producer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((a, p)) = current.as_ref() {
            if *a == attempt {
                return Ok(p.clone());
            }
            if *a == FENCED_NOT_BEGUN {
                // `fence_predecessors` made it for the attempt now starting.
                let p = p.clone();
                p.begin_transaction()
                    .map_err(|e| KafkaConnectorError::client("begin_transaction", e))?;
                tracing::info!(transactional_id = %self.transactional_id, attempt, "kafka sink: transactional producer ready (predecessors fenced)");
                *current = Some((attempt, p.clone()));
                return Ok(p);
            }
        }
        *current = None;
        let producer = self.fencing_producer()?;
        producer
            .begin_transaction()
            .map_err(|e| KafkaConnectorError::client("begin_transaction", e))?;
        tracing::info!(transactional_id = %self.transactional_id, attempt, "kafka sink: transactional producer ready (predecessors fenced)");
        let producer = Arc::new(producer);
        *current = Some((attempt, producer.clone()));
        Ok(producer)
    }

    fn group_metadata(&self, group: &str) -> Result<ConsumerGroupMetadata, KafkaConnectorError> {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        if !groups.contains_key(group) {
            let c: BaseConsumer = self
                .config
                .client_config(&[("group.id", group), ("enable.auto.commit", "false")])
                .create()
                .map_err(|e| KafkaConnectorError::client("consumer creation", e))?;
            groups.insert(group.to_string(), c);
        }
        groups[group]
            .group_metadata()
            .ok_or_else(|| KafkaConnectorError::Client {
                op: "group metadata",
                reason: format!("no metadata for group {group}"),
            })
    }

    /// The offsets of checkpoint `id` by group, each with
    /// `weir-chk=<id>@<job>;txn=<transactional id>;` as metadata. Positions without a group (not Kafka) are skipped.
    fn offsets(
        &self,
        id: u64,
        positions: &BTreeMap<String, serde_json::Value>,
    ) -> Result<BTreeMap<String, TopicPartitionList>, KafkaConnectorError> {
        let mut by_group: BTreeMap<String, TopicPartitionList> = BTreeMap::new();
        for (task, pos) in positions {
            // Task names are `<job>/<stage>#<i>`.
            let job = task.split('/').next().unwrap_or_default();
            let (Some(group), Some(topic), Some(offsets)) = (
                pos.get("group").and_then(|g| g.as_str()),
                pos.get("topic").and_then(|t| t.as_str()),
                pos.get("offsets").and_then(|o| o.as_object()),
            ) else {
                continue;
            };
            let tpl = by_group.entry(group.to_string()).or_default();
            for (p, o) in offsets {
                let (Ok(p), Some(o)) = (p.parse::<i32>(), o.as_i64()) else {
                    return Err(KafkaConnectorError::BadPosition(pos.to_string()));
                };
                tpl.add_partition_offset(topic, p, Offset::Offset(o))
                    .map_err(|e| KafkaConnectorError::client("offsets", e))?;
                if let Some(mut e) = tpl.find_partition(topic, p) {
                    // `;` ends it, and the NUL makes it a C string: librdkafka
                    // reads it up to a NUL (rust-rdkafka's copy has none,
                    // and a stray heap byte was stored after it).
                    e.set_metadata(format!(
                        "{CHECKPOINT_METADATA}{id}@{job};txn={};\0",
                        self.transactional_id
                    ));
                }
            }
        }
        Ok(by_group)
    }
}

impl CheckpointCommitter for CheckpointTransaction {
    fn fence_predecessors(&self) -> Result<(), ConnectorError> {
        // `init_transactions` bumps the producer epoch of the id: every
        // older producer's commit fails from now on, and one already in
        // progress completes first (the broker answers
        // CONCURRENT_TRANSACTIONS until it has).
        let producer = self.fencing_producer()?;
        // It becomes the producer of the attempt about to start (never
        // dropped: another producer's `init_transactions` would only fence
        // it again). This process's producer of an earlier attempt is
        // fenced by it and let go.
        *self.producer.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((FENCED_NOT_BEGUN, Arc::new(producer)));
        tracing::info!(transactional_id = %self.transactional_id, "kafka sink: predecessors fenced before reading the committed checkpoint");
        Ok(())
    }

    fn fence_other(&self, transactional_id: &str) -> Result<(), ConnectorError> {
        if transactional_id == self.transactional_id {
            return Ok(());
        }
        let producer = create_producer(
            &self.config,
            &[
                ("transactional.id", transactional_id),
                ("client.id", transactional_id),
            ],
            &self.status,
        )?;
        producer
            .init_transactions(self.config.startup_wait())
            .map_err(|e| KafkaConnectorError::client("init_transactions", e))?;
        tracing::info!(transactional_id, taken_over_by = %self.transactional_id, "kafka sink: another copy's writer fenced before taking over its checkpoints");
        Ok(())
    }

    fn commit(
        &self,
        attempt: u32,
        id: u64,
        positions: &BTreeMap<String, serde_json::Value>,
    ) -> Result<(), ConnectorError> {
        // Only the producer of the attempt that took the checkpoint: a
        // later attempt's producer holds that attempt's own records (and
        // its creation aborted this attempt's transaction), so committing
        // it would publish the wrong records under this checkpoint's
        // offsets. (Held past the lock, a replaced producer's commit fails:
        // the new one fenced it.)
        let producer = self
            .producer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(a, _)| *a == attempt)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| {
                ConnectorError::new(format!(
                    "kafka sink {}: checkpoint {id} of job attempt {attempt} has no transaction open (the attempt was replaced)",
                    self.transactional_id
                ))
            })?;
        // The sinks flushed at the barrier; this also catches a failure.
        flush_producer(&producer, None, &self.status)?;
        let deliveries = &producer.context().deliveries;
        if deliveries.failed.load(Relaxed) > 0 {
            return Err(ConnectorError::new(format!(
                "kafka sink {}: {} record(s) not delivered: {}",
                self.transactional_id,
                deliveries.failed.load(Relaxed),
                deliveries.first_error()
            )));
        }
        for (group, tpl) in self.offsets(id, positions)? {
            let cgm = self.group_metadata(&group)?;
            producer
                .send_offsets_to_transaction(&tpl, &cgm, TXN_TIMEOUT)
                .map_err(|e| KafkaConnectorError::client("send_offsets_to_transaction", e))?;
        }
        producer
            .commit_transaction(TXN_TIMEOUT)
            .map_err(|e| KafkaConnectorError::client("commit_transaction", e))?;
        producer
            .begin_transaction()
            .map_err(|e| KafkaConnectorError::client("begin_transaction", e))?;
        self.committed.send_if_modified(|c| {
            let newer = id > *c;
            if newer {
                *c = id;
            }
            newer
        });
        tracing::debug!(transactional_id = %self.transactional_id, id, "kafka sink: checkpoint committed");
        Ok(())
    }

    fn committed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.committed.subscribe()
    }
}

/// What the committed offsets of `group` on `topic` say about the
/// checkpoints of `job`: their metadata `weir-chk=<n>@<owner>;txn=<id>;`
/// names the checkpoint (and the copy of the job) each partition was
/// committed with. All by `job`: the largest id (a checkpoint's
/// transaction commits all its partitions together). Some by other copies
/// whose names start with `adopt` (a rescale gave this copy their
/// partitions): [`CommittedCheckpoint::Adopted`], each owner's checkpoint
/// for the partitions it committed, and `keys` as the key split. Offsets
/// other jobs committed count as nothing committed.
pub(crate) fn committed_checkpoint(
    consumer: &OffsetsConsumer,
    config: &KafkaConfig,
    job: &str,
    topic: &str,
    partitions: &[i32],
    adopt: Option<&str>,
    keys: Option<crate::pipeline::KeyGroups>,
) -> Result<CommittedCheckpoint, KafkaConnectorError> {
    let committed = committed_offsets(consumer, config, topic, partitions)?;
    let mut own = None::<u64>;
    let mut own_partitions = Vec::new();
    let mut others: BTreeMap<(String, u64), crate::pipeline::AdoptedCheckpoint> = BTreeMap::new();
    for e in committed.elements() {
        let Some(m) = parse_metadata(e.metadata()) else {
            continue;
        };
        if m.owner == job {
            own = own.max(Some(m.id));
            own_partitions.push(e.partition());
        } else if adopt.is_some_and(|prefix| m.owner.starts_with(prefix)) {
            others
                .entry((m.owner.to_string(), m.id))
                .or_insert_with(|| crate::pipeline::AdoptedCheckpoint {
                    job: m.owner.to_string(),
                    id: m.id,
                    transactional_id: m.transactional_id.map(str::to_string),
                    partitions: Vec::new(),
                })
                .partitions
                .push(e.partition());
        }
    }
    if others.is_empty() {
        return Ok(own.map_or(CommittedCheckpoint::Nothing, CommittedCheckpoint::At));
    }
    // Some partitions are still this copy's own (committed by it under
    // this name before): its own checkpoint is one of those taken over.
    if let Some(id) = own {
        others.insert(
            (job.to_string(), id),
            crate::pipeline::AdoptedCheckpoint {
                job: job.to_string(),
                id,
                transactional_id: None,
                partitions: own_partitions,
            },
        );
    }
    Ok(CommittedCheckpoint::Adopted {
        from: others.into_values().collect(),
        keys,
    })
}

/// The copies whose checkpoints the committed offsets of `partitions` (in
/// the consumer's group) name: every owner a restore could still load.
pub(crate) fn checkpoint_owners(
    consumer: &OffsetsConsumer,
    config: &KafkaConfig,
    topic: &str,
    partitions: &[i32],
) -> Result<std::collections::BTreeSet<String>, KafkaConnectorError> {
    let committed = committed_offsets(consumer, config, topic, partitions)?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| parse_metadata(e.metadata()).map(|m| m.owner.to_string()))
        .collect())
}

/// A consumer of a group that only reads its committed offsets (and the
/// topic's metadata); it never subscribes, fetches or commits.
pub(crate) struct OffsetsConsumer(BaseConsumer);

impl OffsetsConsumer {
    /// A consumer of `group`.
    pub(crate) fn new(config: &KafkaConfig, group: &str) -> Result<Self, KafkaConnectorError> {
        config
            .client_config(&[
                ("group.id", group),
                ("enable.auto.commit", "false"),
                // Offsets in a transaction not yet committed or aborted make
                // the broker answer "unstable" (retried) rather than stale.
                ("isolation.level", "read_committed"),
            ])
            .create()
            .map(OffsetsConsumer)
            .map_err(|e| KafkaConnectorError::client("consumer creation", e))
    }

    /// Its client (for metadata).
    pub(crate) fn client(
        &self,
    ) -> &rdkafka::client::Client<rdkafka::consumer::DefaultConsumerContext> {
        self.0.client()
    }
}

/// The committed offsets (with their metadata) of `partitions` in the
/// consumer's group.
fn committed_offsets(
    consumer: &OffsetsConsumer,
    config: &KafkaConfig,
    topic: &str,
    partitions: &[i32],
) -> Result<TopicPartitionList, KafkaConnectorError> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    consumer
        .0
        .committed_offsets(tpl, config.startup_wait())
        .map_err(|e| KafkaConnectorError::client("committed offsets", e))
}

/// What one committed offset's metadata says.
struct CheckpointMark<'a> {
    id: u64,
    owner: &'a str,
    transactional_id: Option<&'a str>,
}

/// Parses `weir-chk=<id>@<owner>;txn=<id>;` (the `txn` part optional).
fn parse_metadata(metadata: &str) -> Option<CheckpointMark<'_>> {
    let mut parts = metadata.strip_prefix(CHECKPOINT_METADATA)?.split(';');
    let (id, owner) = parts.next()?.split_once('@')?;
    let transactional_id = parts.find_map(|p| p.strip_prefix("txn="));
    Some(CheckpointMark {
        id: id.parse().ok()?,
        owner,
        transactional_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_metadata_parses_with_and_without_its_transactional_id() {
        let m = parse_metadata("weir-chk=12@clicks-count-task-1-of-2;txn=weir-x;").unwrap();
        assert_eq!(
            (m.id, m.owner, m.transactional_id),
            (12, "clicks-count-task-1-of-2", Some("weir-x"))
        );
        let m = parse_metadata("weir-chk=3@j;").unwrap();
        assert_eq!((m.id, m.owner, m.transactional_id), (3, "j", None));
        assert!(parse_metadata("other").is_none());
        assert!(parse_metadata("weir-chk=x@j;").is_none());
    }
}
