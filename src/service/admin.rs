//! Cluster administration through ZooKeeper: the library side of the `weir` CLI.
//!
//! Owns: connecting with a bounded, announced wait ([`connect`]), and the
//! operations `submit` (with the checks: parallelism, duplicate name, job type
//! advertised by a live worker), `status` (jobs, tasks, workers, states, lag,
//! as a serialisable [`ClusterStatus`]), `workers`, `cancel` and `rescale`.
//! Must never: talk to workers directly (only ZooKeeper), write task state or
//! assignments (the leader and the workers own those), or panic on what it
//! finds in ZooKeeper (a malformed node is reported with its path).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zookeeper_client::Client;

use crate::coord::model::StageSpec;
use crate::coord::session::{connect_once, SessionConfig, ZkAuth};
use crate::coord::store::{self, JobView};
use crate::coord::{CoordError, JobSpec, StopMode, TaskError, TaskStatus, WorkerInfo, ZkPaths};

use super::error::{ServiceError, ServiceResult};

/// Connects to ZooKeeper at `address`, retrying for at most `wait`; `on_wait` is told
/// each failed attempt (e.g. to print "waiting for ZooKeeper at ...").
pub async fn connect(
    address: &str,
    wait: Duration,
    on_wait: impl FnMut(&str),
) -> ServiceResult<Client> {
    connect_with_auth(address, None, wait, on_wait).await
}

/// [`connect`] with digest credentials (the session authenticates; see `coord::store`'s ACLs).
pub async fn connect_with_auth(
    address: &str,
    auth: Option<ZkAuth>,
    wait: Duration,
    mut on_wait: impl FnMut(&str),
) -> ServiceResult<Client> {
    let start = Instant::now();
    let mut cfg = SessionConfig::new(address);
    cfg.auth = auth;
    cfg.session_timeout = Duration::from_secs(5);
    let mut delay = Duration::from_millis(200);
    loop {
        match connect_once(&cfg).await {
            Ok(c) => return Ok(c),
            Err(e) => {
                let reason = match &e {
                    CoordError::Unreachable { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                if start.elapsed() + delay >= wait {
                    return Err(ServiceError::Unreachable {
                        address: address.to_string(),
                        waited_s: start.elapsed().as_secs(),
                        reason,
                    });
                }
                on_wait(&format!(
                    "waiting for ZooKeeper at {address} ({reason}); retrying for {} s more",
                    wait.saturating_sub(start.elapsed()).as_secs()
                ));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Builds a validated spec from CLI input; `sets` are `key=value` strings.
pub fn build_spec(
    job_type: &str,
    name: &str,
    parallelism: u32,
    sets: &[String],
) -> ServiceResult<JobSpec> {
    if parallelism == 0 {
        return Err(ServiceError::Invalid {
            field: "--parallelism".into(),
            reason: "must be at least 1".into(),
        });
    }
    let mut config = BTreeMap::new();
    for s in sets {
        let Some((k, v)) = s.split_once('=') else {
            return Err(ServiceError::Invalid {
                field: "--set".into(),
                reason: format!("{s:?} is not key=value"),
            });
        };
        if k.trim().is_empty() {
            return Err(ServiceError::Invalid {
                field: "--set".into(),
                reason: format!("{s:?} has an empty key"),
            });
        }
        config.insert(k.trim().to_string(), v.to_string());
    }
    let spec = JobSpec {
        name: name.to_string(),
        job_type: job_type.to_string(),
        parallelism,
        config,
        stages: Vec::new(),
    };
    spec.validate().map_err(|e| match e {
        CoordError::Invalid { field, reason } => ServiceError::Invalid {
            field: match field.as_str() {
                "JobSpec.name" => "--name".into(),
                "JobSpec.job_type" => "TYPE".into(),
                "JobSpec.parallelism" => "--parallelism".into(),
                _ => field,
            },
            reason,
        },
        other => other.into(),
    })?;
    Ok(spec)
}

/// Gives `spec` the stages its job type runs as (advertised by a live
/// worker in `workers`), each with the job's parallelism unless
/// `stage_parallelism` (`STAGE=N` strings) says otherwise. A single-stage
/// type keeps no stages; naming a stage it does not have is an error.
pub fn plan_stages(
    workers: &[WorkerInfo],
    spec: &mut JobSpec,
    stage_parallelism: &[String],
) -> ServiceResult<()> {
    let names = workers
        .iter()
        .filter(|w| w.accepts(&spec.job_type))
        .find_map(|w| w.stages.get(&spec.job_type))
        .cloned()
        .unwrap_or_default();
    spec.stages = names
        .iter()
        .map(|n| StageSpec {
            name: n.clone(),
            parallelism: spec.parallelism,
        })
        .collect();
    for s in stage_parallelism {
        let bad = |reason: String| ServiceError::Invalid {
            field: "--stage-parallelism".into(),
            reason,
        };
        let (name, n) = s
            .split_once('=')
            .ok_or_else(|| bad(format!("{s:?} is not STAGE=N")))?;
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| bad(format!("{s:?}: {n:?} is not a number")))?;
        let stage = spec
            .stages
            .iter_mut()
            .find(|st| st.name == name.trim())
            .ok_or_else(|| {
                bad(format!(
                    "job type {:?} has no stage {name:?} (its stages: [{}])",
                    spec.job_type,
                    names.join(", ")
                ))
            })?;
        stage.parallelism = n;
    }
    spec.validate().map_err(|e| match e {
        CoordError::Invalid { reason, .. } => ServiceError::Invalid {
            field: "--stage-parallelism".into(),
            reason,
        },
        other => other.into(),
    })?;
    Ok(())
}

/// The repartition topics between `spec`'s stages (Kafka Streams'
/// internal topics): `weir-<job>-<stage>-repartition` for every stage but
/// the first. Empty for a single-stage job.
///
/// ```
/// use weir::coord::model::{JobSpec, StageSpec};
/// let mut spec = JobSpec { name: "ck".into(), job_type: "clicks".into(), parallelism: 2, config: Default::default(), stages: vec![] };
/// assert!(weir::service::admin::internal_topics(&spec).is_empty());
/// spec.stages = vec![StageSpec { name: "parse".into(), parallelism: 2 }, StageSpec { name: "count".into(), parallelism: 2 }];
/// assert_eq!(weir::service::admin::internal_topics(&spec), ["weir-ck-count-repartition"]);
/// ```
pub fn internal_topics(spec: &JobSpec) -> Vec<String> {
    #[cfg(feature = "kafka")]
    {
        spec.stages
            .iter()
            .skip(1)
            .map(|s| crate::connectors::kafka::repartition::repartition_topic(&spec.name, &s.name))
            .collect()
    }
    // Without Kafka there are no repartition topics.
    #[cfg(not(feature = "kafka"))]
    {
        let _ = spec;
        Vec::new()
    }
}

/// Submits `spec`, after checking that a live worker advertises its job type (unless
/// `force`) and that no job has its name. The spec gets the stages the
/// type runs as ([`plan_stages`]); with `force` and no such worker it runs
/// as one stage.
pub async fn submit(
    client: &Client,
    paths: &ZkPaths,
    spec: &mut JobSpec,
    stage_parallelism: &[String],
    force: bool,
) -> ServiceResult<()> {
    let workers = store::list_workers(client, paths).await?;
    plan_stages(&workers, spec, stage_parallelism)?;
    if !force && !workers.iter().any(|w| w.accepts(&spec.job_type)) {
        let known: Vec<&String> = workers.iter().flat_map(|w| w.job_types.iter()).collect();
        let known = if workers.is_empty() {
            "no worker is running, so no job type is known (start workers first, or pass --force)"
                .to_string()
        } else {
            format!(
                "the {} live worker(s) run: {}",
                workers.len(),
                super::registry::describe_types(known)
            )
        };
        return Err(ServiceError::UnknownJobType {
            job_type: spec.job_type.clone(),
            known,
        });
    }
    match store::create_job(client, paths, spec).await {
        // A stop request left by an earlier job of this name (cancelled
        // with --no-wait) is not this job's.
        Ok(()) => Ok(store::delete_stop_mode(client, paths, &spec.name).await?),
        Err(CoordError::AlreadyExists { .. }) => Err(ServiceError::DuplicateJob(spec.name.clone())),
        Err(CoordError::Zk {
            source: zookeeper_client::Error::NodeExists,
            ..
        }) => Err(ServiceError::DuplicateJob(spec.name.clone())),
        Err(e) => Err(e.into()),
    }
}

/// Requests cancellation of `job`, its tasks stopping as `mode` says; with `wait`, waits
/// (bounded) until the leader removed its znodes. Returns whether they are gone.
pub async fn cancel(
    client: &Client,
    paths: &ZkPaths,
    job: &str,
    mode: StopMode,
    wait: Option<Duration>,
) -> ServiceResult<bool> {
    if crate::coord::paths::validate_name("job", job).is_err()
        || client
            .check_stat(&paths.spec(job))
            .await
            .ok()
            .flatten()
            .is_none()
    {
        // Unknown, or being cancelled already (its first request stands).
        if client
            .check_stat(&paths.job(job))
            .await
            .ok()
            .flatten()
            .is_none()
        {
            return Err(ServiceError::NoSuchJob(job.to_string()));
        }
    } else {
        // How the tasks stop, first: workers read it when the job goes.
        store::write_stop_mode(client, paths, job, mode).await?;
    }
    // An aborted job's repartition topics go with it; a drained job's once
    // its tasks stopped (they read the topics to their end after the
    // znodes are gone: their run claims say when). A savepoint's positions
    // point into them (a job submitted again under the name resumes from
    // what they hold): it keeps them.
    let doomed_topics = match store::read_json::<JobSpec>(client, &paths.spec(job)).await {
        Ok(Some((spec, _))) if mode != StopMode::Savepoint => internal_topics(&spec),
        _ => Vec::new(),
    };
    match store::cancel_job(client, paths, job).await {
        Ok(()) => {}
        Err(CoordError::NoNode { .. }) => {
            // Already being cancelled (spec gone, directory left) or unknown.
            if client
                .check_stat(&paths.job(job))
                .await
                .ok()
                .flatten()
                .is_none()
            {
                return Err(ServiceError::NoSuchJob(job.to_string()));
            }
        }
        Err(CoordError::Invalid { .. }) => return Err(ServiceError::NoSuchJob(job.to_string())),
        Err(e) => return Err(e.into()),
    }
    let Some(wait) = wait else { return Ok(false) };
    let deadline = Instant::now() + wait;
    let dir = paths.job(job);
    loop {
        match client.check_stat(&dir).await {
            Ok(None) => break,
            Ok(Some(_)) => {}
            Err(e) => return Err(CoordError::zk(&dir, e).into()),
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store::delete_stop_mode(client, paths, job).await?;
    if mode == StopMode::Drain && !doomed_topics.is_empty() {
        // The drained tasks read the topics to their end, then stop and
        // release their claims.
        loop {
            let claims = crate::coord::run_claim::list(client, paths, job).await?;
            if claims.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if !doomed_topics.is_empty() {
        delete_internal_topics(client, paths, job, &doomed_topics).await?;
    }
    crate::coord::run_claim::remove_if_empty(client, paths, job).await?;
    Ok(true)
}

/// Deletes a cancelled job's repartition topics through the brokers a
/// live worker advertises.
async fn delete_internal_topics(
    client: &Client,
    paths: &ZkPaths,
    job: &str,
    topics: &[String],
) -> ServiceResult<()> {
    let failed = |reason: String| ServiceError::InternalTopics {
        job: job.to_string(),
        topics: topics.join(", "),
        reason,
    };
    let workers = store::list_workers(client, paths).await?;
    let Some(brokers) = workers
        .iter()
        .map(|w| w.brokers.clone())
        .find(|b| !b.is_empty())
    else {
        return Err(failed("no live worker advertises its Kafka brokers".into()));
    };
    #[cfg(feature = "kafka")]
    {
        let topics = topics.to_vec();
        tokio::task::spawn_blocking(move || {
            let config = crate::connectors::kafka::KafkaConfig::new(&brokers);
            for t in &topics {
                crate::connectors::kafka::repartition::delete_repartition_topic(&config, t)
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(failed)
    }
    #[cfg(not(feature = "kafka"))]
    {
        let _ = brokers;
        Err(failed("built without the kafka feature".into()))
    }
}

/// Changes the parallelism of `job` to `n` (of its stage `stage` when
/// given: the job must have it); returns the old one.
pub async fn rescale(
    client: &Client,
    paths: &ZkPaths,
    job: &str,
    stage: Option<&str>,
    n: u32,
) -> ServiceResult<u32> {
    if n == 0 {
        return Err(ServiceError::Invalid {
            field: "N".into(),
            reason: "parallelism must be at least 1".into(),
        });
    }
    let path = paths.spec(job);
    if crate::coord::paths::validate_name("job", job).is_err() {
        return Err(ServiceError::NoSuchJob(job.to_string()));
    }
    let (mut spec, _) = store::read_json::<JobSpec>(client, &path)
        .await?
        .ok_or_else(|| ServiceError::NoSuchJob(job.to_string()))?;
    let old = match stage {
        None if spec.stages.is_empty() => std::mem::replace(&mut spec.parallelism, n),
        // Every stage that still has the job's parallelism follows it.
        None => {
            let old = spec.parallelism;
            for st in spec.stages.iter_mut().filter(|s| s.parallelism == old) {
                st.parallelism = n;
            }
            spec.parallelism = n;
            old
        }
        Some(name) => {
            let names: Vec<String> = spec.stages.iter().map(|s| s.name.clone()).collect();
            let st = spec
                .stages
                .iter_mut()
                .find(|s| s.name == name)
                .ok_or_else(|| ServiceError::Invalid {
                    field: "--stage".into(),
                    reason: format!(
                        "job {job:?} has no stage {name:?} (its stages: [{}])",
                        names.join(", ")
                    ),
                })?;
            std::mem::replace(&mut st.parallelism, n)
        }
    };
    spec.validate()?;
    store::update_job(client, paths, &spec).await?;
    Ok(old)
}

/// One task in [`JobStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRow {
    /// Task id.
    pub task: String,
    /// Its stage and index in it (`"count[2]"`); absent for a single-stage job.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stage: String,
    /// Worker it is assigned to (`null`: unassigned, or given up on by the leader).
    pub worker: Option<String>,
    /// State: a [`TaskStatus`] name, or `UNASSIGNED`. A task the leader gave up on (it
    /// failed on worker after worker) is FAILED with no worker.
    pub state: String,
    /// Assignment epoch.
    pub epoch: u64,
    /// Records read.
    pub records_in: u64,
    /// Records written.
    pub records_out: u64,
    /// Records behind.
    pub lag: u64,
    /// Committed input offsets.
    pub offsets: BTreeMap<String, i64>,
    /// Restarts.
    pub restarts: u32,
    /// Last error.
    pub last_error: Option<TaskError>,
    /// When the state was published (ms since epoch; 0: never).
    pub updated_at_ms: u64,
    /// The task's latest completed checkpoint, if it checkpoints durably.
    #[serde(default)]
    pub checkpoint: Option<crate::actors::CheckpointSummary>,
    /// Records read per second (as last published by its worker, rounded).
    #[serde(default)]
    pub records_in_per_s: u64,
    /// The checkpoint recorded for the task in ZooKeeper (fenced; what a
    /// move or restart restores from), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_checkpoint: Option<crate::coord::CheckpointMeta>,
}

/// One job in [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// Job name.
    pub name: String,
    /// Job type (empty when the spec could not be read).
    pub job_type: String,
    /// Parallelism.
    pub parallelism: u32,
    /// Its stages and their parallelism (empty: one stage).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageSpec>,
    /// Parameters.
    pub config: BTreeMap<String, String>,
    /// Summary state: FAILED, RESTARTING, SCHEDULED, RUNNING, FINISHED, or ERROR.
    pub state: String,
    /// Assignment epoch (0: none yet).
    pub epoch: u64,
    /// Sum of the tasks' lag.
    pub lag: u64,
    /// Sum of records read.
    pub records_in: u64,
    /// Sum of records written.
    pub records_out: u64,
    /// Tasks.
    pub tasks: Vec<TaskRow>,
    /// What could not be read (e.g. a malformed znode), if anything.
    pub error: Option<String>,
}

/// One worker in [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRow {
    /// Worker id.
    pub id: String,
    /// HTTP address.
    pub address: String,
    /// Capacity.
    pub capacity: u32,
    /// Job types.
    pub job_types: Vec<String>,
    /// Version.
    pub version: String,
    /// Tasks assigned to it (over all jobs).
    pub tasks: usize,
}

/// What `weir status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Live workers.
    pub workers: Vec<WorkerRow>,
    /// Jobs.
    pub jobs: Vec<JobStatus>,
}

fn status_name(s: TaskStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{s:?}").to_uppercase())
}

fn job_status(view: &JobView) -> JobStatus {
    let (assignment, _) = view.assignment.clone().unwrap_or_default();
    let mut tasks = Vec::new();
    for id in view.spec.task_ids() {
        let assigned = assignment.tasks.get(&id);
        let st = view.tasks.get(&id);
        let state = match (assigned, st) {
            // Given up on by the leader: placed nowhere, its state FAILED with the reason.
            (None, Some(s)) if assignment.given_up.contains_key(&id) => status_name(s.state),
            (None, _) => "UNASSIGNED".to_string(),
            (Some(a), Some(s)) if s.worker == a.worker && s.epoch == a.epoch => {
                status_name(s.state)
            }
            // Published by a previous owner: the new one has not reported yet.
            (Some(_), Some(s)) if s.state.is_terminal() && s.state == TaskStatus::Failed => {
                status_name(s.state)
            }
            (Some(_), _) => "SCHEDULED".to_string(),
        };
        // Only a running task's rate is current; a stopped one reads nothing.
        let records_in_per_s = match st {
            Some(s) if state == "RUNNING" => s.records_in_per_s,
            _ => 0,
        };
        let stage = view
            .spec
            .place(id.index)
            .filter(|p| !p.stage.is_empty())
            .map(|p| format!("{}[{}]", p.stage, p.index))
            .unwrap_or_default();
        tasks.push(TaskRow {
            task: id.to_string(),
            stage,
            worker: assigned.map(|a| a.worker.clone()),
            state,
            epoch: assigned.map(|a| a.epoch).unwrap_or(0),
            records_in: st.map(|s| s.records_in).unwrap_or(0),
            records_out: st.map(|s| s.records_out).unwrap_or(0),
            lag: st.map(|s| s.lag).unwrap_or(0),
            offsets: st.map(|s| s.offsets.clone()).unwrap_or_default(),
            restarts: st.map(|s| s.restarts).unwrap_or(0),
            last_error: st.and_then(|s| s.last_error.clone()),
            updated_at_ms: st.map(|s| s.updated_at_ms).unwrap_or(0),
            checkpoint: st.and_then(|s| s.checkpoint.clone()),
            records_in_per_s,
            recorded_checkpoint: view.checkpoints.get(&id).cloned(),
        });
    }
    let has = |s: &str| tasks.iter().any(|t| t.state == s);
    let state = if has("FAILED") {
        "FAILED"
    } else if has("RESTARTING") {
        "RESTARTING"
    } else if has("SCHEDULED") || has("UNASSIGNED") {
        "SCHEDULED"
    } else if !tasks.is_empty() && tasks.iter().all(|t| t.state == "FINISHED") {
        "FINISHED"
    } else {
        "RUNNING"
    };
    JobStatus {
        name: view.spec.name.clone(),
        job_type: view.spec.job_type.clone(),
        parallelism: view.spec.parallelism,
        stages: view.spec.stages.clone(),
        config: view.spec.config.clone(),
        state: state.to_string(),
        epoch: assignment.epoch,
        lag: tasks.iter().map(|t| t.lag).sum(),
        records_in: tasks.iter().map(|t| t.records_in).sum(),
        records_out: tasks.iter().map(|t| t.records_out).sum(),
        tasks,
        error: None,
    }
}

/// Reads the status of every job (or only `only`) and the live workers. A job whose
/// znodes cannot be read (malformed JSON) is listed with `error` set.
pub async fn status(
    client: &Client,
    paths: &ZkPaths,
    only: Option<&str>,
) -> ServiceResult<ClusterStatus> {
    client
        .sync(paths.root())
        .await
        .map_err(|e| CoordError::zk(paths.root(), e))?;
    let workers = store::list_workers(client, paths).await?;
    let names = match only {
        Some(n) => {
            if crate::coord::paths::validate_name("job", n).is_err()
                || client
                    .check_stat(&paths.job(n))
                    .await
                    .ok()
                    .flatten()
                    .is_none()
            {
                return Err(ServiceError::NoSuchJob(n.to_string()));
            }
            vec![n.to_string()]
        }
        None => store::list_jobs(client, paths).await?,
    };
    let mut jobs = Vec::new();
    let mut per_worker: BTreeMap<String, usize> = BTreeMap::new();
    for name in names {
        match store::read_job(client, paths, &name).await {
            Ok(view) => {
                let js = job_status(&view);
                for t in &js.tasks {
                    if let Some(w) = &t.worker {
                        *per_worker.entry(w.clone()).or_default() += 1;
                    }
                }
                jobs.push(js);
            }
            Err(CoordError::NoNode { .. }) if only.is_none() => {} // cancelled meanwhile
            Err(CoordError::NoNode { .. }) => return Err(ServiceError::NoSuchJob(name)),
            Err(e @ CoordError::Malformed { .. }) => jobs.push(JobStatus {
                name,
                job_type: String::new(),
                parallelism: 0,
                stages: Vec::new(),
                config: BTreeMap::new(),
                state: "ERROR".into(),
                epoch: 0,
                lag: 0,
                records_in: 0,
                records_out: 0,
                tasks: Vec::new(),
                error: Some(e.to_string()),
            }),
            Err(e) => return Err(e.into()),
        }
    }
    let workers = workers
        .into_iter()
        .map(|w: WorkerInfo| WorkerRow {
            tasks: per_worker.get(&w.id).copied().unwrap_or(0),
            id: w.id,
            address: w.address,
            capacity: w.capacity,
            job_types: w.job_types,
            version: w.version,
        })
        .collect();
    Ok(ClusterStatus { workers, jobs })
}

/// Human rendering of the workers table.
pub fn render_workers(workers: &[WorkerRow]) -> String {
    let mut out = String::new();
    if workers.is_empty() {
        out.push_str("no live worker\n");
        return out;
    }
    out.push_str(&format!(
        "{:<20} {:>5} {:>8}  {:<22} {:<10} {}\n",
        "WORKER", "TASKS", "CAPACITY", "ADDRESS", "VERSION", "JOB TYPES"
    ));
    for w in workers {
        out.push_str(&format!(
            "{:<20} {:>5} {:>8}  {:<22} {:<10} {}\n",
            w.id,
            w.tasks,
            w.capacity,
            if w.address.is_empty() {
                "-"
            } else {
                &w.address
            },
            w.version,
            if w.job_types.is_empty() {
                "any".to_string()
            } else {
                w.job_types.join(",")
            }
        ));
    }
    out
}

/// Human rendering of `weir status`.
pub fn render_status(s: &ClusterStatus, only: bool) -> String {
    let now_ms = crate::coord::model::now_ms();
    let mut out = String::new();
    if s.jobs.is_empty() {
        out.push_str("no job\n");
    }
    for j in &s.jobs {
        if let Some(e) = &j.error {
            out.push_str(&format!("job {}  ERROR: {e}\n\n", j.name));
            continue;
        }
        let cfg: Vec<String> = j.config.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let parallelism = if j.stages.is_empty() {
            j.parallelism.to_string()
        } else {
            let st: Vec<String> = j
                .stages
                .iter()
                .map(|s| format!("{}={}", s.name, s.parallelism))
                .collect();
            format!("{}  stages {}", j.parallelism, st.join(" -> "))
        };
        out.push_str(&format!(
            "job {}  type {}  parallelism {}  state {}  epoch {}  lag {}  in {}  out {}{}\n",
            j.name,
            j.job_type,
            parallelism,
            j.state,
            j.epoch,
            j.lag,
            j.records_in,
            j.records_out,
            if cfg.is_empty() {
                String::new()
            } else {
                format!("  [{}]", cfg.join(" "))
            }
        ));
        out.push_str(&format!(
            "  {:<24} {:<12} {:<16} {:<11} {:>5} {:>10} {:>10} {:>8} {:>8} {:>8} {:>16}  {}\n",
            "TASK",
            "STAGE",
            "WORKER",
            "STATE",
            "EPOCH",
            "IN",
            "OUT",
            "IN/S",
            "LAG",
            "RESTARTS",
            "CHECKPOINT",
            "LAST ERROR"
        ));
        for t in &j.tasks {
            // Checkpoint id and age, e.g. "42 (1.2s ago)".
            let checkpoint = t.checkpoint.as_ref().map_or("-".to_string(), |c| {
                let age_ms = now_ms.saturating_sub(c.completed_at_ms);
                format!("{} ({:.1}s ago)", c.id, age_ms as f64 / 1000.0)
            });
            out.push_str(&format!(
                "  {:<24} {:<12} {:<16} {:<11} {:>5} {:>10} {:>10} {:>8} {:>8} {:>8} {:>16}  {}\n",
                t.task,
                if t.stage.is_empty() { "-" } else { &t.stage },
                t.worker.as_deref().unwrap_or("-"),
                t.state,
                t.epoch,
                t.records_in,
                t.records_out,
                t.records_in_per_s,
                t.lag,
                t.restarts,
                checkpoint,
                t.last_error
                    .as_ref()
                    .map(|e| e.message.as_str())
                    .unwrap_or("")
            ));
        }
        out.push('\n');
    }
    if !only {
        out.push_str("workers:\n");
        out.push_str(&render_workers(&s.workers));
    }
    out
}
