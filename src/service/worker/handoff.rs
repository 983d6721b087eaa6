//! A rescaled stage starts after its previous layout stopped.
//!
//! Owns [`RunClaims`]: the run claims this worker holds for its tasks (see
//! [`crate::coord::run_claim`]), [`gate`] (claim a task's run under the spec
//! it starts with, then wait until no task of another layout of its stage
//! holds a claim anywhere), and the release of a claim once its task can
//! no longer commit anything (stopped, finished, failed, never started),
//! retried until ZooKeeper has it. Every task claims (with durable
//! checkpoints a rescaled task takes partitions over from the previous
//! layout; a drained job's topics are deleted once its claims are gone).
//! Must never: start a task whose spec was superseded, or keep a claim of
//! a task that stopped (a rescale would wait on it forever).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::Addr;

use crate::coord::actor::{ClaimRun, ListRunClaims, ReadSpec, ReleaseRun};
use crate::coord::run_claim::{Claimed, RunClaim};
use crate::coord::{CoordActor, JobSpec, TaskId};

/// How often a waiting task looks at the claims again.
const POLL: Duration = Duration::from_millis(250);

/// How often a task still waiting says so in the log.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// What [`gate`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Gate {
    /// Claimed, and no other layout of the stage runs: start.
    Open,
    /// The job's spec changed: this task belongs to a superseded layout.
    Superseded,
}

/// Claims `claim` for a task of `job` started under `spec`, then waits
/// until no task of another layout of its stage holds a claim (polling;
/// the spec changing meanwhile ends the wait as [`Gate::Superseded`]).
pub(super) async fn gate(
    coord: Addr<CoordActor>,
    job: String,
    spec: JobSpec,
    claim: RunClaim,
) -> Result<Gate, String> {
    let ask = ClaimRun {
        job: job.clone(),
        spec: spec.clone(),
        claim: claim.clone(),
    };
    match coord.send(ask).await {
        Ok(Ok(Claimed::Held)) => {}
        Ok(Ok(Claimed::Superseded)) => return Ok(Gate::Superseded),
        Ok(Err(e)) => return Err(format!("cannot claim the task's run: {e}")),
        Err(e) => return Err(format!("coordination actor unavailable: {e}")),
    }
    let started = Instant::now();
    let mut reported = started;
    loop {
        let claims = match coord.send(ListRunClaims { job: job.clone() }).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(format!("cannot read the job's run claims: {e}")),
            Err(e) => return Err(format!("coordination actor unavailable: {e}")),
        };
        let waiting: Vec<String> = claims
            .iter()
            .filter(|c| claim.waits_for(c))
            .map(RunClaim::node)
            .collect();
        if waiting.is_empty() {
            if started.elapsed() > POLL {
                tracing::info!(job = %job, claim = %claim.node(), waited_ms = started.elapsed().as_millis() as u64, "the stage's previous layout stopped: starting");
            }
            return Ok(Gate::Open);
        }
        match coord.send(ReadSpec { job: job.clone() }).await {
            Ok(Ok(current)) if current == spec => {}
            Ok(Ok(_)) | Ok(Err(crate::coord::CoordError::NoNode { .. })) => {
                return Ok(Gate::Superseded)
            }
            Ok(Err(e)) => return Err(format!("cannot read the job's spec: {e}")),
            Err(e) => return Err(format!("coordination actor unavailable: {e}")),
        }
        if reported.elapsed() >= REPORT_EVERY {
            reported = Instant::now();
            tracing::info!(job = %job, claim = %claim.node(), waiting_for = ?waiting, "waiting for the stage's previous layout to stop");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The run claims this worker holds, by task, and those it still has to
/// release.
#[derive(Default)]
pub(super) struct RunClaims {
    held: BTreeMap<TaskId, RunClaim>,
    releasing: Vec<(String, RunClaim)>,
    /// Numbers this process's claims, so each start of a task has a znode
    /// of its own (releasing one never deletes a later one's).
    next: u64,
}

impl RunClaims {
    /// A claim for task `index` of `count` of `stage` on `worker`, named
    /// for this start of it only (`<worker>~<n>`).
    pub(super) fn new_claim(
        &mut self,
        stage: &str,
        count: u32,
        index: u32,
        worker: &str,
    ) -> RunClaim {
        self.next += 1;
        RunClaim::new(stage, count, index, &format!("{worker}~{}", self.next))
    }

    /// Whether task `id` holds exactly `claim`.
    pub(super) fn holds(&self, id: &TaskId, claim: &RunClaim) -> bool {
        self.held.get(id) == Some(claim)
    }

    /// Task `id` holds `claim` (a claim of an earlier start of it is
    /// released).
    pub(super) fn hold(&mut self, id: &TaskId, claim: RunClaim) {
        if let Some(old) = self.held.insert(id.clone(), claim.clone()) {
            if old != claim {
                self.releasing.push((id.job.clone(), old));
            }
        }
    }

    /// The claims to release now: those of tasks for which `live` is
    /// false, and earlier releases that failed.
    pub(super) fn take_releases(
        &mut self,
        mut live: impl FnMut(&TaskId) -> bool,
    ) -> Vec<(String, RunClaim)> {
        let done: Vec<TaskId> = self.held.keys().filter(|id| !live(id)).cloned().collect();
        for id in done {
            if let Some(claim) = self.held.remove(&id) {
                self.releasing.push((id.job.clone(), claim));
            }
        }
        std::mem::take(&mut self.releasing)
    }

    /// A release that failed: tried again at the next [`take_releases`](Self::take_releases).
    pub(super) fn retry(&mut self, job: String, claim: RunClaim) {
        self.releasing.push((job, claim));
    }
}

/// Releases `claim` of `job`, answering it back if ZooKeeper did not take it.
pub(super) async fn release(
    coord: Addr<CoordActor>,
    job: String,
    claim: RunClaim,
) -> Option<(String, RunClaim)> {
    let ask = ReleaseRun {
        job: job.clone(),
        claim: claim.clone(),
    };
    match coord.send(ask).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            tracing::warn!(job = %job, claim = %claim.node(), error = %e, "cannot release a run claim yet: retrying");
            Some((job, claim))
        }
        Err(_) => Some((job, claim)),
    }
}
