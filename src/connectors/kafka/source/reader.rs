//! One parallel instance's reader of a [`KafkaSource`]: [`KafkaReader`]
//! polls its consumer without blocking, decodes into the fused chain,
//! tracks event time per partition (and the upstream writers' marks on a
//! repartition topic), routes undecodable records to the dead-letter
//! output, and reports, seeks and commits positions.
//! Must never: auto-commit, block its actor, or fail on a transient broker
//! error.

use super::*;

/// How long a source waits for a synchronous offset commit (at least once,
/// group or assigned partitions) before going on without it.
const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// One instance's reader of a [`KafkaSource`].
pub struct KafkaReader<D, F> {
    pub(super) consumer: ClosedElsewhere,
    pub(super) st: ReaderState<D, F>,
    /// The answer of an offset commit still in flight (see
    /// `commit_bounded`).
    pub(super) commit_in_flight: Option<std::sync::mpsc::Receiver<rdkafka::error::KafkaResult<()>>>,
}

pub(super) struct ReaderState<D, F> {
    pub(super) config: KafkaConfig,
    pub(super) topic: String,
    pub(super) group_mode: bool,
    /// The consumer group (offsets are committed for it).
    pub(super) group: String,
    /// Offsets are committed by an exactly-once sink, not by the reader.
    pub(super) exactly_once: bool,
    pub(super) outage: Arc<Outage>,
    pub(super) decode: D,
    pub(super) ts: Option<F>,
    pub(super) parts: BTreeMap<i32, PartState>,
    pub(super) shared: Arc<Mutex<GroupShared>>,
    pub(super) dlq_topic: Option<String>,
    pub(super) dlq: Option<DlqProducer>,
    pub(super) job_dead_letters: DeadLetters,
    pub(super) metrics: Arc<TaskMetrics>,
    pub(super) status: KafkaStatus,
    /// Event time over the partitions (see `partitions`).
    pub(super) clock: PartitionClock,
    /// The topic, NUL-terminated, for librdkafka's C calls.
    pub(super) topic_c: std::ffi::CString,
    /// When broker trouble last cleared the caught-up flags.
    pub(super) trouble_at: Instant,
    /// When `relearn_caught_up` last looked.
    pub(super) relearned_at: Instant,
    /// Partitions in transit between this stage's instances (group mode).
    pub(super) handoffs: HandoffView,
    pub(super) task: String,
    /// A repartition topic's upstream writer count: records with the
    /// control header are control records (see `repartition`).
    pub(super) upstream: Option<usize>,
}

impl<D: KafkaDecode, F: Fn(&D::Out) -> Timestamp> ReaderState<D, F> {
    pub(super) fn apply_rebalances(&mut self) {
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
    pub(super) fn caught_up(&mut self, p: i32) {
        if let Some(state) = self.parts.get_mut(&p) {
            state.caught_up = true;
        }
    }

    /// Completes the handoff entry of a partition this reader gave up with
    /// what only the reader knows (its event time; its position, if
    /// librdkafka had none), unless another instance already took it.
    pub(super) fn hand_off(&self, p: i32, state: &PartState) {
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
    pub(super) fn on_message<M: Message, E: Emit<D::Out>>(
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
    pub(super) fn upstream_ended(&self) -> bool {
        self.upstream.is_some()
            && !self.parts.is_empty()
            && self
                .parts
                .values()
                .all(|s| s.caught_up && s.upstream.as_ref().is_some_and(UpstreamMarks::ended))
    }

    /// A repartition topic's control record at `off` of `p`: the writer's
    /// mark updates the partition's event time; never a record downstream.
    pub(super) fn on_control(
        &mut self,
        p: i32,
        off: i64,
        control: Result<(repartition::Writer, Mark), String>,
        now: Instant,
    ) {
        let writers = self.upstream.unwrap_or(0);
        let state = self.parts.entry(p).or_insert_with(|| PartState::new(now));
        state.next = off + 1;
        state.last_record = now;
        match control {
            Ok((w, _)) if w.of.is_some_and(|n| n != writers) => {
                // A mark of the upstream stage's earlier (or later) layout:
                // its writer indices mean other partitions of the input.
                tracing::debug!(task = %self.task, partition = p, offset = off, writer = w.index, of = ?w.of, writers, "repartition source: control record of another writer layout (ignored)");
            }
            Ok((w, mark)) => {
                state.caught_up = false;
                let marks = state
                    .upstream
                    .get_or_insert_with(|| UpstreamMarks::new(writers));
                if !marks.apply(w.index, mark) {
                    tracing::warn!(task = %self.task, topic = %self.topic, partition = p, offset = off, writer = w.index, writers, "repartition source: control record from a writer outside the configured count (ignored)");
                }
            }
            Err(reason) => {
                state.caught_up = false;
                state
                    .upstream
                    .get_or_insert_with(|| UpstreamMarks::new(writers));
                tracing::warn!(task = %self.task, topic = %self.topic, partition = p, offset = off, reason, "repartition source: malformed control record (ignored)");
            }
        }
    }

    pub(super) fn dead_letter(
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

    pub(super) fn on_poll_error(&mut self, e: KafkaError) -> Result<(), ConnectorError> {
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

    pub(super) fn position(&self) -> Value {
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

    pub(super) fn parse(
        &self,
        position: &Value,
    ) -> Result<BTreeMap<i32, i64>, KafkaConnectorError> {
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
        self.commit_bounded(tpl);
        Ok(())
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
    /// Commits `tpl` synchronously on a thread of its own, waiting at most
    /// [`COMMIT_WAIT`]. librdkafka's synchronous commit can wait without
    /// end for a group coordinator it lost (confluentinc/librdkafka#3740,
    /// #3847); done on the source actor's arbiter, that held the whole
    /// pipeline (nothing polled, no drain) after a broker freeze. A commit
    /// still in flight makes the next one skip (a failed or skipped commit
    /// only means records are read again: the positions are at least once).
    fn commit_bounded(&mut self, tpl: TopicPartitionList) {
        if let Some(rx) = &self.commit_in_flight {
            if let Err(std::sync::mpsc::TryRecvError::Empty) = rx.try_recv() {
                tracing::warn!(task = %self.st.task, "kafka source: the previous offset commit has not completed: this one is skipped (records will be read again)");
                return;
            }
            self.commit_in_flight = None;
        }
        let consumer = self.consumer.shared();
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("weir-kafka-commit".into())
            .spawn(move || {
                let _ = tx.send(consumer.commit(&tpl, CommitMode::Sync));
            });
        if let Err(e) = spawned {
            tracing::warn!(task = %self.st.task, error = %e, "kafka source: no thread for the offset commit (records will be read again)");
            return;
        }
        match rx.recv_timeout(COMMIT_WAIT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(task = %self.st.task, error = %e, "kafka source: commit failed (records will be read again)");
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!(task = %self.st.task, wait_s = COMMIT_WAIT.as_secs(), "kafka source: offset commit not answered in time: going on without it (records will be read again)");
                self.commit_in_flight = Some(rx);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                tracing::warn!(task = %self.st.task, "kafka source: offset commit thread ended without an answer (records will be read again)");
            }
        }
    }

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
pub(super) fn hides_records(code: RDKafkaErrorCode) -> bool {
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
    pub(super) fn relearn_caught_up(&mut self) {
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
    pub(super) fn align_partitions(&mut self) {
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
