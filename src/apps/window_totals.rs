//! The clicks job with a third stage: clicks per 10 s window over all
//! users, through two repartition topics.
//!
//! Owns [`WindowTotal`] (output), [`TotalsParams`], [`totals_graph`] and
//! [`totals_stage`]. Stages `parse` and `count` are the two-stage job's
//! ([`clicks_graph`](super::clicks_stages::clicks_graph)), but `count`'s
//! [`UserCount`]s go on by their window (`key_by` B, the repartition topic
//! `weir-<job>-total-repartition`) to stage `total`, which sums them per
//! window and writes one `{"window_start", "clicks"}` per window. Each
//! stage checkpoints and recovers on its own. Only assembles jobs: never
//! runs them.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::clicks::{UserCount, WINDOW_MS};
use super::clicks_stages::{placement, user_counts, StageParams};
use crate::actors::LocalJob;
use crate::connectors::kafka::repartition::repartition_topic;
use crate::connectors::kafka::KafkaSink;
use crate::pipeline::{RunnableJob, Sum, Timestamp, Tumbling, Windowed};
use crate::service::lease::{Fenced, LeaseGuard};
use crate::service::stage_plan::{plan_stage, PlanError, StagePlacement, StagedGraph};

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

    /// This process's place among the three stages (see
    /// [`placement`](super::clicks_stages::placement)), `total` and its
    /// repartition topic included.
    pub fn placement(&self, stage: &str) -> StagePlacement {
        let mut at = placement(&self.stage, stage);
        at.tasks.insert("total".into(), self.total_instances);
        at.partitions.insert("total".into(), self.total_partitions);
        at
    }
}

/// The three-stage graph: `parse` → key by user → `count` (per user and
/// 10 s window) → key by window start → `total` (the counts summed per
/// window; their event time is the count stage's result time,
/// `window end - 1`, so each lands in its own window) → output topic,
/// keyed by the window start. The planner cuts it at both `key_by`s.
pub fn totals_graph(p: &TotalsParams) -> RunnableJob<impl StagedGraph> {
    let s = &p.stage;
    let mut sink = KafkaSink::<WindowTotal>::json(&s.brokers, &s.output).key_into(
        |t: &WindowTotal, key: &mut Vec<u8>| key.extend_from_slice(&t.window_start.to_be_bytes()),
    );
    for (k, v) in &s.producer_options {
        sink = sink.set(k, v);
    }
    if s.checkpoint_url.is_some() {
        sink = sink.exactly_once(format!("weir-{}", s.copy_name("total")));
    }
    let sink = Fenced::new(sink, s.fence.clone().unwrap_or_else(LeaseGuard::unfenced));
    user_counts!(s)
        .map(|w: Windowed<String, u64>| UserCount {
            user: w.key,
            window_start: w.window.start,
            count: w.value,
        })
        .key_by(|u: &UserCount| u.window_start)
        .window(Tumbling::event_time(Duration::from_millis(
            WINDOW_MS as u64,
        )))
        .aggregate(Sum::of(|u: &UserCount| u.count))
        .uid("total")
        .map(|w: Windowed<Timestamp, u64>| WindowTotal {
            window_start: w.key,
            clicks: w.value,
        })
        .sink(sink)
}

/// Stage `stage` (`parse`, `count` or `total`) of [`totals_graph`] for
/// this process.
pub fn totals_stage(p: &TotalsParams, stage: &str) -> Result<LocalJob, PlanError> {
    plan_stage(&totals_graph(p), &p.placement(stage))
}
