//! The source actor: reads batches, runs the fused operator chain, emits.
//!
//! Owns the read loop of one source instance. It pumps itself with a
//! [`Pump`] message per batch, so supervisor commands ([`SourceCommand`],
//! [`Stop`]) interleave with reading, and it reads the next batch only after
//! the previous one was accepted downstream (backpressure). It generates
//! watermarks (or takes the reader's own), declares idleness, injects
//! checkpoint barriers with the position they cover, and commits a position
//! only when the supervisor says its checkpoint completed. Never blocks its
//! arbiter: a source with nothing to read is polled again later. A
//! record-at-a-time chain feeding a two-way keyed edge writes straight into
//! the edge's parts ([`Edge::two_way_writer`]); everything a poll staged
//! there is emitted before the next poll or command.

use actix::{Actor, ActorContext, AsyncContext, Context, Handler};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::edge::{Edge, Partitioner};
use super::messages::{Pump, SourceCommand, Stop, TaskEvent};
use super::task::{after_emit, guarded, yield_arbiter, Failure, TaskActor, TaskHandle};
use crate::pipeline::WatermarkAlignment;
use crate::pipeline::{
    operator::{BatchWriter, ChainEmit},
    Batch, ConnectorError, Operator, ReaderWatermark, Signal, Source, SourceReader, SourceStatus,
    Timestamp, WatermarkGenerator, MAX_WATERMARK,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Reading,
    /// Draining, but the reader still emits what it already took in.
    DrainingBuffered,
    Draining,
    /// End-of-input sent; waiting for `CommitFinal`.
    Ended,
    /// Stopped with a savepoint: its barrier went out, nothing more is read
    /// and no end-of-input follows; waiting to commit it and be stopped.
    Suspended,
    Stopped,
}

/// How a source instance reads: batch size, watermarks, where to resume.
pub struct SourceSetup {
    /// The instance's watermark generator.
    pub watermarks: WatermarkGenerator,
    /// Alignment with the stage's other instances, if on.
    pub alignment: Option<WatermarkAlignment>,
    /// Records per poll.
    pub batch_size: usize,
    /// The checkpointed position to seek to, when restoring.
    pub restore: Option<serde_json::Value>,
}

/// One instance of a source stage.
pub struct SourceActor<S: Source, Op: Operator<In = S::Out>, P> {
    source: Arc<S>,
    reader: Option<S::Reader>,
    restore: Option<serde_json::Value>,
    op: Op,
    edge: Edge<Op::Out, P>,
    task: TaskHandle,
    watermarks: WatermarkGenerator,
    alignment: Option<WatermarkAlignment>,
    emitted_wm: Timestamp,
    /// The reader said [`ReaderWatermark::Idle`] and `Signal::Idle` went
    /// out; cleared when it delivers or holds again.
    reader_idle: bool,
    batch_size: usize,
    input: Batch<S::Out>,
    out: Batch<Op::Out>,
    phase: Phase,
    /// An emission is waiting for credits: nothing else may be emitted (or
    /// read) before it goes out.
    blocked: bool,
    /// A `Pump` arrived while `blocked`; run it once the emission is out.
    pump_deferred: bool,
    /// Checkpoints triggered while `blocked`; taken once the emission is out.
    barrier_deferred: Vec<u64>,
    /// Positions recorded at barriers, oldest first.
    pending: Vec<(u64, serde_json::Value)>,
    final_position: Option<serde_json::Value>,
    /// Stop reading once the barrier of this checkpoint is out (savepoint).
    suspend_at: Option<u64>,
}

// Actors are moved, never pinned structurally: no field relies on pinning.
impl<S: Source, Op: Operator<In = S::Out>, P> Unpin for SourceActor<S, Op, P> {}

impl<S, Op, P> SourceActor<S, Op, P>
where
    S: Source,
    Op: Operator<In = S::Out>,
    P: Partitioner<Op::Out>,
{
    /// A source instance; it opens its reader (and seeks to the restored
    /// position) when started.
    pub fn new(
        source: Arc<S>,
        op: Op,
        edge: Edge<Op::Out, P>,
        task: TaskHandle,
        setup: SourceSetup,
    ) -> Self {
        let SourceSetup {
            watermarks,
            alignment,
            batch_size,
            restore,
        } = setup;
        SourceActor {
            alignment,
            source,
            reader: None,
            restore,
            op,
            edge,
            task,
            watermarks,
            emitted_wm: i64::MIN,
            reader_idle: false,
            batch_size,
            input: Batch::with_capacity(batch_size),
            out: Batch::with_capacity(batch_size),
            phase: Phase::Reading,
            blocked: false,
            pump_deferred: false,
            barrier_deferred: Vec::new(),
            pending: Vec::new(),
            final_position: None,
            suspend_at: None,
        }
    }

    fn fail(&mut self, ctx: &mut Context<Self>, f: Failure, connector: bool) {
        self.phase = Phase::Stopped;
        self.task.fail(f, connector);
        ctx.stop();
    }

    /// Ends the stream: fires what the chain holds and sends end-of-input,
    /// then waits for `CommitFinal`.
    fn finish(&mut self, ctx: &mut Context<Self>) {
        if !matches!(
            self.phase,
            Phase::Reading | Phase::DrainingBuffered | Phase::Draining
        ) {
            return;
        }
        self.phase = Phase::Ended;
        if let Some(a) = &self.alignment {
            a.withdraw(self.task.ctx.subtask);
        }
        self.final_position = self.reader.as_ref().and_then(|r| r.position());
        self.task.report(TaskEvent::SourceEnded {
            attempt: self.task.ctx.attempt,
            task: self.task.ctx.task_name(),
            position: self.final_position.clone(),
        });
        let (op, out) = (&mut self.op, &mut self.out);
        if let Err(f) = guarded(|| op.on_watermark(MAX_WATERMARK, out)) {
            return self.fail(ctx, f, false);
        }
        self.send(ctx, Signal::End, |_, _| {});
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.blocked {
            // actix may run a queued `Pump` while a wait started by a mailbox
            // handler (e.g. a blocked barrier) is pending: reading now would
            // put records ahead of that barrier. Run it after the emission.
            self.pump_deferred = true;
            return;
        }
        match self.phase {
            Phase::Reading | Phase::DrainingBuffered => {}
            Phase::Draining => return self.finish(ctx),
            Phase::Ended | Phase::Suspended | Phase::Stopped => return,
        }
        if let Some(a) = &self.alignment {
            let seen = a.reports();
            if self.phase == Phase::Reading
                && a.should_pause(self.task.ctx.subtask, self.emitted_wm)
            {
                // Too far ahead of the slowest instance: wait for it to
                // make progress (any report since `seen`), then try again.
                let progress = a.progress_since(seen, std::time::Duration::from_millis(5));
                ctx.wait(actix::fut::wrap_future(progress));
                ctx.notify(Pump);
                return;
            }
        }
        let Some(reader) = self.reader.as_mut() else {
            return;
        };
        let max = self.batch_size;
        let mut signal = Signal::None;
        let mut wm = None;
        let (status, n) = if Op::RECORD_AT_A_TIME {
            // Fused: the reader hands records straight to the chain, whose
            // output goes straight into the edge's parts when the edge can
            // route record by record (no intermediate batch, no split).
            let (op, input, out, edge) =
                (&mut self.op, &mut self.input, &mut self.out, &mut self.edge);
            let polled = if edge.routes_two_way() {
                guarded(|| poll_into_parts(reader, op, input, edge, max))
            } else {
                guarded(|| poll_into_batch(reader, op, input, out, max))
            };
            match polled {
                Ok(r) => r,
                Err(f) => return self.fail(ctx, f, true),
            }
        } else {
            let input = &mut self.input;
            let status = match guarded(|| reader.poll(input, max)) {
                Ok(s) => s,
                Err(f) => return self.fail(ctx, f, true),
            };
            (status, self.input.len())
        };
        let own = reader.watermark();
        if n > 0 {
            let m = &self.task.ctx.metrics;
            m.records_in.fetch_add(n as u64, Relaxed);
            m.batches_in.fetch_add(1, Relaxed);
            if !Op::RECORD_AT_A_TIME {
                if own == ReaderWatermark::Derived {
                    // Before the chain consumes the batch read.
                    wm = self.watermarks.on_batch(&self.input.timestamps);
                }
                let (op, input, out) = (&mut self.op, &mut self.input, &mut self.out);
                if let Err(f) = guarded(|| op.process(input, out)) {
                    return self.fail(ctx, f, false);
                }
            }
        }
        match own {
            // A reader that tracks its parts: its word is final. A part that
            // has not delivered holds the watermark (never the batch's
            // timestamps of the parts that have: that made a backlog read
            // partition by partition late from its first record).
            ReaderWatermark::At(w) => wm = Some(w),
            ReaderWatermark::Held => {}
            ReaderWatermark::Idle => {
                if n == 0 && !self.reader_idle {
                    self.reader_idle = true;
                    signal = Signal::Idle;
                }
            }
            ReaderWatermark::Derived if n > 0 => {
                if Op::RECORD_AT_A_TIME {
                    // The chain's output is in `out` or already in the
                    // edge's parts (which were empty before this poll).
                    let mut generated = self.watermarks.on_batch(&self.out.timestamps);
                    for staged in self.edge.staged_timestamps() {
                        generated = self.watermarks.on_batch(staged).or(generated);
                    }
                    wm = generated;
                }
            }
            ReaderWatermark::Derived => {
                if matches!(status, SourceStatus::Idle(_)) && self.watermarks.check_idle() {
                    signal = Signal::Idle;
                }
            }
        }
        if n > 0 || !matches!(own, ReaderWatermark::Idle) {
            self.reader_idle = false;
        }
        if signal == Signal::Idle {
            if let Some(a) = &self.alignment {
                a.withdraw(self.task.ctx.subtask);
            }
        }
        if let Some(w) = wm.filter(|w| *w > self.emitted_wm) {
            self.emitted_wm = w;
            if let Some(a) = &self.alignment {
                a.report(self.task.ctx.subtask, w);
            }
            signal = Signal::Watermark(w);
            self.task.ctx.metrics.watermark.store(w, Relaxed);
            let (op, out) = (&mut self.op, &mut self.out);
            if let Err(f) = guarded(|| op.on_watermark(w, out)) {
                return self.fail(ctx, f, false);
            }
        }
        match status {
            SourceStatus::Finished => self.send(ctx, signal, |act, ctx| act.finish(ctx)),
            // Yield to the arbiter before the next batch: a self-notified
            // actor is otherwise polled again at once and would keep its
            // thread from the operators placed on it.
            SourceStatus::Ready => self.send(ctx, signal, |act, ctx| {
                yield_arbiter(ctx, &act.task);
                ctx.notify(Pump);
            }),
            SourceStatus::Idle(after) => self.send(ctx, signal, move |_, ctx| {
                ctx.notify_later(Pump, after);
            }),
        }
    }

    fn send(
        &mut self,
        ctx: &mut Context<Self>,
        signal: Signal,
        then: impl FnOnce(&mut Self, &mut Context<Self>) + 'static,
    ) {
        let records_out = self.out.len() + self.edge.staged();
        if records_out > 0 {
            let m = &self.task.ctx.metrics;
            m.records_out.fetch_add(records_out as u64, Relaxed);
            m.batches_out.fetch_add(1, Relaxed);
        }
        let sent = self.edge.emit(&mut self.out, signal);
        if matches!(sent, Ok(Some(_))) {
            self.blocked = true;
            after_emit(self, ctx, sent, move |act, ctx| {
                act.blocked = false;
                then(act, ctx);
                for id in std::mem::take(&mut act.barrier_deferred) {
                    ctx.notify(SourceCommand::TriggerCheckpoint(id));
                }
                if std::mem::take(&mut act.pump_deferred) {
                    ctx.notify(Pump);
                }
            });
        } else {
            after_emit(self, ctx, sent, then);
        }
    }

    fn checkpoint(&mut self, id: u64, ctx: &mut Context<Self>) {
        if self.phase != Phase::Reading {
            return;
        }
        if self.blocked {
            // Same rule as for `Pump`: the barrier must follow what is
            // waiting to be sent. (actix does not handle mailbox messages
            // during a wait, so this is a guard, not the usual path.)
            self.barrier_deferred.push(id);
            return;
        }
        let position = self.reader.as_ref().and_then(|r| r.position());
        if let Some(p) = &position {
            self.pending.push((id, p.clone()));
        }
        self.task.report(TaskEvent::SourceCheckpointed {
            attempt: self.task.ctx.attempt,
            id,
            task: self.task.ctx.task_name(),
            position,
        });
        // `out` is always empty between pumps: the barrier follows every
        // record read before the position was taken.
        self.send(ctx, Signal::Barrier(id), |_, _| {});
        if self.suspend_at == Some(id) {
            self.phase = Phase::Suspended;
            if let Some(a) = &self.alignment {
                a.withdraw(self.task.ctx.subtask);
            }
        }
    }

    fn commit(&mut self, position: &serde_json::Value) {
        if let Some(reader) = self.reader.as_mut() {
            if let Err(e) = guarded(|| reader.commit(position)) {
                let msg = match e {
                    Failure::Panic(m) => m,
                    Failure::Error(ConnectorError(m)) => m,
                };
                // A failed commit loses nothing: a later one covers it, and a
                // restart resumes from the checkpoint's position.
                tracing::warn!(task = %self.task.ctx.task_name(), error = %msg, "commit failed");
            }
        }
    }
}

impl<S, Op, P> Actor for SourceActor<S, Op, P>
where
    S: Source,
    Op: Operator<In = S::Out>,
    P: Partitioner<Op::Out>,
{
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (source, tctx) = (&self.source, &self.task.ctx);
        let mut reader = match guarded(|| source.open(tctx)) {
            Ok(r) => r,
            Err(f) => return self.fail(ctx, f, true),
        };
        if let Some(pos) = self.restore.take() {
            if let Err(f) = guarded(|| reader.seek(&pos)) {
                return self.fail(ctx, f, true);
            }
        }
        self.reader = Some(reader);
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

impl<S, Op, P> Handler<SourceCommand> for SourceActor<S, Op, P>
where
    S: Source,
    Op: Operator<In = S::Out>,
    P: Partitioner<Op::Out>,
{
    type Result = ();
    fn handle(&mut self, cmd: SourceCommand, ctx: &mut Context<Self>) {
        match cmd {
            SourceCommand::Drain => {
                if self.phase == Phase::Reading {
                    let now = self.reader.as_mut().is_none_or(|r| r.drain());
                    self.phase = if now {
                        Phase::Draining
                    } else {
                        Phase::DrainingBuffered
                    };
                }
            }
            SourceCommand::TriggerCheckpoint(id) => self.checkpoint(id, ctx),
            SourceCommand::StopWithCheckpoint(id) => {
                self.suspend_at = Some(id);
                self.checkpoint(id, ctx);
            }
            SourceCommand::CheckpointComplete(id) => {
                let upto = self.pending.iter().rposition(|(pid, _)| *pid <= id);
                if let Some(i) = upto {
                    let (_, pos) = self.pending[i].clone();
                    self.pending.drain(..=i);
                    self.commit(&pos);
                }
            }
            SourceCommand::CommitFinal => {
                if self.phase == Phase::Ended {
                    if let Some(pos) = self.final_position.take() {
                        self.commit(&pos);
                    }
                    self.task.report(TaskEvent::SourceCommitted {
                        attempt: self.task.ctx.attempt,
                    });
                    self.phase = Phase::Stopped;
                    ctx.stop();
                }
            }
        }
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
        self.phase = Phase::Stopped;
        ctx.stop();
    }
}

/// The fused read into the chain and on into `out`. One function per
/// destination, never inlined into the handler, each building its writer
/// itself: sharing one body made the generator loop at parallelism 1 about
/// 40 % slower, and one generic body taking the writer from its caller
/// (so the writer lives in the caller's frame) about 5 % slower.
#[inline(never)]
fn poll_into_batch<R, Op>(
    reader: &mut R,
    op: &mut Op,
    input: &mut Batch<R::Out>,
    out: &mut Batch<Op::Out>,
    max: usize,
) -> Result<(SourceStatus, usize), ConnectorError>
where
    R: SourceReader,
    Op: Operator<In = R::Out>,
{
    let mut w = BatchWriter::new(out, max);
    let mut chain = ChainEmit::new(op, &mut w);
    reader.poll_into(input, &mut chain, max)
}

/// The fused read into the chain and on straight into the edge's two parts
/// (see [`Edge::two_way_writer`]).
#[inline(never)]
fn poll_into_parts<R, Op, P>(
    reader: &mut R,
    op: &mut Op,
    input: &mut Batch<R::Out>,
    edge: &mut Edge<Op::Out, P>,
    max: usize,
) -> Result<(SourceStatus, usize), ConnectorError>
where
    R: SourceReader,
    Op: Operator<In = R::Out>,
    P: Partitioner<Op::Out>,
{
    let Some(mut w) = edge.two_way_writer(max) else {
        unreachable!("called only when the edge routes two ways");
    };
    let mut chain = ChainEmit::new(op, &mut w);
    reader.poll_into(input, &mut chain, max)
}
