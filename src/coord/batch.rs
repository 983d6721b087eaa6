//! Batched, fenced znode writes: many changes in few multi-ops, each within
//! ZooKeeper's request size limit (`jute.maxbuffer`).
//!
//! Owns: [`Unit`] (a group of ops that go together, e.g. a task directory
//! and its state), packing units in order into multi-ops of at most
//! [`DEFAULT_MULTI_BYTES`] (estimated on the wire), the fencing checks every
//! multi carries, and what happens when one op of a multi fails.
//! Must never: commit a multi without the guard check (the leader's election
//! node) first, write a unit fenced by a job's assignment in a multi that
//! neither writes that assignment nor checks its version, or split a unit
//! over two multis.
//!
//! # Fencing kept
//! Every multi starts with `check(guard, 0)`: a deposed leader writes
//! nothing. A unit fenced by job `j` (a moved task's SCHEDULED state) goes
//! into the same multi as `j`'s assignment write when it fits; otherwise the
//! multi that carries it also carries `check(assignment(j), v')`, where `v'`
//! is the version the earlier multi's write produced (a `set` at version `v`
//! gives `v + 1`, a `create` gives 0). So a state is only ever written while
//! the assignment that assigned it is current, as with
//! [`fenced_write`](super::fencing::fenced_write).
//!
//! # Failures
//! A multi is all or nothing. When op `i` fails: the guard → `NoNode` naming
//! the guard (leadership lost); a fencing check → the job's assignment moved
//! on, so every unit fenced by it is dropped (fenced, as a single write would
//! have been) and the multi retried; an *optional* unit (a state a worker
//! wrote first, a directory already gone) → that unit is dropped and the
//! multi retried; anything else (an assignment written concurrently) → the
//! error, with the multis already committed left in place (the caller
//! re-reads and reconciles again). Dropped units are reported.

use std::collections::{BTreeMap, BTreeSet};

use zookeeper_client::{Client, MultiWriteError};

use super::error::{CoordError, CoordResult};
use super::store::persistent;

/// Bytes of ops per multi (estimated, see [`Op::wire_size`]). Half of
/// ZooKeeper's default `jute.maxbuffer` (1 MiB, which bounds the whole request
/// and the transaction log entry): ample margin for headers and ACLs.
pub const DEFAULT_MULTI_BYTES: usize = 512 * 1024;

/// One znode operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create a persistent znode (open ACL, see [`persistent`]).
    Create {
        /// Path.
        path: String,
        /// Content.
        data: Vec<u8>,
    },
    /// Set a znode's data, at `version` (`None`: any).
    Set {
        /// Path.
        path: String,
        /// Content.
        data: Vec<u8>,
        /// Expected version.
        version: Option<i32>,
    },
    /// Delete a znode, at `version` (`None`: any).
    Delete {
        /// Path.
        path: String,
        /// Expected version.
        version: Option<i32>,
    },
}

impl Op {
    /// The znode the op writes.
    pub fn path(&self) -> &str {
        match self {
            Op::Create { path, .. } | Op::Set { path, .. } | Op::Delete { path, .. } => path,
        }
    }

    /// A generous estimate of the op's bytes in a multi request: path, data, the op and
    /// multi headers, and the ACL of a create.
    pub fn wire_size(&self) -> usize {
        match self {
            Op::Create { path, data } => path.len() + data.len() + 96,
            Op::Set { path, data, .. } => path.len() + data.len() + 32,
            Op::Delete { path, .. } => path.len() + 32,
        }
    }
}

/// Ops that go into the same multi, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The ops.
    pub ops: Vec<Op>,
    /// The job whose assignment fences this unit (see the module docs); `None`: unfenced
    /// (beyond the guard).
    pub fenced_by: Option<String>,
    /// May be dropped when one of its ops fails (someone else got there first).
    pub optional: bool,
    /// This unit writes `job`'s assignment, which then has this version.
    pub writes_assignment: Option<(String, i32)>,
}

impl Unit {
    fn wire_size(&self) -> usize {
        self.ops.iter().map(Op::wire_size).sum()
    }
}

/// What [`commit`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Multi-ops committed (each one ZooKeeper write transaction).
    pub transactions: usize,
    /// Ops committed (guard and fencing checks not counted).
    pub ops: usize,
    /// Units dropped: optional ones whose op failed, and ones fenced by an assignment
    /// that changed. Indexes into the `units` given to [`commit`].
    pub dropped: Vec<usize>,
}

/// Commits `units` in order, packed into multi-ops of at most `max_bytes` (a unit larger
/// than that goes alone), each guarded by `check(guard, 0)` and fenced as the module docs
/// say. `assignments` maps a job to its assignment znode's path (for the fencing checks).
pub async fn commit(
    client: &Client,
    guard: &str,
    assignments: &BTreeMap<String, String>,
    units: &[Unit],
    max_bytes: usize,
) -> CoordResult<BatchReport> {
    let mut report = BatchReport::default();
    // Version each job's assignment has after the multis committed so far.
    let mut written: BTreeMap<&str, i32> = BTreeMap::new();
    let mut alive = vec![true; units.len()];
    let mut next = 0;
    while next < units.len() {
        // Pack [next, end).
        let mut end = next;
        let mut bytes = 0;
        while end < units.len() {
            let s = if alive[end] {
                units[end].wire_size()
            } else {
                0
            };
            if end > next && bytes + s > max_bytes {
                break;
            }
            bytes += s;
            end += 1;
        }
        loop {
            let chunk: Vec<usize> = (next..end).filter(|&i| alive[i]).collect();
            if chunk.is_empty() {
                break;
            }
            // What each op index of the multi stands for.
            enum At {
                Guard,
                Fence(String),
                Unit(usize),
            }
            let mut at = vec![At::Guard];
            let mut w = client.new_multi_writer();
            w.add_check_version(guard, 0)
                .map_err(|e| CoordError::zk(guard, e))?;
            // Jobs whose assignment this multi writes or checks (so far).
            let mut in_chunk: BTreeSet<&str> = BTreeSet::new();
            for &i in &chunk {
                let u = &units[i];
                if let Some(job) = &u.fenced_by {
                    if !in_chunk.contains(job.as_str()) {
                        let Some(path) = assignments.get(job) else {
                            return Err(CoordError::Invalid {
                                field: "batch".into(),
                                reason: format!("no assignment path for job {job}"),
                            });
                        };
                        let Some(&v) = written.get(job.as_str()) else {
                            return Err(CoordError::Invalid {
                                field: "batch".into(),
                                reason: format!(
                                    "a unit fenced by {job}'s assignment precedes its write"
                                ),
                            });
                        };
                        w.add_check_version(path, v)
                            .map_err(|e| CoordError::zk(path, e))?;
                        at.push(At::Fence(job.clone()));
                        in_chunk.insert(job.as_str());
                    }
                }
                for op in &u.ops {
                    let r = match op {
                        Op::Create { path, data } => w.add_create(path, data, &persistent()),
                        Op::Set {
                            path,
                            data,
                            version,
                        } => w.add_set_data(path, data, *version),
                        Op::Delete { path, version } => w.add_delete(path, *version),
                    };
                    r.map_err(|e| CoordError::zk(op.path(), e))?;
                    at.push(At::Unit(i));
                }
                if let Some((job, _)) = &u.writes_assignment {
                    in_chunk.insert(job.as_str());
                }
            }
            match w.commit().await {
                Ok(_) => {
                    report.transactions += 1;
                    for &i in &chunk {
                        report.ops += units[i].ops.len();
                        if let Some((job, v)) = &units[i].writes_assignment {
                            written.insert(job.as_str(), *v);
                        }
                    }
                    break;
                }
                Err(MultiWriteError::OperationFailed { index, source }) => match at.get(index) {
                    Some(At::Guard) | None => {
                        return Err(CoordError::NoNode {
                            path: guard.to_string(),
                        })
                    }
                    Some(At::Fence(job)) => {
                        tracing::debug!(job = %job, error = %source, "assignment changed meanwhile: its fenced writes are dropped");
                        for (k, u) in units.iter().enumerate().skip(next) {
                            if alive[k] && u.fenced_by.as_deref() == Some(job.as_str()) {
                                alive[k] = false;
                                report.dropped.push(k);
                            }
                        }
                    }
                    Some(At::Unit(i)) if units[*i].optional => {
                        tracing::debug!(error = %source, path = %units[*i].ops[0].path(), "batched write dropped: someone else wrote first");
                        alive[*i] = false;
                        report.dropped.push(*i);
                    }
                    Some(At::Unit(i)) => {
                        let op = units[*i]
                            .ops
                            .iter()
                            .find(|o| matches!(o, Op::Set { .. } | Op::Create { .. }))
                            .unwrap_or(&units[*i].ops[0]);
                        return Err(match (source, op) {
                            (
                                zookeeper_client::Error::BadVersion,
                                Op::Set { path, version, .. },
                            ) => CoordError::Conflict {
                                path: path.clone(),
                                expected: version.unwrap_or(-1),
                            },
                            (e, op) => CoordError::zk(op.path(), e),
                        });
                    }
                },
                Err(e) => return Err(CoordError::zk(guard, e.into())),
            }
        }
        next = end;
    }
    report.dropped.sort_unstable();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_estimated_generously() {
        let c = Op::Create {
            path: "/a/b".into(),
            data: vec![0; 100],
        };
        assert!(c.wire_size() >= 104 + 40, "path, data and an ACL");
        let d = Op::Delete {
            path: "/a".into(),
            version: None,
        };
        assert!(d.wire_size() > 2);
        // A 1 MiB jute.maxbuffer leaves room for headers above the packing limit.
        const { assert!(DEFAULT_MULTI_BYTES * 2 <= 1024 * 1024) };
    }
}
