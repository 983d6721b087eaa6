//! The lifecycle of repartition topics.
//!
//! Owns the naming rule ([`repartition_topic`]) and the admin calls that
//! create ([`create_repartition_topic`]: partitions = the downstream
//! stage's parallelism) and delete ([`delete_repartition_topic`]) one.
//! Blocking calls, bounded by the client's startup wait; run them off the
//! arbiters. Never deletes a topic whose name is not a repartition
//! topic's, never changes the partition count of an existing one (that
//! would move keys between downstream tasks).

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use std::time::{Duration, Instant};

use crate::connectors::kafka::config::wait_for_topic;
use crate::connectors::kafka::{KafkaConfig, KafkaConnectorError, KafkaStatus};

const SUFFIX: &str = "-repartition";

/// The repartition topic in front of stage `stage` of job `job`:
/// `weir-<job>-<stage>-repartition`.
///
/// ```
/// use weir::connectors::kafka::repartition::repartition_topic;
/// assert_eq!(repartition_topic("clicks", "count"), "weir-clicks-count-repartition");
/// ```
pub fn repartition_topic(job: &str, stage: &str) -> String {
    format!("weir-{job}-{stage}{SUFFIX}")
}

fn admin(config: &KafkaConfig) -> Result<AdminClient<DefaultClientContext>, KafkaConnectorError> {
    config
        .client_config(&[])
        .create()
        .map_err(|e| KafkaConnectorError::client("admin client creation", e))
}

fn options(config: &KafkaConfig) -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(config.startup_wait()))
        .request_timeout(Some(config.startup_wait()))
}

/// Creates `topic` with `partitions` partitions (the broker's default
/// replication) and waits until it is visible. An existing topic with
/// that many partitions is fine (a resubmitted job); one with another
/// count is an error.
pub fn create_repartition_topic(
    config: &KafkaConfig,
    topic: &str,
    partitions: usize,
) -> Result<(), KafkaConnectorError> {
    create(config, topic, partitions, false).map(|_| ())
}

/// Creates `topic` with `partitions` partitions if it does not exist, and
/// returns the partition count it has: an existing topic keeps its own
/// (the cluster's count stage reads partitions `p % tasks == task`, so a
/// rescaled stage reads a topic created for another parallelism).
pub fn ensure_repartition_topic(
    config: &KafkaConfig,
    topic: &str,
    partitions: usize,
) -> Result<usize, KafkaConnectorError> {
    create(config, topic, partitions, true)
}

fn create(
    config: &KafkaConfig,
    topic: &str,
    partitions: usize,
    any_count: bool,
) -> Result<usize, KafkaConnectorError> {
    let admin = admin(config)?;
    let new = NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(-1));
    let results = futures::executor::block_on(admin.create_topics(&[new], &options(config)))
        .map_err(|e| KafkaConnectorError::client("create_topics", e))?;
    let mut existed = false;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => existed = true,
            Err((t, code)) => {
                return Err(KafkaConnectorError::Client {
                    op: "create_topics",
                    reason: format!("{t}: {code}"),
                })
            }
        }
    }
    let status = KafkaStatus::new(config.brokers());
    let deadline = Instant::now() + config.startup_wait();
    loop {
        match wait_for_topic(admin.inner(), config, topic, &status) {
            Ok(n) if existed && any_count => return Ok(n),
            Ok(n) if n == partitions => break,
            Ok(n) if Instant::now() >= deadline => {
                return Err(KafkaConnectorError::UnknownPartition {
                    topic: topic.to_string(),
                    partition: partitions as i32 - 1,
                    count: n,
                })
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(e),
        }
    }
    tracing::info!(topic, partitions, "repartition topic ready");
    Ok(partitions)
}

/// Deletes repartition topic `topic`; a topic already gone is fine.
pub fn delete_repartition_topic(
    config: &KafkaConfig,
    topic: &str,
) -> Result<(), KafkaConnectorError> {
    if !(topic.starts_with("weir-") && topic.ends_with(SUFFIX)) {
        return Err(KafkaConnectorError::Client {
            op: "delete_topics",
            reason: format!("{topic} is not a repartition topic"),
        });
    }
    let admin = admin(config)?;
    let results = futures::executor::block_on(admin.delete_topics(&[topic], &options(config)))
        .map_err(|e| KafkaConnectorError::client("delete_topics", e))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((t, code)) => {
                return Err(KafkaConnectorError::Client {
                    op: "delete_topics",
                    reason: format!("{t}: {code}"),
                })
            }
        }
    }
    tracing::info!(topic, "repartition topic deleted");
    Ok(())
}

/// The partition count of `topic`, waiting (bounded by the startup wait)
/// for a broker and for the topic to exist.
pub fn topic_partitions(config: &KafkaConfig, topic: &str) -> Result<usize, KafkaConnectorError> {
    let admin = admin(config)?;
    wait_for_topic(
        admin.inner(),
        config,
        topic,
        &KafkaStatus::new(config.brokers()),
    )
}
