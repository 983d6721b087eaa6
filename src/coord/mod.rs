//! Coordination through ZooKeeper: session, membership, leader election,
//! balanced sticky assignment, task-state publication, fencing and checkpoint
//! metadata.
//!
//! Owns: everything weir stores in or reads from ZooKeeper, and the one actor
//! per process ([`actor::CoordActor`]) that owns the ZooKeeper session.
//! Must never: run user code or touch the data plane (records, Kafka); treat a
//! `Disconnected` session as expired; write task state or checkpoint metadata
//! without the fencing check.

pub mod actor;
pub mod assignment;
pub mod batch;
pub mod election;
pub mod error;
pub mod fencing;
pub mod leader;
pub mod membership;
pub mod model;
pub mod paths;
pub mod run_claim;
pub mod session;
pub mod store;

pub use actor::{CoordActor, CoordConfig, CoordEvent, SessionEvent};
pub use error::{CoordError, CoordResult};
pub use fencing::FenceToken;
pub use leader::Leader;
pub use model::{
    CheckpointMeta, JobAssignment, JobSpec, StopMode, TaskAssignment, TaskError, TaskId, TaskState,
    TaskStatus, WorkerInfo,
};
pub use paths::ZkPaths;
