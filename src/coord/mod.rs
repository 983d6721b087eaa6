//! Coordination through ZooKeeper: session, membership, leader election,
//! balanced sticky assignment, task-state publication, fencing and checkpoint
//! metadata.
//!
//! Owns: everything weir stores in or reads from ZooKeeper, and the one actor
//! per process ([`actor::CoordActor`]) that owns the ZooKeeper session.
//! Must never: run user code or touch the data plane (records, Kafka); treat a
//! `Disconnected` session as expired; write task state or checkpoint metadata
//! without the fencing check.

pub mod assignment;
pub mod error;
pub mod model;
pub mod paths;

pub use error::{CoordError, CoordResult};
pub use model::{CheckpointMeta, JobAssignment, JobSpec, TaskAssignment, TaskError, TaskId, TaskState, TaskStatus, WorkerInfo};
pub use paths::ZkPaths;
