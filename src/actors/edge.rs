//! The output side of a task: partitioning batches and sending them with
//! backpressure.
//!
//! Owns [`Partitioner`] (forward, round-robin, hash by key), [`Outputs`]
//! (the targets of a stage, from which each upstream instance takes its
//! [`Edge`]) and the send protocol, credit-based as in Flink's network
//! stack: each receiver has `channel_capacity` credits (a semaphore); a
//! message is sent only with a credit, which the receiver returns when it
//! has handled it. With a credit at hand the send is immediate; otherwise
//! the rest of the emission is handed back as [`Blocked`] and the actor
//! waits for credits (not for the receiver to drain) before it handles
//! anything else. Never drops a message, never sends without a credit.

use actix::Recipient;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

use super::messages::Deliver;
use crate::pipeline::keyed::{key_hash, key_partition};
use crate::pipeline::{Batch, Signal};

/// Splits a batch among the targets of an edge.
pub trait Partitioner<T>: Clone + Send + 'static {
    /// Moves every record of `batch` into one of `parts`.
    fn split(&mut self, batch: &mut Batch<T>, parts: &mut [Batch<T>]);
}

/// Whole batches to the single target (same parallelism both sides).
#[derive(Clone, Copy, Debug, Default)]
pub struct Forward;

impl<T> Partitioner<T> for Forward {
    #[inline]
    fn split(&mut self, batch: &mut Batch<T>, parts: &mut [Batch<T>]) {
        append(&mut parts[0], batch);
    }
}

/// Whole batches to the targets in turn.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoundRobin {
    next: usize,
}

impl<T> Partitioner<T> for RoundRobin {
    #[inline]
    fn split(&mut self, batch: &mut Batch<T>, parts: &mut [Batch<T>]) {
        let i = self.next % parts.len();
        self.next = self.next.wrapping_add(1);
        append(&mut parts[i], batch);
    }
}

/// Each record to the target owning the hash of its key.
pub struct HashBy<KF> {
    key: KF,
    /// Target of each record of the batch being split (reused).
    route: Vec<u32>,
}

impl<KF: Clone> Clone for HashBy<KF> {
    fn clone(&self) -> Self {
        HashBy::new(self.key.clone())
    }
}

impl<KF> HashBy<KF> {
    /// Routes by `key(record)`.
    pub fn new(key: KF) -> Self {
        HashBy {
            key,
            route: Vec::new(),
        }
    }
}

impl<T, K, KF> Partitioner<T> for HashBy<KF>
where
    KF: Fn(&T) -> K + Clone + Send + 'static,
    K: std::hash::Hash,
{
    #[inline]
    fn split(&mut self, batch: &mut Batch<T>, parts: &mut [Batch<T>]) {
        let n = parts.len();
        if n == 1 {
            return append(&mut parts[0], batch);
        }
        // Pass 1: route every record (user code runs here, before anything
        // moves) and count per target.
        let key = &self.key;
        self.route.clear();
        self.route.extend(
            batch
                .values
                .iter()
                .map(|v| key_partition(key_hash(&key(v)), n) as u32),
        );
        let mut counts = [0usize; 64];
        if n <= counts.len() {
            for &r in &self.route {
                counts[r as usize] += 1;
            }
            for (p, c) in parts.iter_mut().zip(counts) {
                p.reserve(c);
            }
        } else {
            for p in parts.iter_mut() {
                p.reserve(batch.len() / n + batch.len() / (4 * n) + 16);
            }
        }
        // Pass 2: move each record to its target (no user code, no panics).
        let len = batch.len();
        for (i, (v, ts)) in batch
            .values
            .drain(..)
            .zip(batch.timestamps.drain(..))
            .enumerate()
        {
            let p = &mut parts[self.route[i] as usize];
            if n <= counts.len() {
                // SAFETY: `reserve(counts[target])` above made room for every
                // record routed to this target; `len < capacity` holds.
                unsafe {
                    let at = p.values.len();
                    p.values.as_mut_ptr().add(at).write(v);
                    p.values.set_len(at + 1);
                    p.timestamps.as_mut_ptr().add(at).write(ts);
                    p.timestamps.set_len(at + 1);
                }
            } else {
                p.values.push(v);
                p.timestamps.push(ts);
            }
        }
        debug_assert!(parts.iter().map(|p| p.len()).sum::<usize>() >= len);
    }
}

#[inline]
fn append<T>(dst: &mut Batch<T>, src: &mut Batch<T>) {
    if dst.is_empty() {
        std::mem::swap(dst, src);
    } else {
        dst.values.append(&mut src.values);
        dst.timestamps.append(&mut src.timestamps);
    }
}

/// The targets of one stage's output, shared by every upstream instance.
pub struct Outputs<T: Send + 'static, P> {
    targets: Vec<Target<T>>,
    partitioner: P,
    forward: bool,
}

/// A downstream instance and its input credits.
struct Target<T: Send + 'static> {
    recipient: Recipient<Deliver<T>>,
    credits: Arc<Semaphore>,
}

impl<T: Send + 'static> Clone for Target<T> {
    fn clone(&self) -> Self {
        Target {
            recipient: self.recipient.clone(),
            credits: self.credits.clone(),
        }
    }
}

impl<T: Send + 'static, P: Partitioner<T>> Outputs<T, P> {
    /// Targets with `capacity` credits each (batches in flight towards
    /// one receiver, all senders together). `forward`: upstream instance `i`
    /// feeds only target `i`.
    pub fn new(
        targets: Vec<Recipient<Deliver<T>>>,
        partitioner: P,
        forward: bool,
        capacity: usize,
    ) -> Self {
        Outputs {
            targets: targets
                .into_iter()
                .map(|recipient| Target {
                    recipient,
                    credits: Arc::new(Semaphore::new(capacity.max(1))),
                })
                .collect(),
            partitioner,
            forward,
        }
    }

    /// The edge of upstream instance `subtask`.
    pub fn edge(&self, subtask: usize) -> Edge<T, P> {
        let (targets, input) = if self.forward {
            (vec![self.targets[subtask].clone()], 0)
        } else {
            (self.targets.clone(), subtask)
        };
        let parts = targets.iter().map(|_| Batch::new()).collect();
        Edge {
            targets,
            input,
            partitioner: self.partitioner.clone(),
            parts,
        }
    }
}

/// The output of one task instance.
pub struct Edge<T: Send + 'static, P> {
    targets: Vec<Target<T>>,
    input: usize,
    partitioner: P,
    parts: Vec<Batch<T>>,
}

/// Messages that found no credit, in send order: await [`Blocked::send`].
pub struct Blocked<T: Send + 'static> {
    sends: Vec<(Target<T>, Deliver<T>)>,
}

/// A downstream actor is gone.
#[derive(Debug, Clone, Copy)]
pub struct Closed;

impl<T: Send + 'static> Blocked<T> {
    /// Sends every blocked message, each after waiting for a credit;
    /// returns the time spent waiting.
    pub async fn send(self) -> Result<Duration, Closed> {
        let start = Instant::now();
        for (target, mut msg) in self.sends {
            let credit = target
                .credits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Closed)?;
            msg.credit = Some(credit);
            send_with_credit(&target.recipient, msg)?;
        }
        Ok(start.elapsed())
    }
}

impl<T: Send + 'static, P: Partitioner<T>> Edge<T, P> {
    /// Number of targets.
    pub fn width(&self) -> usize {
        self.targets.len()
    }

    /// Routes `batch` and sends each target its part followed by `signal`
    /// (every target gets a signal; only non-empty parts are sent otherwise).
    /// Returns the messages that must be awaited, if any mailbox was full.
    pub fn emit(
        &mut self,
        batch: &mut Batch<T>,
        signal: Signal,
    ) -> Result<Option<Blocked<T>>, Closed> {
        if batch.is_empty() && signal == Signal::None {
            return Ok(None);
        }
        if !batch.is_empty() {
            self.partitioner.split(batch, &mut self.parts);
        }
        let mut blocked: Option<Blocked<T>> = None;
        for (i, target) in self.targets.iter().enumerate() {
            let part = &mut self.parts[i];
            if part.is_empty() && signal == Signal::None {
                continue;
            }
            let cap = part.values.capacity().max(16);
            let mut msg = Deliver {
                input: self.input,
                batch: part.take(cap),
                signal,
                credit: None,
            };
            if let Some(b) = &mut blocked {
                b.sends.push((target.clone(), msg));
                continue;
            }
            match target.credits.clone().try_acquire_owned() {
                Ok(credit) => {
                    msg.credit = Some(credit);
                    send_with_credit(&target.recipient, msg)?;
                }
                Err(_) => {
                    blocked = Some(Blocked {
                        sends: vec![(target.clone(), msg)],
                    })
                }
            }
        }
        Ok(blocked)
    }
}

/// Sends a message that holds a credit. The credits, not the actix
/// mailbox, bound what is in flight towards a receiver, so the message is
/// queued unconditionally (`do_send`); it fails only if the receiver is gone.
#[inline]
fn send_with_credit<T: Send + 'static>(
    to: &Recipient<Deliver<T>>,
    msg: Deliver<T>,
) -> Result<(), Closed> {
    debug_assert!(msg.credit.is_some(), "data-plane messages carry a credit");
    if !to.connected() {
        return Err(Closed);
    }
    to.do_send(msg);
    Ok(())
}
