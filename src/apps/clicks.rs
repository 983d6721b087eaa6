//! The Kafka clicks pipeline: clicks per user per 10 s event-time window.
//!
//! Owns [`Click`] (input), [`UserCount`] (output), [`ClicksParams`] and
//! [`clicks_job`]: JSON `{"user", "ts"}` from the input topic, event time
//! from `ts`, watermark = max `ts` seen − out-of-orderness (default 2 s),
//! tumbling windows aligned to multiples of 10,000 ms, one
//! `{"user", "window_start", "count"}` per user and window to the output
//! topic keyed by user. Records too late for their window go to
//! `<input>.dlq` with header `error: late` and the partition and offset
//! they were read from; malformed input goes there too, unchanged. Never
//! drops a record without counting it.

use crate::actors::RestartPolicy;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::connectors::kafka::{FromKafka, KafkaLateSink, KafkaSink, KafkaSource};
use crate::pipeline::{
    CheckpointConfig, Count, Graph, Job, LateRecords, RunnableJob, Timestamp, Tumbling, Watermarks,
    Windowed,
};
use crate::service::lease::{Fenced, LeaseGuard};

/// Window size of the clicks job.
pub const WINDOW_MS: i64 = 10_000;

/// One input record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Click {
    /// Who clicked.
    pub user: String,
    /// When, in milliseconds since the Unix epoch.
    pub ts: Timestamp,
}

/// One output record: a user's clicks in one window.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserCount {
    /// The user.
    pub user: String,
    /// Window start (a multiple of 10,000 ms).
    pub window_start: Timestamp,
    /// Clicks in `[window_start, window_start + 10 s)`.
    pub count: u64,
}

/// What the clicks job needs.
#[derive(Debug, Clone)]
pub struct ClicksParams {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Input topic.
    pub input: String,
    /// Output topic.
    pub output: String,
    /// Consumer group.
    pub group: String,
    /// Parallel instances.
    pub parallelism: usize,
    /// Bounded out-of-orderness of `ts`.
    pub out_of_orderness: Duration,
    /// A partition (or source instance) quiet this long stops holding the
    /// watermark back.
    pub idle_timeout: Duration,
    /// Explicit partitions (coordinated service) instead of the group's.
    pub partitions: Option<Vec<i32>>,
    /// Extra librdkafka options for source and sinks.
    pub options: Vec<(String, String)>,
    /// Write lease of the coordinated service: the output sink refuses to write once it is gone
    /// (zombie fencing). `None`: always write.
    pub fence: Option<LeaseGuard>,
    /// Durable checkpoint storage (`file:///dir`, `s3://..`). With it the
    /// job runs exactly-once (transactional output, offsets committed in
    /// its transactions) and a stop is a savepoint; without it, at least
    /// once with checkpoints in memory.
    pub checkpoint_url: Option<String>,
    /// Stop by draining (fire every open window) rather than with a
    /// savepoint.
    pub drain: bool,
    /// The job's name (default `kafka-clicks`): names its checkpoints and
    /// its transactional id, so it must be unique per running copy (one
    /// per task in the cluster).
    pub job_name: String,
    /// The output's delivery guarantee (`--delivery`); `None`: exactly-once
    /// with checkpoint storage, at least once without.
    pub delivery: Option<super::Delivery>,
}

impl ClicksParams {
    /// Defaults: group `weir-kafka-clicks`, parallelism 1, 2 s
    /// out-of-orderness, 10 s idle timeout.
    pub fn new(
        brokers: impl Into<String>,
        input: impl Into<String>,
        output: impl Into<String>,
    ) -> Self {
        ClicksParams {
            brokers: brokers.into(),
            input: input.into(),
            output: output.into(),
            group: "weir-kafka-clicks".into(),
            parallelism: 1,
            out_of_orderness: Duration::from_millis(2000),
            idle_timeout: Duration::from_secs(10),
            partitions: None,
            options: Vec::new(),
            fence: None,
            checkpoint_url: None,
            drain: false,
            job_name: "kafka-clicks".into(),
            delivery: None,
        }
    }

    /// The dead-letter topic (`<input>.dlq`).
    pub fn dead_letter_topic(&self) -> String {
        format!("{}.dlq", self.input)
    }
}

/// Checkpoints every second; durable (and exactly-once) with a storage URL.
pub(crate) fn checkpointing(storage_url: Option<String>) -> CheckpointConfig {
    CheckpointConfig {
        storage_url,
        ..CheckpointConfig::default()
    }
}

/// The clicks pipeline as a job named `kafka-clicks`.
pub fn clicks_job(p: &ClicksParams) -> RunnableJob<impl Graph> {
    // Records keep their partition and offset, so a late one names its
    // input record in the dead-letter topic.
    let mut source = KafkaSource::json::<Click>(&p.brokers, &p.input)
        .with_positions()
        .group(&p.group)
        .with_timestamps(|c: &FromKafka<Click>| c.value.ts);
    let mut sink = KafkaSink::<UserCount>::json(&p.brokers, &p.output)
        .key_into(|c: &UserCount, key: &mut Vec<u8>| key.extend_from_slice(c.user.as_bytes()));
    let mut late_config = crate::connectors::kafka::KafkaConfig::new(&p.brokers);
    for (k, v) in &p.options {
        source = source.set(k, v);
        sink = sink.set(k, v);
        late_config = late_config.set(k, v);
    }
    if let Some(parts) = &p.partitions {
        source = source.partitions(parts.clone());
    }
    let late = KafkaLateSink::json_with_positions(&p.brokers, p.dead_letter_topic(), &p.input)
        .with_config(late_config);
    let guarantee = super::output_guarantee(
        p.delivery,
        p.checkpoint_url.is_some(),
        format!("{}-{}", p.group, p.job_name),
    );
    if matches!(
        guarantee,
        crate::connectors::kafka::DeliveryGuarantee::ExactlyOnce { .. }
    ) {
        source = source.exactly_once();
    }
    sink = sink.delivery(guarantee);
    let fence = p.fence.clone().unwrap_or_else(LeaseGuard::unfenced);
    let sink = Fenced::new(sink, fence);
    Job::new(p.job_name.as_str())
        .checkpointing(checkpointing(p.checkpoint_url.clone()))
        .drain_on_cancel(p.drain)
        .parallelism(p.parallelism)
        // Brokers come and go: be patient before giving up (10 restarts
        // within 5 minutes, backoff 0.5 s doubling to 15 s).
        .restart_policy(
            RestartPolicy::new(10, Duration::from_secs(300))
                .with_backoff(Duration::from_millis(500), Duration::from_secs(15)),
        )
        .source(source)
        .watermarks(
            Watermarks::bounded_out_of_orderness(p.out_of_orderness)
                .with_idle_timeout(p.idle_timeout),
        )
        .key_by(|c: &FromKafka<Click>| c.value.user.clone())
        .window(Tumbling::event_time(Duration::from_millis(
            WINDOW_MS as u64,
        )))
        .late_records(LateRecords::to(late))
        .aggregate(Count)
        .map(|w: Windowed<String, u64>| UserCount {
            user: w.key,
            window_start: w.window.start,
            count: w.value,
        })
        .sink(sink)
}
