//! Repartition through Kafka: two stages of a job, possibly on different
//! machines, connected by an internal topic (Kafka Streams' model).
//!
//! Owns the pieces: the wire format ([`Repartitioned`], control records),
//! the per-partition watermark rule (`marks.rs`), the upstream
//! writer ([`RepartitionSink`]: each record to the partition of its key's
//! stable hash, control records into every partition), the downstream
//! reader ([`RepartitionSource`]: `read_committed`, control records out of
//! the stream, watermark = minimum over upstream writers) and the topic's
//! lifecycle ([`repartition_topic`], [`create_repartition_topic`],
//! [`delete_repartition_topic`]). Exactly-once reuses the Kafka sink's
//! checkpoint transactions and the Kafka source's positions: each stage
//! checkpoints and recovers on its own.
//!
//! Must never: place a key other than by `key_partition(key_hash(key), n)`,
//! hand a control record to user code, let a downstream watermark pass an
//! upstream writer that has not written one, or write outside the
//! checkpoint's transaction when exactly-once. It does not plan stages or
//! place tasks: that is the cluster's (issue 15). See ARCHITECTURE.md,
//! "Repartition through Kafka".

mod marks;
mod record;
mod sink;
mod source;
mod topic;

pub use marks::Mark;
pub(crate) use marks::UpstreamMarks;
pub(crate) use record::control_of;
pub use record::{control_payload, Repartitioned, Stamped, Writer, CONTROL_HEADER};
pub use sink::{ByExchange, ByKey, RepartitionSink, RepartitionWriter};
pub use source::{RepartitionReader, RepartitionSource, UPSTREAM_DRAIN_WAIT};
pub use topic::{
    create_repartition_topic, delete_repartition_topic, ensure_repartition_topic,
    repartition_topic, topic_partitions,
};
