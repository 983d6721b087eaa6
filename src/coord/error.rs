//! The coordination layer's error type, [`CoordError`].
//!
//! Owns: the one error enum every `coord` function returns, each variant naming
//! the znode (or field) involved and what was wrong, plus the mapping from
//! `zookeeper_client::Error`.
//! Must never: hide a ZooKeeper failure behind a generic message, or lose the
//! path at which it happened.

use thiserror::Error;

/// Every error the coordination layer reports.
///
/// Variants carry the znode path (or the field name for validation errors) so
/// a log line or a CLI message says *where* things went wrong.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CoordError {
    /// ZooKeeper could not be reached (yet) at `address`.
    #[error(
        "waiting for ZooKeeper at {address}: {reason} (is it running? try `scripts/services up`)"
    )]
    Unreachable {
        /// `host:port` (or connect string) being tried.
        address: String,
        /// Last connection error.
        reason: String,
    },
    /// The actor has no live session right now (connecting, or re-connecting after expiry).
    #[error("no ZooKeeper session: {0}")]
    NoSession(String),
    /// The session expired: every call on that client now fails; a new session is needed.
    #[error("ZooKeeper session expired while accessing {path}")]
    SessionExpired {
        /// Path being accessed.
        path: String,
    },
    /// The znode does not exist.
    #[error("znode {path} does not exist")]
    NoNode {
        /// Missing path.
        path: String,
    },
    /// The znode already exists.
    #[error("znode {path} already exists")]
    AlreadyExists {
        /// Existing path.
        path: String,
    },
    /// A conditional write lost a race: the znode's version changed meanwhile.
    #[error("znode {path} was changed concurrently (expected version {expected})")]
    Conflict {
        /// Path written.
        path: String,
        /// Version the writer expected.
        expected: i32,
    },
    /// A zombie write: the writer's assignment epoch is no longer current.
    #[error("write to {path} fenced: the writer holds epoch {held_epoch}, which is no longer the task's assignment")]
    Fenced {
        /// Path the writer tried to write.
        path: String,
        /// Epoch the writer held.
        held_epoch: u64,
    },
    /// A znode holds data that is not the JSON we expect.
    #[error("malformed data in znode {path}: {reason}")]
    Malformed {
        /// Path of the znode.
        path: String,
        /// What was wrong (serde's message).
        reason: String,
    },
    /// A field of a value given by the caller is invalid.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Name of the field (e.g. `JobSpec.parallelism`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Any other ZooKeeper error, with the path of the request.
    #[error("ZooKeeper error at {path}: {source}")]
    Zk {
        /// Path of the request.
        path: String,
        /// The client's error.
        #[source]
        source: zookeeper_client::Error,
    },
    /// The coordination actor is gone (mailbox closed).
    #[error("coordination actor unavailable: {0}")]
    ActorGone(String),
}

impl CoordError {
    /// Maps a `zookeeper_client::Error` raised while accessing `path`.
    pub fn zk(path: &str, err: zookeeper_client::Error) -> Self {
        use zookeeper_client::Error as E;
        match err {
            E::NoNode => CoordError::NoNode {
                path: path.to_string(),
            },
            E::NodeExists => CoordError::AlreadyExists {
                path: path.to_string(),
            },
            E::SessionExpired => CoordError::SessionExpired {
                path: path.to_string(),
            },
            other => CoordError::Zk {
                path: path.to_string(),
                source: other,
            },
        }
    }

    /// True for errors that a retry on the same session may cure (connection loss, timeouts).
    pub fn is_transient(&self) -> bool {
        use zookeeper_client::Error as E;
        matches!(
            self,
            CoordError::Zk {
                source: E::ConnectionLoss | E::Timeout | E::Throttled,
                ..
            } | CoordError::NoSession(_)
        )
    }

    /// True when the session behind the call is dead and a new one is needed.
    pub fn is_session_lost(&self) -> bool {
        use zookeeper_client::Error as E;
        matches!(
            self,
            CoordError::SessionExpired { .. }
                | CoordError::Zk {
                    source: E::ClientClosed | E::SessionExpired | E::AuthFailed,
                    ..
                }
        )
    }
}

/// Result alias for the coordination layer.
pub type CoordResult<T> = Result<T, CoordError>;
