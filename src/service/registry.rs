//! The job types a worker binary can run.
//!
//! Owns: [`JobTypeRegistry`] (job-type name → task factory), [`TaskEnv`] (what
//! a factory gets: the submitted [`JobSpec`], the task's index and the job's
//! task count, the brokers, and the task's [`LeaseGuard`] for fenced sinks),
//! [`TaskBuild`] (the [`RunnableJob`] of one task plus an optional
//! [`ProgressProbe`] for input offsets and lag) and [`partitions_of_task`]
//! (partition `p` of the input belongs to task `p % N`).
//! Must never: start anything (factories only assemble jobs), or talk to
//! ZooKeeper.
//!
//! A job type runs as one stage ([`JobTypeRegistry::register`]) or as
//! several ([`JobTypeRegistry::register_stages`]: one factory per stage, in
//! data-flow order, connected by repartition topics the factories name);
//! the worker advertises each type's stage names so `weir submit` writes
//! them into the spec, and the leader places every stage's tasks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::actors::LocalJob;
use crate::coord::JobSpec;
use crate::pipeline::{Graph, RunnableJob};

use super::lease::LeaseGuard;

/// What a task factory is given.
#[derive(Debug, Clone)]
pub struct TaskEnv {
    /// The submitted job (name, type, parallelism, `--set` parameters).
    pub spec: JobSpec,
    /// This task's stage (`""` for a single-stage job type).
    pub stage: String,
    /// This task's index in `0..count`, within its stage.
    pub index: u32,
    /// Number of tasks of the stage (the job's parallelism for a single stage).
    pub count: u32,
    /// Kafka `bootstrap.servers` of this worker.
    pub brokers: String,
    /// The task's write lease: wrap every sink in [`Fenced`](super::lease::Fenced) with it.
    pub guard: LeaseGuard,
    /// The cluster's durable checkpoint storage (shared by every worker),
    /// if any: a task that moves or restarts anywhere restores from it.
    pub checkpoint_url: Option<String>,
}

impl TaskEnv {
    /// The parameter `key` from the job's config, or an error naming it.
    pub fn param(&self, key: &str) -> Result<&str, String> {
        self.spec
            .config
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| {
                format!(
                    "job {:?} has no parameter {key:?} (submit it with --set {key}=...)",
                    self.spec.name
                )
            })
    }

    /// The parallelism of stage `name` of this job (1 when the job has no
    /// such stage).
    pub fn stage_count(&self, name: &str) -> u32 {
        self.spec.stage_parallelism(name).unwrap_or(1)
    }

    /// The Kafka consumer group of the job: one group per job, so a task moved to another
    /// worker resumes from the offsets its previous owner committed.
    pub fn group(&self) -> String {
        self.spec
            .config
            .get("group")
            .cloned()
            .unwrap_or_else(|| format!("weir-job-{}", self.spec.name))
    }
}

/// Input progress of a running task, when its source can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Committed position per partition (`"<topic>/<partition>"` → next offset).
    pub offsets: BTreeMap<String, i64>,
    /// Records between the committed positions and the ends of the partitions.
    pub lag: u64,
}

/// Reads a task's input progress. Called from a blocking thread, at most every few seconds.
pub trait ProgressProbe: Send + Sync + 'static {
    /// The current progress, or why it cannot be read now.
    fn progress(&self) -> Result<Progress, String>;
}

/// One task, ready to start.
pub struct TaskBuild {
    /// The task's pipeline (any [`RunnableJob`], `.into()`).
    pub job: LocalJob,
    /// Where its offsets and lag come from, if anywhere.
    pub probe: Option<Arc<dyn ProgressProbe>>,
}

impl<G: Graph> From<RunnableJob<G>> for TaskBuild {
    fn from(job: RunnableJob<G>) -> Self {
        TaskBuild {
            job: job.into(),
            probe: None,
        }
    }
}

/// Builds one task of a job type. May block briefly (e.g. read topic metadata): the worker
/// calls it on a blocking thread.
pub type TaskFactory = Arc<dyn Fn(&TaskEnv) -> Result<TaskBuild, String> + Send + Sync>;

/// Job-type name → task factory.
///
/// ```
/// use weir::service::registry::{JobTypeRegistry, TaskBuild};
/// use weir::pipeline::Job;
/// use weir::connectors::{VecSource, CollectSink};
/// let mut reg = JobTypeRegistry::new();
/// reg.register("double", |_env| {
///     let (sink, _out) = CollectSink::new();
///     Ok(TaskBuild::from(Job::new("double").source(VecSource::new(vec![1u32])).map(|x| x * 2).sink(sink)))
/// });
/// assert_eq!(reg.names(), vec!["double".to_string()]);
/// assert!(reg.get("nope").is_none());
/// ```
#[derive(Clone, Default)]
pub struct JobTypeRegistry {
    /// Job type → its stages' names and factories, in data-flow order
    /// (one unnamed stage for a single-stage type).
    types: BTreeMap<String, Vec<(String, TaskFactory)>>,
}

impl JobTypeRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) job type `name`.
    pub fn register<F>(&mut self, name: &str, factory: F) -> &mut Self
    where
        F: Fn(&TaskEnv) -> Result<TaskBuild, String> + Send + Sync + 'static,
    {
        self.types
            .insert(name.to_string(), vec![(String::new(), Arc::new(factory))]);
        self
    }

    /// Registers (or replaces) job type `name` as stages, in data-flow
    /// order: each stage's tasks are built by its own factory (their
    /// [`TaskEnv::stage`], `index` and `count` say which), and the leader
    /// places every stage's tasks as it places any task.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use weir::service::registry::{JobTypeRegistry, TaskBuild, TaskFactory};
    /// use weir::pipeline::Job;
    /// use weir::connectors::{VecSource, BlackholeSink};
    /// let stage: TaskFactory = Arc::new(|_env| {
    ///     Ok(TaskBuild::from(Job::new("s").source(VecSource::new(vec![1u32])).sink(BlackholeSink::new())))
    /// });
    /// let mut reg = JobTypeRegistry::new();
    /// reg.register_stages("two", vec![("parse".into(), stage.clone()), ("count".into(), stage)]);
    /// assert_eq!(reg.stages("two"), vec!["parse".to_string(), "count".to_string()]);
    /// assert!(reg.get_stage("two", "count").is_some());
    /// assert!(reg.get_stage("two", "").is_none());
    /// ```
    pub fn register_stages(&mut self, name: &str, stages: Vec<(String, TaskFactory)>) -> &mut Self {
        self.types.insert(name.to_string(), stages);
        self
    }

    /// The factory of single-stage job type `name`.
    pub fn get(&self, name: &str) -> Option<TaskFactory> {
        self.get_stage(name, "")
    }

    /// The factory of stage `stage` (`""` for a single-stage type) of job type `name`.
    pub fn get_stage(&self, name: &str, stage: &str) -> Option<TaskFactory> {
        self.types
            .get(name)?
            .iter()
            .find(|(s, _)| s == stage)
            .map(|(_, f)| f.clone())
    }

    /// The stage names of job type `name`, in data-flow order; empty for a
    /// single-stage (or unknown) type.
    pub fn stages(&self, name: &str) -> Vec<String> {
        match self.types.get(name) {
            Some(stages) if !(stages.len() == 1 && stages[0].0.is_empty()) => {
                stages.iter().map(|(s, _)| s.clone()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Every staged job type with its stage names (advertised in the
    /// worker's ZooKeeper node, so `weir submit` can write the stages).
    pub fn staged_types(&self) -> BTreeMap<String, Vec<String>> {
        self.types
            .keys()
            .filter_map(|t| {
                let stages = self.stages(t);
                (!stages.is_empty()).then(|| (t.clone(), stages))
            })
            .collect()
    }

    /// Registered names, sorted (advertised in the worker's ZooKeeper node).
    pub fn names(&self) -> Vec<String> {
        self.types.keys().cloned().collect()
    }
}

/// The partitions (of `partition_count`) that task `index` of `count` reads: `p % count == index`.
///
/// ```
/// use weir::service::registry::partitions_of_task;
/// assert_eq!(partitions_of_task(6, 1, 4), vec![1, 5]);
/// assert_eq!(partitions_of_task(2, 3, 4), Vec::<i32>::new());
/// ```
pub fn partitions_of_task(partition_count: u32, index: u32, count: u32) -> Vec<i32> {
    let count = count.max(1);
    (0..partition_count)
        .filter(|p| p % count == index)
        .map(|p| p as i32)
        .collect()
}

/// The distinct job types in `names` joined for messages (`"a, b"`, or `"none"`).
pub fn describe_types<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    let set: BTreeSet<&String> = names.into_iter().collect();
    if set.is_empty() {
        "none".to_string()
    } else {
        set.into_iter().cloned().collect::<Vec<_>>().join(", ")
    }
}
