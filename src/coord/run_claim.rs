//! Run claims: which layout of each stage of a job is running where, so a
//! rescaled stage starts only once its previous layout has stopped.
//!
//! Owns [`RunClaim`] (one task of one layout on one worker, an ephemeral
//! znode `/running/<job>/<stage>@<count>#<index>@<worker>` (a worker
//! names each start of a task apart: `<id>~<n>`), outside the
//! job's directory, which a cancel removes while its tasks may still be
//! draining), the rule
//! that says which claims a task waits for ([`RunClaim::waits_for`]), and
//! the ZooKeeper operations: [`claim`] (created only while the job's spec
//! is still the one the worker is starting, in one multi-op with a version
//! check of the spec), [`list`], [`release`] and [`remove_if_empty`].
//!
//! Why: a rescaled task takes its partitions over from the tasks of the
//! previous layout through their committed offsets, fencing the writers
//! those name. A task of the previous layout that has not committed yet is
//! named by nothing, and could commit after the take-over read what was
//! committed. Waiting until no claim of another layout of the stage is left
//! closes that: an old task's claim goes only once it is stopped (or its
//! worker's session is gone, which also revokes its write lease), and a task
//! of a superseded spec can no longer claim (the version check), so it
//! never starts. And a drained job's repartition topics are deleted once
//! its claims are all gone: the drained tasks read them to their end. Must
//! never: let a task claim under a spec other than the current one, or
//! delete another worker's claim.

use zookeeper_client::{Client, MultiWriteError};

use super::error::{CoordError, CoordResult};
use super::model::JobSpec;
use super::paths::ZkPaths;
use super::store::{ephemeral, persistent, read_json};

/// One running task of one layout of a stage (see the module docs).
///
/// ```
/// use weir::coord::run_claim::RunClaim;
/// let old = RunClaim::new("count", 2, 1, "w1");
/// assert_eq!(old.node(), "count@2#1@w1");
/// assert_eq!(RunClaim::parse("count@2#1@w1"), Some(old.clone()));
/// let new = RunClaim::new("count", 3, 2, "w2");
/// assert!(new.waits_for(&old), "another layout of its stage");
/// assert!(!new.waits_for(&RunClaim::new("count", 3, 0, "w1")), "its own layout");
/// assert!(!new.waits_for(&RunClaim::new("parse", 4, 0, "w1")), "another stage");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RunClaim {
    /// The stage (empty for a single-stage job).
    pub stage: String,
    /// The stage's task count in this layout.
    pub count: u32,
    /// The task's index in the stage.
    pub index: u32,
    /// The worker running it.
    pub worker: String,
}

impl RunClaim {
    /// Task `index` of `count` of `stage`, on `worker`.
    pub fn new(stage: &str, count: u32, index: u32, worker: &str) -> Self {
        RunClaim {
            stage: stage.to_string(),
            count,
            index,
            worker: worker.to_string(),
        }
    }

    /// Its znode's name: `<stage>@<count>#<index>@<worker>`.
    pub fn node(&self) -> String {
        format!(
            "{}@{}#{}@{}",
            self.stage, self.count, self.index, self.worker
        )
    }

    /// The claim a znode name spells (`None`: not a claim).
    pub fn parse(node: &str) -> Option<RunClaim> {
        let (stage, rest) = node.split_once('@')?;
        let (count, rest) = rest.split_once('#')?;
        let (index, worker) = rest.split_once('@')?;
        Some(RunClaim {
            stage: stage.to_string(),
            count: count.parse().ok()?,
            index: index.parse().ok()?,
            worker: worker.to_string(),
        })
    }

    /// Whether a task claiming `self` must wait for `other` to go: a task
    /// of another layout of the same stage.
    pub fn waits_for(&self, other: &RunClaim) -> bool {
        self.stage == other.stage && self.count != other.count
    }
}

/// What [`claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The claim exists (created now, or left by this worker before).
    Held,
    /// The job's spec is no longer `spec` (or the job is gone): the task
    /// belongs to a superseded layout and must not start.
    Superseded,
}

/// Creates `claim` for a task of `job` started under `spec`, only while
/// `spec` is the job's current spec (one multi-op checking its version).
pub async fn claim(
    client: &Client,
    paths: &ZkPaths,
    job: &str,
    spec: &JobSpec,
    claim: &RunClaim,
) -> CoordResult<Claimed> {
    let spec_path = paths.spec(job);
    let Some((current, stat)) = read_json::<JobSpec>(client, &spec_path).await? else {
        return Ok(Claimed::Superseded);
    };
    if &current != spec {
        return Ok(Claimed::Superseded);
    }
    let dir = paths.running(job);
    for d in [paths.running_root(), dir.clone()] {
        match client.create(&d, b"", &persistent()).await {
            Ok(_) | Err(zookeeper_client::Error::NodeExists) => {}
            Err(e) => return Err(CoordError::zk(&d, e)),
        }
    }
    let path = format!("{dir}/{}", claim.node());
    let mut w = client.new_multi_writer();
    let add = |r: Result<(), zookeeper_client::Error>, p: &str| r.map_err(|e| CoordError::zk(p, e));
    add(w.add_check_version(&spec_path, stat.version), &spec_path)?;
    add(w.add_create(&path, b"", &ephemeral()), &path)?;
    match w.commit().await {
        Ok(_) => Ok(Claimed::Held),
        Err(MultiWriteError::OperationFailed { index: 0, .. }) => Ok(Claimed::Superseded),
        Err(MultiWriteError::OperationFailed {
            index: 1,
            source: zookeeper_client::Error::NodeExists,
        }) => Ok(Claimed::Held),
        Err(e) => Err(CoordError::zk(&path, e.into())),
    }
}

/// The claims of `job`'s running tasks (unparsable names skipped).
pub async fn list(client: &Client, paths: &ZkPaths, job: &str) -> CoordResult<Vec<RunClaim>> {
    let dir = paths.running(job);
    match client.list_children(&dir).await {
        Ok(children) => Ok(children.iter().filter_map(|c| RunClaim::parse(c)).collect()),
        Err(zookeeper_client::Error::NoNode) => Ok(Vec::new()),
        Err(e) => Err(CoordError::zk(&dir, e)),
    }
}

/// Deletes this worker's `claim` of `job` (gone already: fine).
pub async fn release(
    client: &Client,
    paths: &ZkPaths,
    job: &str,
    claim: &RunClaim,
) -> CoordResult<()> {
    let path = format!("{}/{}", paths.running(job), claim.node());
    match client.delete(&path, None).await {
        Ok(()) | Err(zookeeper_client::Error::NoNode) => Ok(()),
        Err(e) => Err(CoordError::zk(&path, e)),
    }
}

/// Deletes `job`'s claims directory if no claim is left in it (a cancelled
/// job's, once its tasks stopped); gone already or still claimed: fine.
pub async fn remove_if_empty(client: &Client, paths: &ZkPaths, job: &str) -> CoordResult<()> {
    let dir = paths.running(job);
    match client.delete(&dir, None).await {
        Ok(()) | Err(zookeeper_client::Error::NoNode) | Err(zookeeper_client::Error::NotEmpty) => {
            Ok(())
        }
        Err(e) => Err(CoordError::zk(&dir, e)),
    }
}
