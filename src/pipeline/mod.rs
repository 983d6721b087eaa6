//! The typed job API and the operators it is made of.
//!
//! Owns the data model ([`Batch`], [`Signal`], timestamps), the builder
//! ([`Job`] → [`Stream`] → [`RunnableJob`]), the operators (stateless ones
//! fused into chains, keyed aggregation, event-time windows), watermarks,
//! the connector interfaces ([`Source`], [`Sink`]), dead letters and task
//! metrics, and the job graph the builder makes ([`graph`]), which the
//! local runtime and the cluster's stage planner both read. Knows nothing
//! about actors, ZooKeeper or Kafka; never does I/O itself.

pub mod aggregate;
pub mod batch;
pub mod checkpointing;
pub mod connector;
pub mod context;
pub mod dead_letter;
pub mod error;
pub mod graph;
pub mod job;
mod key_hash;
pub mod keyed;
pub mod metrics;
pub mod operator;
pub mod partition;
pub mod restart;
pub mod watermark;
pub mod window;

pub use aggregate::{Aggregator, Count, Max, Min, Reduce, Sum};
pub use batch::{Batch, Signal, Timestamp, MAX_WATERMARK};
pub use checkpointing::{CheckpointConfig, CheckpointRecord, CheckpointingMode};
pub use connector::{
    AdoptedCheckpoint, CheckpointCommitter, CheckpointOwners, CommittedCheckpoint, ReaderWatermark,
    Sink, SinkWriter, Source, SourceReader, SourceStatus,
};
pub use context::TaskContext;
pub use dead_letter::{CollectedDeadLetters, DeadLetter, DeadLetterSink, DeadLetters};
pub use error::{BuildError, ConnectorError, TaskError};
pub use graph::{Graph, Launcher, Upstream};
pub use job::{Job, JobConfig, KeyedStream, RunnableJob, Stream, WindowedStream};
pub use keyed::{Key, KeyGroups, KeyedAggregate};
pub use metrics::{TaskMetrics, TaskMetricsSnapshot};
pub use operator::{Chain, Emit, Filter, FlatMap, Identity, Map, Operator};
pub use partition::{Forward, HashBy, Partitioner, RoundRobin};
pub use restart::RestartPolicy;
pub use watermark::{
    InputWatermarks, WatermarkAlignment, WatermarkGenerator, Watermarks, DEFAULT_MAX_DRIFT,
};
pub use window::{
    CollectedLate, LateRecords, LateSink, Session, Sliding, TimeWindow, Tumbling, WindowAggregate,
    Windowed, Windows,
};
