//! The clicks job as one graph of two stages, for the cluster's planner.
//!
//! Owns [`StageParams`], [`clicks_graph`] (the graph), [`placement`] (a
//! process's place among the stages) and [`clicks_stage`] (the job of one
//! stage, cut from the graph by
//! [`plan_stage`](crate::service::stage_plan::plan_stage)). Stage `parse`
//! reads the input's JSON clicks (event time from `ts`, bounded
//! out-of-orderness, idle timeout as in
//! [`clicks_job`](super::clicks::clicks_job)); the `key_by(user)` after it
//! becomes the repartition topic `weir-<job>-count-repartition`, written
//! by the user's stable hash; stage `count` reads its partitions of it
//! (watermark from the parse writers' control records) and writes one
//! `{"user", "window_start", "count"}` per user and 10 s window to the
//! output topic, as the single-stage job does. Each stage runs as
//! `instances` separate processes (one instance each), with its own
//! checkpoints: with a storage URL, both run exactly-once and each
//! recovers on its own. Only assembles jobs: never runs them.

use std::time::Duration;

use super::clicks::{checkpointing, UserCount};
use crate::actors::{LocalJob, RestartPolicy};
use crate::connectors::kafka::repartition::{repartition_topic, UPSTREAM_DRAIN_WAIT};
use crate::connectors::kafka::KafkaSink;
use crate::pipeline::{Job, RunnableJob, Windowed};
use crate::service::lease::{Fenced, LeaseGuard};
use crate::service::stage_plan::{plan_stage, PlanError, StagePlacement, StagedGraph};

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
}

/// A stage's job named `name`: checkpoints, drain, and the clicks job's
/// patience with brokers (10 restarts within 5 minutes, backoff 0.5 s
/// doubling to 15 s).
pub fn stage_job(p: &StageParams, name: &str) -> Job {
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

/// This process's place in the stages, for the planner: stage `stage`,
/// task `instance` of it, the stages' sizes and the `count` repartition
/// topic's partitions, checkpoints, lease and producer options.
pub fn placement(p: &StageParams, stage: &str) -> StagePlacement {
    let mut at = StagePlacement::new(&p.brokers, &p.job, stage, p.instance);
    at.tasks.insert("parse".into(), p.parse_instances);
    at.tasks.insert("count".into(), p.count_instances);
    at.partitions
        .insert("count".into(), p.repartition_partitions);
    at.copy_name = p.copy_name(stage);
    at.exactly_once = p.checkpoint_url.is_some();
    at.take_over_from = p.take_over_from.clone();
    at.group = p.group.clone();
    at.fence = p.fence.clone().unwrap_or_else(LeaseGuard::unfenced);
    at.producer_options = p.producer_options.clone();
    at
}

/// The clicks job as one graph of two stages: `parse` (the input's JSON
/// clicks, event time from `ts`) → key by user → `count` (10 s tumbling
/// count per user) → output topic. The cluster's planner cuts it at the
/// `key_by` ([`clicks_stage`]); the source is configured for this
/// process's `parse` instance, the sink with its copy's transactional id.
pub fn clicks_graph(p: &StageParams) -> RunnableJob<impl StagedGraph> {
    let mut sink = KafkaSink::<UserCount>::json(&p.brokers, &p.output)
        .key_into(|c: &UserCount, key: &mut Vec<u8>| key.extend_from_slice(c.user.as_bytes()));
    for (k, v) in &p.producer_options {
        sink = sink.set(k, v);
    }
    if p.checkpoint_url.is_some() {
        sink = sink.exactly_once(format!("weir-{}", p.copy_name("count")));
    }
    let sink = Fenced::new(sink, p.fence.clone().unwrap_or_else(LeaseGuard::unfenced));
    user_counts!(p)
        .map(|w: Windowed<String, u64>| UserCount {
            user: w.key,
            window_start: w.window.start,
            count: w.value,
        })
        .sink(sink)
}

/// Stage `stage` (`parse` or `count`) of [`clicks_graph`] for this process.
pub fn clicks_stage(p: &StageParams, stage: &str) -> Result<LocalJob, PlanError> {
    plan_stage(&clicks_graph(p), &placement(p, stage))
}

/// Stages `parse` and `count` of the clicks job, up to the windows'
/// counts (`Windowed<String, u64>`), as a stream to continue: the input's
/// JSON clicks for this process's `parse` instance, event time from `ts`,
/// bounded out-of-orderness and idle timeout from `p`, keyed by user,
/// counted per 10 s window. A macro because the stream's type holds
/// closures: it cannot be named in a signature, and a fn pointer would
/// add an indirect call per record.
macro_rules! user_counts {
    ($p:expr) => {{
        let p: &$crate::apps::clicks_stages::StageParams = $p;
        let mine = $crate::service::registry::partitions_of_task(
            p.input_partitions as u32,
            p.instance as u32,
            p.parse_instances as u32,
        );
        let mut source =
            $crate::connectors::kafka::KafkaSource::json::<$crate::apps::clicks::Click>(
                &p.brokers, &p.input,
            )
            .partitions(mine)
            .with_timestamps(|c: &$crate::apps::clicks::Click| c.ts);
        if let Some(g) = &p.group {
            source = source.group(g);
        }
        if p.checkpoint_url.is_some() {
            source = source.exactly_once();
            if let Some(prefix) = &p.take_over_from {
                source = source.take_over_from(prefix);
            }
        }
        let late = match &p.late_topic {
            Some(t) => $crate::pipeline::LateRecords::to(
                $crate::connectors::kafka::KafkaLateSink::json(&p.brokers, t, p.topic()),
            ),
            None => $crate::pipeline::LateRecords::count_only(),
        };
        $crate::apps::clicks_stages::stage_job(p, &p.job)
            .source(source)
            .watermarks(
                $crate::pipeline::Watermarks::bounded_out_of_orderness(p.out_of_orderness)
                    .with_idle_timeout(p.idle_timeout),
            )
            .uid("parse")
            .key_by(|c: &$crate::apps::clicks::Click| c.user.clone())
            .window($crate::pipeline::Tumbling::event_time(
                std::time::Duration::from_millis($crate::apps::clicks::WINDOW_MS as u64),
            ))
            .late_records(late)
            .aggregate($crate::pipeline::Count)
            .uid("count")
    }};
}
pub(crate) use user_counts;
