//! The supervised worker service: what runs the cluster's tasks, and the
//! administration the `weir` CLI performs.
//!
//! Owns: the job-type registry ([`registry`]), the worker runtime
//! ([`worker`]: assignment → tasks on a local runtime, task-state
//! publication, session handling, graceful leave), zombie fencing on the
//! data plane ([`lease`]), what the worker shows of itself ([`view`], served
//! by [`crate::web`]), and the CLI's operations on ZooKeeper ([`admin`]).
//! Must never: talk to ZooKeeper except through [`crate::coord`] (the worker
//! through its actor, the CLI through its store functions), move records
//! between machines (only Kafka does), or let a task write once its lease or
//! assignment is gone.

pub mod admin;
pub mod error;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod lease;
pub mod registry;
#[cfg(feature = "kafka")]
pub mod stage_plan;
pub mod view;
pub mod worker;

pub use error::{ServiceError, ServiceResult};
pub use lease::{Fenced, Lease, LeaseGuard};
pub use registry::{JobTypeRegistry, Progress, ProgressProbe, TaskBuild, TaskEnv};
pub use view::{Sample, SharedView, StageView, TaskView, WorkerView};
pub use worker::{run_worker, GracefulStop, WorkerActor, WorkerConfig};
