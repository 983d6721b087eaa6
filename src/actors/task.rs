//! What every task actor shares: running user code safely and reporting.
//!
//! Owns [`guarded`], which runs user code (closures, connectors) under
//! `catch_unwind` so a panic becomes a [`TaskError`] the supervisor sees
//! instead of killing the arbiter thread (actix issue #204), and
//! [`TaskHandle`], a task's identity plus its line to the supervisor.

use actix::Recipient;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::messages::TaskEvent;
use crate::pipeline::{error::panic_message, ConnectorError, TaskContext, TaskError};

/// How a piece of user code failed.
pub enum Failure {
    /// It panicked.
    Panic(String),
    /// It returned an error.
    Error(ConnectorError),
}

/// Runs `f`, turning a panic into [`Failure::Panic`].
#[inline]
pub fn guarded<R>(f: impl FnOnce() -> Result<R, ConnectorError>) -> Result<R, Failure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(Failure::Error(e)),
        Err(p) => Err(Failure::Panic(panic_message(&*p))),
    }
}

/// A task's identity and its supervisor.
pub struct TaskHandle {
    /// The task's context.
    pub ctx: TaskContext,
    /// Where events go.
    pub supervisor: Recipient<TaskEvent>,
    /// When this task last yielded its arbiter.
    last_yield: std::cell::Cell<std::time::Instant>,
}

impl TaskHandle {
    /// A handle for the task `ctx`, reporting to `supervisor`.
    pub fn new(ctx: TaskContext, supervisor: Recipient<TaskEvent>) -> Self {
        TaskHandle {
            ctx,
            supervisor,
            last_yield: std::cell::Cell::new(std::time::Instant::now()),
        }
    }

    /// Reports a failure of kind `connector` (source/sink) or operator.
    pub fn fail(&self, failure: Failure, connector: bool) {
        let task = self.ctx.task_name();
        let error = match failure {
            Failure::Panic(message) => TaskError::Panic { task, message },
            Failure::Error(e) if connector => TaskError::Connector { task, message: e.0 },
            Failure::Error(e) => TaskError::Operator { task, message: e.0 },
        };
        tracing::error!(%error, "task failed");
        self.report(TaskEvent::Failed {
            attempt: self.ctx.attempt,
            error,
        });
    }

    /// Reports that a downstream actor disappeared.
    pub fn closed(&self) {
        self.report(TaskEvent::Failed {
            attempt: self.ctx.attempt,
            error: TaskError::ChannelClosed {
                task: self.ctx.task_name(),
            },
        });
    }

    /// Reports a finished sink.
    pub fn finished(&self) {
        self.report(TaskEvent::Finished {
            attempt: self.ctx.attempt,
            task: self.ctx.task_name(),
        });
    }

    /// Sends any event to the supervisor.
    pub fn report(&self, ev: TaskEvent) {
        // Control messages to the supervisor are small and rare: do_send is fine.
        self.supervisor.do_send(ev);
    }
}

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, WrapFuture};
use std::sync::atomic::Ordering::Relaxed;

use super::edge::{Blocked, Closed};

/// An actor that runs one task.
pub trait TaskActor: Actor<Context = Context<Self>> {
    /// The task's handle.
    fn task(&self) -> &TaskHandle;
}

/// Continues with `then` once an emission is sent: at once when every
/// target had room, otherwise after waiting for the blocked sends, during
/// which the actor handles no other message (that is the backpressure).
pub fn after_emit<A, T, F>(
    act: &mut A,
    ctx: &mut Context<A>,
    sent: Result<Option<Blocked<T>>, Closed>,
    then: F,
) where
    A: TaskActor,
    T: Send + 'static,
    F: FnOnce(&mut A, &mut Context<A>) + 'static,
{
    match sent {
        Ok(None) => then(act, ctx),
        Ok(Some(blocked)) => {
            ctx.wait(
                blocked
                    .send()
                    .into_actor(act)
                    .map(move |res, act, ctx| match res {
                        Ok(waited) => {
                            act.task()
                                .ctx
                                .metrics
                                .backpressure_ns
                                .fetch_add(waited.as_nanos() as u64, Relaxed);
                            then(act, ctx)
                        }
                        Err(Closed) => {
                            act.task().closed();
                            ctx.stop();
                        }
                    }),
            );
        }
        Err(Closed) => {
            act.task().closed();
            ctx.stop();
        }
    }
}

/// Lets the other actors of this arbiter run before this one handles its
/// next message. actix polls an actor's mailbox until it is empty, so an
/// operator fed from another thread, or a source that pumps itself, could
/// otherwise keep its thread forever and starve the tasks placed beside it
/// (e.g. the other source of a window). A task yields once it has run
/// [`YIELD_EVERY`] since its last yield, checked after each batch.
pub fn yield_arbiter<A: Actor<Context = Context<A>>>(ctx: &mut Context<A>, task: &TaskHandle) {
    let now = std::time::Instant::now();
    if !ctx.waiting() && now.duration_since(task.last_yield.get()) >= YIELD_EVERY {
        task.last_yield.set(now);
        ctx.wait(actix::fut::wrap_future(YieldOnce(false)));
    }
}

/// How long a task may keep its arbiter before letting the others run.
pub const YIELD_EVERY: std::time::Duration = std::time::Duration::from_micros(50);

/// Pending once, waking itself: the task goes to the back of its arbiter's
/// run queue. (Cheaper than `tokio::task::yield_now`, which defers the
/// wake-up until the I/O driver has been polled: a syscall per batch.)
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}
