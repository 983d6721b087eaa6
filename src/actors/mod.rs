//! The actor runtime: source, operator and sink actors on actix, their
//! per-job supervisor, and the local runtime.
//!
//! Owns everything that moves batches between threads: the [`Deliver`]
//! message, the send protocol with backpressure ([`edge`]), the three task
//! actors, the [`JobSupervisor`] with its [`RestartPolicy`], and
//! [`LocalRuntime`]. Must never run user code outside `catch_unwind`, never
//! send on the data path without respecting the mailbox bound, and never
//! send single records: only batches.

pub(crate) mod aligner;
pub mod barrier;
pub mod edge;
pub mod inputs;
pub mod launch;
pub(crate) mod local_launcher;
pub mod messages;
pub mod operator_actor;
pub mod restart;
pub mod runtime;
pub mod sink_actor;
pub mod source_actor;
pub mod supervisor;
pub mod task;

pub use messages::{Deliver, SourceCommand, Stop, TaskEvent};
pub use restart::RestartPolicy;
pub use runtime::{shutdown_signal, LocalJob, LocalRuntime, RunError};
pub use supervisor::{
    CheckpointStats, CheckpointSummary, CompletedCheckpoint, JobHandle, JobReport, JobStatus,
    JobSupervisor, LastError,
};
