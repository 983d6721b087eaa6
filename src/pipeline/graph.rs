//! The job graph: what a job is, independent of how it runs.
//!
//! Owns the graph's nodes — [`StageNode`] (a stage: its input and the fused
//! operator chain after it), its inputs [`FromSource`] and
//! [`FromExchange`] (the previous stage through a [`Partitioner`]), and
//! [`SinkNode`] (the last stage) — and the two traits that read them:
//! [`Upstream`] (a node producing a stream, walked from the sink towards
//! the sources) and [`Launcher`] (what a runtime does with each kind of
//! node). The graph is fully typed: every closure, operator and connector
//! is a type parameter, so a launcher instantiates its loops for the
//! concrete types and nothing dispatches dynamically per record.
//!
//! Two launchers read it: the local runtime's in-process stages
//! (`actors::local_launcher`) and the cluster's stage planner
//! (`service::stage_plan`), which cuts it at its exchanges into stages
//! that run as separate tasks over repartition topics.
//!
//! Must never: depend on the runtime (actors, ZooKeeper, Kafka), start
//! anything, or do I/O beyond asking connectors what they committed.

use std::sync::Arc;

use super::connector::{CheckpointOwners, CommittedCheckpoint, Sink, Source};
use super::error::{BuildError, ConnectorError};
use super::operator::Operator;
use super::partition::Partitioner;
use super::watermark::Watermarks;

/// A stage's input: a source, with how its watermarks are generated.
pub struct FromSource<S> {
    pub(crate) source: Arc<S>,
    pub(crate) watermarks: Watermarks,
}

impl<S> FromSource<S> {
    /// The source (shared by the stage's instances).
    pub fn source(&self) -> &Arc<S> {
        &self.source
    }

    /// How the source's watermarks are generated.
    pub fn watermarks(&self) -> Watermarks {
        self.watermarks
    }
}

/// A stage's input: the previous stage, through an exchange.
pub struct FromExchange<U, X> {
    pub(crate) upstream: U,
    pub(crate) partitioner: X,
}

impl<U, X> FromExchange<U, X> {
    /// The stage before the exchange.
    pub fn upstream(&self) -> &U {
        &self.upstream
    }

    /// How records are routed to this stage's instances.
    pub fn partitioner(&self) -> &X {
        &self.partitioner
    }
}

/// One stage of the graph: its input and the fused operator chain after it.
pub struct StageNode<I, Op> {
    pub(crate) input: I,
    pub(crate) op: Op,
    pub(crate) stage: String,
    pub(crate) parallelism: usize,
}

impl<I, Op> StageNode<I, Op> {
    /// The stage's input.
    pub fn input(&self) -> &I {
        &self.input
    }

    /// The operator chain after the input (cloned into each instance).
    pub fn op(&self) -> &Op {
        &self.op
    }

    /// The stage's name in the job: `<n>-<kind>` or `<uid>-<kind>`.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// The stage's uid when it was given one (`.uid(..)`), else its
    /// position in the graph: the part of [`StageNode::stage`] before `-`.
    pub fn uid(&self) -> &str {
        stage_uid(&self.stage)
    }

    /// Number of parallel instances.
    pub fn parallelism(&self) -> usize {
        self.parallelism
    }
}

/// The uid part of a stage name `<uid>-<kind>`.
pub(crate) fn stage_uid(stage: &str) -> &str {
    stage.split_once('-').map_or(stage, |(uid, _)| uid)
}

/// The last stage: the sink, after the stage it reads.
pub struct SinkNode<U, S> {
    pub(crate) upstream: U,
    pub(crate) sink: Arc<S>,
    pub(crate) stage: String,
    pub(crate) parallelism: usize,
}

impl<U, S> SinkNode<U, S> {
    /// The stage the sink reads.
    pub fn upstream(&self) -> &U {
        &self.upstream
    }

    /// The sink (shared by its instances).
    pub fn sink(&self) -> &Arc<S> {
        &self.sink
    }

    /// The sink stage's name.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// Number of sink instances.
    pub fn parallelism(&self) -> usize {
        self.parallelism
    }
}

/// What a runtime does with each kind of node. [`Upstream::launch`] and
/// [`Graph::launch`] call the method for their node with their concrete
/// types; a launcher recurses upstream itself (through
/// [`FromExchange::upstream`] and [`Upstream::launch`]) once it knows
/// where the upstream stage's output goes.
pub trait Launcher {
    /// Where a stage's output goes: the launcher's handle on the next
    /// stage's instances, routed by `P`.
    type Output<T: Send + 'static, P: Partitioner<T>>;

    /// Starts a stage reading a source.
    fn source_stage<S, Op, P>(
        &mut self,
        node: &StageNode<FromSource<S>, Op>,
        out: Self::Output<Op::Out, P>,
    ) -> Result<(), BuildError>
    where
        S: Source,
        Op: Operator<In = S::Out>,
        P: Partitioner<Op::Out>;

    /// Starts a stage reading the previous one through an exchange (and,
    /// through it, everything upstream).
    fn exchange_stage<U, X, Op, P>(
        &mut self,
        node: &StageNode<FromExchange<U, X>, Op>,
        out: Self::Output<Op::Out, P>,
    ) -> Result<(), BuildError>
    where
        Op: Operator,
        U: Upstream<Op::In>,
        X: Partitioner<Op::In>,
        P: Partitioner<Op::Out>;

    /// Starts the sink stage (and, through it, the whole graph).
    fn sink_stage<U, S>(&mut self, node: &SinkNode<U, S>) -> Result<(), BuildError>
    where
        S: Sink,
        U: Upstream<S::In>;
}

/// A node that produces a stream of `T` in parallel instances.
pub trait Upstream<T: Send + 'static>: Send + 'static {
    /// Number of parallel instances.
    fn parallelism(&self) -> usize;
    /// Checks this node and everything upstream.
    fn validate(&self) -> Result<(), BuildError>;
    /// Hands this node, with its concrete types, to `launcher`, its output
    /// going to `out`.
    fn launch<L: Launcher, P: Partitioner<T>>(
        &self,
        launcher: &mut L,
        out: L::Output<T, P>,
    ) -> Result<(), BuildError>;
    /// What the sources upstream say was committed (see
    /// [`Source::committed_checkpoint`]).
    fn committed_checkpoint(&self, job: &str) -> Result<CommittedCheckpoint, ConnectorError>;
    /// The copies whose checkpoints the sources' input still names (see
    /// [`Source::checkpoint_owners`]).
    fn checkpoint_owners(&self, job: &str) -> Option<CheckpointOwners>;
}

pub(crate) fn check_parallelism(stage: &str, p: usize) -> Result<(), BuildError> {
    if p == 0 {
        return Err(BuildError::invalid(
            format!("{stage}.parallelism"),
            "must be at least 1",
        ));
    }
    Ok(())
}

impl<S, Op> Upstream<Op::Out> for StageNode<FromSource<S>, Op>
where
    S: Source,
    Op: Operator<In = S::Out>,
{
    fn parallelism(&self) -> usize {
        self.parallelism
    }

    fn committed_checkpoint(&self, job: &str) -> Result<CommittedCheckpoint, ConnectorError> {
        self.input.source.committed_checkpoint(job)
    }

    fn checkpoint_owners(&self, job: &str) -> Option<CheckpointOwners> {
        self.input.source.checkpoint_owners(job)
    }

    fn validate(&self) -> Result<(), BuildError> {
        check_parallelism(&self.stage, self.parallelism)?;
        if let Some(m) = self.input.source.max_parallelism() {
            if self.parallelism > m {
                return Err(BuildError::invalid(
                    format!("{}.parallelism", self.stage),
                    format!(
                        "{} exceeds what the source supports ({m})",
                        self.parallelism
                    ),
                ));
            }
        }
        self.input.source.validate()
    }

    fn launch<L: Launcher, P: Partitioner<Op::Out>>(
        &self,
        launcher: &mut L,
        out: L::Output<Op::Out, P>,
    ) -> Result<(), BuildError> {
        launcher.source_stage(self, out)
    }
}

impl<U, X, Op> Upstream<Op::Out> for StageNode<FromExchange<U, X>, Op>
where
    Op: Operator,
    U: Upstream<Op::In>,
    X: Partitioner<Op::In>,
{
    fn parallelism(&self) -> usize {
        self.parallelism
    }

    fn committed_checkpoint(&self, job: &str) -> Result<CommittedCheckpoint, ConnectorError> {
        self.input.upstream.committed_checkpoint(job)
    }

    fn checkpoint_owners(&self, job: &str) -> Option<CheckpointOwners> {
        self.input.upstream.checkpoint_owners(job)
    }

    fn validate(&self) -> Result<(), BuildError> {
        check_parallelism(&self.stage, self.parallelism)?;
        self.input.upstream.validate()
    }

    fn launch<L: Launcher, P: Partitioner<Op::Out>>(
        &self,
        launcher: &mut L,
        out: L::Output<Op::Out, P>,
    ) -> Result<(), BuildError> {
        launcher.exchange_stage(self, out)
    }
}

/// A whole job graph: stages from the sources to one sink.
pub trait Graph: Send + 'static {
    /// Checks every node.
    fn validate(&self) -> Result<(), BuildError>;

    /// What was committed for `job`, its sink's transactional writers
    /// fenced first (see [`Source::committed_checkpoint`] and
    /// [`CheckpointCommitter`](super::CheckpointCommitter)).
    fn committed_checkpoint(&self, job: &str) -> Result<CommittedCheckpoint, ConnectorError>;

    /// The copies whose checkpoints the sources' input still names (see
    /// [`Source::checkpoint_owners`]).
    fn checkpoint_owners(&self, job: &str) -> Option<CheckpointOwners>;

    /// Hands the graph, with its concrete types, to `launcher`.
    fn launch<L: Launcher>(&self, launcher: &mut L) -> Result<(), BuildError>;
}

impl<U, S> Graph for SinkNode<U, S>
where
    S: Sink,
    U: Upstream<S::In>,
{
    fn validate(&self) -> Result<(), BuildError> {
        self.upstream.validate()?;
        check_parallelism(&self.stage, self.parallelism)?;
        self.sink.validate()
    }

    fn committed_checkpoint(&self, job: &str) -> Result<CommittedCheckpoint, ConnectorError> {
        // Fenced first, so nothing commits after the read.
        let Some(c) = self.sink.committer() else {
            return self.upstream.committed_checkpoint(job);
        };
        c.fence_predecessors()?;
        // Taking over other copies' partitions (a rescale): fence their
        // writers too, then read again, until the owners read are all
        // fenced (one may have committed between the read and its fence).
        let mut fenced = std::collections::BTreeSet::new();
        for _ in 0..8 {
            let committed = self.upstream.committed_checkpoint(job)?;
            let CommittedCheckpoint::Adopted { from, .. } = &committed else {
                return Ok(committed);
            };
            let unfenced: Vec<&str> = from
                .iter()
                .filter_map(|a| a.transactional_id.as_deref())
                .filter(|t| !fenced.contains(*t))
                .collect();
            if unfenced.is_empty() {
                return Ok(committed);
            }
            for t in unfenced {
                c.fence_other(t)?;
                fenced.insert(t.to_string());
            }
        }
        Err(ConnectorError::new(
            "the copies this one takes partitions over from kept changing while they were fenced",
        ))
    }

    fn checkpoint_owners(&self, job: &str) -> Option<CheckpointOwners> {
        self.upstream.checkpoint_owners(job)
    }

    fn launch<L: Launcher>(&self, launcher: &mut L) -> Result<(), BuildError> {
        launcher.sink_stage(self)
    }
}
