//! The operator actor: receives batches from its inputs, runs the fused
//! chain, emits.
//!
//! Owns one instance of a stage fed by an exchange (hash by key, or
//! round-robin). It merges its inputs' watermarks (minimum over live,
//! non-idle inputs), lets the chain fire windows when the watermark moves,
//! and sends end-of-input once every input has ended. At most
//! `channel_capacity` batches are in flight towards it (credits, see
//! `edge`); it never handles a new batch while its own output is blocked.

use actix::{Actor, ActorContext, AsyncContext, Context, Handler};
use std::sync::atomic::Ordering::Relaxed;

use super::aligner::BarrierAligner;
use super::edge::{Edge, Partitioner};
use super::inputs::{SignalEffect, TaskInputs};
use super::launch::RestoredState;
use super::messages::{Deliver, Stop, TaskEvent};
use super::task::{after_emit, guarded, yield_arbiter, TaskActor, TaskHandle};
use crate::pipeline::{Batch, Operator, Signal, MAX_WATERMARK};

/// One instance of an operator stage.
pub struct OperatorActor<Op: Operator, P> {
    op: Op,
    edge: Edge<Op::Out, P>,
    task: TaskHandle,
    inputs: TaskInputs,
    restore: Option<RestoredState>,
    out: Batch<Op::Out>,
    done: bool,
    /// Inputs held at a barrier (exactly-once mode).
    aligner: BarrierAligner<Op::In>,
    /// A `ReplayHeld` is on its way.
    replay_scheduled: bool,
}

/// Handle the next message the aligner held, now that its input flows.
#[derive(actix::Message)]
#[rtype(result = "()")]
struct ReplayHeld;

impl<Op: Operator, P: Partitioner<Op::Out>> OperatorActor<Op, P> {
    /// An instance with `inputs` upstream channels, restoring `restore`
    /// (a checkpointed snapshot of its operator) when started; `aligned`
    /// holds inputs that delivered a barrier until all have (exactly-once).
    pub fn new(
        op: Op,
        edge: Edge<Op::Out, P>,
        task: TaskHandle,
        inputs: usize,
        restore: Option<RestoredState>,
        aligned: bool,
    ) -> Self {
        OperatorActor {
            op,
            edge,
            task,
            inputs: TaskInputs::new(inputs),
            restore,
            out: Batch::new(),
            done: false,
            aligner: BarrierAligner::new(inputs, aligned),
            replay_scheduled: false,
        }
    }

    /// Schedules the handling of held messages whose input flows again.
    fn schedule_replay(&mut self, ctx: &mut Context<Self>) {
        if !self.replay_scheduled && !self.done && self.aligner.has_ready() {
            self.replay_scheduled = true;
            ctx.notify(ReplayHeld);
        }
    }

    fn on_deliver(
        &mut self,
        input: usize,
        batch: &mut Batch<Op::In>,
        signal: Signal,
        ctx: &mut Context<Self>,
    ) {
        if self.done {
            return;
        }
        let m = self.task.ctx.metrics.clone();
        if !batch.is_empty() {
            m.records_in.fetch_add(batch.len() as u64, Relaxed);
            m.batches_in.fetch_add(1, Relaxed);
            self.inputs.on_data(input);
            let (op, out) = (&mut self.op, &mut self.out);
            if let Err(f) = guarded(|| op.process(batch, out)) {
                self.done = true;
                self.task.fail(f, false);
                return ctx.stop();
            }
        }
        let SignalEffect {
            watermark: advanced,
            barrier,
        } = self.inputs.on_signal(input, signal);
        if barrier.is_some() {
            self.aligner.release();
        } else if matches!(signal, Signal::Barrier(_)) {
            self.aligner.block(input);
        }
        let ended = self.inputs.all_ended();
        let mut out_signal = Signal::None;
        if ended {
            out_signal = Signal::End;
        } else if let Some(w) = advanced {
            out_signal = Signal::Watermark(w);
        } else if signal == Signal::Idle && self.inputs.all_idle() {
            out_signal = Signal::Idle;
        }
        let fire = if ended { Some(MAX_WATERMARK) } else { advanced };
        if let Some(w) = fire {
            m.watermark.store(w, Relaxed);
            let (op, out) = (&mut self.op, &mut self.out);
            if let Err(f) = guarded(|| op.on_watermark(w, out)) {
                self.done = true;
                self.task.fail(f, false);
                return ctx.stop();
            }
        }
        if !self.out.is_empty() {
            m.records_out.fetch_add(self.out.len() as u64, Relaxed);
            m.batches_out.fetch_add(1, Relaxed);
        }
        if let Some(id) = barrier.filter(|_| !ended) {
            // Records before the barrier are in `out` or already processed:
            // send them, snapshot, then pass the barrier on.
            let sent = self.edge.emit(&mut self.out, Signal::None);
            let snapshot = {
                let op = &self.op;
                guarded(|| op.snapshot())
            };
            match snapshot {
                Ok(state) => {
                    if !state.is_empty() {
                        self.task.report(TaskEvent::OperatorSnapshot {
                            attempt: self.task.ctx.attempt,
                            id,
                            task: self.task.ctx.task_name(),
                            operator: std::any::type_name::<Op>(),
                            state,
                        });
                    }
                }
                Err(f) => {
                    self.done = true;
                    self.task.fail(f, false);
                    return ctx.stop();
                }
            }
            return after_emit(self, ctx, sent, move |act, ctx| {
                let sent = act.edge.emit(&mut act.out, Signal::Barrier(id));
                // The watermark (or idleness) this message also brought
                // follows the barrier, even when the barrier had to wait.
                after_emit(act, ctx, sent, move |act, ctx| {
                    if out_signal != Signal::None {
                        let sent = act.edge.emit(&mut act.out, out_signal);
                        after_emit(act, ctx, sent, |_, _| {});
                    }
                });
            });
        }
        let sent = self.edge.emit(&mut self.out, out_signal);
        if ended {
            self.done = true;
            after_emit(self, ctx, sent, |_, ctx| ctx.stop());
        } else {
            after_emit(self, ctx, sent, |_, _| {});
        }
    }
}

// Actors are moved, never pinned structurally: no field relies on pinning.
impl<Op: Operator, P> Unpin for OperatorActor<Op, P> {}

impl<Op: Operator, P: Partitioner<Op::Out>> Actor for OperatorActor<Op, P> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(state) = self.restore.take() {
            let op = &mut self.op;
            let restored = guarded(|| match &state {
                RestoredState::Whole(s) => op.restore(s),
                RestoredState::Keys(states, keys) => op.restore_keys(states, keys.as_ref()),
            });
            if let Err(f) = restored {
                self.done = true;
                self.task.fail(f, false);
                return ctx.stop();
            }
        }
        let (op, tctx) = (&mut self.op, &self.task.ctx);
        if let Err(f) = guarded(|| op.open(tctx)) {
            self.done = true;
            self.task.fail(f, false);
            ctx.stop();
        }
    }
}

impl<Op: Operator, P: Partitioner<Op::Out>> TaskActor for OperatorActor<Op, P> {
    fn task(&self) -> &TaskHandle {
        &self.task
    }
}

impl<Op: Operator, P: Partitioner<Op::Out>> Handler<Deliver<Op::In>> for OperatorActor<Op, P> {
    type Result = ();
    fn handle(&mut self, msg: Deliver<Op::In>, ctx: &mut Context<Self>) {
        msg.consume(|input, batch, signal| {
            if !self.aligner.hold(input, batch, signal) {
                self.on_deliver(input, batch, signal, ctx)
            }
        });
        self.schedule_replay(ctx);
        yield_arbiter(ctx, &self.task);
    }
}

impl<Op: Operator, P: Partitioner<Op::Out>> Handler<ReplayHeld> for OperatorActor<Op, P> {
    type Result = ();
    fn handle(&mut self, _: ReplayHeld, ctx: &mut Context<Self>) {
        self.replay_scheduled = false;
        if let Some((input, mut batch, signal)) = self.aligner.next_ready() {
            self.on_deliver(input, &mut batch, signal, ctx);
        }
        self.schedule_replay(ctx);
        yield_arbiter(ctx, &self.task);
    }
}

impl<Op: Operator, P: Partitioner<Op::Out>> Handler<Stop> for OperatorActor<Op, P> {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.done = true;
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::edge::{Forward, Outputs};
    use crate::pipeline::{Map, TaskContext};
    use actix::{Addr, MessageResult};
    use std::time::Duration;

    /// Downstream stand-in: records the signal of every message in arrival order and keeps
    /// the messages (so their credits stay taken) until released.
    #[derive(Default)]
    struct Holder {
        held: Vec<Deliver<u64>>,
        signals: Vec<Signal>,
    }

    impl Actor for Holder {
        type Context = Context<Self>;
    }

    impl Handler<Deliver<u64>> for Holder {
        type Result = ();
        fn handle(&mut self, msg: Deliver<u64>, _: &mut Context<Self>) {
            self.signals.push(msg.signal);
            self.held.push(msg);
        }
    }

    /// Drops the held messages (their credits return) and answers the signals seen so far.
    #[derive(actix::Message)]
    #[rtype(result = "Vec<Signal>")]
    struct Release;

    impl Handler<Release> for Holder {
        type Result = MessageResult<Release>;
        fn handle(&mut self, _: Release, _: &mut Context<Self>) -> Self::Result {
            self.held.clear();
            MessageResult(self.signals.clone())
        }
    }

    type Pass = Map<fn(u64) -> u64, u64, u64>;
    type PassActor = OperatorActor<Pass, Forward>;

    struct Events;

    impl Actor for Events {
        type Context = Context<Self>;
    }

    impl Handler<TaskEvent> for Events {
        type Result = ();
        fn handle(&mut self, _: TaskEvent, _: &mut Context<Self>) {}
    }

    async fn deliver(to: &Addr<PassActor>, input: usize, signal: Signal) {
        to.send(Deliver {
            input,
            batch: Batch::new(),
            signal,
            credit: None,
        })
        .await
        .expect("operator alive");
    }

    /// Releases the holder until it has seen `n` signals (or 2 s passed).
    async fn signals_after_release(holder: &Addr<Holder>, n: usize) -> Vec<Signal> {
        let start = std::time::Instant::now();
        loop {
            let seen = holder.send(Release).await.expect("holder alive");
            if seen.len() >= n || start.elapsed() > Duration::from_secs(2) {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An input that ends completes a barrier the others already sent and moves the
    /// watermark in one step. When the barrier cannot be sent at once (no credit), the
    /// watermark must still follow it once it is: it used to be dropped on that path.
    #[actix::test]
    async fn watermark_with_a_completing_barrier_follows_it_when_the_output_is_full() {
        let holder = Holder::default().start();
        let events = Events.start();
        // One credit towards the holder: the second message waits for the first's release.
        let outputs = Outputs::new(vec![holder.clone().recipient()], Forward, false, 1);
        let op: Pass = Map::new(|x| x);
        let task = TaskHandle::new(TaskContext::detached("op"), events.recipient());
        let actor = OperatorActor::new(op, outputs.edge(0), task, 2, None, false).start();

        deliver(&actor, 0, Signal::Watermark(100)).await;
        deliver(&actor, 1, Signal::Watermark(50)).await; // min 50: sent, holds the credit
        deliver(&actor, 0, Signal::Barrier(1)).await; // waits for input 1's barrier
        deliver(&actor, 1, Signal::End).await; // barrier 1 complete, watermark 100: blocked
        let seen = signals_after_release(&holder, 3).await;
        assert_eq!(
            seen,
            vec![
                Signal::Watermark(50),
                Signal::Barrier(1),
                Signal::Watermark(100)
            ]
        );
    }
}
