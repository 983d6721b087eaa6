//! Zombie fencing on the data plane: the worker's write lease and the sink
//! wrapper that obeys it.
//!
//! Owns: [`Lease`] (until when this process may still write: the last
//! acknowledged ZooKeeper round trip's *send* time plus the session timeout
//! minus a safety margin, bound to one session id), [`LeaseGuard`] (what one
//! task holds: the lease and the session it started under) and [`Fenced`], a
//! generic [`Sink`] whose writer refuses every `write`, `flush` and `close`
//! once its guard is no longer valid.
//! Must never: extend a lease from a reply that does not come from the same
//! session, use a clock that can jump (only `Instant`), or let one record pass
//! after the lease ran out.
//!
//! # Why a lease
//! A process frozen (SIGSTOP, GC pause, VM steal) longer than its session
//! timeout has lost its tasks to other workers, but on SIGCONT its threads go
//! on exactly where they stopped, before ZooKeeper can tell it anything. The
//! server heard from us at the earliest when the last answered request was
//! *sent* (`t0`), so the session is alive until at least `t0 + timeout` and
//! may be dead right after. A write checked against `t0 + timeout - margin`
//! is therefore never made by a zombie, whatever the pause.
//! Records already handed to a client library's buffer before the pause are
//! outside this guard (without broker transactions nothing can recall them).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pipeline::{Batch, ConnectorError, Sink, SinkWriter, TaskContext};

#[derive(Debug)]
struct LeaseState {
    session: i64,
    valid_until: Option<Instant>,
    revocations: u64,
}

/// The process's write lease (see the module docs). Cheap to clone; thread-safe.
///
/// ```
/// use std::time::{Duration, Instant};
/// use weir::service::lease::Lease;
/// let lease = Lease::new(Duration::from_secs(6), Duration::from_secs(1));
/// assert!(!lease.is_valid());
/// lease.renew(7, Instant::now());
/// let guard = lease.guard().expect("valid lease");
/// assert!(guard.check().is_ok());
/// lease.revoke();
/// assert!(guard.check().is_err());
/// lease.renew(8, Instant::now()); // a new session: the old guard stays refused
/// assert!(guard.check().is_err());
/// ```
#[derive(Debug, Clone)]
pub struct Lease {
    timeout: Duration,
    margin: Duration,
    state: Arc<Mutex<LeaseState>>,
}

impl Lease {
    /// A lease for a session of `timeout`, cut short by `margin`; not valid until renewed.
    pub fn new(timeout: Duration, margin: Duration) -> Self {
        Lease {
            timeout,
            margin,
            state: Arc::new(Mutex::new(LeaseState {
                session: 0,
                valid_until: None,
                revocations: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session timeout the lease is computed from.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A round trip sent at `sent_at` was answered by session `session`: the lease runs to
    /// `sent_at + timeout - margin` (never backwards). A different session replaces the
    /// old one (guards of the old session stay refused).
    pub fn renew(&self, session: i64, sent_at: Instant) {
        self.renew_for(session, sent_at, self.timeout)
    }

    /// [`renew`](Self::renew) with the session's negotiated `timeout` (the smaller of it and
    /// the configured one is used).
    pub fn renew_for(&self, session: i64, sent_at: Instant, timeout: Duration) {
        let timeout = timeout.min(self.timeout);
        let until = sent_at + timeout.saturating_sub(self.margin);
        let mut s = self.lock();
        if s.session != session {
            s.session = session;
            s.valid_until = Some(until);
        } else if s.valid_until.is_none_or(|u| u < until) {
            s.valid_until = Some(until);
        }
    }

    /// Ends the lease now (session expired or closed).
    pub fn revoke(&self) {
        let mut s = self.lock();
        s.valid_until = None;
        s.revocations += 1;
    }

    /// Whether writes are allowed right now.
    pub fn is_valid(&self) -> bool {
        self.lock().valid_until.is_some_and(|u| Instant::now() < u)
    }

    /// Time left (zero when not valid).
    pub fn remaining(&self) -> Duration {
        self.lock()
            .valid_until
            .map(|u| u.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }

    /// Session the lease is bound to (0 before the first renewal).
    pub fn session(&self) -> i64 {
        self.lock().session
    }

    /// A guard for a task starting now, bound to the current session; `None` while the
    /// lease is not valid (do not start tasks then).
    pub fn guard(&self) -> Option<LeaseGuard> {
        let s = self.lock();
        if s.valid_until.is_some_and(|u| Instant::now() < u) {
            Some(LeaseGuard {
                lease: self.clone(),
                session: s.session,
                revocations: s.revocations,
            })
        } else {
            None
        }
    }
}

/// What one task holds: valid while the lease is, on the session and since the last
/// revocation it started under.
#[derive(Debug, Clone)]
pub struct LeaseGuard {
    lease: Lease,
    session: i64,
    revocations: u64,
}

impl LeaseGuard {
    /// A guard that is always valid (for running a job type without a cluster).
    pub fn unfenced() -> Self {
        let lease = Lease::new(Duration::from_secs(u32::MAX as u64), Duration::ZERO);
        lease.renew(0, Instant::now());
        LeaseGuard {
            lease,
            session: 0,
            revocations: 0,
        }
    }

    /// `Ok` while this task may still write; an error saying why otherwise.
    pub fn check(&self) -> Result<(), ConnectorError> {
        let s = self.lease.lock();
        if s.session != self.session || s.revocations != self.revocations {
            return Err(ConnectorError::new(
                "write refused: the ZooKeeper session this task started under is gone (zombie fencing)",
            ));
        }
        match s.valid_until {
            Some(u) if Instant::now() < u => Ok(()),
            _ => Err(ConnectorError::new(
                "write refused: the worker's ZooKeeper lease ran out (session may have expired; zombie fencing)",
            )),
        }
    }
}

/// A sink that writes through `inner` only while its [`LeaseGuard`] is valid.
///
/// ```
/// use weir::service::lease::{Fenced, LeaseGuard};
/// use weir::connectors::CollectSink;
/// use weir::pipeline::Job;
/// use weir::connectors::VecSource;
/// let (sink, out) = CollectSink::new();
/// Job::new("fenced").source(VecSource::new(vec![1u32, 2])).sink(Fenced::new(sink, LeaseGuard::unfenced()))
///     .run_local().unwrap();
/// assert_eq!(out.take().len(), 2);
/// ```
pub struct Fenced<S> {
    inner: S,
    guard: LeaseGuard,
}

impl<S> Fenced<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, guard: LeaseGuard) -> Self {
        Fenced { inner, guard }
    }
}

impl<S: Sink> Sink for Fenced<S> {
    type In = S::In;
    type Writer = FencedWriter<S::Writer>;

    fn validate(&self) -> Result<(), crate::pipeline::BuildError> {
        self.inner.validate()
    }

    fn max_parallelism(&self) -> Option<usize> {
        self.inner.max_parallelism()
    }

    fn committer(&self) -> Option<std::sync::Arc<dyn crate::pipeline::CheckpointCommitter>> {
        self.inner.committer()
    }

    fn open(&self, ctx: &TaskContext) -> Result<Self::Writer, ConnectorError> {
        self.guard.check()?;
        Ok(FencedWriter {
            inner: self.inner.open(ctx)?,
            guard: self.guard.clone(),
        })
    }
}

/// The writer of a [`Fenced`] sink.
pub struct FencedWriter<W> {
    inner: W,
    guard: LeaseGuard,
}

impl<W: SinkWriter> SinkWriter for FencedWriter<W> {
    type In = W::In;

    fn write(&mut self, batch: &mut Batch<Self::In>) -> Result<(), ConnectorError> {
        self.guard.check()?;
        self.inner.write(batch)
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        self.guard.check()?;
        self.inner.flush()
    }

    fn close(&mut self) -> Result<(), ConnectorError> {
        self.guard.check()?;
        self.inner.close()
    }

    fn watermark(&mut self, watermark: crate::pipeline::Timestamp) -> Result<(), ConnectorError> {
        self.guard.check()?;
        self.inner.watermark(watermark)
    }

    fn idle(&mut self) -> Result<(), ConnectorError> {
        self.guard.check()?;
        self.inner.idle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_runs_out_after_timeout_minus_margin() {
        let lease = Lease::new(Duration::from_millis(300), Duration::from_millis(100));
        lease.renew(1, Instant::now());
        let g = lease.guard().unwrap();
        assert!(g.check().is_ok());
        std::thread::sleep(Duration::from_millis(250));
        assert!(g.check().is_err(), "past sent_at + timeout - margin");
        assert!(lease.guard().is_none());
        // An old renewal never moves the lease backwards.
        lease.renew(1, Instant::now());
        lease.renew(1, Instant::now() - Duration::from_secs(10));
        assert!(g.check().is_ok());
    }
}
