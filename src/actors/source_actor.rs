//! The source actor: reads batches, runs the fused operator chain, emits.
//!
//! Owns the read loop of one source instance. It pumps itself with a
//! [`Pump`] message per batch, so control messages ([`Drain`], [`Stop`])
//! interleave with reading, and it reads the next batch only after the
//! previous one was accepted downstream (backpressure). It generates
//! watermarks from the records' timestamps and declares idleness. Never
//! blocks its arbiter: a source with nothing to read is polled again later.

use actix::{Actor, ActorContext, AsyncContext, Context, Handler};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::edge::{Edge, Partitioner};
use super::messages::{Drain, Pump, Stop};
use super::task::{after_emit, guarded, Failure, TaskActor, TaskHandle};
use crate::pipeline::{
    Batch, Operator, Signal, Source, SourceReader, SourceStatus, WatermarkGenerator, MAX_WATERMARK,
};

/// One instance of a source stage.
pub struct SourceActor<S: Source, Op: Operator<In = S::Out>, P> {
    source: Arc<S>,
    reader: Option<S::Reader>,
    op: Op,
    edge: Edge<Op::Out, P>,
    task: TaskHandle,
    watermarks: WatermarkGenerator,
    batch_size: usize,
    input: Batch<S::Out>,
    out: Batch<Op::Out>,
    draining: bool,
    finished: bool,
}

impl<S, Op, P> SourceActor<S, Op, P>
where
    S: Source,
    Op: Operator<In = S::Out>,
    P: Partitioner<Op::Out>,
{
    /// A source instance; it opens its reader when started.
    pub fn new(
        source: Arc<S>,
        op: Op,
        edge: Edge<Op::Out, P>,
        task: TaskHandle,
        watermarks: WatermarkGenerator,
        batch_size: usize,
    ) -> Self {
        SourceActor {
            source,
            reader: None,
            op,
            edge,
            task,
            watermarks,
            batch_size,
            input: Batch::with_capacity(batch_size),
            out: Batch::with_capacity(batch_size),
            draining: false,
            finished: false,
        }
    }

    fn fail(&mut self, ctx: &mut Context<Self>, f: Failure, connector: bool) {
        self.finished = true;
        self.task.fail(f, connector);
        ctx.stop();
    }

    /// Ends the stream: fires what the chain holds and sends end-of-input.
    fn finish(&mut self, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let (op, out) = (&mut self.op, &mut self.out);
        if let Err(f) = guarded(|| op.on_watermark(MAX_WATERMARK, out)) {
            return self.fail(ctx, f, false);
        }
        let n = self.out.len() as u64;
        self.task.ctx.metrics.records_out.fetch_add(n, Relaxed);
        let sent = self.edge.emit(&mut self.out, Signal::End);
        after_emit(self, ctx, sent, |_, ctx| ctx.stop());
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        if self.draining {
            return self.finish(ctx);
        }
        let Some(reader) = self.reader.as_mut() else {
            return;
        };
        let (input, max) = (&mut self.input, self.batch_size);
        let status = match guarded(|| reader.poll(input, max)) {
            Ok(s) => s,
            Err(f) => return self.fail(ctx, f, true),
        };
        let mut signal = Signal::None;
        if !self.input.is_empty() {
            let m = &self.task.ctx.metrics;
            m.records_in.fetch_add(self.input.len() as u64, Relaxed);
            m.batches_in.fetch_add(1, Relaxed);
            if let Some(wm) = self.watermarks.on_batch(&self.input.timestamps) {
                signal = Signal::Watermark(wm);
            }
            let (op, input, out) = (&mut self.op, &mut self.input, &mut self.out);
            if let Err(f) = guarded(|| op.process(input, out)) {
                return self.fail(ctx, f, false);
            }
            if let Signal::Watermark(wm) = signal {
                let (op, out) = (&mut self.op, &mut self.out);
                if let Err(f) = guarded(|| op.on_watermark(wm, out)) {
                    return self.fail(ctx, f, false);
                }
                m.watermark.store(wm, Relaxed);
            }
        } else if matches!(status, SourceStatus::Idle(_)) && self.watermarks.check_idle() {
            signal = Signal::Idle;
        }
        match status {
            SourceStatus::Finished => {
                // Send what this poll produced, then end.
                self.send(ctx, signal, |act, ctx| act.finish(ctx));
            }
            SourceStatus::Ready => self.send(ctx, signal, |_, ctx| {
                ctx.notify(Pump);
            }),
            SourceStatus::Idle(after) => self.send(ctx, signal, move |_, ctx| {
                ctx.notify_later(Pump, after);
            }),
        }
    }

    fn send(&mut self, ctx: &mut Context<Self>, signal: Signal, then: impl FnOnce(&mut Self, &mut Context<Self>) + 'static) {
        if !self.out.is_empty() {
            let m = &self.task.ctx.metrics;
            m.records_out.fetch_add(self.out.len() as u64, Relaxed);
            m.batches_out.fetch_add(1, Relaxed);
        }
        let sent = self.edge.emit(&mut self.out, signal);
        after_emit(self, ctx, sent, then);
    }
}

// Actors are moved, never pinned structurally: no field relies on pinning.
impl<S: Source, Op: Operator<In = S::Out>, P> Unpin for SourceActor<S, Op, P> {}

impl<S, Op, P> Actor for SourceActor<S, Op, P>
where
    S: Source,
    Op: Operator<In = S::Out>,
    P: Partitioner<Op::Out>,
{
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (source, tctx) = (&self.source, &self.task.ctx);
        match guarded(|| source.open(tctx)) {
            Ok(r) => self.reader = Some(r),
            Err(f) => return self.fail(ctx, f, true),
        }
        let (op, tctx) = (&mut self.op, &self.task.ctx);
        if let Err(f) = guarded(|| op.open(tctx)) {
            return self.fail(ctx, f, false);
        }
        ctx.notify(Pump);
    }
}

impl<S, Op, P> TaskActor for SourceActor<S, Op, P>
where
    S: Source,
    Op: Operator<In = S::Out>,
    P: Partitioner<Op::Out>,
{
    fn task(&self) -> &TaskHandle {
        &self.task
    }
}

impl<S, Op, P> Handler<Pump> for SourceActor<S, Op, P>
where
    S: Source,
    Op: Operator<In = S::Out>,
    P: Partitioner<Op::Out>,
{
    type Result = ();
    fn handle(&mut self, _: Pump, ctx: &mut Context<Self>) {
        self.pump(ctx);
    }
}

impl<S, Op, P> Handler<Drain> for SourceActor<S, Op, P>
where
    S: Source,
    Op: Operator<In = S::Out>,
    P: Partitioner<Op::Out>,
{
    type Result = ();
    fn handle(&mut self, _: Drain, _ctx: &mut Context<Self>) {
        self.draining = true;
    }
}

impl<S, Op, P> Handler<Stop> for SourceActor<S, Op, P>
where
    S: Source,
    Op: Operator<In = S::Out>,
    P: Partitioner<Op::Out>,
{
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.finished = true;
        ctx.stop();
    }
}
