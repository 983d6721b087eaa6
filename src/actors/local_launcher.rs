//! The local launcher: a job graph's stages as actors in this process.
//!
//! Owns the [`Launcher`] implementation of [`Launch`]: each stage's
//! instances become actors (a [`SourceActor`] per source instance running
//! the stage's fused chain, an [`OperatorActor`] per instance after an
//! exchange, a [`SinkActor`] per sink instance), connected by in-process
//! [`Outputs`] routed by the graph's partitioners. Stages start from the
//! sink towards the sources, so every stage's targets exist before
//! anything sends to them. Also owns [`LocalPlan`], where a typed graph
//! is erased for the supervisor (once per job, never per record).
//!
//! Must never: change the graph's routing (it is the graph's
//! [`Partitioner`]), or start a source before its downstream stages.

use super::edge::Outputs;
use super::launch::Launch;
use super::operator_actor::OperatorActor;
use super::sink_actor::SinkActor;
use super::source_actor::{SourceActor, SourceSetup};
use super::supervisor::LaunchPlan;
use super::task::TaskHandle;
use crate::pipeline::graph::{
    FromExchange, FromSource, Graph, Launcher, SinkNode, StageNode, Upstream,
};
use crate::pipeline::partition::{Partitioner, RoundRobin};
use crate::pipeline::{
    BuildError, CheckpointingMode, CommittedCheckpoint, ConnectorError, Operator, Sink, Source,
};

impl Launcher for Launch<'_> {
    type Output<T: Send + 'static, P: Partitioner<T>> = Outputs<T, P>;

    fn source_stage<S, Op, P>(
        &mut self,
        node: &StageNode<FromSource<S>, Op>,
        out: Outputs<Op::Out, P>,
    ) -> Result<(), BuildError>
    where
        S: Source,
        Op: Operator<In = S::Out>,
        P: Partitioner<Op::Out>,
    {
        let (parallelism, watermarks) = (node.parallelism(), node.input().watermarks());
        let alignment = match watermarks.max_drift_ms() {
            Some(drift) if parallelism > 1 => {
                Some(crate::pipeline::WatermarkAlignment::new(parallelism, drift))
            }
            _ => None,
        };
        for i in 0..parallelism {
            let mut ctx = self.task_context(node.stage(), i, parallelism);
            ctx.watermarks = watermarks;
            let source = node.input().source().clone();
            let restore = self.restored_position(
                node.stage(),
                i,
                parallelism,
                source.positions_by_partition(),
            );
            let task = TaskHandle::new(ctx, self.supervisor.clone());
            let (op, edge) = (node.op().clone(), out.edge(i));
            let setup = SourceSetup {
                watermarks: watermarks.generator(),
                alignment: alignment.clone(),
                batch_size: self.batch_size(),
                restore,
            };
            let addr = actix::Actor::start_in_arbiter(self.arbiter(i), move |_| {
                SourceActor::new(source, op, edge, task, setup)
            });
            self.stops.push(addr.clone().recipient());
            self.sources.push(addr.recipient());
        }
        Ok(())
    }

    fn exchange_stage<U, X, Op, P>(
        &mut self,
        node: &StageNode<FromExchange<U, X>, Op>,
        out: Outputs<Op::Out, P>,
    ) -> Result<(), BuildError>
    where
        Op: Operator,
        U: Upstream<Op::In>,
        X: Partitioner<Op::In>,
        P: Partitioner<Op::Out>,
    {
        let parallelism = node.parallelism();
        let exchange = node.input();
        let inputs = exchange.upstream().parallelism();
        let aligned = self.config.checkpoint_mode == CheckpointingMode::ExactlyOnce;
        let mut targets = Vec::with_capacity(parallelism);
        for i in 0..parallelism {
            let ctx = self.task_context(node.stage(), i, parallelism);
            let restore = self.restored_state(
                node.stage(),
                i,
                parallelism,
                exchange.partitioner().routes_records(),
                std::any::type_name::<Op>(),
            );
            let task = TaskHandle::new(ctx, self.supervisor.clone());
            let (op, edge) = (node.op().clone(), out.edge(i));
            let addr = self.start_bounded(i, move || {
                OperatorActor::new(op, edge, task, inputs, restore, aligned)
            });
            self.stops.push(addr.clone().recipient());
            targets.push(addr.recipient());
        }
        let mailbox = self.mailbox();
        exchange.upstream().launch(
            self,
            Outputs::new(targets, exchange.partitioner().clone(), false, mailbox),
        )
    }

    fn sink_stage<U, S>(&mut self, node: &SinkNode<U, S>) -> Result<(), BuildError>
    where
        S: Sink,
        U: Upstream<S::In>,
    {
        if let Some(c) = node.sink().committer() {
            self.committers.push(c);
        }
        let parallelism = node.parallelism();
        let up = node.upstream().parallelism();
        let forward = up == parallelism;
        let inputs = if forward { 1 } else { up };
        let aligned = self.config.checkpoint_mode == CheckpointingMode::ExactlyOnce;
        let mut targets = Vec::with_capacity(parallelism);
        for i in 0..parallelism {
            let task = TaskHandle::new(
                self.task_context(node.stage(), i, parallelism),
                self.supervisor.clone(),
            );
            let sink = node.sink().clone();
            let addr = self.start_bounded(i, move || SinkActor::new(sink, task, inputs, aligned));
            self.stops.push(addr.clone().recipient());
            targets.push(addr.recipient());
        }
        self.sinks += parallelism;
        let mailbox = self.mailbox();
        node.upstream().launch(
            self,
            Outputs::new(targets, RoundRobin::default(), forward, mailbox),
        )
    }
}

/// A typed graph behind the supervisor's object-safe [`LaunchPlan`]: the
/// one place the local runtime erases a graph's type.
pub(crate) struct LocalPlan<G>(pub(crate) G);

impl<G: Graph> LaunchPlan for LocalPlan<G> {
    fn launch(&self, l: &mut Launch<'_>) -> Result<(), BuildError> {
        self.0.launch(l)
    }

    fn committed_checkpoint(&self, job: &str) -> Result<CommittedCheckpoint, ConnectorError> {
        self.0.committed_checkpoint(job)
    }

    fn checkpoint_owners(&self, job: &str) -> Option<crate::pipeline::CheckpointOwners> {
        self.0.checkpoint_owners(job)
    }
}
