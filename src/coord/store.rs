//! Typed reads and writes of the znode tree over one `zookeeper_client::Client`.
//!
//! Owns: creating the base layout, submitting / updating / cancelling jobs,
//! reading a job's documents, listing workers and jobs, and recursive delete,
//! each mapping errors to [`CoordError`] with the znode path.
//! Must never: write task state or checkpoint metadata (that is `fencing`'s
//! job, with the epoch check), or keep a session of its own.
//!
//! # ACLs
//! Open (`world:anyone` ALL) by default: weir trusts its network. Once a
//! session of this process authenticated with ZooKeeper's digest scheme
//! (`--zk-auth user:password`, see [`SessionConfig::auth`]), every znode the
//! process creates gets `auth` ALL (the same credentials: any weir process
//! given them) and `world:anyone` READ: others can read the tree (`weir
//! status`) but not change it. A tree created with credentials stays
//! protected; one created without keeps its open nodes.
//!
//! [`SessionConfig::auth`]: super::session::SessionConfig::auth

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use serde::de::DeserializeOwned;
use zookeeper_client::{Acl, Acls, Client, CreateMode, CreateOptions, Permission, Stat};

use super::error::{CoordError, CoordResult};
use super::model::{
    decode, encode, CheckpointMeta, JobAssignment, JobSpec, StopMode, TaskId, TaskState, WorkerInfo,
};
use super::paths::{validate_name, ZkPaths};

static SECURED: AtomicBool = AtomicBool::new(false);

/// Everything for the authenticated identity, reading for anyone.
static SECURED_ACLS: [Acl; 2] = [
    Acl::new_const(Permission::ALL, "auth", ""),
    Acl::new_const(Permission::READ, "world", "anyone"),
];

/// From now on this process creates znodes with the ACL of authenticated weir processes
/// (see the module docs). Called when a session authenticates.
pub fn secure_acls() {
    SECURED.store(true, Ordering::SeqCst);
}

/// The ACL of the znodes this process creates: open, or protected after [`secure_acls`].
pub fn acls() -> Acls<'static> {
    if SECURED.load(Ordering::SeqCst) {
        Acls::new(&SECURED_ACLS)
    } else {
        Acls::anyone_all()
    }
}

/// Options for persistent znodes (ACL: [`acls`]).
pub fn persistent() -> CreateOptions<'static> {
    CreateMode::Persistent.with_acls(acls())
}

/// Options for ephemeral znodes (ACL: [`acls`]).
pub fn ephemeral() -> CreateOptions<'static> {
    CreateMode::Ephemeral.with_acls(acls())
}

/// Everything stored about one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobView {
    /// The submitted spec.
    pub spec: JobSpec,
    /// Current assignment and its znode version, if the leader wrote one.
    pub assignment: Option<(JobAssignment, i32)>,
    /// Published task states.
    pub tasks: BTreeMap<TaskId, TaskState>,
    /// Each task's latest completed checkpoint.
    pub checkpoints: BTreeMap<TaskId, CheckpointMeta>,
}

/// Creates the root and its `workers`, `leader` and `jobs` directories if missing.
pub async fn ensure_layout(client: &Client, paths: &ZkPaths) -> CoordResult<()> {
    for dir in paths.base_dirs() {
        client
            .mkdir(&dir, &persistent())
            .await
            .map_err(|e| CoordError::zk(&dir, e))?;
    }
    Ok(())
}

/// Reads and decodes the JSON at `path`; `Ok(None)` if the znode does not exist.
pub async fn read_json<T: DeserializeOwned>(
    client: &Client,
    path: &str,
) -> CoordResult<Option<(T, Stat)>> {
    match client.get_data(path).await {
        Ok((data, stat)) => Ok(Some((decode(path, &data)?, stat))),
        Err(zookeeper_client::Error::NoNode) => Ok(None),
        Err(e) => Err(CoordError::zk(path, e)),
    }
}

/// Submits a job: creates `/jobs/<job>`, its `spec`, `tasks`, `checkpoints` and `failed` in one
/// atomic multi-op.
/// Fails with `AlreadyExists` naming the job directory if the job exists.
pub async fn create_job(client: &Client, paths: &ZkPaths, spec: &JobSpec) -> CoordResult<()> {
    spec.validate()?;
    let job = &spec.name;
    let dir = paths.job(job);
    let spec_path = paths.spec(job);
    let data = encode(&spec_path, spec)?;
    let mut w = client.new_multi_writer();
    let opts = persistent();
    let add = |r: Result<(), zookeeper_client::Error>, p: &str| r.map_err(|e| CoordError::zk(p, e));
    add(w.add_create(&dir, b"", &opts), &dir)?;
    add(w.add_create(&spec_path, &data, &opts), &spec_path)?;
    add(w.add_create(&paths.tasks(job), b"", &opts), &dir)?;
    add(w.add_create(&paths.checkpoints(job), b"", &opts), &dir)?;
    add(w.add_create(&paths.failed(job), b"", &opts), &dir)?;
    w.commit()
        .await
        .map_err(|e| CoordError::zk(&dir, e.into()))?;
    tracing::info!(job = %job, parallelism = spec.parallelism, "job submitted");
    Ok(())
}

/// Replaces a job's spec (rescale or config change); the leader reacts to the change.
pub async fn update_job(client: &Client, paths: &ZkPaths, spec: &JobSpec) -> CoordResult<()> {
    spec.validate()?;
    let path = paths.spec(&spec.name);
    let data = encode(&path, spec)?;
    client
        .set_data(&path, &data, None)
        .await
        .map_err(|e| CoordError::zk(&path, e))?;
    Ok(())
}

/// Records how `job`'s tasks are to stop when it is cancelled (written before
/// [`cancel_job`]; read by the workers when the job's assignment goes).
pub async fn write_stop_mode(
    client: &Client,
    paths: &ZkPaths,
    job: &str,
    mode: StopMode,
) -> CoordResult<()> {
    validate_name("job", job)?;
    let dir = paths.stops();
    match client.create(&dir, b"", &persistent()).await {
        Ok(_) | Err(zookeeper_client::Error::NodeExists) => {}
        Err(e) => return Err(CoordError::zk(&dir, e)),
    }
    let path = paths.stop(job);
    let data = encode(&path, &mode)?;
    match client.create(&path, &data, &persistent()).await {
        Ok(_) => Ok(()),
        Err(zookeeper_client::Error::NodeExists) => client
            .set_data(&path, &data, None)
            .await
            .map(|_| ())
            .map_err(|e| CoordError::zk(&path, e)),
        Err(e) => Err(CoordError::zk(&path, e)),
    }
}

/// How `job`'s tasks are to stop (`None`: no request recorded).
pub async fn read_stop_mode(
    client: &Client,
    paths: &ZkPaths,
    job: &str,
) -> CoordResult<Option<StopMode>> {
    validate_name("job", job)?;
    Ok(read_json::<StopMode>(client, &paths.stop(job))
        .await?
        .map(|(m, _)| m))
}

/// Deletes `job`'s stop request; a missing one is not an error.
pub async fn delete_stop_mode(client: &Client, paths: &ZkPaths, job: &str) -> CoordResult<()> {
    let path = paths.stop(job);
    match client.delete(&path, None).await {
        Ok(()) | Err(zookeeper_client::Error::NoNode) => Ok(()),
        Err(e) => Err(CoordError::zk(&path, e)),
    }
}

/// Requests cancellation: deletes the job's spec. The leader then removes the assignment
/// (workers stop the tasks) and cleans the job's znodes.
pub async fn cancel_job(client: &Client, paths: &ZkPaths, job: &str) -> CoordResult<()> {
    validate_name("job", job)?;
    let path = paths.spec(job);
    client
        .delete(&path, None)
        .await
        .map_err(|e| CoordError::zk(&path, e))
}

/// Names of the submitted jobs.
pub async fn list_jobs(client: &Client, paths: &ZkPaths) -> CoordResult<Vec<String>> {
    let path = paths.jobs();
    let mut jobs = client
        .list_children(&path)
        .await
        .map_err(|e| CoordError::zk(&path, e))?;
    jobs.sort();
    Ok(jobs)
}

/// The live workers. A worker whose node vanishes while listing is skipped; a worker node
/// with malformed JSON is skipped with a warning (it cannot be given tasks).
pub async fn list_workers(client: &Client, paths: &ZkPaths) -> CoordResult<Vec<WorkerInfo>> {
    let path = paths.workers();
    let ids = client
        .list_children(&path)
        .await
        .map_err(|e| CoordError::zk(&path, e))?;
    read_workers(client, paths, ids).await
}

/// Reads the `WorkerInfo` of each listed worker id (see [`list_workers`]).
pub async fn read_workers(
    client: &Client,
    paths: &ZkPaths,
    mut ids: Vec<String>,
) -> CoordResult<Vec<WorkerInfo>> {
    ids.sort();
    // Read 256 at a time: a leader pass over 1,000 workers must not wait 1,000 round trips.
    let reads: Vec<CoordResult<Option<(WorkerInfo, Stat)>>> = futures::stream::iter(ids)
        .map(|id| {
            let (client, path) = (client.clone(), paths.worker(&id));
            async move { read_json::<WorkerInfo>(&client, &path).await }
        })
        .buffered(256)
        .collect()
        .await;
    let mut out = Vec::with_capacity(reads.len());
    for r in reads {
        match r {
            Ok(Some((w, _))) => out.push(w),
            Ok(None) => {}
            Err(e @ CoordError::Malformed { .. }) => tracing::warn!(error = %e, "ignoring worker"),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Reads the assignment of `job` with its version.
pub async fn read_assignment(
    client: &Client,
    paths: &ZkPaths,
    job: &str,
) -> CoordResult<Option<(JobAssignment, i32)>> {
    Ok(read_json::<JobAssignment>(client, &paths.assignment(job))
        .await?
        .map(|(a, s)| (a, s.version)))
}

/// Reads the latest completed checkpoint of `task` of `job`.
pub async fn read_checkpoint(
    client: &Client,
    paths: &ZkPaths,
    job: &str,
    task: &str,
) -> CoordResult<Option<CheckpointMeta>> {
    Ok(
        read_json::<CheckpointMeta>(client, &paths.checkpoint(job, task))
            .await?
            .map(|(c, _)| c),
    )
}

/// Reads only the spec of `job` (what a worker needs to build its tasks): a malformed task
/// state elsewhere in the job does not stop it. `NoNode` naming the spec if the job is gone.
pub async fn read_spec(client: &Client, paths: &ZkPaths, job: &str) -> CoordResult<JobSpec> {
    validate_name("job", job)?;
    let path = paths.spec(job);
    let (spec, _) = read_json::<JobSpec>(client, &path)
        .await?
        .ok_or(CoordError::NoNode { path })?;
    Ok(spec)
}

/// Reads one task's published state; `Ok(None)` if none was published yet.
pub async fn read_task_state(
    client: &Client,
    paths: &ZkPaths,
    job: &str,
    task: &TaskId,
) -> CoordResult<Option<TaskState>> {
    validate_name("job", job)?;
    Ok(
        read_json::<TaskState>(client, &paths.task_state(job, &task.to_string()))
            .await?
            .map(|(s, _)| s),
    )
}

/// Reads everything about `job`. Malformed JSON anywhere gives `Malformed` naming that znode.
pub async fn read_job(client: &Client, paths: &ZkPaths, job: &str) -> CoordResult<JobView> {
    validate_name("job", job)?;
    let spec_path = paths.spec(job);
    let (spec, _) = read_json::<JobSpec>(client, &spec_path)
        .await?
        .ok_or(CoordError::NoNode { path: spec_path })?;
    let assignment = read_assignment(client, paths, job).await?;
    let tasks_dir = paths.tasks(job);
    let mut tasks = BTreeMap::new();
    match client.list_children(&tasks_dir).await {
        Ok(children) => {
            for name in children {
                let id: TaskId = name.parse().map_err(|_| CoordError::Malformed {
                    path: paths.task(job, &name),
                    reason: format!("{name:?} is not a task id <job>-<index>"),
                })?;
                if let Some((st, _)) =
                    read_json::<TaskState>(client, &paths.task_state(job, &name)).await?
                {
                    tasks.insert(id, st);
                }
            }
        }
        Err(zookeeper_client::Error::NoNode) => {}
        Err(e) => return Err(CoordError::zk(&tasks_dir, e)),
    }
    let checkpoints_dir = paths.checkpoints(job);
    let mut checkpoints = BTreeMap::new();
    match client.list_children(&checkpoints_dir).await {
        Ok(children) => {
            for name in children {
                // A task id, or a record from an older layout (skipped).
                let Ok(id) = name.parse::<TaskId>() else {
                    continue;
                };
                if let Some(meta) = read_checkpoint(client, paths, job, &name).await? {
                    checkpoints.insert(id, meta);
                }
            }
        }
        Err(zookeeper_client::Error::NoNode) => {}
        Err(e) => return Err(CoordError::zk(&checkpoints_dir, e)),
    }
    Ok(JobView {
        spec,
        assignment,
        tasks,
        checkpoints,
    })
}

/// Deletes `path` and everything under it; a missing node is not an error.
pub async fn delete_recursive(client: &Client, path: &str) -> CoordResult<()> {
    // Iterative post-order walk, bounded by retries when children appear concurrently.
    for _ in 0..10 {
        let mut stack = vec![path.to_string()];
        let mut order = Vec::new();
        while let Some(p) = stack.pop() {
            match client.list_children(&p).await {
                Ok(children) => {
                    for c in children {
                        stack.push(format!("{p}/{c}"));
                    }
                    order.push(p);
                }
                Err(zookeeper_client::Error::NoNode) => {}
                Err(e) => return Err(CoordError::zk(&p, e)),
            }
        }
        let mut retry = false;
        for p in order.iter().rev() {
            match client.delete(p, None).await {
                Ok(()) | Err(zookeeper_client::Error::NoNode) => {}
                Err(zookeeper_client::Error::NotEmpty) => retry = true,
                Err(e) => return Err(CoordError::zk(p, e)),
            }
        }
        if !retry {
            return Ok(());
        }
    }
    Err(CoordError::Conflict {
        path: path.to_string(),
        expected: -1,
    })
}
