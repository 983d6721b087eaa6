//! The JSON documents stored in the znodes, and their validation.
//!
//! Owns: `WorkerInfo`, `JobSpec`, `TaskId`, `JobAssignment`, `TaskState`,
//! `CheckpointMeta`, `FailureRecord`, their serde form (the wire format other tools read), and
//! [`decode`] / [`encode`], which turn bad bytes into `CoordError::Malformed`
//! naming the znode.
//! Must never: panic on data read from ZooKeeper, or talk to ZooKeeper.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{CoordError, CoordResult};
use super::paths::validate_name;

/// Largest parallelism a job may ask for.
pub const MAX_PARALLELISM: u32 = 10_000;

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Parses the JSON stored at znode `path`; bad bytes give [`CoordError::Malformed`] naming `path`.
///
/// ```
/// use weir::coord::{model::decode, CoordError, JobSpec};
/// let err = decode::<JobSpec>("/weir/jobs/j/spec", b"{not json").unwrap_err();
/// assert!(matches!(err, CoordError::Malformed { ref path, .. } if path == "/weir/jobs/j/spec"));
/// ```
pub fn decode<T: DeserializeOwned>(path: &str, bytes: &[u8]) -> CoordResult<T> {
    serde_json::from_slice(bytes).map_err(|e| CoordError::Malformed {
        path: path.to_string(),
        reason: e.to_string(),
    })
}

/// Serializes a document for znode `path`.
pub fn encode<T: Serialize>(path: &str, value: &T) -> CoordResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| CoordError::Invalid {
        field: path.to_string(),
        reason: format!("cannot serialize: {e}"),
    })
}

/// A live worker, stored (as JSON) in its ephemeral znode `/workers/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Unique worker id (a path segment).
    pub id: String,
    /// Where the worker's HTTP endpoint listens (`host:port`), for the CLI and dashboard.
    pub address: String,
    /// Most tasks this worker runs at once (≥ 1).
    pub capacity: u32,
    /// Job types this worker's binary can run; empty means "any".
    #[serde(default)]
    pub job_types: Vec<String>,
    /// Version of the weir binary.
    #[serde(default)]
    pub version: String,
    /// The job types among `job_types` that run as several stages, with
    /// their stage names in data-flow order (`weir submit` writes them into
    /// the spec). Omitted when none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stages: BTreeMap<String, Vec<String>>,
    /// The worker's Kafka `bootstrap.servers` (for `weir cancel`, which
    /// deletes a staged job's repartition topics). Omitted when unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub brokers: String,
}

impl WorkerInfo {
    /// Checks the id charset and capacity ≥ 1.
    pub fn validate(&self) -> CoordResult<()> {
        validate_name("WorkerInfo.id", &self.id)?;
        if self.capacity == 0 {
            return Err(CoordError::Invalid {
                field: "WorkerInfo.capacity".into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// Whether this worker can run tasks of `job_type`.
    pub fn accepts(&self, job_type: &str) -> bool {
        self.job_types.is_empty() || self.job_types.iter().any(|t| t == job_type)
    }
}

/// A submitted job, stored in `/jobs/<job>/spec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Job name (a path segment, unique in the cluster).
    pub name: String,
    /// Which job definition of the worker binary runs it (matched against `WorkerInfo::job_types`).
    pub job_type: String,
    /// Number of tasks (≥ 1).
    pub parallelism: u32,
    /// Free-form job configuration.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// The job's stages, in data-flow order, when its type runs as several
    /// (split at each `key_by`, connected by repartition topics); empty for
    /// a single-stage job, whose tasks are `0..parallelism`. Omitted from
    /// the JSON when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageSpec>,
}

/// One stage of a job: a name (a path segment, unique in the job) and its
/// own parallelism.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSpec {
    /// Stage name, e.g. `parse` or `count`.
    pub name: String,
    /// Tasks of this stage (1..=[`MAX_PARALLELISM`]).
    pub parallelism: u32,
}

/// Where a task sits in its job: its stage (number, name; `""` for a
/// single-stage job), its index within the stage and the stage's task count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskPlace<'a> {
    /// Position of the stage in the job's data flow (0 for a single stage).
    pub stage_number: u32,
    /// The stage's name, `""` for a single-stage job.
    pub stage: &'a str,
    /// Index of the task within its stage, `0..count`.
    pub index: u32,
    /// Tasks of the stage.
    pub count: u32,
}

/// A task's index in its job encodes its stage: `stage_number * STAGE_STRIDE
/// + index_in_stage`, so a stage's task ids stay the same when another
/// stage is rescaled, and a single-stage job's tasks are `0..parallelism`.
pub const STAGE_STRIDE: u32 = MAX_PARALLELISM;

impl JobSpec {
    /// Checks the name and job type charset and `1 <= parallelism <= MAX_PARALLELISM`;
    /// the error names the offending field.
    ///
    /// ```
    /// use weir::coord::{CoordError, JobSpec};
    /// let mut spec = JobSpec { name: "clicks".into(), job_type: "clicks".into(), parallelism: 0, config: Default::default(), stages: vec![] };
    /// let err = spec.validate().unwrap_err();
    /// assert!(matches!(err, CoordError::Invalid { ref field, .. } if field == "JobSpec.parallelism"));
    /// spec.parallelism = 4;
    /// assert!(spec.validate().is_ok());
    /// ```
    pub fn validate(&self) -> CoordResult<()> {
        validate_name("JobSpec.name", &self.name)?;
        validate_name("JobSpec.job_type", &self.job_type)?;
        if self.parallelism == 0 || self.parallelism > MAX_PARALLELISM {
            return Err(CoordError::Invalid {
                field: "JobSpec.parallelism".into(),
                reason: format!("{} is not within 1..={MAX_PARALLELISM}", self.parallelism),
            });
        }
        if self.stages.len() as u64 > (u32::MAX / STAGE_STRIDE) as u64 {
            return Err(CoordError::Invalid {
                field: "JobSpec.stages".into(),
                reason: format!("{} stages are too many", self.stages.len()),
            });
        }
        for (i, st) in self.stages.iter().enumerate() {
            validate_name("JobSpec.stages.name", &st.name)?;
            if self.stages[..i].iter().any(|o| o.name == st.name) {
                return Err(CoordError::Invalid {
                    field: "JobSpec.stages".into(),
                    reason: format!("stage {:?} is named twice", st.name),
                });
            }
            if st.parallelism == 0 || st.parallelism > MAX_PARALLELISM {
                return Err(CoordError::Invalid {
                    field: "JobSpec.stages.parallelism".into(),
                    reason: format!(
                        "stage {:?}: {} is not within 1..={MAX_PARALLELISM}",
                        st.name, st.parallelism
                    ),
                });
            }
        }
        Ok(())
    }

    /// The ids of this job's tasks: `<name>-0 .. <name>-<parallelism-1>` for a
    /// single stage; with stages, stage `s`'s tasks are
    /// `<name>-<s * STAGE_STRIDE + i>` for `i` in `0..` its parallelism.
    ///
    /// ```
    /// use weir::coord::model::{JobSpec, StageSpec};
    /// let mut spec = JobSpec { name: "ck".into(), job_type: "clicks".into(), parallelism: 2, config: Default::default(), stages: vec![] };
    /// let ids: Vec<String> = spec.task_ids().iter().map(|t| t.to_string()).collect();
    /// assert_eq!(ids, ["ck-0", "ck-1"]);
    /// spec.stages = vec![StageSpec { name: "parse".into(), parallelism: 1 }, StageSpec { name: "count".into(), parallelism: 2 }];
    /// let ids: Vec<String> = spec.task_ids().iter().map(|t| t.to_string()).collect();
    /// assert_eq!(ids, ["ck-0", "ck-10000", "ck-10001"]);
    /// let place = spec.place(10001).unwrap();
    /// assert_eq!((place.stage, place.index, place.count), ("count", 1, 2));
    /// assert!(spec.place(1).is_none());
    /// ```
    pub fn task_ids(&self) -> Vec<TaskId> {
        if self.stages.is_empty() {
            return (0..self.parallelism)
                .map(|i| TaskId::new(&self.name, i))
                .collect();
        }
        self.stages
            .iter()
            .enumerate()
            .flat_map(|(s, st)| {
                (0..st.parallelism)
                    .map(move |i| TaskId::new(&self.name, s as u32 * STAGE_STRIDE + i))
            })
            .collect()
    }

    /// Number of tasks over all stages.
    pub fn task_count(&self) -> u32 {
        if self.stages.is_empty() {
            self.parallelism
        } else {
            self.stages.iter().map(|s| s.parallelism).sum()
        }
    }

    /// Where task `index` sits (stage, index in it, the stage's count), or
    /// `None` when the job (as specified now) has no such task.
    pub fn place(&self, index: u32) -> Option<TaskPlace<'_>> {
        if self.stages.is_empty() {
            return (index < self.parallelism).then_some(TaskPlace {
                stage_number: 0,
                stage: "",
                index,
                count: self.parallelism,
            });
        }
        let (s, i) = (index / STAGE_STRIDE, index % STAGE_STRIDE);
        let st = self.stages.get(s as usize)?;
        (i < st.parallelism).then_some(TaskPlace {
            stage_number: s,
            stage: &st.name,
            index: i,
            count: st.parallelism,
        })
    }

    /// Whether task `index` belongs to the job as specified now.
    pub fn has_task(&self, index: u32) -> bool {
        self.place(index).is_some()
    }

    /// The parallelism of stage `name`, if the job has it.
    pub fn stage_parallelism(&self, name: &str) -> Option<u32> {
        self.stages
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.parallelism)
    }
}

/// One parallel instance of a job; written `"<job>-<index>"` in JSON and in znode names.
///
/// ```
/// use weir::coord::TaskId;
/// let t: TaskId = "clicks-per-user-3".parse().unwrap();
/// assert_eq!((t.job.as_str(), t.index), ("clicks-per-user", 3));
/// assert_eq!(t.to_string(), "clicks-per-user-3");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId {
    /// Job name.
    pub job: String,
    /// Index in `0..parallelism`.
    pub index: u32,
}

impl TaskId {
    /// Task `index` of `job`.
    pub fn new(job: &str, index: u32) -> Self {
        TaskId {
            job: job.to_string(),
            index,
        }
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.job, self.index)
    }
}

impl FromStr for TaskId {
    type Err = CoordError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CoordError::Invalid {
            field: "TaskId".into(),
            reason: format!("{s:?} is not <job>-<index>"),
        };
        let (job, idx) = s.rsplit_once('-').ok_or_else(bad)?;
        if job.is_empty() {
            return Err(bad());
        }
        let index = idx.parse::<u32>().map_err(|_| bad())?;
        Ok(TaskId {
            job: job.to_string(),
            index,
        })
    }
}

impl Serialize for TaskId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where one task runs, and since which epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskAssignment {
    /// Worker id.
    pub worker: String,
    /// Epoch at which the task was (last) placed on this worker; it changes only when the task
    /// moves, or when the leader restarts it in place after a failure.
    pub epoch: u64,
    /// The worker this task last FAILED on: the leader does not place it there again while
    /// another live worker can take it. Absent (and omitted from the JSON) when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avoid: Option<String>,
    /// When this task FAILED past its restart policy within the leader's failure window (ms
    /// since the Unix epoch, oldest first), on whichever workers. Omitted when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_at_ms: Vec<u64>,
}

impl TaskAssignment {
    /// On `worker` since `epoch`, avoiding no worker, with no recent failure.
    pub fn new(worker: &str, epoch: u64) -> Self {
        TaskAssignment {
            worker: worker.to_string(),
            epoch,
            avoid: None,
            failed_at_ms: Vec::new(),
        }
    }
}

/// A job's task placement, stored in `/jobs/<job>/assignment`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAssignment {
    /// Bumped on every change of the assignment.
    pub epoch: u64,
    /// Task -> worker; tasks that could not be placed (no capacity) are absent.
    pub tasks: BTreeMap<TaskId, TaskAssignment>,
    /// Tasks the leader gave up on (they failed on worker after worker), with the reason:
    /// placed nowhere, their state FAILED, until the job is submitted again. Omitted when none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub given_up: BTreeMap<TaskId, String>,
}

impl JobAssignment {
    /// The tasks placed on `worker`, with their epochs.
    pub fn tasks_of<'a>(&'a self, worker: &'a str) -> impl Iterator<Item = (&'a TaskId, u64)> + 'a {
        self.tasks
            .iter()
            .filter(move |(_, a)| a.worker == worker)
            .map(|(t, a)| (t, a.epoch))
    }
}

/// How a cancelled job's tasks stop (`weir cancel`, `--savepoint`, `--drain`,
/// `--abort`), stored in `/stops/<job>` before the job's spec is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StopMode {
    /// A final checkpoint (with durable storage), then stop without firing
    /// open windows: a later job of the same name resumes from it. Without
    /// storage, as `Drain`. The default.
    #[default]
    Savepoint,
    /// Fire every open window, commit, stop (as at the end of input).
    Drain,
    /// Stop at once: nothing more is committed; the last completed
    /// checkpoint stands.
    Abort,
}

/// Lifecycle of a task, serialized in upper case (`"RUNNING"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TaskStatus {
    /// Assigned, not started yet.
    Scheduled,
    /// Processing.
    Running,
    /// Being restarted by its supervisor.
    Restarting,
    /// Past its restart policy; see `last_error`.
    Failed,
    /// Finished (bounded input).
    Finished,
    /// Stopped by a cancel.
    Cancelled,
}

impl TaskStatus {
    /// FAILED, FINISHED and CANCELLED are terminal: a move keeps them as they are.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Failed | TaskStatus::Finished | TaskStatus::Cancelled
        )
    }
}

/// The last error of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    /// Error text.
    pub message: String,
    /// When it happened (ms since the Unix epoch).
    pub at_ms: u64,
}

/// Published state of one task, stored in `/jobs/<job>/tasks/<task>/state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskState {
    /// Lifecycle status.
    pub state: TaskStatus,
    /// Worker that wrote this state (or that the task was scheduled on).
    pub worker: String,
    /// Assignment epoch the writer held.
    pub epoch: u64,
    /// Records read so far.
    #[serde(default)]
    pub records_in: u64,
    /// Records written so far.
    #[serde(default)]
    pub records_out: u64,
    /// Input position per partition (`"<topic>/<partition>"` -> next offset).
    #[serde(default)]
    pub offsets: BTreeMap<String, i64>,
    /// Records behind the end of the input.
    #[serde(default)]
    pub lag: u64,
    /// Restarts so far.
    #[serde(default)]
    pub restarts: u32,
    /// Last error, kept across moves.
    #[serde(default)]
    pub last_error: Option<TaskError>,
    /// When this state was written (ms since the Unix epoch).
    #[serde(default)]
    pub updated_at_ms: u64,
    /// The task's latest completed checkpoint (written, like the rest,
    /// only while the writer holds the assignment's epoch).
    #[serde(default)]
    pub checkpoint: Option<crate::actors::CheckpointSummary>,
    /// Records read per second over the last seconds, rounded (`weir status`'s IN/S).
    #[serde(default)]
    pub records_in_per_s: u64,
}

impl TaskState {
    /// A fresh SCHEDULED state for `worker` at `epoch`.
    pub fn scheduled(worker: &str, epoch: u64) -> Self {
        TaskState {
            state: TaskStatus::Scheduled,
            worker: worker.to_string(),
            epoch,
            records_in: 0,
            records_out: 0,
            offsets: BTreeMap::new(),
            lag: 0,
            restarts: 0,
            last_error: None,
            checkpoint: None,
            updated_at_ms: now_ms(),
            records_in_per_s: 0,
        }
    }
}

/// A task that FAILED past its restart policy, stored by its worker (fenced on the
/// assignment, like task state) in `/jobs/<job>/failed/<task>`. The leader reacts to it
/// (moves or restarts the task) and deletes it; a record whose `worker`/`epoch` no longer
/// match the assignment is stale and only deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// Worker the task failed on.
    pub worker: String,
    /// Assignment epoch the worker held.
    pub epoch: u64,
    /// The error that failed it.
    pub error: String,
    /// When it failed (ms since the Unix epoch).
    pub at_ms: u64,
    /// Restarts made so far (cumulative over the task's life, as published).
    #[serde(default)]
    pub restarts: u32,
}

/// A task's latest completed checkpoint, stored in
/// `/jobs/<job>/checkpoints/<task>`, written fenced by the task's
/// assignment epoch (a zombie's checkpoints are never recorded). A task
/// that moves or restarts restores from the checkpoint it names (unless
/// its exactly-once sink's transactions committed a newer one: the
/// transaction is the commit point), and retention never deletes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Checkpoint id, increasing.
    pub id: u64,
    /// Input offsets to resume from (`"<topic>/<partition>"` -> next offset).
    pub offsets: BTreeMap<String, i64>,
    /// Where each task's state snapshot is stored.
    pub state_paths: BTreeMap<TaskId, String>,
    /// When the checkpoint completed (ms since the Unix epoch).
    pub completed_at_ms: u64,
    /// The assignment epoch of the task that took it.
    #[serde(default)]
    pub epoch: u64,
    /// The worker that took it.
    #[serde(default)]
    pub worker: String,
    /// The transactional id its output was committed under (exactly-once
    /// sinks; no transaction stays open past a completed checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactional_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_state_json_uses_uppercase_status() {
        let mut s = TaskState::scheduled("w1", 3);
        s.state = TaskStatus::Restarting;
        s.offsets.insert("clicks/0".into(), 42);
        s.last_error = Some(TaskError {
            message: "boom".into(),
            at_ms: 7,
        });
        let json = String::from_utf8(encode("/x", &s).unwrap()).unwrap();
        assert!(json.contains("\"state\":\"RESTARTING\""), "{json}");
        let back: TaskState = decode("/x", json.as_bytes()).unwrap();
        assert_eq!(back, s);
        for (st, name) in [
            (TaskStatus::Scheduled, "SCHEDULED"),
            (TaskStatus::Running, "RUNNING"),
            (TaskStatus::Failed, "FAILED"),
            (TaskStatus::Finished, "FINISHED"),
            (TaskStatus::Cancelled, "CANCELLED"),
        ] {
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{name}\""));
        }
    }

    #[test]
    fn assignment_round_trips_with_task_id_keys() {
        let mut a = JobAssignment {
            epoch: 5,
            ..Default::default()
        };
        a.tasks
            .insert(TaskId::new("j-x", 10), TaskAssignment::new("w1", 5));
        a.tasks.insert(
            TaskId::new("j-x", 2),
            TaskAssignment {
                worker: "w2".into(),
                epoch: 1,
                avoid: Some("w3".into()),
                failed_at_ms: vec![7],
            },
        );
        let bytes = encode("/a", &a).unwrap();
        let json = String::from_utf8(bytes.clone()).unwrap();
        assert!(json.contains("\"j-x-10\""), "{json}");
        assert_eq!(
            json.matches("avoid").count(),
            1,
            "omitted when none: {json}"
        );
        assert_eq!(json.matches("failed_at_ms").count(), 1, "{json}");
        assert!(!json.contains("given_up"), "omitted when none: {json}");
        // An assignment written before `avoid` existed still reads.
        let old: JobAssignment = decode(
            "/a",
            br#"{"epoch":2,"tasks":{"j-0":{"worker":"w","epoch":2}}}"#,
        )
        .unwrap();
        assert_eq!(old.tasks[&TaskId::new("j", 0)], TaskAssignment::new("w", 2));
        assert_eq!(decode::<JobAssignment>("/a", &bytes).unwrap(), a);
        assert_eq!(a.tasks_of("w1").count(), 1);
    }

    #[test]
    fn malformed_names_the_path() {
        let err = decode::<TaskState>("/r/jobs/j/tasks/j-0/state", b"{\"state\":\"DANCING\"}")
            .unwrap_err();
        match err {
            CoordError::Malformed { path, reason } => {
                assert_eq!(path, "/r/jobs/j/tasks/j-0/state");
                assert!(reason.contains("DANCING"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(decode::<JobAssignment>(
            "/a",
            br#"{"epoch":1,"tasks":{"nodash":{"worker":"w","epoch":1}}}"#
        )
        .is_err());
    }

    #[test]
    fn spec_validation_names_fields() {
        let spec = JobSpec {
            name: "bad name".into(),
            job_type: "t".into(),
            parallelism: 1,
            config: BTreeMap::new(),
            stages: Vec::new(),
        };
        assert!(
            matches!(spec.validate(), Err(CoordError::Invalid { field, .. }) if field == "JobSpec.name")
        );
        let spec = JobSpec {
            name: "ok".into(),
            job_type: "".into(),
            parallelism: 1,
            config: BTreeMap::new(),
            stages: Vec::new(),
        };
        assert!(
            matches!(spec.validate(), Err(CoordError::Invalid { field, .. }) if field == "JobSpec.job_type")
        );
        let spec = JobSpec {
            name: "ok".into(),
            job_type: "t".into(),
            parallelism: 3,
            config: BTreeMap::new(),
            stages: Vec::new(),
        };
        assert_eq!(
            spec.task_ids()
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>(),
            ["ok-0", "ok-1", "ok-2"]
        );
        let w = WorkerInfo {
            id: "w1".into(),
            address: "x".into(),
            capacity: 0,
            job_types: vec![],
            version: "1".into(),
            stages: Default::default(),
            brokers: String::new(),
        };
        assert!(
            matches!(w.validate(), Err(CoordError::Invalid { field, .. }) if field == "WorkerInfo.capacity")
        );
    }
}
