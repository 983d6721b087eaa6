//! Connectors: where records come from and where they go.
//!
//! Owns the local sources ([`GeneratorSource`], [`FileSource`],
//! [`StdinSource`], [`VecSource`]) and sinks ([`StdoutSink`], [`FileSink`],
//! [`BlackholeSink`], [`CollectSink`]), the line formats, and (feature
//! `kafka`) the Kafka source and sink. Connectors implement the
//! [`Source`](crate::pipeline::Source) / [`Sink`](crate::pipeline::Sink)
//! interfaces and nothing else: they never see actors.

pub mod file;
pub mod format;
pub mod generator;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod sinks;
pub mod stdin;
pub mod vec;

pub use file::FileSource;
pub use format::{Decode, Encode, Json, JsonLines, Lines, Text};
pub use generator::GeneratorSource;
#[cfg(feature = "kafka")]
pub use kafka::{
    KafkaConfig, KafkaDeadLetters, KafkaLateSink, KafkaSink, KafkaSource, KafkaStatus,
};
pub use sinks::{BlackholeSink, CollectSink, Collected, FileSink, StdoutSink};
pub use stdin::StdinSource;
pub use vec::VecSource;
