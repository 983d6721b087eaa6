//! The clicks job with a third stage: clicks per 10 s window over all
//! users, through two repartition topics.
//!
//! Owns [`WindowTotal`] (output), [`TotalsParams`], [`count_to_totals_job`]
//! and [`totals_job`]. Stage `parse` is
//! [`parse_job`](super::clicks_stages::parse_job) (clicks by user into
//! `weir-<job>-count-repartition`); stage `count` counts each user's clicks
//! per window as the two-stage job does, but writes its
//! [`UserCount`]s to `weir-<job>-total-repartition` by their window
//! (`key_by` B); stage `total` sums them per window (its event time is the
//! count stage's result time, `window end - 1`, so each count lands in its
//! own window) and writes one `{"window_start", "clicks"}` per window.
//! Each stage checkpoints and recovers on its own. Only assembles jobs:
//! never runs them.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::clicks::{UserCount, WINDOW_MS};
use super::clicks_stages::{count_job_into, stage_job, StageParams};
use crate::connectors::kafka::repartition::{
    repartition_topic, RepartitionSink, RepartitionSource,
};
use crate::connectors::kafka::KafkaSink;
use crate::pipeline::{Graph, RunnableJob, Sum, Timestamp, Tumbling, Watermarks, Windowed};
use crate::service::lease::{Fenced, LeaseGuard};
use crate::service::registry::partitions_of_task;

/// One output record: every user's clicks in one window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowTotal {
    /// Window start (a multiple of 10,000 ms).
    pub window_start: Timestamp,
    /// Clicks in `[window_start, window_start + 10 s)`, all users.
    pub clicks: u64,
}

/// What the three stages need beyond [`StageParams`] (whose `instance`,
/// `copy_name`, `group`, `fence`, checkpoints and producer options are this
/// process's, whichever stage it runs).
#[derive(Debug, Clone)]
pub struct TotalsParams {
    /// Topics, stage sizes and this process's place.
    pub stage: StageParams,
    /// Processes of the `total` stage.
    pub total_instances: usize,
    /// Partitions of the `total` stage's repartition topic (its instance
    /// `k` reads those with `p % total_instances == k`); 0: `total_instances`.
    pub total_partitions: usize,
}

impl TotalsParams {
    /// The repartition topic in front of stage `total`:
    /// `weir-<job>-total-repartition`.
    pub fn totals_topic(&self) -> String {
        repartition_topic(&self.stage.job, "total")
    }

    /// The totals topic's partitions this `total` instance reads.
    pub fn total_partitions_of_instance(&self) -> Vec<i32> {
        let all = if self.total_partitions == 0 {
            self.total_instances.max(1)
        } else {
            self.total_partitions
        };
        partitions_of_task(
            all as u32,
            self.stage.instance as u32,
            self.total_instances as u32,
        )
    }
}

/// Stage `count`: as the two-stage job's, its counts to the totals topic
/// by window start.
pub fn count_to_totals_job(p: &TotalsParams) -> RunnableJob<impl Graph> {
    let s = &p.stage;
    let mut sink = RepartitionSink::new(&s.brokers, p.totals_topic(), |u: &UserCount| {
        &u.window_start
    })
    .first_writer(s.instance)
    .writers(s.count_instances);
    for (k, v) in &s.producer_options {
        sink = sink.set(k, v);
    }
    if s.checkpoint_url.is_some() {
        sink = sink.exactly_once(format!("weir-{}", s.copy_name("count")));
    }
    count_job_into(s, sink)
}

/// Stage `total`: the totals topic → 10 s tumbling sum of the counts per
/// window → output topic, keyed by the window start.
pub fn totals_job(p: &TotalsParams) -> RunnableJob<impl Graph> {
    let s = &p.stage;
    let name = s.copy_name("total");
    let mut source =
        RepartitionSource::<UserCount>::new(&s.brokers, p.totals_topic(), s.count_instances)
            .partitions(p.total_partitions_of_instance());
    let mut sink = KafkaSink::<WindowTotal>::json(&s.brokers, &s.output).key_into(
        |t: &WindowTotal, key: &mut Vec<u8>| key.extend_from_slice(&t.window_start.to_be_bytes()),
    );
    for (k, v) in &s.producer_options {
        sink = sink.set(k, v);
    }
    if let Some(g) = &s.group {
        source = source.group(g);
    }
    if s.checkpoint_url.is_some() {
        source = source.exactly_once();
        sink = sink.exactly_once(format!("weir-{name}"));
        if let Some(prefix) = &s.take_over_from {
            source = source.take_over_from(prefix);
        }
    }
    let sink = Fenced::new(sink, s.fence.clone().unwrap_or_else(LeaseGuard::unfenced));
    stage_job(s, &name)
        .source(source)
        // The count writers' watermarks already allow for disorder.
        .watermarks(Watermarks::bounded_out_of_orderness(Duration::ZERO))
        .key_by(|u: &UserCount| u.window_start)
        .window(Tumbling::event_time(Duration::from_millis(
            WINDOW_MS as u64,
        )))
        .aggregate(Sum::of(|u: &UserCount| u.count))
        .map(|w: Windowed<Timestamp, u64>| WindowTotal {
            window_start: w.key,
            clicks: w.value,
        })
        .sink(sink)
}
