//! Starting one attempt of a job's actors.
//!
//! Owns [`Launch`]: what a stage needs to start its instances (arbiters to
//! place them on, the supervisor to report to, per-task metrics and
//! contexts) and what the supervisor needs back to control them (stop and
//! drain handles, the number of sink instances to wait for). Placement rule:
//! instance `i` of every stage runs on arbiter `i % arbiters`, so one
//! parallel slice of a job stays on one thread and parallel slices spread.

use actix::{Actor, Addr, ArbiterHandle, Context, Recipient};
use dashmap::DashMap;
use std::sync::Arc;

use super::messages::{SourceCommand, Stop, TaskEvent};
use super::supervisor::CompletedCheckpoint;
use crate::pipeline::{DeadLetters, JobConfig, TaskContext, TaskMetrics};

/// An operator instance's state to restore.
#[derive(Debug, Clone)]
pub enum RestoredState {
    /// Its own snapshot.
    Whole(Vec<u8>),
    /// Snapshots of other copies of the job, to split by key (a rescale).
    Keys(Vec<Vec<u8>>, Option<crate::pipeline::KeyGroups>),
}

/// The handles of one launched attempt.
pub struct Launch<'a> {
    pub(crate) job: &'a str,
    pub(crate) config: &'a JobConfig,
    pub(crate) attempt: u32,
    pub(crate) arbiters: &'a [ArbiterHandle],
    pub(crate) supervisor: Recipient<TaskEvent>,
    pub(crate) metrics: &'a DashMap<String, Arc<TaskMetrics>>,
    pub(crate) dead_letters: DeadLetters,
    pub(crate) stops: Vec<Recipient<Stop>>,
    pub(crate) sources: Vec<Recipient<SourceCommand>>,
    pub(crate) restore: Option<Arc<CompletedCheckpoint>>,
    pub(crate) sinks: usize,
    /// Tasks whose checkpointed state was handed out.
    pub(crate) restored: std::collections::BTreeSet<String>,
    /// Checkpointed states that do not fit this job (operator type differs).
    pub(crate) restore_errors: Vec<String>,
    /// Sinks whose output commits with checkpoints.
    pub(crate) committers: Vec<Arc<dyn crate::pipeline::CheckpointCommitter>>,
}

impl Launch<'_> {
    /// The arbiter instance `subtask` runs on.
    pub fn arbiter(&self, subtask: usize) -> &ArbiterHandle {
        &self.arbiters[subtask % self.arbiters.len()]
    }

    /// The context of instance `subtask` of stage `stage`, registering its
    /// metrics (kept across restarts so counters accumulate).
    pub fn task_context(&self, stage: &str, subtask: usize, parallelism: usize) -> TaskContext {
        let name = format!("{}/{}#{}", self.job, stage, subtask);
        let metrics = self.metrics.entry(name).or_default().clone();
        TaskContext {
            job: self.job.to_string(),
            stage: stage.to_string(),
            subtask,
            parallelism,
            attempt: self.attempt,
            metrics,
            dead_letters: self.dead_letters.clone(),
            watermarks: crate::pipeline::Watermarks::none(),
        }
    }

    /// The checkpointed position of instance `subtask` of source stage
    /// `stage`, now of `parallelism` instances, when restoring. A checkpoint
    /// taken at another parallelism gives every instance all the old
    /// instances' positions merged when the source keeps them per
    /// partition (`by_partition`), and is refused otherwise.
    pub fn restored_position(
        &mut self,
        stage: &str,
        subtask: usize,
        parallelism: usize,
        by_partition: bool,
    ) -> Option<serde_json::Value> {
        let c = self.restore.as_ref()?;
        let name = format!("{}/{stage}#{subtask}", self.job);
        let old = instances_of(c.positions.keys(), self.job, stage);
        if c.adopted.is_some() || old.is_empty() || old.len() == parallelism {
            return c.positions.get(&name).cloned();
        }
        if !by_partition {
            self.restore_errors.push(format!(
                "source {}/{stage}: the checkpoint holds the positions of {} instances, the job now has {parallelism}, and this source cannot merge positions",
                self.job,
                old.len()
            ));
            return None;
        }
        let mut merged = serde_json::Value::Null;
        for task in old {
            crate::actors::supervisor::merge_adopted_position(
                &mut merged,
                c.positions[task].clone(),
                None,
            );
        }
        Some(merged)
    }

    /// The checkpointed operator state of instance `subtask` of stage
    /// `stage` (now of `parallelism` instances), when restoring, if it was
    /// taken by an operator of type `operator` (a state of another type is
    /// recorded as a restore error, naming both). Taken at another
    /// parallelism (or by other copies of the job), the instance gets every
    /// old instance's state to split by key: by the keys its place in a
    /// keyed exchange (`keyed`) gives it.
    pub fn restored_state(
        &mut self,
        stage: &str,
        subtask: usize,
        parallelism: usize,
        keyed: bool,
        operator: &str,
    ) -> Option<RestoredState> {
        let c = self.restore.as_ref()?;
        let name = format!("{}/{stage}#{subtask}", self.job);
        let operator = crate::checkpoint::format::operator_signature(operator);
        let old: Vec<String> = instances_of(c.states.keys(), self.job, stage)
            .into_iter()
            .cloned()
            .collect();
        let (state, taken) = match &c.adopted {
            Some(a) => (
                RestoredState::Keys(a.states.get(&name)?.clone(), a.keys.clone()),
                vec![name],
            ),
            None if old.is_empty() => return None,
            None if old.len() == parallelism => (
                RestoredState::Whole(c.states.get(&name)?.clone()),
                vec![name],
            ),
            None => {
                let keys = keyed
                    .then(|| crate::pipeline::KeyGroups::new(parallelism, vec![subtask as i32]));
                let states = old.iter().map(|t| c.states[t].clone()).collect();
                (RestoredState::Keys(states, keys), old)
            }
        };
        let mut fits = true;
        for task in taken {
            if let Some(had) = c.operators.get(&task).filter(|had| **had != operator) {
                self.restore_errors.push(format!(
                    "task {task}: the checkpoint holds the state of operator {had}, the job now has {operator}"
                ));
                fits = false;
            }
            self.restored.insert(task);
        }
        fits.then_some(state)
    }

    /// What the restore did not fit: type mismatches, and states of tasks
    /// this job does not have (another graph or parallelism).
    pub(crate) fn restore_problems(&self) -> Vec<String> {
        let mut problems = self.restore_errors.clone();
        if let Some(c) = &self.restore {
            let adopted = c.adopted.iter().flat_map(|a| a.states.keys());
            for task in c.states.keys().chain(adopted) {
                if !self.restored.contains(task) {
                    problems.push(format!(
                        "task {task}: the checkpoint holds state for it, the job has no such task (another graph or parallelism)"
                    ));
                }
            }
        }
        problems
    }

    /// The batch size sources read and operators aim for.
    pub fn batch_size(&self) -> usize {
        self.config.batch_size
    }

    /// Credits of every operator and sink instance: batches in flight
    /// towards it, from all its senders together.
    pub fn mailbox(&self) -> usize {
        self.config.channel_capacity
    }

    /// Starts the actor `make()` on the arbiter of instance `subtask`, its
    /// mailbox created with [`Launch::mailbox`] capacity before the first
    /// message. Data messages are bounded by credits (see `edge`), which
    /// exist from the first batch on.
    pub fn start_bounded<A, F>(&self, subtask: usize, make: F) -> Addr<A>
    where
        A: Actor<Context = Context<A>>,
        F: FnOnce() -> A + Send + 'static,
    {
        let (tx, rx) = actix::dev::channel::channel(self.mailbox());
        self.arbiter(subtask).spawn_fn(move || {
            let ctx = Context::with_receiver(rx);
            actix::spawn(ctx.into_future(make()));
        });
        Addr::new(tx)
    }
}

/// The tasks of `stage` among `names` (`<job>/<stage>#<k>`), by instance.
fn instances_of<'a>(
    names: impl Iterator<Item = &'a String>,
    job: &str,
    stage: &str,
) -> Vec<&'a String> {
    let prefix = format!("{job}/{stage}#");
    let mut found: Vec<(usize, &String)> = names
        .filter_map(|n| Some((n.strip_prefix(&prefix)?.parse().ok()?, n)))
        .collect();
    found.sort();
    found.into_iter().map(|(_, n)| n).collect()
}
