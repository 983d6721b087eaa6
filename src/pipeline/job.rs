//! The typed job builder: `Job::new(..).source(..).map(..)...sink(..)`.
//!
//! Owns the fluent API ([`Job`], [`Stream`], [`KeyedStream`],
//! [`WindowedStream`], [`RunnableJob`]) and the static job graph it builds:
//! each stage is a [`StageNode`] holding its input (a source or an exchange
//! from the upstream stage) and the fused chain of operators after it, all
//! as concrete generic types, so closures are monomorphised into the actor
//! loops. Stateless steps extend the current stage's chain (operator
//! chaining); `key_by` + aggregation and `rebalance` start a new stage.
//! Invalid settings are collected while building and reported by
//! [`RunnableJob::validate`], naming the field. Nothing runs here.

use serde::{Deserialize, Serialize};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use super::aggregate::{Aggregator, Reduce};
use super::batch::Timestamp;
use super::connector::{Sink, Source};
use super::dead_letter::DeadLetters;
use super::error::BuildError;
use super::graph::{FromExchange, FromSource, Graph, SinkNode, StageNode, Upstream};
use super::keyed::{Key, KeyedAggregate};
use super::operator::{AssignTimestamps, Chain, Filter, FlatMap, Identity, Map, Operator};
use super::partition::{HashBy, RoundRobin};
use super::restart::RestartPolicy;
use super::watermark::Watermarks;
use super::window::{LateRecords, WindowAggregate, Windows};

/// Settings shared by every stage of a job.
#[derive(Clone, Debug)]
pub struct JobConfig {
    /// Default parallelism of each stage.
    pub parallelism: usize,
    /// Records per batch read by sources.
    pub batch_size: usize,
    /// Mailbox capacity of each operator and sink actor, in batches.
    pub channel_capacity: usize,
    /// What the supervisor does when a task fails.
    pub restart: RestartPolicy,
    /// Where malformed input goes.
    pub dead_letters: DeadLetters,
    /// How long a cancel may take to drain before actors are stopped.
    pub drain_timeout: Duration,
    /// How often checkpoint barriers are injected (`None`: never; positions
    /// are then committed only at the end of input).
    pub checkpoint_interval: Option<Duration>,
    /// Aligned (exactly-once, the default) or unaligned barriers.
    pub checkpoint_mode: crate::pipeline::CheckpointingMode,
    /// Where completed checkpoints are stored (`None`: memory only).
    pub checkpoint_storage: Option<String>,
    /// Completed checkpoints kept in storage.
    pub checkpoint_retain: usize,
    /// A cancel drains (fires every open window) even when the job could
    /// stop with a savepoint.
    pub drain_on_cancel: bool,
    /// Checkpoint ids of this run are above this (the cluster passes
    /// `epoch * 1e9`, so a zombie of an older assignment epoch and the
    /// task's new owner never write the same `chk-<id>`).
    pub checkpoint_ids_above: u64,
    /// The checkpoint a coordinator recorded for the job (see
    /// [`CheckpointRecord`](crate::pipeline::CheckpointRecord)).
    pub checkpoint_record: Option<crate::pipeline::CheckpointRecord>,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            parallelism: 1,
            batch_size: 4096,
            channel_capacity: 8,
            restart: RestartPolicy::default(),
            dead_letters: DeadLetters::log(),
            drain_timeout: Duration::from_secs(10),
            checkpoint_interval: Some(Duration::from_secs(1)),
            checkpoint_mode: crate::pipeline::CheckpointingMode::ExactlyOnce,
            checkpoint_storage: None,
            checkpoint_retain: 3,
            drain_on_cancel: false,
            checkpoint_ids_above: 0,
            checkpoint_record: None,
        }
    }
}

/// What a job carries while it is being built.
struct Meta {
    name: String,
    config: JobConfig,
    errors: Vec<BuildError>,
    stages: usize,
    /// Stage uids given with `.uid(..)`.
    uids: std::collections::BTreeSet<String>,
}

impl Meta {
    fn next_stage(&mut self, kind: &str) -> String {
        let s = format!("{}-{kind}", self.stages);
        self.stages += 1;
        s
    }
}

/// A job under construction: name and settings, then `.source(..)`.
///
/// ```
/// use weir::pipeline::Job;
/// use weir::connectors::{VecSource, CollectSink};
/// let (sink, out) = CollectSink::new();
/// let report = Job::new("double")
///     .source(VecSource::new(vec![1u64, 2, 3]))
///     .map(|x| x * 2)
///     .sink(sink)
///     .run_local()
///     .unwrap();
/// assert_eq!(report.status, weir::actors::JobStatus::Finished);
/// let mut got = out.take();
/// got.sort();
/// assert_eq!(got, vec![2, 4, 6]);
/// ```
pub struct Job {
    meta: Meta,
}

impl Job {
    /// A job named `name` with default settings.
    pub fn new(name: impl Into<String>) -> Job {
        let name = name.into();
        let mut errors = Vec::new();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            errors.push(BuildError::invalid(
                "job.name",
                format!("{name:?} must be non-empty ASCII letters, digits, '-', '_' or '.'"),
            ));
        }
        Job {
            meta: Meta {
                name,
                config: JobConfig::default(),
                errors,
                stages: 0,
                uids: Default::default(),
            },
        }
    }

    /// Default parallelism of every stage (at least 1).
    pub fn parallelism(mut self, n: usize) -> Job {
        if n == 0 {
            self.meta
                .errors
                .push(BuildError::invalid("job.parallelism", "must be at least 1"));
        }
        self.meta.config.parallelism = n.max(1);
        self
    }

    /// Records per batch (at least 1).
    pub fn batch_size(mut self, n: usize) -> Job {
        if n == 0 {
            self.meta
                .errors
                .push(BuildError::invalid("job.batch_size", "must be at least 1"));
        }
        self.meta.config.batch_size = n.max(1);
        self
    }

    /// Mailbox capacity of operator and sink actors, in batches (at least 1).
    pub fn channel_capacity(mut self, n: usize) -> Job {
        if n == 0 {
            self.meta.errors.push(BuildError::invalid(
                "job.channel_capacity",
                "must be at least 1",
            ));
        }
        self.meta.config.channel_capacity = n.max(1);
        self
    }

    /// The supervisor's restart policy.
    pub fn restart_policy(mut self, p: RestartPolicy) -> Job {
        self.meta.config.restart = p;
        self
    }

    /// Where malformed input goes (default: logged).
    pub fn dead_letters(mut self, d: DeadLetters) -> Job {
        self.meta.config.dead_letters = d;
        self
    }

    /// How long a cancel may drain before actors are stopped.
    pub fn drain_timeout(mut self, d: Duration) -> Job {
        self.meta.config.drain_timeout = d;
        self
    }

    /// How often to checkpoint (`None` disables periodic checkpoints).
    pub fn checkpoint_interval(mut self, every: Option<Duration>) -> Job {
        if every == Some(Duration::ZERO) {
            self.meta.errors.push(BuildError::invalid(
                "job.checkpoint_interval",
                "must be longer than 0",
            ));
        }
        self.meta.config.checkpoint_interval = every;
        self
    }

    /// Whether a cancel (Ctrl-C, SIGTERM) drains the job, firing every open
    /// window, even when it has durable checkpoint storage (where the
    /// default is to stop with a savepoint, keeping windows open for the
    /// next run).
    pub fn drain_on_cancel(mut self, drain: bool) -> Job {
        self.meta.config.drain_on_cancel = drain;
        self
    }

    /// All checkpoint settings at once: interval, durable storage,
    /// retention and barrier mode.
    pub fn checkpointing(mut self, c: crate::pipeline::CheckpointConfig) -> Job {
        if c.retain == 0 {
            self.meta.errors.push(BuildError::invalid(
                "job.checkpointing.retain",
                "must keep at least 1 checkpoint",
            ));
        }
        if let Some(url) = &c.storage_url {
            if let Err(e) = crate::checkpoint::CheckpointStorage::parse(url) {
                self.meta.errors.push(BuildError::invalid(
                    "job.checkpointing.storage_url",
                    e.to_string(),
                ));
            }
        }
        self.meta.config.checkpoint_mode = c.mode;
        self.meta.config.checkpoint_storage = c.storage_url;
        self.meta.config.checkpoint_retain = c.retain;
        self.checkpoint_interval(c.interval)
    }

    /// Reads from `source`: the first stage.
    pub fn source<S: Source>(mut self, source: S) -> Stream<FromSource<S>, Identity<S::Out>> {
        let stage = self.meta.next_stage("source");
        let parallelism = match source.max_parallelism() {
            Some(m) => self.meta.config.parallelism.min(m.max(1)),
            None => self.meta.config.parallelism,
        };
        Stream {
            meta: self.meta,
            node: StageNode {
                input: FromSource {
                    source: Arc::new(source),
                    watermarks: Watermarks::none(),
                },
                op: Identity::default(),
                stage,
                parallelism,
            },
        }
    }
}

/// A stream of `Op::Out` records: a stage being built.
pub struct Stream<I, Op> {
    meta: Meta,
    node: StageNode<I, Op>,
}

// The return types below are the static job graph itself: long by design.
#[allow(clippy::type_complexity)]
impl<I, Op> Stream<I, Op>
where
    Op: Operator,
    StageNode<I, Op>: Upstream<Op::Out>,
{
    fn then<O2: Operator<In = Op::Out>>(self, op: O2) -> Stream<I, Chain<Op, O2>> {
        let StageNode {
            input,
            op: cur,
            stage,
            parallelism,
        } = self.node;
        Stream {
            meta: self.meta,
            node: StageNode {
                input,
                op: Chain::new(cur, op),
                stage,
                parallelism,
            },
        }
    }

    /// Applies `f` to every record (fused into the current stage).
    pub fn map<O, F>(self, f: F) -> Stream<I, Chain<Op, Map<F, Op::Out, O>>>
    where
        F: FnMut(Op::Out) -> O + Clone + Send + 'static,
        O: Send + 'static,
    {
        self.then(Map::new(f))
    }

    /// Keeps records for which `f` holds (fused into the current stage).
    pub fn filter<F>(self, f: F) -> Stream<I, Chain<Op, Filter<F, Op::Out>>>
    where
        F: FnMut(&Op::Out) -> bool + Clone + Send + 'static,
    {
        self.then(Filter::new(f))
    }

    /// Maps each record to zero or more (fused into the current stage).
    pub fn flat_map<O, It, F>(self, f: F) -> Stream<I, Chain<Op, FlatMap<F, Op::Out, O>>>
    where
        F: FnMut(Op::Out) -> It + Clone + Send + 'static,
        It: IntoIterator<Item = O>,
        O: Send + 'static,
    {
        self.then(FlatMap::new(f))
    }

    /// Sets each record's event time from the record (fused). Watermarks are
    /// generated at the source: prefer the source's own timestamp extractor
    /// when windows follow.
    pub fn assign_timestamps<F>(self, f: F) -> Stream<I, Chain<Op, AssignTimestamps<F, Op::Out>>>
    where
        F: FnMut(&Op::Out) -> Timestamp + Clone + Send + 'static,
    {
        self.then(AssignTimestamps::new(f))
    }

    /// A stable uid for the current stage: its tasks are named
    /// `<job>/<uid>-<kind>#<i>` instead of by the stage's position in the
    /// graph (`<job>/<n>-<kind>#<i>`), so its checkpointed state is found
    /// again after stages are added or removed before it. ASCII letters,
    /// digits, `_` and `.`, not only digits, unique in the job.
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir::connectors::{BlackholeSink, GeneratorSource};
    /// use weir::pipeline::{Count, Job, Tumbling};
    /// let job = Job::new("clicks")
    ///     .source(GeneratorSource::new(|i| (i % 3, i)).count(10))
    ///     .key_by(|e: &(u64, u64)| e.0)
    ///     .window(Tumbling::event_time(Duration::from_secs(1)))
    ///     .aggregate(Count)
    ///     .uid("counts")
    ///     .sink(BlackholeSink::new());
    /// assert!(job.validate().is_ok());
    /// ```
    pub fn uid(mut self, uid: &str) -> Self {
        let kind = self
            .node
            .stage
            .split_once('-')
            .map_or("stage", |(_, k)| k)
            .to_string();
        let valid = !uid.is_empty()
            && uid.len() <= 64
            && uid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'))
            && !uid.chars().all(|c| c.is_ascii_digit());
        if !valid {
            self.meta.errors.push(BuildError::invalid(
                format!("{}.uid", self.node.stage),
                format!(
                    "{uid:?}: use ASCII letters, digits, '_' and '.' (not only digits), at most 64"
                ),
            ));
        } else if !self.meta.uids.insert(uid.to_string()) {
            self.meta.errors.push(BuildError::invalid(
                format!("{}.uid", self.node.stage),
                format!("{uid:?} names another stage of the job already"),
            ));
        } else {
            self.node.stage = format!("{uid}-{kind}");
        }
        self
    }

    /// Parallelism of the current stage.
    pub fn parallelism(mut self, n: usize) -> Self {
        if n == 0 {
            self.meta.errors.push(BuildError::invalid(
                format!("{}.parallelism", self.node.stage),
                "must be at least 1",
            ));
        }
        self.node.parallelism = n;
        self
    }

    /// Spreads batches round-robin over a new stage with the job's default
    /// parallelism (change it with `.parallelism(n)`).
    pub fn rebalance(
        mut self,
    ) -> Stream<FromExchange<StageNode<I, Op>, RoundRobin>, Identity<Op::Out>> {
        let stage = self.meta.next_stage("rebalance");
        let parallelism = self.meta.config.parallelism;
        Stream {
            meta: self.meta,
            node: StageNode {
                input: FromExchange {
                    upstream: self.node,
                    partitioner: RoundRobin::default(),
                },
                op: Identity::default(),
                stage,
                parallelism,
            },
        }
    }

    /// Partitions by `key(record)`: records with equal keys meet in one
    /// instance of the next (keyed) stage.
    pub fn key_by<K, KF>(self, key: KF) -> KeyedStream<I, Op, KF>
    where
        KF: Fn(&Op::Out) -> K + Clone + Send + Sync + 'static,
        K: Key,
    {
        KeyedStream { stream: self, key }
    }

    /// Writes to `sink`: the last stage. The sink runs with the parallelism
    /// of the stage before it (or the sink's maximum, rebalanced).
    pub fn sink<S: Sink<In = Op::Out>>(
        mut self,
        sink: S,
    ) -> RunnableJob<SinkNode<StageNode<I, Op>, S>> {
        let stage = self.meta.next_stage("sink");
        let upstream_p = self.node.parallelism;
        let parallelism = sink
            .max_parallelism()
            .map_or(upstream_p, |m| upstream_p.min(m.max(1)));
        RunnableJob {
            name: self.meta.name,
            config: self.meta.config,
            errors: self.meta.errors,
            graph: SinkNode {
                upstream: self.node,
                sink: Arc::new(sink),
                stage,
                parallelism,
            },
        }
    }
}

impl<S, Op> Stream<FromSource<S>, Op>
where
    S: Source,
    Op: Operator<In = S::Out>,
{
    /// How the source generates watermarks from its records' timestamps.
    pub fn watermarks(mut self, w: Watermarks) -> Self {
        self.node.input.watermarks = w;
        self
    }
}

/// A stream partitioned by key, before its aggregation.
pub struct KeyedStream<I, Op, KF> {
    stream: Stream<I, Op>,
    key: KF,
}

/// The stage type a keyed aggregation creates.
pub type KeyedStage<I, Op, KF, O2> = Stream<FromExchange<StageNode<I, Op>, HashBy<KF>>, O2>;

#[allow(clippy::type_complexity)]
impl<I, Op, KF, K> KeyedStream<I, Op, KF>
where
    Op: Operator,
    StageNode<I, Op>: Upstream<Op::Out>,
    KF: Fn(&Op::Out) -> K + Clone + Send + Sync + 'static,
    K: Key + Hash,
{
    fn keyed<O2: Operator<In = Op::Out>>(self, kind: &str, op: O2) -> KeyedStage<I, Op, KF, O2> {
        let Stream { mut meta, node } = self.stream;
        let stage = meta.next_stage(kind);
        let parallelism = meta.config.parallelism;
        Stream {
            meta,
            node: StageNode {
                input: FromExchange {
                    upstream: node,
                    partitioner: HashBy::new(self.key.clone()),
                },
                op,
                stage,
                parallelism,
            },
        }
    }

    /// Rolling aggregation per key: after each batch, one `(key, result)`
    /// per key the batch updated.
    pub fn aggregate<A: Aggregator<Op::Out>>(
        self,
        agg: A,
    ) -> KeyedStage<I, Op, KF, KeyedAggregate<KF, A, Op::Out, K>> {
        let op = KeyedAggregate::new(self.key.clone(), agg);
        self.keyed("aggregate", op)
    }

    /// Rolling reduce per key with `f(acc, record)`.
    pub fn reduce<F>(
        self,
        f: F,
    ) -> KeyedStage<I, Op, KF, KeyedAggregate<KF, Reduce<F, Op::Out>, Op::Out, K>>
    where
        F: Fn(&Op::Out, &Op::Out) -> Op::Out + Clone + Send + Sync + 'static,
        Op::Out: Clone + Serialize + for<'de> Deserialize<'de>,
    {
        self.aggregate(Reduce::with(f))
    }

    /// Groups each key's records into event-time windows.
    pub fn window(self, windows: Windows) -> WindowedStream<I, Op, KF> {
        WindowedStream {
            keyed: self,
            windows,
            lateness: Duration::ZERO,
            late: LateRecords::count_only(),
        }
    }
}

/// A keyed stream grouped into windows, before its aggregation.
pub struct WindowedStream<I, Op: Operator, KF> {
    keyed: KeyedStream<I, Op, KF>,
    windows: Windows,
    lateness: Duration,
    late: LateRecords<Op::Out>,
}

impl<I, Op, KF, K> WindowedStream<I, Op, KF>
where
    Op: Operator,
    StageNode<I, Op>: Upstream<Op::Out>,
    KF: Fn(&Op::Out) -> K + Clone + Send + Sync + 'static,
    K: Key + Hash,
{
    /// Keeps fired windows open this long for late records, which update
    /// and re-fire them.
    pub fn allowed_lateness(mut self, d: Duration) -> Self {
        self.lateness = d;
        self
    }

    /// Where records too late for every window go (default: counted, logged).
    pub fn late_records(mut self, late: LateRecords<Op::Out>) -> Self {
        self.late = late;
        self
    }

    /// Aggregates each key's window with `agg`; emits one
    /// [`Windowed`](super::window::Windowed) per key and window when it fires.
    pub fn aggregate<A: Aggregator<Op::Out>>(
        mut self,
        agg: A,
    ) -> KeyedStage<I, Op, KF, WindowAggregate<KF, A, Op::Out, K>> {
        if let Err(e) = self.windows.validate() {
            self.keyed.stream.meta.errors.push(e);
        }
        let lateness = i64::try_from(self.lateness.as_millis()).unwrap_or(i64::MAX);
        let op = WindowAggregate::new(
            self.keyed.key.clone(),
            agg,
            self.windows,
            lateness,
            self.late,
        );
        self.keyed.keyed("window", op)
    }
}

/// A complete job: its name, settings and typed graph. Validate it, run it
/// locally ([`RunnableJob::run_local`]), start it on a
/// [`LocalRuntime`](crate::actors::LocalRuntime), or cut it into stages
/// for the cluster.
pub struct RunnableJob<G> {
    name: String,
    config: JobConfig,
    errors: Vec<BuildError>,
    graph: G,
}

impl<G: Graph> RunnableJob<G> {
    /// Restores from, and never deletes, the checkpoint `record` names
    /// (see [`CheckpointRecord`](crate::pipeline::CheckpointRecord)).
    pub fn with_checkpoint_record(mut self, record: crate::pipeline::CheckpointRecord) -> Self {
        self.config.checkpoint_record = Some(record);
        self
    }

    /// Takes checkpoint ids above `floor` only (a coordinator passes one
    /// per fencing epoch, so two owners of one job never share an id).
    pub fn with_checkpoint_ids_above(mut self, floor: u64) -> Self {
        self.config.checkpoint_ids_above = floor;
        self
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The job's settings.
    pub fn config(&self) -> &JobConfig {
        &self.config
    }

    /// The job's graph.
    pub fn graph(&self) -> &G {
        &self.graph
    }

    /// The first configuration error, naming its field.
    pub fn validate(&self) -> Result<(), BuildError> {
        if let Some(e) = self.errors.first() {
            return Err(e.clone());
        }
        self.graph.validate()
    }

    /// The first error the builder recorded (before the graph is checked).
    pub(crate) fn build_error(&self) -> Option<&BuildError> {
        self.errors.first()
    }

    /// A job from its parts (a launcher that rebuilds part of a graph).
    pub(crate) fn from_parts(
        name: String,
        config: JobConfig,
        errors: Vec<BuildError>,
        graph: G,
    ) -> Self {
        RunnableJob {
            name,
            config,
            errors,
            graph,
        }
    }

    pub(crate) fn into_parts(self) -> (String, JobConfig, G) {
        (self.name, self.config, self.graph)
    }
}
