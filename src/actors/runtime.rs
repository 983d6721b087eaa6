//! The local runtime: the embedded default that runs jobs in-process.
//!
//! Owns [`LocalRuntime`] (a pool of actix arbiters, one OS thread each, that
//! task actors are placed on), [`LocalJob`] (a job whose graph's type is
//! erased, so jobs of different graphs can be held together, e.g. a
//! worker's tasks) and the blocking entry point
//! [`RunnableJob::run_local`], which starts an actix system, runs a job to
//! completion, and turns Ctrl-C / SIGTERM into a drain (sources stop, in-flight
//! batches finish, sinks flush). Needs no ZooKeeper and no Kafka.

use actix::{Arbiter, ArbiterHandle};

use super::local_launcher::LocalPlan;
use super::supervisor::{JobHandle, JobReport, JobStatus, JobSupervisor, LaunchPlan};
use crate::pipeline::{BuildError, CheckpointRecord, Graph, JobConfig, RunnableJob};

/// A job ready for the local runtime, its graph's type erased (made from
/// any [`RunnableJob`] with `into()`; the graph is still launched with its
/// concrete types).
///
/// ```
/// use weir::actors::LocalJob;
/// use weir::connectors::{BlackholeSink, VecSource};
/// use weir::pipeline::Job;
/// let jobs: Vec<LocalJob> = vec![
///     Job::new("a").source(VecSource::new(vec![1u64])).sink(BlackholeSink::new()).into(),
///     Job::new("b").source(VecSource::new(vec!["x"])).map(|s| s.len()).sink(BlackholeSink::new()).into(),
/// ];
/// assert_eq!(jobs[1].name(), "b");
/// ```
pub struct LocalJob {
    name: String,
    config: JobConfig,
    /// What [`RunnableJob::validate`] said before the graph was erased.
    valid: Result<(), BuildError>,
    plan: Box<dyn LaunchPlan>,
}

impl std::fmt::Debug for LocalJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalJob")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("valid", &self.valid)
            .finish_non_exhaustive()
    }
}

impl<G: Graph> From<RunnableJob<G>> for LocalJob {
    fn from(job: RunnableJob<G>) -> Self {
        let valid = job.validate();
        let (name, config, graph) = job.into_parts();
        LocalJob {
            name,
            config,
            valid,
            plan: Box::new(LocalPlan(graph)),
        }
    }
}

impl LocalJob {
    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The job's settings.
    pub fn config(&self) -> &JobConfig {
        &self.config
    }

    /// The first configuration error, naming its field.
    pub fn validate(&self) -> Result<(), BuildError> {
        self.valid.clone()
    }

    /// See [`RunnableJob::with_checkpoint_record`].
    pub fn with_checkpoint_record(mut self, record: CheckpointRecord) -> Self {
        self.config.checkpoint_record = Some(record);
        self
    }

    /// See [`RunnableJob::with_checkpoint_ids_above`].
    pub fn with_checkpoint_ids_above(mut self, floor: u64) -> Self {
        self.config.checkpoint_ids_above = floor;
        self
    }

    /// See [`RunnableJob::run_local`].
    pub fn run_local(self) -> Result<JobReport, RunError> {
        run_local(self)
    }
}

/// Why a local run did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The job definition is invalid.
    #[error("job rejected: {0}")]
    Build(#[from] BuildError),
    /// The job failed past its restart policy.
    #[error("job {} failed after {} restarts: {}", .0.name, .0.restarts, .0.last_error.as_ref().map(|e| e.message.as_str()).unwrap_or("unknown error"))]
    Failed(Box<JobReport>),
    /// The runtime itself could not run.
    #[error("runtime error: {0}")]
    Runtime(String),
}

/// A pool of arbiters (threads) that runs jobs' actors.
pub struct LocalRuntime {
    arbiters: Vec<Arbiter>,
}

impl LocalRuntime {
    /// `workers` threads (at least 1). Must be called inside an actix system.
    pub fn new(workers: usize) -> Self {
        LocalRuntime {
            arbiters: (0..workers.max(1)).map(|_| Arbiter::new()).collect(),
        }
    }

    /// One thread per available core.
    pub fn with_available_cores() -> Self {
        LocalRuntime::new(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        )
    }

    /// Number of threads.
    pub fn workers(&self) -> usize {
        self.arbiters.len()
    }

    fn handles(&self) -> Vec<ArbiterHandle> {
        self.arbiters.iter().map(|a| a.handle()).collect()
    }

    /// Validates and starts `job`; its supervisor runs on the current arbiter.
    pub fn start(&self, job: impl Into<LocalJob>) -> Result<JobHandle, BuildError> {
        let LocalJob {
            name,
            config,
            valid,
            plan,
        } = job.into();
        valid?;
        Ok(JobSupervisor::start(&name, plan, config, self.handles()))
    }
}

impl Drop for LocalRuntime {
    fn drop(&mut self) {
        for a in &self.arbiters {
            a.stop();
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

impl<G: Graph> RunnableJob<G> {
    /// Runs the job in-process until it finishes (bounded sources), fails,
    /// or is stopped by Ctrl-C / SIGTERM (drained, then CANCELLED).
    ///
    /// Creates its own actix system: call it from a plain thread, not from
    /// inside an async runtime.
    pub fn run_local(self) -> Result<JobReport, RunError> {
        run_local(self.into())
    }
}

fn run_local(job: LocalJob) -> Result<JobReport, RunError> {
    job.validate()?;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let system = actix::System::new();
    let report = system.block_on(async move {
        let rt = LocalRuntime::new(workers);
        let handle = rt.start(job)?;
        let report = tokio::select! {
            r = handle.wait() => r,
            _ = shutdown_signal() => {
                tracing::info!(job = handle.name(), "signal received: draining");
                handle.cancel();
                handle.wait().await
            }
        };
        drop(rt);
        Ok::<_, RunError>(report)
    })?;
    match report.status {
        JobStatus::Failed => Err(RunError::Failed(Box::new(report))),
        _ => Ok(report),
    }
}
