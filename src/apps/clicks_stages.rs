//! The clicks job split in two stages connected by a repartition topic.
//!
//! Owns [`StageParams`], [`parse_job`] and [`count_job`]: the `parse`
//! stage reads the input's JSON clicks (event time from `ts`, bounded
//! out-of-orderness, idle timeout as in [`clicks_job`](super::clicks::clicks_job))
//! and writes each to the repartition topic by its user's stable hash; the
//! `count` stage reads its partitions of that topic (watermark from the
//! parse writers' control records) and writes one
//! `{"user", "window_start", "count"}` per user and 10 s window to the
//! output topic, as the single-stage job does. Each stage runs as
//! `instances` separate processes (one instance each), with its own
//! checkpoints: with a storage URL, both run exactly-once and each
//! recovers on its own. Only assembles jobs: never runs them.

use std::time::Duration;

use super::clicks::{checkpointing, Click, UserCount, WINDOW_MS};
use crate::actors::RestartPolicy;
use crate::connectors::kafka::repartition::{
    repartition_topic, RepartitionSink, RepartitionSource, UPSTREAM_DRAIN_WAIT,
};
use crate::connectors::kafka::{KafkaLateSink, KafkaSink, KafkaSource};
use crate::pipeline::{
    Count, Graph, Job, LateRecords, RunnableJob, Sink, Tumbling, Watermarks, Windowed,
};
use crate::service::lease::{Fenced, LeaseGuard};
use crate::service::registry::partitions_of_task;

/// What either stage needs.
#[derive(Debug, Clone)]
pub struct StageParams {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The logical job's name (names the repartition topic).
    pub job: String,
    /// Input topic (parse stage).
    pub input: String,
    /// Output topic (count stage).
    pub output: String,
    /// This process's index within its stage, `0..instances`.
    pub instance: usize,
    /// Processes of the parse stage (the repartition topic's writers).
    pub parse_instances: usize,
    /// Processes of the count stage (the repartition topic's partitions).
    pub count_instances: usize,
    /// Partitions of the input topic (the parse stage's instance `i` reads
    /// those with `p % parse_instances == i`).
    pub input_partitions: usize,
    /// Partitions of the repartition topic (the count stage's instance `j`
    /// reads those with `p % count_instances == j`); 0: `count_instances`.
    pub repartition_partitions: usize,
    /// The name of this process's copy of its stage (checkpoints, group
    /// and transactional id); `None`: [`StageParams::copy_name`].
    pub copy_name: Option<String>,
    /// Records too late for their window go here as JSON with header
    /// `error: late`; `None`: they are only counted.
    pub late_topic: Option<String>,
    /// Bounded out-of-orderness of `ts`.
    pub out_of_orderness: Duration,
    /// A quiet input partition stops holding the watermark after this.
    pub idle_timeout: Duration,
    /// Durable checkpoint storage: exactly-once when given.
    pub checkpoint_url: Option<String>,
    /// The other copies of this process's stage share this name prefix
    /// (`<job>-<stage>-task-`): a rescale hands their partitions, with
    /// their checkpoints and keyed state, to this copy (see
    /// [`KafkaSource::take_over_from`]). `None`: it never takes over.
    pub take_over_from: Option<String>,
    /// Stop by draining rather than with a savepoint.
    pub drain: bool,
    /// The consumer group its source commits positions for; `None`: the
    /// source's default (`weir-<copy name>`).
    pub group: Option<String>,
    /// Write lease of the coordinated service: the stage's sink refuses
    /// to write once it is gone (zombie fencing). `None`: always write.
    pub fence: Option<LeaseGuard>,
    /// Extra librdkafka options for the stage's producer (its sink), e.g.
    /// `transaction.timeout.ms`.
    pub producer_options: Vec<(String, String)>,
}

impl StageParams {
    /// Defaults: job `clicks`, one process per stage, 4 input partitions,
    /// 2 s out-of-orderness, 10 s idle timeout, at least once.
    pub fn new(
        brokers: impl Into<String>,
        input: impl Into<String>,
        output: impl Into<String>,
    ) -> Self {
        StageParams {
            brokers: brokers.into(),
            job: "clicks".into(),
            input: input.into(),
            output: output.into(),
            instance: 0,
            parse_instances: 1,
            count_instances: 1,
            input_partitions: 4,
            repartition_partitions: 0,
            copy_name: None,
            late_topic: None,
            group: None,
            fence: None,
            out_of_orderness: Duration::from_millis(2_000),
            idle_timeout: Duration::from_secs(10),
            checkpoint_url: None,
            take_over_from: None,
            drain: false,
            producer_options: Vec::new(),
        }
    }

    /// The repartition topic between the stages:
    /// `weir-<job>-count-repartition`.
    pub fn topic(&self) -> String {
        repartition_topic(&self.job, "count")
    }

    /// The name of this process's copy of `stage` (checkpoints, group and
    /// transactional id): `<job>-<stage>-<instance>`.
    pub fn copy_name(&self, stage: &str) -> String {
        self.copy_name
            .clone()
            .unwrap_or_else(|| format!("{}-{stage}-{}", self.job, self.instance))
    }

    /// The repartition topic's partitions this count instance reads.
    pub fn count_partitions(&self) -> Vec<i32> {
        let total = if self.repartition_partitions == 0 {
            self.count_instances.max(1)
        } else {
            self.repartition_partitions
        };
        partitions_of_task(
            total as u32,
            self.instance as u32,
            self.count_instances as u32,
        )
    }
}

/// A stage's job named `name`: checkpoints, drain, and the clicks job's
/// patience with brokers (10 restarts within 5 minutes, backoff 0.5 s
/// doubling to 15 s).
pub(crate) fn stage_job(p: &StageParams, name: &str) -> Job {
    Job::new(name)
        .checkpointing(checkpointing(p.checkpoint_url.clone()))
        .drain_on_cancel(p.drain)
        // A draining count stage reads on for its upstream's end marks
        // (up to `UPSTREAM_DRAIN_WAIT`): give it the time.
        .drain_timeout(UPSTREAM_DRAIN_WAIT + Duration::from_secs(10))
        .restart_policy(
            RestartPolicy::new(10, Duration::from_secs(300))
                .with_backoff(Duration::from_millis(500), Duration::from_secs(15)),
        )
}

/// Stage `parse`: input topic → key by user → repartition topic.
pub fn parse_job(p: &StageParams) -> RunnableJob<impl Graph> {
    let name = p.copy_name("parse");
    let mine = partitions_of_task(
        p.input_partitions as u32,
        p.instance as u32,
        p.parse_instances as u32,
    );
    let mut source = KafkaSource::json::<Click>(&p.brokers, &p.input)
        .partitions(mine)
        .with_timestamps(|c: &Click| c.ts);
    let mut sink = RepartitionSink::new(&p.brokers, p.topic(), |c: &Click| &c.user)
        .first_writer(p.instance)
        .writers(p.parse_instances);
    for (k, v) in &p.producer_options {
        sink = sink.set(k, v);
    }
    if let Some(g) = &p.group {
        source = source.group(g);
    }
    if p.checkpoint_url.is_some() {
        source = source.exactly_once();
        sink = sink.exactly_once(format!("weir-{name}"));
        if let Some(prefix) = &p.take_over_from {
            source = source.take_over_from(prefix);
        }
    }
    let sink = Fenced::new(sink, p.fence.clone().unwrap_or_else(LeaseGuard::unfenced));
    stage_job(p, &name)
        .source(source)
        .watermarks(
            Watermarks::bounded_out_of_orderness(p.out_of_orderness)
                .with_idle_timeout(p.idle_timeout),
        )
        .sink(sink)
}

/// Stage `count`: repartition topic → 10 s tumbling count per user →
/// output topic.
pub fn count_job(p: &StageParams) -> RunnableJob<impl Graph> {
    let mut sink = KafkaSink::<UserCount>::json(&p.brokers, &p.output)
        .key_into(|c: &UserCount, key: &mut Vec<u8>| key.extend_from_slice(c.user.as_bytes()));
    for (k, v) in &p.producer_options {
        sink = sink.set(k, v);
    }
    if p.checkpoint_url.is_some() {
        sink = sink.exactly_once(format!("weir-{}", p.copy_name("count")));
    }
    count_job_into(p, sink)
}

/// Stage `count` writing its per-user window counts to `sink` (made
/// exactly-once by the caller when `p` has checkpoint storage; fenced
/// here with `p.fence`).
pub fn count_job_into<S: Sink<In = UserCount>>(
    p: &StageParams,
    sink: S,
) -> RunnableJob<impl Graph> {
    let name = p.copy_name("count");
    let mut source = RepartitionSource::<Click>::new(&p.brokers, p.topic(), p.parse_instances)
        .partitions(p.count_partitions());
    if let Some(g) = &p.group {
        source = source.group(g);
    }
    if p.checkpoint_url.is_some() {
        source = source.exactly_once();
        if let Some(prefix) = &p.take_over_from {
            source = source.take_over_from(prefix);
        }
    }
    let sink = Fenced::new(sink, p.fence.clone().unwrap_or_else(LeaseGuard::unfenced));
    let late = match &p.late_topic {
        Some(t) => LateRecords::to(KafkaLateSink::json(&p.brokers, t, p.topic())),
        None => LateRecords::count_only(),
    };
    stage_job(p, &name)
        .source(source)
        // The parse writers' watermarks already allow for disorder.
        .watermarks(Watermarks::bounded_out_of_orderness(Duration::ZERO))
        .key_by(|c: &Click| c.user.clone())
        .window(Tumbling::event_time(Duration::from_millis(
            WINDOW_MS as u64,
        )))
        .late_records(late)
        .aggregate(Count)
        .map(|w: Windowed<String, u64>| UserCount {
            user: w.key,
            window_start: w.window.start,
            count: w.value,
        })
        .sink(sink)
}
