//! Typed errors of the Kafka connectors.
//!
//! Owns [`KafkaConnectorError`]: every error names what it is about (the
//! option, the bootstrap servers, the topic, the partition). Converts into
//! the engine's [`ConnectorError`] and [`BuildError`]; never hides the
//! underlying client error text.

use std::time::Duration;

use crate::pipeline::{BuildError, ConnectorError};

/// What went wrong in a Kafka source or sink.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KafkaConnectorError {
    /// A client option was rejected by librdkafka.
    #[error("invalid Kafka client option `{option}`: {reason}")]
    InvalidOption {
        /// The option name, e.g. `fetch.wait.max.ms`.
        option: String,
        /// librdkafka's explanation.
        reason: String,
    },
    /// No broker answered within the startup wait.
    #[error("Kafka bootstrap servers {brokers} unreachable after {waited:?} (is the broker running? `scripts/services up` starts the test one): {reason}")]
    Unreachable {
        /// The `bootstrap.servers` value.
        brokers: String,
        /// How long we waited.
        waited: Duration,
        /// The last client error.
        reason: String,
    },
    /// The topic does not exist (and is not auto-created).
    #[error("unknown Kafka topic `{topic}` on {brokers}")]
    UnknownTopic {
        /// The topic.
        topic: String,
        /// The `bootstrap.servers` value.
        brokers: String,
    },
    /// An explicitly assigned partition does not exist.
    #[error("Kafka topic `{topic}` has no partition {partition} (it has {count})")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The requested partition.
        partition: i32,
        /// How many it has.
        count: usize,
    },
    /// The broker did not acknowledge a produced record.
    #[error("Kafka delivery to `{topic}` failed for {failed} record(s): {reason}")]
    Delivery {
        /// The output topic.
        topic: String,
        /// How many records failed so far.
        failed: u64,
        /// The first failure.
        reason: String,
    },
    /// A position handed to `seek`/`commit` is not one this source reported.
    #[error("bad Kafka source position {0}")]
    BadPosition(String),
    /// Any other client call failed.
    #[error("Kafka {op} failed: {reason}")]
    Client {
        /// What we were doing.
        op: &'static str,
        /// The client's error text.
        reason: String,
    },
}

impl KafkaConnectorError {
    /// Wraps a client error, recognising rejected options.
    pub(crate) fn client(op: &'static str, e: rdkafka::error::KafkaError) -> Self {
        match e {
            rdkafka::error::KafkaError::ClientConfig(_, desc, key, _) => {
                KafkaConnectorError::InvalidOption {
                    option: key,
                    reason: desc,
                }
            }
            rdkafka::error::KafkaError::ClientCreation(msg) => {
                // librdkafka reports some invalid values only at creation:
                // `Configuration property "x" ...`: extract the name.
                match msg.split('"').nth(1) {
                    Some(option)
                        if msg.contains("onfiguration property") || msg.contains("property") =>
                    {
                        KafkaConnectorError::InvalidOption {
                            option: option.to_string(),
                            reason: msg.clone(),
                        }
                    }
                    _ => KafkaConnectorError::Client { op, reason: msg },
                }
            }
            other => KafkaConnectorError::Client {
                op,
                reason: other.to_string(),
            },
        }
    }

    /// As a build error naming the field (`<prefix>.<option>` for options).
    pub(crate) fn into_build_error(self, prefix: &str) -> BuildError {
        match &self {
            KafkaConnectorError::InvalidOption { option, .. } => {
                BuildError::invalid(format!("{prefix}.{option}"), self.to_string())
            }
            _ => BuildError::invalid(prefix.to_string(), self.to_string()),
        }
    }
}

impl From<KafkaConnectorError> for ConnectorError {
    fn from(e: KafkaConnectorError) -> Self {
        ConnectorError::new(e.to_string())
    }
}
