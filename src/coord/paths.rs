//! The znode layout of a weir cluster under a configurable root.
//!
//! Owns: every znode path string the coordination layer uses, and the check
//! that names put into paths (job names, worker ids) are safe path segments.
//! Must never: talk to ZooKeeper, or build a path anywhere else (other modules
//! ask [`ZkPaths`]).
//!
//! ```text
//! <root>/workers/<worker-id>               ephemeral, WorkerInfo JSON
//! <root>/leader/<candidate>-<seq>          ephemeral sequential, election
//! <root>/jobs/<job>/spec                   JobSpec JSON
//! <root>/jobs/<job>/assignment             JobAssignment JSON
//! <root>/jobs/<job>/tasks/<task>/state     TaskState JSON
//! <root>/jobs/<job>/checkpoints/<task>     CheckpointMeta JSON (the task's latest
//!                                          completed checkpoint, written fenced)
//! <root>/stops/<job>                       StopMode JSON: how `weir cancel` asked the job's
//!                                          tasks to stop (outside the job's directory, which
//!                                          the leader removes; the CLI deletes it after)
//! <root>/jobs/<job>/failed/<task>          FailureRecord JSON (a task FAILED past its
//!                                          restart policy; the leader moves it, then deletes it)
//! ```

use super::error::{CoordError, CoordResult};

/// Default root of the znode tree.
pub const DEFAULT_ROOT: &str = "/weir";

/// Builds the znode paths of one weir cluster rooted at `root`.
///
/// ```
/// use weir::coord::ZkPaths;
/// let p = ZkPaths::new("/weir").unwrap();
/// assert_eq!(p.worker("w1"), "/weir/workers/w1");
/// assert_eq!(p.task_state("clicks", "clicks-0"), "/weir/jobs/clicks/tasks/clicks-0/state");
/// assert_eq!(p.checkpoint("clicks", "clicks-0"), "/weir/jobs/clicks/checkpoints/clicks-0");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkPaths {
    root: String,
}

impl Default for ZkPaths {
    fn default() -> Self {
        ZkPaths {
            root: DEFAULT_ROOT.to_string(),
        }
    }
}

impl ZkPaths {
    /// A layout under `root`, which must be an absolute path without a trailing slash
    /// (e.g. `/weir` or `/weir-test-election-42`).
    pub fn new(root: &str) -> CoordResult<Self> {
        let bad = |reason: &str| CoordError::Invalid {
            field: "root".into(),
            reason: format!("{root:?}: {reason}"),
        };
        if !root.starts_with('/') {
            return Err(bad("must start with '/'"));
        }
        if root.len() > 1 && root.ends_with('/') {
            return Err(bad("must not end with '/'"));
        }
        if root == "/" {
            return Err(bad("must not be the ZooKeeper root itself"));
        }
        for seg in root[1..].split('/') {
            validate_name("root segment", seg)?;
        }
        Ok(ZkPaths {
            root: root.to_string(),
        })
    }

    /// The root itself.
    pub fn root(&self) -> &str {
        &self.root
    }
    /// Parent of worker registrations.
    pub fn workers(&self) -> String {
        format!("{}/workers", self.root)
    }
    /// Ephemeral registration of one worker.
    pub fn worker(&self, id: &str) -> String {
        format!("{}/workers/{id}", self.root)
    }
    /// Parent of the election's ephemeral sequential candidates.
    pub fn leader(&self) -> String {
        format!("{}/leader", self.root)
    }
    /// Prefix (for sequential create) of one candidate's election znode.
    pub fn leader_candidate_prefix(&self, candidate: &str) -> String {
        format!("{}/leader/{candidate}-", self.root)
    }
    /// Parent of all jobs.
    pub fn jobs(&self) -> String {
        format!("{}/jobs", self.root)
    }
    /// Directory of one job.
    pub fn job(&self, job: &str) -> String {
        format!("{}/jobs/{job}", self.root)
    }
    /// The submitted spec of a job.
    pub fn spec(&self, job: &str) -> String {
        format!("{}/jobs/{job}/spec", self.root)
    }
    /// The task -> worker assignment of a job (the fencing reference).
    pub fn assignment(&self, job: &str) -> String {
        format!("{}/jobs/{job}/assignment", self.root)
    }
    /// Parent of a job's task directories.
    pub fn tasks(&self, job: &str) -> String {
        format!("{}/jobs/{job}/tasks", self.root)
    }
    /// Directory of one task.
    pub fn task(&self, job: &str, task: &str) -> String {
        format!("{}/jobs/{job}/tasks/{task}", self.root)
    }
    /// Published state of one task.
    pub fn task_state(&self, job: &str, task: &str) -> String {
        format!("{}/jobs/{job}/tasks/{task}/state", self.root)
    }
    /// Parent of a job's checkpoint metadata.
    pub fn checkpoints(&self, job: &str) -> String {
        format!("{}/jobs/{job}/checkpoints", self.root)
    }
    /// The run claims of every job (outside the job directories, which go
    /// with a cancel while tasks may still be stopping).
    pub fn running_root(&self) -> String {
        format!("{}/running", self.root)
    }
    /// The run claims of a job's tasks (see [`run_claim`](super::run_claim)).
    pub fn running(&self, job: &str) -> String {
        format!("{}/running/{job}", self.root)
    }
    /// Metadata of a task's latest completed checkpoint.
    pub fn checkpoint(&self, job: &str, task: &str) -> String {
        format!("{}/jobs/{job}/checkpoints/{task}", self.root)
    }
    /// Parent of a job's failure records (the leader watches its children).
    pub fn failed(&self, job: &str) -> String {
        format!("{}/jobs/{job}/failed", self.root)
    }
    /// Failure record of one task: it is FAILED on the worker and epoch the record names.
    pub fn failed_task(&self, job: &str, task: &str) -> String {
        format!("{}/jobs/{job}/failed/{task}", self.root)
    }
    /// Parent of the jobs' stop requests.
    pub fn stops(&self) -> String {
        format!("{}/stops", self.root)
    }
    /// How `weir cancel` asked `job`'s tasks to stop.
    pub fn stop(&self, job: &str) -> String {
        format!("{}/stops/{job}", self.root)
    }
    /// The persistent directories every process may rely on (created by `ensure_layout`).
    pub fn base_dirs(&self) -> [String; 3] {
        [self.workers(), self.leader(), self.jobs()]
    }
}

/// Checks that `name` is a safe single path segment: 1..=128 chars of
/// `[A-Za-z0-9._-]`, not `.` or `..`. `field` names the value in the error.
///
/// ```
/// use weir::coord::paths::validate_name;
/// assert!(validate_name("JobSpec.name", "clicks-per-user").is_ok());
/// assert!(validate_name("JobSpec.name", "a/b").is_err());
/// ```
pub fn validate_name(field: &str, name: &str) -> CoordResult<()> {
    let bad = |reason: String| CoordError::Invalid {
        field: field.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("must not be empty".into()));
    }
    if name.len() > 128 {
        return Err(bad(format!("{name:?} is longer than 128 characters")));
    }
    if name == "." || name == ".." {
        return Err(bad(format!("{name:?} is reserved")));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(bad(format!(
            "{name:?} contains {c:?}; allowed are ASCII letters, digits, '.', '_' and '-'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_under_custom_root() {
        let p = ZkPaths::new("/weir-test-x").unwrap();
        assert_eq!(p.workers(), "/weir-test-x/workers");
        assert_eq!(p.leader_candidate_prefix("w1"), "/weir-test-x/leader/w1-");
        assert_eq!(p.spec("j"), "/weir-test-x/jobs/j/spec");
        assert_eq!(p.assignment("j"), "/weir-test-x/jobs/j/assignment");
        assert_eq!(p.task("j", "j-3"), "/weir-test-x/jobs/j/tasks/j-3");
        assert_eq!(p.failed("j"), "/weir-test-x/jobs/j/failed");
        assert_eq!(p.failed_task("j", "j-3"), "/weir-test-x/jobs/j/failed/j-3");
        assert_eq!(ZkPaths::default().root(), "/weir");
    }

    #[test]
    fn rejects_bad_roots_and_names() {
        assert!(ZkPaths::new("weir").is_err());
        assert!(ZkPaths::new("/weir/").is_err());
        assert!(ZkPaths::new("/").is_err());
        assert!(ZkPaths::new("/a/b").is_ok());
        assert!(ZkPaths::new("/a//b").is_err());
        assert!(validate_name("x", "..").is_err());
        assert!(validate_name("x", "a b").is_err());
        assert!(validate_name("x", &"a".repeat(129)).is_err());
    }
}
