//! Kafka connectors (feature `kafka`): a source, a sink and dead-letter
//! outputs on rdkafka (bundled librdkafka).
//!
//! Owns [`KafkaSource`] (consumer-group subscription or explicit partition
//! assignment, per-partition watermarks, offsets committed only through
//! [`SourceReader::commit`](crate::pipeline::SourceReader::commit), decode
//! failures to a dead-letter topic), [`KafkaSink`] (batched, keyed or
//! round-robin, idempotent, optionally transactional), [`KafkaLateSink`] and
//! [`KafkaDeadLetters`] (late records and job dead letters to a topic), the
//! shared client settings ([`KafkaConfig`]), the connection state
//! ([`KafkaStatus`]) and the typed errors ([`KafkaConnectorError`]);
//! [`repartition`] connects two stages through an internal topic.
//!
//! Must never: auto-commit offsets, commit an offset whose records were not
//! processed and flushed, drop a record silently (delivery failures become
//! task errors), fail a task on a transient broker outage (librdkafka
//! reconnects; the state shows "waiting for broker"), or block an arbiter
//! longer than one bounded client call.

mod config;
mod dead_letter;
mod error;
mod format;
mod partitions;
pub mod repartition;
mod sink;
mod source;
mod status;
mod transaction;

pub use config::KafkaConfig;
pub use dead_letter::{KafkaDeadLetters, KafkaLateSink};
pub use error::KafkaConnectorError;
pub use format::{
    Bytes, FromKafka, Json, JsonValue, KafkaDecode, KafkaEncode, Text, TextValue, WithPositions,
};
pub use sink::{DeliveryGuarantee, KafkaSink, KafkaWriter, KeyBy, KeyFn, KeyInto, RoundRobin};
pub use source::{Assignment, KafkaReader, KafkaSource};
pub use status::KafkaStatus;
pub use transaction::CheckpointTransaction;

/// Headers set on every dead-letter record.
pub mod headers {
    /// Why the record was rejected (the decode error, or `late`).
    pub const ERROR: &str = "error";
    /// The topic the record was read from.
    pub const SOURCE_TOPIC: &str = "source.topic";
    /// Its partition.
    pub const SOURCE_PARTITION: &str = "source.partition";
    /// Its offset.
    pub const SOURCE_OFFSET: &str = "source.offset";
}
