//! The consumer a reader polls: its librdkafka context ([`SourceCtx`]:
//! statistics, errors, the rebalance callback that hands partitions over
//! with their positions and event time), what that context shares with the
//! reader ([`GroupShared`], [`Outage`]) and how a consumer is made.
//! Must never: poll, emit records or commit anything but the safe offsets
//! of completed checkpoints on revoke.

use super::*;

/// What the rebalance callback shares with the reader.
#[derive(Default)]
pub(super) struct GroupShared {
    /// Offsets made safe by completed checkpoints, not yet committed on revoke.
    pub(super) safe: BTreeMap<i32, i64>,
    /// Positions to start from when a partition is (re)assigned.
    pub(super) pending_seek: BTreeMap<i32, i64>,
    /// Event time a restored checkpoint had reached in partitions not
    /// assigned yet.
    pub(super) pending_event_time: BTreeMap<i32, Timestamp>,
    /// Each owned partition's event time as of the end of the last poll
    /// (group mode): what the revoke callback hands over, a lower bound of
    /// the exact value the reader adds once it applies the revocation (a
    /// new owner may claim the partition before that).
    pub(super) event_time: BTreeMap<i32, Timestamp>,
    /// Rebalances the reader has not applied yet.
    pub(super) events: Vec<Rebalanced>,
}

pub(super) enum Rebalanced {
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
pub(super) struct Outage {
    /// Every broker was lost (transport failure / all brokers down), and
    /// none has answered since.
    pub(super) down: AtomicBool,
    /// A broker error or request timeout since the reader last looked: what
    /// it knew about partitions being caught up with their logs is stale
    /// (new records may wait behind the outage), so none counts as idle
    /// until librdkafka reports its end again.
    pub(super) trouble: AtomicBool,
    /// Since when the group membership has not been `steady` (joining,
    /// syncing, waiting for an assignment) while a broker answers, and in
    /// which join state (from the statistics; group mode only).
    pub(super) unsettled: Mutex<Option<(Instant, String)>>,
}

/// How long a group member may stay out of the `steady` join state while a
/// broker answers before its task fails and the job restarts with new
/// clients. A rebalance among weir's own readers (which poll all the time)
/// takes a few seconds; after a broker restart librdkafka 2.12 members
/// were seen waiting in `wait-join` for minutes, their group's other
/// member never heartbeating again (see ARCHITECTURE.md, "What the broker
/// does").
pub(super) const GROUP_STALL: Duration = Duration::from_secs(30);

/// A consumer with the state its context shares with the reader.
pub(super) type NewConsumer = (
    BaseConsumer<SourceCtx>,
    Arc<Mutex<GroupShared>>,
    Arc<Outage>,
);

/// A consumer with weir's context; nothing assigned yet.
pub(super) fn new_consumer(
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
pub(super) fn start_consumer(
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
    pub(super) status: KafkaStatus,
    pub(super) topic: String,
    pub(super) shared: Arc<Mutex<GroupShared>>,
    pub(super) outage: Arc<Outage>,
    pub(super) handoffs: HandoffView,
}

impl SourceCtx {
    pub(super) fn on_error(&self, error: &KafkaError, reason: &str) {
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
                // librdkafka keeps a partition's pause across revocation and
                // re-assignment to the same consumer (librdkafka #1849), but
                // the reader starts every assigned partition unpaused: one
                // paused for alignment before a rebalance that gave it back
                // would never be fetched again, and its watermark would hold
                // every window for ever. Resumed here, both agree.
                if let Err(e) = c.resume(tpl) {
                    tracing::warn!(error = %e, topic = %self.topic, "kafka source: resuming assigned partitions failed");
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

/// A consumer closed on a thread of its own when dropped. Closing a group
/// member waits until it has left its group (librdkafka serves the final
/// revocation first); after a broker restart, with the coordinator slow to
/// settle, that was seen to take minutes, and done on the source actor's
/// arbiter it held every actor there, the next attempt's reader among
/// them: that reader never subscribed, so its instance held the job's
/// watermark and no window fired again.
///
/// Shared (an `Arc`) so an offset commit can run on a thread of its own
/// (see `KafkaReader::commit`): the consumer is closed once the last
/// holder lets go.
pub(super) struct ClosedElsewhere(Option<std::sync::Arc<BaseConsumer<SourceCtx>>>);

impl ClosedElsewhere {
    pub(super) fn new(consumer: BaseConsumer<SourceCtx>) -> Self {
        ClosedElsewhere(Some(std::sync::Arc::new(consumer)))
    }

    /// Another handle on the consumer.
    pub(super) fn shared(&self) -> std::sync::Arc<BaseConsumer<SourceCtx>> {
        self.0.clone().expect("the consumer is there until dropped")
    }
}

impl std::ops::Deref for ClosedElsewhere {
    type Target = BaseConsumer<SourceCtx>;
    #[inline]
    fn deref(&self) -> &Self::Target {
        self.0
            .as_ref()
            .expect("the consumer is there until dropped")
    }
}

impl Drop for ClosedElsewhere {
    fn drop(&mut self) {
        let Some(consumer) = self.0.take() else {
            return;
        };
        let closing = std::thread::Builder::new()
            .name("weir-kafka-close".into())
            .spawn(move || drop(consumer));
        if let Err(e) = closing {
            // No thread to spare: close here, as before.
            tracing::warn!(error = %e, "kafka source: closing the consumer on the actor's thread");
        }
    }
}
