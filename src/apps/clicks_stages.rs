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
    repartition_topic, RepartitionSink, RepartitionSource,
};
use crate::connectors::kafka::{KafkaSink, KafkaSource};
use crate::pipeline::{Count, Job, RunnableJob, Tumbling, Watermarks, Windowed};

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
    /// Bounded out-of-orderness of `ts`.
    pub out_of_orderness: Duration,
    /// A quiet input partition stops holding the watermark after this.
    pub idle_timeout: Duration,
    /// Durable checkpoint storage: exactly-once when given.
    pub checkpoint_url: Option<String>,
    /// Stop by draining rather than with a savepoint.
    pub drain: bool,
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
            out_of_orderness: Duration::from_millis(2_000),
            idle_timeout: Duration::from_secs(10),
            checkpoint_url: None,
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
        format!("{}-{stage}-{}", self.job, self.instance)
    }
}

/// A stage's job named `name`: checkpoints, drain, and the clicks job's
/// patience with brokers (10 restarts within 5 minutes, backoff 0.5 s
/// doubling to 15 s).
fn stage_job(p: &StageParams, name: &str) -> Job {
    Job::new(name)
        .checkpointing(checkpointing(p.checkpoint_url.clone()))
        .drain_on_cancel(p.drain)
        .restart_policy(
            RestartPolicy::new(10, Duration::from_secs(300))
                .with_backoff(Duration::from_millis(500), Duration::from_secs(15)),
        )
}

/// Stage `parse`: input topic → key by user → repartition topic.
pub fn parse_job(p: &StageParams) -> RunnableJob {
    let name = p.copy_name("parse");
    let mine: Vec<i32> = (0..p.input_partitions as i32)
        .filter(|x| *x as usize % p.parse_instances.max(1) == p.instance)
        .collect();
    let mut source = KafkaSource::json::<Click>(&p.brokers, &p.input)
        .partitions(mine)
        .with_timestamps(|c: &Click| c.ts);
    let mut sink =
        RepartitionSink::new(&p.brokers, p.topic(), |c: &Click| &c.user).first_writer(p.instance);
    for (k, v) in &p.producer_options {
        sink = sink.set(k, v);
    }
    if p.checkpoint_url.is_some() {
        source = source.exactly_once();
        sink = sink.exactly_once(format!("weir-{name}"));
    }
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
pub fn count_job(p: &StageParams) -> RunnableJob {
    let name = p.copy_name("count");
    let mut source = RepartitionSource::<Click>::new(&p.brokers, p.topic(), p.parse_instances)
        .partitions([p.instance as i32]);
    let mut sink = KafkaSink::<UserCount>::json(&p.brokers, &p.output)
        .key_into(|c: &UserCount, key: &mut Vec<u8>| key.extend_from_slice(c.user.as_bytes()));
    for (k, v) in &p.producer_options {
        sink = sink.set(k, v);
    }
    if p.checkpoint_url.is_some() {
        source = source.exactly_once();
        sink = sink.exactly_once(format!("weir-{name}"));
    }
    stage_job(p, &name)
        .source(source)
        // The parse writers' watermarks already allow for disorder.
        .watermarks(Watermarks::bounded_out_of_orderness(Duration::ZERO))
        .key_by(|c: &Click| c.user.clone())
        .window(Tumbling::event_time(Duration::from_millis(
            WINDOW_MS as u64,
        )))
        .aggregate(Count)
        .map(|w: Windowed<String, u64>| UserCount {
            user: w.key,
            window_start: w.window.start,
            count: w.value,
        })
        .sink(sink)
}
