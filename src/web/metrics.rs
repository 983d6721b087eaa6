//! `/metrics`: the worker's view in the OpenMetrics text format, through
//! prometheus-client.
//!
//! Owns: [`registry`] (a prometheus-client [`Registry`] whose one collector,
//! [`ViewCollector`], reads the [`SharedView`] at each scrape) and the metric
//! names: per worker `weir_session_connected`, `weir_leader`,
//! `weir_lease_remaining_seconds`, `weir_tasks`; per task (labels `worker`,
//! `job`, `task`, and `job_stage` for a staged job's tasks) records in/out, batches, backpressure, lag, late records,
//! dead letters, watermark, restarts, state and checkpoints
//! (`weir_task_*`); per stage of a task (label `stage` too) every
//! `TaskMetrics` counter (`weir_stage_*`).
//! Must never: keep values of its own (everything comes from the view, so a
//! scrape always agrees with `/api/tasks`), or rename a metric (dashboards and
//! tests rely on the names).

use std::fmt::Error as FmtError;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::coord::TaskStatus;
use crate::service::{SharedView, StageView, TaskView};

/// The content type of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A registry whose metrics are read from `view` at each scrape.
pub fn registry(view: SharedView) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(ViewCollector(view)));
    r
}

/// Reads the worker's [`SharedView`] at each scrape.
#[derive(Debug)]
pub struct ViewCollector(pub SharedView);

/// A value of one series: a counter or a gauge, integer or not.
enum Value {
    Count(u64),
    Seconds(f64),
    Gauge(i64),
    GaugeF(f64),
}

type TaskGet = fn(&TaskView) -> Option<Value>;
type StageGet = fn(&StageView) -> Option<Value>;

/// The per-task series: name (counters without `_total`, which the encoder
/// adds), help, type, value.
const TASK_SERIES: &[(&str, &str, MetricType, TaskGet)] = &[
    (
        "weir_task_records_in",
        "Records read by the task.",
        MetricType::Counter,
        |t| Some(Value::Count(t.records_in)),
    ),
    (
        "weir_task_records_out",
        "Records written by the task.",
        MetricType::Counter,
        |t| Some(Value::Count(t.records_out)),
    ),
    (
        "weir_task_batches",
        "Batches read by the task's source.",
        MetricType::Counter,
        |t| Some(Value::Count(t.batches)),
    ),
    (
        "weir_task_backpressure_seconds",
        "Time the task's actors waited on full mailboxes.",
        MetricType::Counter,
        |t| Some(Value::Seconds(t.backpressure_ms as f64 / 1000.0)),
    ),
    (
        "weir_task_lag_records",
        "Records behind the end of the task's input partitions.",
        MetricType::Gauge,
        |t| Some(Value::Gauge(t.lag as i64)),
    ),
    (
        "weir_task_late_records",
        "Records that arrived after their window closed.",
        MetricType::Counter,
        |t| Some(Value::Count(t.late_records)),
    ),
    (
        "weir_task_dead_letters",
        "Records sent to the dead-letter output.",
        MetricType::Counter,
        |t| Some(Value::Count(t.dead_letters)),
    ),
    (
        "weir_task_watermark_milliseconds",
        "The task's lowest stage watermark, event time in ms since the Unix epoch (absent before the first).",
        MetricType::Gauge,
        |t| t.watermark.map(Value::Gauge),
    ),
    (
        "weir_task_records_in_per_second",
        "Records read per second over the last seconds.",
        MetricType::Gauge,
        |t| Some(Value::GaugeF(t.records_in_per_s)),
    ),
    (
        "weir_task_restarts",
        "Restarts of the task by its supervisor.",
        MetricType::Counter,
        |t| Some(Value::Count(u64::from(t.restarts))),
    ),
    (
        "weir_task_checkpoint_id",
        "Id of the task's latest completed checkpoint (0: none).",
        MetricType::Gauge,
        |t| Some(Value::Gauge(t.checkpoint.as_ref().map_or(0, |c| c.id as i64))),
    ),
    (
        "weir_task_checkpoint_age_seconds",
        "Time since the task's latest checkpoint completed (0: none).",
        MetricType::Gauge,
        |t| {
            Some(Value::GaugeF(t.checkpoint.as_ref().map_or(0.0, |c| {
                crate::coord::model::now_ms().saturating_sub(c.completed_at_ms) as f64 / 1000.0
            })))
        },
    ),
    (
        "weir_task_checkpoint_duration_seconds",
        "From barriers to commit, of the task's latest checkpoint.",
        MetricType::Gauge,
        |t| {
            Some(Value::GaugeF(
                t.checkpoint
                    .as_ref()
                    .map_or(0.0, |c| c.duration_ms as f64 / 1000.0),
            ))
        },
    ),
    (
        "weir_task_checkpoint_state_bytes",
        "Operator state held by the task's latest checkpoint.",
        MetricType::Gauge,
        |t| {
            Some(Value::Gauge(
                t.checkpoint.as_ref().map_or(0, |c| c.state_bytes as i64),
            ))
        },
    ),
    (
        "weir_task_checkpoint_failures",
        "Checkpoints of the task that could not be stored or committed.",
        MetricType::Counter,
        |t| Some(Value::Count(t.checkpoint_failures)),
    ),
];

/// The per-stage series: every `TaskMetrics` counter.
const STAGE_SERIES: &[(&str, &str, MetricType, StageGet)] = &[
    (
        "weir_stage_records_in",
        "Records received by the stage (read, for a source).",
        MetricType::Counter,
        |s| Some(Value::Count(s.records_in)),
    ),
    (
        "weir_stage_records_out",
        "Records emitted by the stage (written, for a sink).",
        MetricType::Counter,
        |s| Some(Value::Count(s.records_out)),
    ),
    (
        "weir_stage_batches_in",
        "Batches received by the stage.",
        MetricType::Counter,
        |s| Some(Value::Count(s.batches_in)),
    ),
    (
        "weir_stage_batches_out",
        "Batches sent by the stage.",
        MetricType::Counter,
        |s| Some(Value::Count(s.batches_out)),
    ),
    (
        "weir_stage_late_records",
        "Records that arrived at the stage after their window closed.",
        MetricType::Counter,
        |s| Some(Value::Count(s.late_records)),
    ),
    (
        "weir_stage_dead_letters",
        "Records the stage sent to the dead-letter output.",
        MetricType::Counter,
        |s| Some(Value::Count(s.dead_letters)),
    ),
    (
        "weir_stage_backpressure_seconds",
        "Time the stage waited on full downstream mailboxes.",
        MetricType::Counter,
        |s| Some(Value::Seconds(s.backpressure_ms as f64 / 1000.0)),
    ),
    (
        "weir_stage_watermark_milliseconds",
        "The stage's input watermark, event time in ms since the Unix epoch (absent before the first).",
        MetricType::Gauge,
        |s| s.watermark.map(Value::Gauge),
    ),
];

fn encode_value(
    v: Value,
    enc: prometheus_client::encoding::MetricEncoder<'_>,
) -> Result<(), FmtError> {
    match v {
        Value::Count(n) => ConstCounter::new(n).encode(enc),
        Value::Seconds(s) => ConstCounter::new(s).encode(enc),
        Value::Gauge(n) => ConstGauge::new(n).encode(enc),
        Value::GaugeF(x) => ConstGauge::new(x).encode(enc),
    }
}

fn status_name(s: TaskStatus) -> &'static str {
    match s {
        TaskStatus::Scheduled => "SCHEDULED",
        TaskStatus::Running => "RUNNING",
        TaskStatus::Restarting => "RESTARTING",
        TaskStatus::Failed => "FAILED",
        TaskStatus::Finished => "FINISHED",
        TaskStatus::Cancelled => "CANCELLED",
    }
}

impl Collector for ViewCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), FmtError> {
        let v = self.0.get();
        let w = [("worker", v.worker.clone())];
        let worker_series: [(&str, &str, Value); 4] = [
            (
                "weir_session_connected",
                "1 when the ZooKeeper session is connected.",
                Value::Gauge(i64::from(v.connected)),
            ),
            (
                "weir_leader",
                "1 when this worker leads the cluster.",
                Value::Gauge(i64::from(v.leader)),
            ),
            (
                "weir_lease_remaining_seconds",
                "Time left on the write lease (0: sinks refuse writes).",
                Value::GaugeF(v.lease_ms as f64 / 1000.0),
            ),
            (
                "weir_tasks",
                "Tasks on this worker.",
                Value::Gauge(v.tasks.len() as i64),
            ),
        ];
        for (name, help, value) in worker_series {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            encode_value(value, m.encode_family(&w)?)?;
        }
        // A staged job's tasks also name their job stage.
        let task_labels = |t: &TaskView| {
            let mut l = vec![
                ("worker", v.worker.clone()),
                ("job", t.job.clone()),
                ("task", t.task.clone()),
            ];
            if !t.job_stage.is_empty() {
                l.push(("job_stage", t.job_stage.clone()));
            }
            l
        };
        for (name, help, kind, get) in TASK_SERIES {
            let mut m = encoder.encode_descriptor(name, help, None, *kind)?;
            for t in &v.tasks {
                if let Some(value) = get(t) {
                    let labels = task_labels(t);
                    encode_value(value, m.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "weir_task_state",
                "1 for the task's current state.",
                None,
                MetricType::Gauge,
            )?;
            for t in &v.tasks {
                let mut labels = task_labels(t);
                labels.push(("state", status_name(t.state).to_string()));
                encode_value(Value::Gauge(1), m.encode_family(&labels)?)?;
            }
        }
        for (name, help, kind, get) in STAGE_SERIES {
            let mut m = encoder.encode_descriptor(name, help, None, *kind)?;
            for t in &v.tasks {
                for s in &t.stages {
                    if let Some(value) = get(s) {
                        let mut labels = task_labels(t);
                        labels.push(("stage", s.stage.clone()));
                        encode_value(value, m.encode_family(&labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::WorkerView;

    pub(crate) fn sample() -> WorkerView {
        let mut t = TaskView::new("j-0", "j", "etl", TaskStatus::Running, 3);
        t.records_in = 10;
        t.records_out = 9;
        t.batches = 2;
        t.backpressure_ms = 1500;
        t.lag = 4;
        t.restarts = 1;
        t.late_records = 5;
        t.dead_letters = 6;
        t.watermark = Some(1_700_000_000_000);
        t.checkpoint = Some(crate::actors::CheckpointSummary {
            id: 7,
            completed_at_ms: 1,
            duration_ms: 250,
            state_bytes: 4096,
        });
        t.checkpoint_failures = 1;
        t.stages = vec![StageView {
            stage: "kafka-source#0".into(),
            records_in: 10,
            records_out: 10,
            batches_out: 2,
            late_records: 3,
            watermark: Some(1_700_000_000_000),
            ..Default::default()
        }];
        WorkerView {
            worker: "w1".into(),
            session: "connected".into(),
            connected: true,
            leader: true,
            lease_ms: 1500,
            job_types: vec!["etl".into()],
            tasks: vec![t],
            ..Default::default()
        }
    }

    #[test]
    fn every_counter_is_exposed() {
        let view = SharedView::default();
        view.set(sample());
        let mut m = String::new();
        prometheus_client::encoding::text::encode(&mut m, &registry(view)).unwrap();
        let l = "{worker=\"w1\",job=\"j\",task=\"j-0\"}";
        for line in [
            format!("weir_task_records_in_total{l} 10"),
            format!("weir_task_records_out_total{l} 9"),
            format!("weir_task_batches_total{l} 2"),
            format!("weir_task_backpressure_seconds_total{l} 1.5"),
            format!("weir_task_lag_records{l} 4"),
            format!("weir_task_late_records_total{l} 5"),
            format!("weir_task_dead_letters_total{l} 6"),
            format!("weir_task_watermark_milliseconds{l} 1700000000000"),
            format!("weir_task_restarts_total{l} 1"),
            format!("weir_task_checkpoint_id{l} 7"),
            format!("weir_task_checkpoint_duration_seconds{l} 0.25"),
            format!("weir_task_checkpoint_state_bytes{l} 4096"),
            format!("weir_task_checkpoint_failures_total{l} 1"),
            "weir_session_connected{worker=\"w1\"} 1".to_string(),
            "weir_leader{worker=\"w1\"} 1".to_string(),
            "weir_task_state{worker=\"w1\",job=\"j\",task=\"j-0\",state=\"RUNNING\"} 1".to_string(),
            "weir_stage_late_records_total{worker=\"w1\",job=\"j\",task=\"j-0\",stage=\"kafka-source#0\"} 3"
                .to_string(),
            "weir_stage_batches_out_total{worker=\"w1\",job=\"j\",task=\"j-0\",stage=\"kafka-source#0\"} 2"
                .to_string(),
        ] {
            assert!(m.contains(&line), "{line} in\n{m}");
        }
        assert!(m.contains("weir_task_checkpoint_age_seconds{"), "{m}");
        assert!(m.contains("# TYPE weir_task_records_in counter"), "{m}");
        assert!(m.ends_with("# EOF\n"), "{m}");
    }
}
