//! Durable checkpoints: where completed checkpoints are kept and how their
//! state is encoded.
//!
//! Owns [`CheckpointStorage`] (an `object_store` location: `file:///dir`,
//! or `s3://bucket/prefix` with the `s3` feature), the layout
//! `<root>/<job>/chk-<id>/{state,_metadata}` with the metadata object
//! written last (a checkpoint without it is torn and never restored),
//! retention, and the versioned binary envelope of operator states
//! ([`format`]). Never decides *which* checkpoint a job restores: the
//! supervisor does, from the storage's latest or from what the job's
//! transactional sources committed.

pub mod format;
mod storage;

pub use storage::{CheckpointMetadata, CheckpointStorage, TaskState};

/// What went wrong with checkpoint storage or a stored checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The storage URL cannot be used.
    #[error("checkpoint storage {url}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The object store failed.
    #[error("checkpoint storage {location}: {source}")]
    Store {
        /// The object (or prefix) concerned.
        location: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// A stored checkpoint does not decode.
    #[error("checkpoint {location}: {reason}")]
    Corrupt {
        /// The object concerned.
        location: String,
        /// What does not decode.
        reason: String,
    },
    /// A stored checkpoint does not fit the job restoring it.
    #[error("checkpoint {id} of job {job} cannot be restored: {reason}")]
    Incompatible {
        /// Job name.
        job: String,
        /// Checkpoint id.
        id: u64,
        /// Which operator and what differs.
        reason: String,
    },
}
