//! The cluster's stage planner: one task's cut of a job graph.
//!
//! Owns [`StagePlacement`] (which stage a task runs, where it sits in it,
//! and what the stages around it look like) and [`plan_stage`], which reads
//! the same typed graph the local runtime launches and cuts it at its
//! exchanges into stages, as Kafka Streams does at its repartitions:
//!
//! - the source stage keeps the graph's source (configured by the job's
//!   builder for this task: its input partitions, group, guarantee) and its
//!   fused chain;
//! - every later stage reads its repartition topic
//!   (`weir-<job>-<stage>-repartition`, [`RepartitionSource`]) and runs the
//!   graph's exchange (in-process, to this task's one instance) and the
//!   stage's chain;
//! - every stage but the last writes to the next stage's repartition topic
//!   ([`RepartitionSink::by_exchange`]: each record to the partition the
//!   graph's exchange routes it to, so a key reaches the same task whatever
//!   worker writes it); the last writes to the graph's sink.
//!
//! A stage is named by its uid (`.uid("count")` on the stage; the source
//! stage's too), the names a job type registers its stages under. Each
//! stage runs as tasks of one instance each, with its own checkpoints:
//! with durable storage its repartition writes are transactional, its
//! reads `read_committed`, and it takes partitions (and their keyed state)
//! over from the other copies of its stage on a rescale.
//!
//! Must never: change what the graph computes (only where its stages run),
//! pick a partition any other way than the graph's exchange, or run
//! anything (it builds a [`LocalJob`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::lease::{Fenced, LeaseGuard};
use super::registry::partitions_of_task;
use crate::actors::LocalJob;
use crate::connectors::kafka::repartition::{
    repartition_topic, RepartitionSink, RepartitionSource,
};
use crate::pipeline::graph::{FromExchange, FromSource, Graph, SinkNode, StageNode, Upstream};
use crate::pipeline::{
    BuildError, Identity, JobConfig, Operator, Partitioner, RunnableJob, Sink, Source, Watermarks,
};

/// Where one task sits in its job's stages.
#[derive(Debug, Clone)]
pub struct StagePlacement {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The logical job's name (names the repartition topics).
    pub job: String,
    /// The stage this task runs (a stage uid of the graph).
    pub stage: String,
    /// This task's index within its stage, `0..tasks(stage)`.
    pub instance: usize,
    /// Tasks of each stage, by uid (a stage not named has 1).
    pub tasks: BTreeMap<String, usize>,
    /// Partitions of the repartition topic in front of each stage, by the
    /// stage's uid (not named: as many as the stage has tasks).
    pub partitions: BTreeMap<String, usize>,
    /// The name of this task's copy of its stage: its job name, its
    /// checkpoints', and its transactional id's (`weir-<copy name>`).
    pub copy_name: String,
    /// Durable checkpoints: repartition reads and writes exactly once.
    pub exactly_once: bool,
    /// The other copies of this task's stage share this name prefix: on a
    /// rescale this copy takes their partitions over (see
    /// [`RepartitionSource::take_over_from`]).
    pub take_over_from: Option<String>,
    /// Consumer group prefix: a stage reading a repartition topic commits
    /// its positions as `<group>-<stage>`; `None`: as the repartition
    /// source's default, `weir-<copy name>`.
    pub group: Option<String>,
    /// The task's write lease: every repartition write is fenced with it.
    pub fence: LeaseGuard,
    /// Extra librdkafka options for the repartition writers.
    pub producer_options: Vec<(String, String)>,
}

impl StagePlacement {
    /// Task `instance` of stage `stage` of `job`, one task per stage, at
    /// least once, unfenced (the caller sets the rest).
    pub fn new(
        brokers: impl Into<String>,
        job: impl Into<String>,
        stage: impl Into<String>,
        instance: usize,
    ) -> Self {
        let (job, stage) = (job.into(), stage.into());
        StagePlacement {
            brokers: brokers.into(),
            copy_name: format!("{job}-{stage}-{instance}"),
            group: None,
            job,
            stage,
            instance,
            tasks: BTreeMap::new(),
            partitions: BTreeMap::new(),
            exactly_once: false,
            take_over_from: None,
            fence: LeaseGuard::unfenced(),
            producer_options: Vec::new(),
        }
    }

    /// Tasks of stage `uid`.
    pub fn tasks_of(&self, uid: &str) -> usize {
        self.tasks.get(uid).copied().unwrap_or(1).max(1)
    }

    /// Partitions of the repartition topic in front of stage `uid`.
    pub fn partitions_of(&self, uid: &str) -> usize {
        self.partitions
            .get(uid)
            .copied()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| self.tasks_of(uid))
    }

    /// The repartition topic in front of stage `uid`.
    pub fn topic(&self, uid: &str) -> String {
        repartition_topic(&self.job, uid)
    }

    /// The partitions of stage `uid`'s repartition topic this task reads
    /// (when it runs that stage): those with `p % tasks == instance`.
    pub fn my_partitions(&self, uid: &str) -> Vec<i32> {
        partitions_of_task(
            self.partitions_of(uid) as u32,
            self.instance as u32,
            self.tasks_of(uid) as u32,
        )
    }
}

/// Why a graph could not be cut for a task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The job's builder refused a setting.
    #[error("{0}")]
    Invalid(BuildError),
    /// The placement names a stage the graph does not have.
    #[error("job {job:?} has no stage {stage:?} (its stages: {stages:?})")]
    NoSuchStage {
        /// The job.
        job: String,
        /// The stage asked for.
        stage: String,
        /// The graph's stage uids, source first.
        stages: Vec<String>,
    },
    /// The stage's repartition topic has fewer partitions than tasks.
    #[error("repartition topic {topic} has {partitions} partitions: task {instance} of stage {stage:?} has none to read")]
    NoPartitions {
        /// The stage.
        stage: String,
        /// Its repartition topic.
        topic: String,
        /// The topic's partitions.
        partitions: usize,
        /// The task's index.
        instance: usize,
    },
}

/// A graph node the planner can cut: the stage uids up to it, and the job
/// of one of them ending in a given sink.
pub trait CutStages<T: Send + 'static>: Upstream<T> {
    /// The uids of the stages from the source to this node.
    fn stage_uids(&self, out: &mut Vec<String>);

    /// The job of the stage `at.stage` (this node's or one upstream),
    /// writing to `sink`; `None` when no stage up to here has that uid.
    fn cut<Sk: Sink<In = T>>(
        &self,
        at: &StagePlacement,
        config: &JobConfig,
        sink: Arc<Sk>,
    ) -> Result<Option<LocalJob>, PlanError>;
}

/// A one-task job of `upstream` into `sink`.
fn stage_job<U, Sk>(at: &StagePlacement, config: &JobConfig, upstream: U, sink: Arc<Sk>) -> LocalJob
where
    Sk: Sink,
    U: Upstream<Sk::In>,
{
    let graph = SinkNode {
        upstream,
        sink,
        stage: "sink".into(),
        parallelism: 1,
    };
    let config = JobConfig {
        parallelism: 1,
        ..config.clone()
    };
    RunnableJob::from_parts(at.copy_name.clone(), config, Vec::new(), graph).into()
}

impl<S, Op> CutStages<Op::Out> for StageNode<FromSource<S>, Op>
where
    S: Source,
    Op: Operator<In = S::Out>,
{
    fn stage_uids(&self, out: &mut Vec<String>) {
        out.push(self.uid().to_string());
    }

    fn cut<Sk: Sink<In = Op::Out>>(
        &self,
        at: &StagePlacement,
        config: &JobConfig,
        sink: Arc<Sk>,
    ) -> Result<Option<LocalJob>, PlanError> {
        if self.uid() != at.stage {
            return Ok(None);
        }
        let node = StageNode {
            input: FromSource {
                source: self.input.source.clone(),
                watermarks: self.input.watermarks,
            },
            op: self.op.clone(),
            stage: self.stage.clone(),
            parallelism: 1,
        };
        Ok(Some(stage_job(at, config, node, sink)))
    }
}

impl<U, X, Op> CutStages<Op::Out> for StageNode<FromExchange<U, X>, Op>
where
    Op: Operator,
    Op::In: Serialize + DeserializeOwned,
    U: CutStages<Op::In>,
    X: Partitioner<Op::In> + Sync,
{
    fn stage_uids(&self, out: &mut Vec<String>) {
        self.input.upstream.stage_uids(out);
        out.push(self.uid().to_string());
    }

    fn cut<Sk: Sink<In = Op::Out>>(
        &self,
        at: &StagePlacement,
        config: &JobConfig,
        sink: Arc<Sk>,
    ) -> Result<Option<LocalJob>, PlanError> {
        let uid = self.uid();
        let upstream = &self.input.upstream;
        if uid != at.stage {
            // An upstream stage: it writes what this stage reads.
            let mut writer = RepartitionSink::by_exchange(
                &at.brokers,
                at.topic(uid),
                self.input.partitioner.clone(),
            )
            .first_writer(at.instance)
            .writers(at.tasks_of(&at.stage));
            for (k, v) in &at.producer_options {
                writer = writer.set(k, v);
            }
            if at.exactly_once {
                writer = writer.exactly_once(format!("weir-{}", at.copy_name));
            }
            let writer = Arc::new(Fenced::new(writer, at.fence.clone()));
            return upstream.cut(at, config, writer);
        }
        let mine = at.my_partitions(uid);
        if mine.is_empty() {
            return Err(PlanError::NoPartitions {
                stage: uid.to_string(),
                topic: at.topic(uid),
                partitions: at.partitions_of(uid),
                instance: at.instance,
            });
        }
        let mut upstream_uids = Vec::new();
        upstream.stage_uids(&mut upstream_uids);
        let writers = upstream_uids.last().map_or(1, |u| at.tasks_of(u));
        let mut source =
            RepartitionSource::<Op::In>::new(&at.brokers, at.topic(uid), writers).partitions(mine);
        if let Some(group) = &at.group {
            source = source.group(format!("{group}-{uid}"));
        }
        if at.exactly_once {
            source = source.exactly_once();
            if let Some(prefix) = &at.take_over_from {
                source = source.take_over_from(prefix);
            }
        }
        let read = StageNode {
            input: FromSource {
                source: Arc::new(source),
                // The upstream writers' watermarks already allow for disorder.
                watermarks: Watermarks::bounded_out_of_orderness(Duration::ZERO),
            },
            op: Identity::default(),
            stage: "0-source".into(),
            parallelism: 1,
        };
        let node = StageNode {
            input: FromExchange {
                upstream: read,
                partitioner: self.input.partitioner.clone(),
            },
            op: self.op.clone(),
            stage: self.stage.clone(),
            parallelism: 1,
        };
        Ok(Some(stage_job(at, config, node, sink)))
    }
}

/// A whole graph the planner can cut: a sink after stages it can cut.
pub trait StagedGraph: Graph {
    /// The stage uids, source first.
    fn stage_uids(&self) -> Vec<String>;

    /// The job of stage `at.stage`, or `None` when the graph has no such
    /// stage.
    fn cut_stage(
        &self,
        at: &StagePlacement,
        config: &JobConfig,
    ) -> Result<Option<LocalJob>, PlanError>;
}

impl<U, S> StagedGraph for SinkNode<U, S>
where
    S: Sink,
    U: CutStages<S::In>,
{
    fn stage_uids(&self) -> Vec<String> {
        let mut uids = Vec::new();
        self.upstream.stage_uids(&mut uids);
        uids
    }

    fn cut_stage(
        &self,
        at: &StagePlacement,
        config: &JobConfig,
    ) -> Result<Option<LocalJob>, PlanError> {
        self.upstream.cut(at, config, self.sink.clone())
    }
}

/// The job task `at` runs: `job`'s graph cut at its exchanges, stage
/// `at.stage` of it, named `at.copy_name`, with the job's settings (one
/// instance per stage). A configuration error of `job` stays with it.
///
/// ```
/// use weir::connectors::{BlackholeSink, GeneratorSource};
/// use weir::pipeline::{Count, Job, Tumbling};
/// use weir::service::stage_plan::{plan_stage, StagePlacement, StagedGraph};
/// let job = Job::new("clicks")
///     .source(GeneratorSource::new(|i| (i % 3, i)).count(10))
///     .uid("parse")
///     .key_by(|e: &(u64, u64)| e.0)
///     .window(Tumbling::event_time(std::time::Duration::from_secs(1)))
///     .aggregate(Count)
///     .uid("count")
///     .sink(BlackholeSink::new());
/// assert_eq!(job.graph().stage_uids(), ["parse", "count"]);
/// let at = StagePlacement::new("127.0.0.1:9092", "clicks", "count", 0);
/// assert_eq!(plan_stage(&job, &at).unwrap().name(), "clicks-count-0");
/// let at = StagePlacement::new("127.0.0.1:9092", "clicks", "total", 0);
/// assert!(plan_stage(&job, &at).is_err());
/// ```
pub fn plan_stage<G: StagedGraph>(
    job: &RunnableJob<G>,
    at: &StagePlacement,
) -> Result<LocalJob, PlanError> {
    if let Some(e) = job.build_error() {
        return Err(PlanError::Invalid(e.clone()));
    }
    let graph = job.graph();
    match graph.cut_stage(at, job.config())? {
        Some(planned) => Ok(planned),
        None => Err(PlanError::NoSuchStage {
            job: at.job.clone(),
            stage: at.stage.clone(),
            stages: graph.stage_uids(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::{BlackholeSink, GeneratorSource};
    use crate::pipeline::{Count, Job, Tumbling};

    fn three_stages(parallelism: usize) -> RunnableJob<impl StagedGraph> {
        Job::new("totals")
            .parallelism(parallelism)
            .source(GeneratorSource::new(|i| (i % 3, i)).count(10))
            .uid("parse")
            .key_by(|e: &(u64, u64)| e.0)
            .window(Tumbling::event_time(Duration::from_secs(1)))
            .aggregate(Count)
            .uid("count")
            .map(|w| (w.window.start as u64, w.value))
            .key_by(|e: &(u64, u64)| e.0)
            .window(Tumbling::event_time(Duration::from_secs(1)))
            .aggregate(Count)
            .uid("total")
            .sink(BlackholeSink::new())
    }

    fn at(stage: &str, instance: usize) -> StagePlacement {
        let mut at = StagePlacement::new("127.0.0.1:9", "totals", stage, instance);
        at.tasks = [("parse", 2), ("count", 3), ("total", 2)]
            .map(|(s, n)| (s.to_string(), n))
            .into();
        at
    }

    #[test]
    fn each_stage_of_the_graph_is_cut_into_a_job_of_its_own() {
        let job = three_stages(4);
        assert_eq!(job.graph().stage_uids(), ["parse", "count", "total"]);
        for stage in ["parse", "count", "total"] {
            let planned = plan_stage(&job, &at(stage, 1)).expect(stage);
            assert_eq!(planned.name(), format!("totals-{stage}-1"));
            assert_eq!(planned.config().parallelism, 1, "one instance per task");
            planned.validate().expect("a valid stage job");
        }
    }

    /// A `rebalance` is a cut too: its stage reads a repartition topic the
    /// stage before writes round-robin (the graph's exchange does not
    /// route by record, so the writer leaves the partition to Kafka).
    #[test]
    fn a_rebalance_is_a_stage_of_its_own() {
        let job = Job::new("spread")
            .source(GeneratorSource::new(|i| i).count(10))
            .uid("read")
            .rebalance()
            .map(|i: u64| i * 2)
            .uid("double")
            .sink(BlackholeSink::new());
        assert_eq!(job.graph().stage_uids(), ["read", "double"]);
        let mut place = StagePlacement::new("127.0.0.1:9", "spread", "double", 0);
        place.tasks.insert("double".into(), 2);
        assert_eq!(
            plan_stage(&job, &place).expect("double").name(),
            "spread-double-0"
        );
    }

    #[test]
    fn a_stage_the_graph_lacks_is_refused_naming_the_graphs_stages() {
        let err = plan_stage(&three_stages(1), &at("sum", 0)).unwrap_err();
        assert_eq!(
            err,
            PlanError::NoSuchStage {
                job: "totals".into(),
                stage: "sum".into(),
                stages: vec!["parse".into(), "count".into(), "total".into()],
            }
        );
        assert!(err.to_string().contains("\"sum\""), "{err}");
    }

    #[test]
    fn a_task_beyond_its_topics_partitions_is_refused() {
        let mut place = at("count", 2);
        place.partitions.insert("count".into(), 2);
        let err = plan_stage(&three_stages(1), &place).unwrap_err();
        assert_eq!(
            err,
            PlanError::NoPartitions {
                stage: "count".into(),
                topic: "weir-totals-count-repartition".into(),
                partitions: 2,
                instance: 2,
            }
        );
    }

    #[test]
    fn a_setting_the_builder_refused_is_not_planned_away() {
        let err = plan_stage(&three_stages(0), &at("parse", 0)).unwrap_err();
        assert!(
            matches!(&err, PlanError::Invalid(e) if e.to_string().contains("job.parallelism")),
            "{err}"
        );
    }
}
