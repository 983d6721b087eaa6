//! Typed errors of the job API and of running tasks.
//!
//! Owns [`BuildError`] (a job rejected before it runs, naming the field) and
//! [`TaskError`] (what made a running task fail). Never holds a panic payload
//! itself: panics are turned into [`TaskError::Panic`] with their message.

use std::fmt;

/// A job definition rejected before it runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A configuration value is invalid; `field` names it (e.g. `window.size`).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field, dotted path.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl BuildError {
    /// An invalid-field error.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        BuildError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Why a task failed while running.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// User code or a connector panicked; the panic message.
    #[error("panic in {task}: {message}")]
    Panic {
        /// The task that panicked.
        task: String,
        /// The panic message.
        message: String,
    },
    /// A connector (source or sink) failed.
    #[error("connector error in {task}: {message}")]
    Connector {
        /// The failing task.
        task: String,
        /// What went wrong.
        message: String,
    },
    /// An operator returned an error.
    #[error("operator error in {task}: {message}")]
    Operator {
        /// The failing task.
        task: String,
        /// What went wrong.
        message: String,
    },
    /// A downstream actor is gone (it failed or was stopped).
    #[error("channel closed in {task}: downstream actor is gone")]
    ChannelClosed {
        /// The task whose output closed.
        task: String,
    },
}

/// An error raised by a source, sink or operator, before the runtime adds
/// the task name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorError(pub String);

impl fmt::Display for ConnectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectorError {}

impl ConnectorError {
    /// An error with this message.
    pub fn new(msg: impl Into<String>) -> Self {
        ConnectorError(msg.into())
    }
}

impl From<std::io::Error> for ConnectorError {
    fn from(e: std::io::Error) -> Self {
        ConnectorError(e.to_string())
    }
}

/// Extracts a readable message from a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
