//! The service layer's error type, [`ServiceError`].
//!
//! Owns: every error the worker runtime, the job-type registry and the admin
//! operations (the `weir` CLI's library side) report, each saying what was
//! wrong and where.
//! Must never: hide the underlying coordination or engine error (it is kept as
//! the source), or panic.

use thiserror::Error;

use crate::coord::CoordError;

/// Every error of the service layer.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// No live worker advertises this job type (or the registry does not know it).
    #[error("unknown job type {job_type:?}: {known}")]
    UnknownJobType {
        /// The type asked for.
        job_type: String,
        /// What is known instead (human text).
        known: String,
    },
    /// A job of that name already exists.
    #[error("a job named {0:?} already exists (cancel it first, or pick another name)")]
    DuplicateJob(String),
    /// No job of that name.
    #[error("no job named {0:?}")]
    NoSuchJob(String),
    /// A parameter given by the user is invalid.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which parameter.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// ZooKeeper could not be reached within the allowed time.
    #[error("ZooKeeper at {address} unreachable after {waited_s} s: {reason} (is it running? try `scripts/services up`)")]
    Unreachable {
        /// Address tried.
        address: String,
        /// Seconds waited.
        waited_s: u64,
        /// Last error.
        reason: String,
    },
    /// A task could not be built from its job type.
    #[error("cannot build task {task} of job type {job_type:?}: {reason}")]
    Build {
        /// Task id.
        task: String,
        /// Job type.
        job_type: String,
        /// Why.
        reason: String,
    },
    /// A coordination error (ZooKeeper), with the znode involved.
    /// A cancelled job's repartition topics could not be deleted.
    #[error("job {job:?} is cancelled, but its repartition topics ({topics}) could not be deleted: {reason}")]
    InternalTopics {
        /// The job.
        job: String,
        /// Its repartition topics.
        topics: String,
        /// Why.
        reason: String,
    },
    #[error(transparent)]
    Coord(#[from] CoordError),
    /// I/O (HTTP listener, signals).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for the service layer.
pub type ServiceResult<T> = Result<T, ServiceError>;
