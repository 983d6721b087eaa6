//! The sink actor: writes batches to an output and reports completion.
//!
//! Owns one sink instance's writer. It writes every batch it receives
//! (under `catch_unwind`), and when every input has ended it closes the
//! writer (flush) and reports `Finished` to the supervisor: a job is
//! finished only when all its sinks have flushed. It tells the writer
//! when its inputs' watermark advances and when they all go idle (a
//! repartition sink forwards event time downstream). Its input credits
//! (`channel_capacity` batches in flight) are where backpressure starts
//! when the output is slow.

use actix::{Actor, ActorContext, AsyncContext, Context, Handler};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::aligner::BarrierAligner;
use super::inputs::{SignalEffect, TaskInputs};
use super::messages::{Deliver, Stop, TaskEvent};
use super::task::{guarded, yield_arbiter, TaskActor, TaskHandle};
use crate::pipeline::{Batch, Signal, Sink, SinkWriter};

/// One instance of a sink stage.
pub struct SinkActor<S: Sink> {
    sink: Arc<S>,
    writer: Option<S::Writer>,
    task: TaskHandle,
    inputs: TaskInputs,
    done: bool,
    /// Inputs held at a barrier (exactly-once mode).
    aligner: BarrierAligner<S::In>,
    /// A `ReplayHeld` is on its way.
    replay_scheduled: bool,
    /// The sink's committer's progress, when its output commits with
    /// checkpoints: after barrier `n` the sink writes nothing more until
    /// checkpoint `n` committed.
    committed: Option<tokio::sync::watch::Receiver<u64>>,
}

/// Handle the next message the aligner held, now that its input flows.
#[derive(actix::Message)]
#[rtype(result = "()")]
struct ReplayHeld;

impl<S: Sink> SinkActor<S> {
    /// An instance with `inputs` upstream channels; opens its writer when
    /// started. `aligned` holds inputs that delivered a barrier until all
    /// have (exactly-once output: a checkpoint's writes are exactly the
    /// records before its barrier).
    pub fn new(sink: Arc<S>, task: TaskHandle, inputs: usize, aligned: bool) -> Self {
        SinkActor {
            sink,
            writer: None,
            task,
            inputs: TaskInputs::new(inputs),
            done: false,
            aligner: BarrierAligner::new(inputs, aligned),
            replay_scheduled: false,
            committed: None,
        }
    }

    /// Schedules the handling of held messages whose input flows again.
    fn schedule_replay(&mut self, ctx: &mut Context<Self>) {
        if !self.replay_scheduled && !self.done && self.aligner.has_ready() {
            self.replay_scheduled = true;
            ctx.notify(ReplayHeld);
        }
    }

    fn fail(&mut self, ctx: &mut Context<Self>, f: super::task::Failure) {
        self.done = true;
        self.task.fail(f, true);
        ctx.stop();
    }
}

// Actors are moved, never pinned structurally: no field relies on pinning.
impl<S: Sink> Unpin for SinkActor<S> {}

impl<S: Sink> Actor for SinkActor<S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.committed = self.sink.committer().map(|c| c.committed());
        let (sink, tctx) = (&self.sink, &self.task.ctx);
        match guarded(|| sink.open(tctx)) {
            Ok(w) => self.writer = Some(w),
            Err(f) => self.fail(ctx, f),
        }
    }
}

impl<S: Sink> TaskActor for SinkActor<S> {
    fn task(&self) -> &TaskHandle {
        &self.task
    }
}

impl<S: Sink> Handler<Deliver<S::In>> for SinkActor<S> {
    type Result = ();
    fn handle(&mut self, msg: Deliver<S::In>, ctx: &mut Context<Self>) {
        msg.consume(|input, batch, signal| {
            if !self.aligner.hold(input, batch, signal) {
                self.on_deliver(input, batch, signal, ctx)
            }
        });
        self.schedule_replay(ctx);
        if !self.done {
            yield_arbiter(ctx, &self.task);
        }
    }
}

impl<S: Sink> Handler<ReplayHeld> for SinkActor<S> {
    type Result = ();
    fn handle(&mut self, _: ReplayHeld, ctx: &mut Context<Self>) {
        self.replay_scheduled = false;
        if let Some((input, mut batch, signal)) = self.aligner.next_ready() {
            self.on_deliver(input, &mut batch, signal, ctx);
        }
        self.schedule_replay(ctx);
        if !self.done {
            yield_arbiter(ctx, &self.task);
        }
    }
}

impl<S: Sink> SinkActor<S> {
    fn on_deliver(
        &mut self,
        input: usize,
        batch: &mut Batch<S::In>,
        signal: Signal,
        ctx: &mut Context<Self>,
    ) {
        if self.done {
            return;
        }
        let Some(writer) = self.writer.as_mut() else {
            return;
        };
        if !batch.is_empty() {
            let m = &self.task.ctx.metrics;
            let n = batch.len() as u64;
            if let Err(f) = guarded(|| writer.write(batch)) {
                return self.fail(ctx, f);
            }
            m.records_in.fetch_add(n, Relaxed);
            m.records_out.fetch_add(n, Relaxed);
            m.batches_in.fetch_add(1, Relaxed);
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
        if let Some(w) = advanced {
            self.task.ctx.metrics.watermark.store(w, Relaxed);
            let writer = self.writer.as_mut().expect("writer is open");
            if let Err(f) = guarded(|| writer.watermark(w)) {
                return self.fail(ctx, f);
            }
        } else if signal == Signal::Idle && self.inputs.all_idle() {
            let writer = self.writer.as_mut().expect("writer is open");
            if let Err(f) = guarded(|| writer.idle()) {
                return self.fail(ctx, f);
            }
        }
        if let Some(id) = barrier.filter(|_| !self.inputs.all_ended()) {
            // Everything before the barrier was written: make it durable.
            let writer = self.writer.as_mut().expect("writer is open");
            if let Err(f) = guarded(|| writer.flush()) {
                return self.fail(ctx, f);
            }
            self.task.report(TaskEvent::SinkCheckpointed {
                attempt: self.task.ctx.attempt,
                id,
            });
            if let Some(committed) = self.committed.clone() {
                // Two-phase commit: the next epoch's records wait for this
                // one's commit (handling nothing meanwhile: backpressure).
                // A failed commit restarts the job, which stops this actor.
                let mut committed = committed;
                ctx.wait(actix::fut::wrap_future(async move {
                    let _ = committed.wait_for(|c| *c >= id).await;
                }));
            }
        }
        if self.inputs.all_ended() {
            let writer = self.writer.as_mut().expect("writer is open");
            if let Err(f) = guarded(|| writer.close()) {
                return self.fail(ctx, f);
            }
            self.done = true;
            self.task.finished();
            ctx.stop();
        }
    }
}

impl<S: Sink> Handler<Stop> for SinkActor<S> {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.done = true;
        ctx.stop();
    }
}
