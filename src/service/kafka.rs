//! Kafka helpers of the service: input partition counts and task progress.
//!
//! Owns: [`partition_count`] (metadata of the input topic, so task `i` of `N`
//! can take the partitions `p % N == i`) and [`KafkaLagProbe`], a
//! [`ProgressProbe`] reading a task's committed offsets (its job's consumer
//! group) and the partitions' end offsets to compute its lag.
//! Must never: consume records or commit offsets (the task's source owns
//! those); it only reads metadata, committed offsets and watermarks, from
//! blocking threads.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::registry::{Progress, ProgressProbe};

fn consumer(brokers: &str, group: &str) -> Result<BaseConsumer, String> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("log_level", "3")
        .create()
        .map_err(|e| format!("cannot create a Kafka client for {brokers}: {e}"))
}

/// Number of partitions of `topic`, waiting up to `timeout` for the broker and the topic.
pub fn partition_count(brokers: &str, topic: &str, timeout: Duration) -> Result<u32, String> {
    let c = consumer(brokers, "weir-metadata")?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let last = match c.fetch_metadata(Some(topic), Duration::from_secs(2)) {
            Ok(md) => match md.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    return Ok(t.partitions().len() as u32)
                }
                Some(t) => format!("topic {topic:?}: {:?}", t.error()),
                None => format!("topic {topic:?} not in metadata"),
            },
            Err(e) => format!("broker {brokers}: {e}"),
        };
        if std::time::Instant::now() >= deadline {
            return Err(format!("cannot read the partitions of {topic:?}: {last}"));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Reads a task's committed offsets and lag (see the module docs).
pub struct KafkaLagProbe {
    consumer: BaseConsumer,
    topic: String,
    partitions: Vec<i32>,
}

impl KafkaLagProbe {
    /// A probe for `partitions` of `topic` in consumer group `group`.
    pub fn new(
        brokers: &str,
        group: &str,
        topic: &str,
        partitions: Vec<i32>,
    ) -> Result<Self, String> {
        Ok(KafkaLagProbe {
            consumer: consumer(brokers, group)?,
            topic: topic.to_string(),
            partitions,
        })
    }
}

impl ProgressProbe for KafkaLagProbe {
    fn progress(&self) -> Result<Progress, String> {
        let mut tpl = TopicPartitionList::new();
        for p in &self.partitions {
            tpl.add_partition(&self.topic, *p);
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, Duration::from_secs(2))
            .map_err(|e| format!("committed offsets: {e}"))?;
        let mut offsets = BTreeMap::new();
        let mut lag = 0u64;
        for e in committed.elements() {
            let (_, high) = self
                .consumer
                .fetch_watermarks(&self.topic, e.partition(), Duration::from_secs(2))
                .map_err(|err| format!("end offset of {}/{}: {err}", self.topic, e.partition()))?;
            let pos = match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            offsets.insert(format!("{}/{}", self.topic, e.partition()), pos);
            lag += (high - pos).max(0) as u64;
        }
        Ok(Progress { offsets, lag })
    }
}
