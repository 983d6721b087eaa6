//! The interfaces between the engine and the outside world.
//!
//! Owns [`Source`] / [`SourceReader`] (what the job reads) and [`Sink`] /
//! [`SinkWriter`] (what it writes). A `Source` or `Sink` is a description,
//! validated when the job is built and opened once per parallel instance
//! (and again on each restart); readers and writers do the I/O. Readers can
//! report and seek a position and writers can flush, so checkpoints can
//! build on them. Implementations must never block an arbiter for long:
//! `poll` returns what is there now, or [`SourceStatus::Idle`].

use std::time::Duration;

use super::batch::Batch;
use super::context::TaskContext;
use super::error::{BuildError, ConnectorError};
use super::operator::Emit;

/// What a poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceStatus {
    /// Records were (or may soon be) added; poll again at once.
    Ready,
    /// Nothing now: poll again after this long.
    Idle(Duration),
    /// The input is exhausted (bounded sources): no more records.
    Finished,
}

/// A description of an input, opened once per parallel instance.
pub trait Source: Send + Sync + 'static {
    /// Record type produced.
    type Out: Send + 'static;
    /// The per-instance reader.
    type Reader: SourceReader<Out = Self::Out>;

    /// Checks the configuration (paths exist, sizes positive), naming the
    /// offending field.
    fn validate(&self) -> Result<(), BuildError> {
        Ok(())
    }

    /// The largest parallelism this source supports (`None`: any).
    fn max_parallelism(&self) -> Option<usize> {
        None
    }

    /// Opens instance `ctx.subtask` of `ctx.parallelism`.
    fn open(&self, ctx: &TaskContext) -> Result<Self::Reader, ConnectorError>;

    /// Whether its readers' positions keep per-partition facts in objects
    /// keyed by partition number, and seek only the partitions they read:
    /// then a job restored at another parallelism gives every instance the
    /// positions of all the old ones merged. `false` (the default): such a
    /// restore is refused, naming the source.
    fn positions_by_partition(&self) -> bool {
        false
    }

    /// The checkpoint whose positions this source's input system holds as
    /// committed by a transaction ([`CheckpointCommitter`]): the one a job
    /// restores, since a crash between storing checkpoint `n` and
    /// committing its transaction leaves `n - 1` committed. Blocking; called
    /// off the arbiters before a job starts. The default: not tracked.
    fn committed_checkpoint(&self, _job: &str) -> Result<CommittedCheckpoint, ConnectorError> {
        Ok(CommittedCheckpoint::Untracked)
    }

    /// A reader of the copies of the job (checkpoint names) whose
    /// checkpoints the input system's committed positions still name, over
    /// the whole input (not only this source's share): a copy named nowhere
    /// can no longer be restored from, so its checkpoints may go. `None`
    /// (the default): the source cannot tell, and nothing is deleted.
    fn checkpoint_owners(&self, _job: &str) -> Option<CheckpointOwners> {
        None
    }
}

/// Reads which copies' checkpoints an input's committed positions name
/// (see [`Source::checkpoint_owners`]). Blocking: run it off the arbiters.
pub type CheckpointOwners =
    Box<dyn Fn() -> Result<std::collections::BTreeSet<String>, ConnectorError> + Send + Sync>;

/// What a source's input system says about committed checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommittedCheckpoint {
    /// The source does not commit positions in transactions.
    Untracked,
    /// Nothing committed yet: start from scratch (not from storage's
    /// latest, whose transaction may never have committed).
    Nothing,
    /// Checkpoint `n` was committed.
    At(u64),
    /// Other copies of the job committed this source's partitions (a
    /// rescale moved them here): restore each partition from the
    /// checkpoint that committed it, and of the operators' state only the
    /// keys `keys` assigns to this copy.
    Adopted {
        /// The checkpoints to take over, each for some of the partitions.
        from: Vec<AdoptedCheckpoint>,
        /// Which keys this copy owns (`None`: the input is not
        /// partitioned by key, so keyed state cannot be split).
        keys: Option<crate::pipeline::keyed::KeyGroups>,
    },
}

/// A checkpoint another copy of the job committed for some of the
/// partitions a source now reads (see [`CommittedCheckpoint::Adopted`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptedCheckpoint {
    /// The job (copy) that took it: its checkpoints' name in storage.
    pub job: String,
    /// Its id.
    pub id: u64,
    /// The transactional id its output was written with (fenced before
    /// the restore reads what was committed), when it named one.
    pub transactional_id: Option<String>,
    /// The partitions it committed that this source reads.
    pub partitions: Vec<i32>,
}

/// A sink's part in a two-phase commit bound to checkpoints (Flink's
/// `TwoPhaseCommitSinkFunction`, Kafka Streams' exactly-once): what the
/// sink wrote before barrier `n` and the source positions of checkpoint
/// `n` become visible together, in one commit, after the checkpoint's
/// state is stored; sinks write nothing of the next epoch until then.
pub trait CheckpointCommitter: Send + Sync + 'static {
    /// Commits everything job attempt `attempt` wrote before barrier `id`
    /// with `positions` (source positions by task). Never commits another
    /// attempt's writes: a commit of an attempt that was replaced meanwhile
    /// fails. Blocking: called off the arbiters. An error fails the job
    /// attempt, which restores the last committed one.
    fn commit(
        &self,
        attempt: u32,
        id: u64,
        positions: &std::collections::BTreeMap<String, serde_json::Value>,
    ) -> Result<(), ConnectorError>;

    /// The id of the last checkpoint committed; sinks wait on it after a
    /// barrier before writing the next epoch's records.
    fn committed(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Stops every earlier writer of this output (another process that
    /// still runs the job, or this one's previous attempt) from committing
    /// anything more, waiting for a commit it already began. Called before
    /// a restore reads what was committed: otherwise a predecessor could
    /// commit a newer checkpoint after that read, and the restored job
    /// would write that checkpoint's output a second time. Blocking.
    fn fence_predecessors(&self) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Stops the writer of another copy of the job (`transactional_id`,
    /// whose checkpoints a rescale hands to this one) from committing
    /// anything more, waiting for a commit it already began. Blocking.
    fn fence_other(&self, transactional_id: &str) -> Result<(), ConnectorError> {
        let _ = transactional_id;
        Ok(())
    }
}

/// One instance's reader.
pub trait SourceReader: Send + 'static {
    /// Record type produced.
    type Out: Send + 'static;

    /// Appends up to `max` records (with timestamps) to `out`.
    fn poll(
        &mut self,
        out: &mut Batch<Self::Out>,
        max: usize,
    ) -> Result<SourceStatus, ConnectorError>;

    /// Reads up to `max` records and hands each straight to `out` (the
    /// fused operator chain of the source stage), returning the status and
    /// the number of records read. The default polls into `scratch` and
    /// drains it; sources that produce records cheaply override it to skip
    /// the intermediate batch.
    #[inline]
    fn poll_into<E: Emit<Self::Out>>(
        &mut self,
        scratch: &mut Batch<Self::Out>,
        out: &mut E,
        max: usize,
    ) -> Result<(SourceStatus, usize), ConnectorError> {
        let status = self.poll(scratch, max)?;
        let n = scratch.len();
        for (v, ts) in scratch.values.drain(..).zip(scratch.timestamps.drain(..)) {
            out.emit(v, ts);
        }
        Ok((status, n))
    }

    /// The job is draining: stop taking new input. Return `true` to end at
    /// once, or `false` when records already taken in (e.g. lines a reader
    /// thread has read) must still be emitted: `poll` is then called until
    /// it returns [`SourceStatus::Finished`].
    fn drain(&mut self) -> bool {
        true
    }

    /// The position after the last record returned, if the source can seek.
    fn position(&self) -> Option<serde_json::Value> {
        None
    }

    /// Continues from a position returned by [`SourceReader::position`].
    fn seek(&mut self, _position: &serde_json::Value) -> Result<(), ConnectorError> {
        Err(ConnectorError::new("this source cannot seek"))
    }

    /// A checkpoint that recorded `position` (from [`SourceReader::position`])
    /// has completed: every record before it was processed and flushed by
    /// the sinks. Commit it (e.g. Kafka offsets). Never called for a
    /// position whose records are still in flight.
    fn commit(&mut self, _position: &serde_json::Value) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// The reader's own view of event time, for readers whose input has
    /// several parts read side by side or one after another (Kafka
    /// partitions, the files of a directory). The default,
    /// [`ReaderWatermark::Derived`], lets the source derive watermarks from
    /// the timestamps of the batches it reads. The strategy to apply is
    /// `TaskContext::watermarks`.
    fn watermark(&mut self) -> ReaderWatermark {
        ReaderWatermark::Derived
    }
}

/// What a reader says about its watermark ([`SourceReader::watermark`]).
///
/// A reader that tracks its parts itself must never let its watermark pass
/// a part that has not delivered yet: an assigned partition whose first
/// record has not arrived, a file not read yet. Such a part *holds* the
/// watermark until it delivers, or until it is idle (caught up with its
/// end and quiet for the idle timeout), never because its data simply has
/// not arrived yet.
///
/// ```
/// use weir::pipeline::ReaderWatermark;
/// // Two partitions: one at event time 5_000, one that has not delivered.
/// let held = ReaderWatermark::Held;
/// let at = ReaderWatermark::At(5_000 - 2_000); // once both have, bound 2 s
/// assert_ne!(held, at);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderWatermark {
    /// The reader does not track event time: the source derives watermarks
    /// from the batches' timestamps.
    Derived,
    /// A part that has not delivered (and is not idle) holds the watermark:
    /// emit nothing new.
    Held,
    /// The watermark over the reader's active parts (minimum over parts of
    /// their largest timestamp, minus the bound). Never moves back.
    At(super::batch::Timestamp),
    /// Every part is idle (caught up and quiet for the idle timeout), or the
    /// reader owns none: it holds no one back until it delivers again.
    Idle,
}

/// A description of an output, opened once per parallel instance.
pub trait Sink: Send + Sync + 'static {
    /// Record type consumed.
    type In: Send + 'static;
    /// The per-instance writer.
    type Writer: SinkWriter<In = Self::In>;

    /// Checks the configuration, naming the offending field.
    fn validate(&self) -> Result<(), BuildError> {
        Ok(())
    }

    /// The largest parallelism this sink supports (`None`: any).
    fn max_parallelism(&self) -> Option<usize> {
        None
    }

    /// Opens instance `ctx.subtask` of `ctx.parallelism`.
    fn open(&self, ctx: &TaskContext) -> Result<Self::Writer, ConnectorError>;

    /// The sink's two-phase-commit participant, if its output is committed
    /// with checkpoints (one per sink, shared by its instances).
    fn committer(&self) -> Option<std::sync::Arc<dyn CheckpointCommitter>> {
        None
    }
}

/// One instance's writer.
pub trait SinkWriter: Send + 'static {
    /// Record type consumed.
    type In: Send + 'static;

    /// Writes (or buffers) every record of `batch`, leaving it empty.
    fn write(&mut self, batch: &mut Batch<Self::In>) -> Result<(), ConnectorError>;

    /// Makes everything written so far durable / visible (e.g. waits for
    /// Kafka delivery reports). Called at every checkpoint barrier and at
    /// the end; an error fails the task, so no record is silently lost.
    fn flush(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// The input ended: flush and release resources.
    fn close(&mut self) -> Result<(), ConnectorError> {
        self.flush()
    }

    /// The watermark of the sink's input advanced to `watermark` (after the
    /// records before it were written). Most sinks ignore it; a sink that
    /// forwards event time (a repartition topic) writes it out.
    fn watermark(&mut self, _watermark: super::batch::Timestamp) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Every input of the sink is idle (see [`Signal::Idle`](super::Signal)).
    fn idle(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}
