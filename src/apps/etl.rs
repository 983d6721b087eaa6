//! The Kafka ETL pipeline: payments in, validated amounts in cents out.
//!
//! Owns [`Payment`] (input), [`PaymentCents`] (output), [`EtlParams`] and
//! [`etl_job`]: JSON `{"id", "user", "amount"}` from the input topic,
//! records with `amount < 0` dropped, `{"id", "user", "amount_cents"}` to
//! the output topic keyed by user; malformed input goes unchanged to
//! `<input>.dlq`. Stateless: never holds records beyond a batch.

use crate::actors::RestartPolicy;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::connectors::kafka::{KafkaSink, KafkaSource};
use crate::pipeline::{Graph, Job, RunnableJob};
use crate::service::lease::{Fenced, LeaseGuard};

/// One input record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    /// Payment id.
    pub id: u64,
    /// Who paid.
    pub user: String,
    /// Amount in currency units (may have decimals).
    pub amount: f64,
}

/// One output record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PaymentCents {
    /// Payment id.
    pub id: u64,
    /// Who paid.
    pub user: String,
    /// Amount in cents, rounded to the nearest cent.
    pub amount_cents: i64,
}

impl PaymentCents {
    /// The transformation applied to every valid payment.
    pub fn from_payment(p: Payment) -> Self {
        PaymentCents {
            id: p.id,
            user: p.user,
            amount_cents: cents(p.amount),
        }
    }
}

/// `amount` in cents, rounded half away from zero.
pub fn cents(amount: f64) -> i64 {
    (amount * 100.0).round() as i64
}

/// Whether a payment is kept (`amount >= 0`; NaN is dropped too).
pub fn is_valid(p: &Payment) -> bool {
    p.amount >= 0.0
}

/// What the ETL job needs.
#[derive(Debug, Clone)]
pub struct EtlParams {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Input topic.
    pub input: String,
    /// Output topic.
    pub output: String,
    /// Consumer group (commits go there).
    pub group: String,
    /// Parallel instances.
    pub parallelism: usize,
    /// Explicit partitions (coordinated service) instead of the group's.
    pub partitions: Option<Vec<i32>>,
    /// Extra librdkafka options for source and sink.
    pub options: Vec<(String, String)>,
    /// Write lease of the coordinated service: the sink refuses to write once it is gone
    /// (zombie fencing). `None`: always write.
    pub fence: Option<LeaseGuard>,
    /// Durable checkpoint storage (`file:///dir`, `s3://..`). With it the
    /// job runs exactly-once (transactional output, offsets committed in
    /// its transactions); without it, at least once.
    pub checkpoint_url: Option<String>,
    /// The job's name (default `kafka-etl`): names its checkpoints and its
    /// transactional id, so it must be unique per running copy (one per
    /// task in the cluster).
    pub job_name: String,
    /// The output's delivery guarantee (`--delivery`); `None`: exactly-once
    /// with checkpoint storage, at least once without.
    pub delivery: Option<super::Delivery>,
    /// The job's other copies share this name prefix: a rescale hands
    /// their partitions and checkpoints to this copy (see
    /// [`KafkaSource::take_over_from`]). `None`: it never takes over.
    pub take_over_from: Option<String>,
}

impl EtlParams {
    /// Defaults: group `weir-kafka-etl`, parallelism 1, group assignment.
    pub fn new(
        brokers: impl Into<String>,
        input: impl Into<String>,
        output: impl Into<String>,
    ) -> Self {
        EtlParams {
            brokers: brokers.into(),
            input: input.into(),
            output: output.into(),
            group: "weir-kafka-etl".into(),
            parallelism: 1,
            partitions: None,
            options: Vec::new(),
            fence: None,
            checkpoint_url: None,
            job_name: "kafka-etl".into(),
            delivery: None,
            take_over_from: None,
        }
    }
}

/// The ETL pipeline as a job named `kafka-etl`.
pub fn etl_job(p: &EtlParams) -> RunnableJob<impl Graph> {
    let mut source = KafkaSource::json::<Payment>(&p.brokers, &p.input).group(&p.group);
    let mut sink = KafkaSink::<PaymentCents>::json(&p.brokers, &p.output)
        .key_into(|r: &PaymentCents, key: &mut Vec<u8>| key.extend_from_slice(r.user.as_bytes()));
    for (k, v) in &p.options {
        source = source.set(k, v);
        sink = sink.set(k, v);
    }
    if let Some(parts) = &p.partitions {
        source = source.partitions(parts.clone());
    }
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
        if let Some(prefix) = &p.take_over_from {
            source = source.take_over_from(prefix);
        }
    }
    sink = sink.delivery(guarantee);
    Job::new(p.job_name.as_str())
        .checkpointing(super::clicks::checkpointing(p.checkpoint_url.clone()))
        .parallelism(p.parallelism)
        // Brokers come and go: be patient before giving up (10 restarts
        // within 5 minutes, backoff 0.5 s doubling to 15 s).
        .restart_policy(
            RestartPolicy::new(10, Duration::from_secs(300))
                .with_backoff(Duration::from_millis(500), Duration::from_secs(15)),
        )
        .source(source)
        .filter(is_valid)
        .map(PaymentCents::from_payment)
        .sink(Fenced::new(
            sink,
            p.fence.clone().unwrap_or_else(LeaseGuard::unfenced),
        ))
}
