//! The messages actors exchange.
//!
//! Owns [`Deliver`] (a batch plus an in-band [`Signal`], the only data-plane
//! message), the control messages [`Pump`], [`SourceCommand`], [`Stop`] and the
//! [`TaskEvent`]s tasks report to their job's supervisor. Data messages are
//! always batches, never single records.

use actix::Message;

use crate::pipeline::{Batch, Signal, TaskError};

pub use super::edge::Credit;

/// A batch from upstream input `input`, followed by `signal`.
pub struct Deliver<T> {
    /// Index of the sending input at the receiver (`0..inputs`).
    pub input: usize,
    /// The records (may be empty when only the signal matters).
    pub batch: Batch<T>,
    /// Watermark, idleness or end of input, applied after the batch.
    pub signal: Signal,
    /// The sender's credit on the receiver's input queue: returned (dropped)
    /// when the receiver has handled the message, together with the emptied
    /// batch buffer ([`Credit::recycle`]).
    pub credit: Option<Credit<T>>,
}

impl<T> Deliver<T> {
    /// Hands `f` the message's input index, batch and signal, then returns the
    /// credit to the sender together with the emptied batch buffer.
    pub fn consume(self, f: impl FnOnce(usize, &mut Batch<T>, Signal)) {
        let Deliver {
            input,
            mut batch,
            signal,
            credit,
        } = self;
        f(input, &mut batch, signal);
        if let Some(credit) = credit {
            credit.recycle(batch);
        }
    }
}

impl<T: Send + 'static> Message for Deliver<T> {
    type Result = ();
}

/// A source asks itself to read the next batch.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Pump;

/// What the supervisor tells a source.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub enum SourceCommand {
    /// Stop reading, flush what the chain holds and send end-of-input, so
    /// the whole pipeline drains.
    Drain,
    /// Record the current position and send barrier `id` downstream.
    TriggerCheckpoint(u64),
    /// Stop with a savepoint: record the position, send barrier `id`, then
    /// read nothing more and send no end-of-input (open windows stay open,
    /// in the checkpoint); the supervisor stops the job once `id` completes.
    StopWithCheckpoint(u64),
    /// Checkpoint `id` completed: commit the position recorded for it.
    CheckpointComplete(u64),
    /// Every sink flushed after end-of-input: commit the final position and stop.
    CommitFinal,
}

/// Stop an actor at once (its job is restarting or being torn down).
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Stop;

/// What a task reports to its job's supervisor.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub enum TaskEvent {
    /// A sink instance received end-of-input on all its inputs and closed.
    Finished {
        /// The job attempt the task belongs to.
        attempt: u32,
        /// Task name.
        task: String,
    },
    /// A source recorded its position for checkpoint `id`.
    SourceCheckpointed {
        /// The job attempt.
        attempt: u32,
        /// Checkpoint id.
        id: u64,
        /// Task name.
        task: String,
        /// The position (if the source can seek).
        position: Option<serde_json::Value>,
    },
    /// An operator snapshotted its state for checkpoint `id`.
    OperatorSnapshot {
        /// The job attempt.
        attempt: u32,
        /// Checkpoint id.
        id: u64,
        /// Task name.
        task: String,
        /// The operator's type name (checked when restoring).
        operator: &'static str,
        /// The serialised state.
        state: Vec<u8>,
    },
    /// A sink flushed everything before barrier `id`.
    SinkCheckpointed {
        /// The job attempt.
        attempt: u32,
        /// Checkpoint id.
        id: u64,
    },
    /// A source sent end-of-input; `position` is where it ended.
    SourceEnded {
        /// The job attempt.
        attempt: u32,
        /// The source task's name.
        task: String,
        /// Its final position, if it has one.
        position: Option<serde_json::Value>,
    },
    /// A source committed its final position and stopped.
    SourceCommitted {
        /// The job attempt.
        attempt: u32,
    },
    /// A task failed; it has stopped.
    Failed {
        /// The job attempt the task belongs to.
        attempt: u32,
        /// Why.
        error: TaskError,
    },
}
