//! The output side of a task: partitioning batches and sending them with
//! backpressure.
//!
//! Owns [`Outputs`] (the targets of a stage, from which each upstream instance takes its
//! [`Edge`]) and the send protocol, credit-based as in Flink's network
//! stack: each receiver has `channel_capacity` credits (a semaphore); a
//! message is sent only with a credit, which the receiver returns when it
//! has handled it. With a credit at hand the send is immediate; otherwise
//! the rest of the emission is handed back as [`Blocked`] and the actor
//! waits for credits (not for the receiver to drain) before it handles
//! anything else. Never drops a message, never sends without a credit.
//!
//! Batch buffers travel in a circle: the receiver hands the emptied buffer
//! back with the credit ([`Credit::recycle`]) and senders take their next
//! part from there, so a running edge allocates nothing. (Allocating a fresh
//! buffer per message made glibc trim and re-fault its arenas: about a
//! sixth of the CPU time of a two-thread keyed exchange.)
//!
//! Records can also reach an edge one at a time: a [`TwoWayWriter`] writes
//! each straight into its target's part (a source's record-at-a-time chain
//! uses it), and the next [`Edge::emit`] sends what is staged there ahead
//! of its own batch. Staged records never wait past that emit. How a
//! batch is split among the targets is the job graph's
//! [`Partitioner`](crate::pipeline::partition::Partitioner).

use actix::Recipient;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::messages::Deliver;
use crate::pipeline::{Batch, Emit, Signal, Timestamp};

pub use crate::pipeline::partition::{Forward, HashBy, Partitioner, RoundRobin};

/// The targets of one stage's output, shared by every upstream instance.
pub struct Outputs<T: Send + 'static, P> {
    targets: Vec<Target<T>>,
    partitioner: P,
    forward: bool,
}

/// A downstream instance, its input credits and the emptied buffers its
/// senders reuse.
struct Target<T: Send + 'static> {
    recipient: Recipient<Deliver<T>>,
    credits: Arc<Semaphore>,
    pool: Arc<BatchPool<T>>,
}

impl<T: Send + 'static> Clone for Target<T> {
    fn clone(&self) -> Self {
        Target {
            recipient: self.recipient.clone(),
            credits: self.credits.clone(),
            pool: self.pool.clone(),
        }
    }
}

impl<T: Send + 'static> Target<T> {
    /// A credit on this target, if one is free now.
    fn try_credit(&self) -> Option<Credit<T>> {
        let permit = self.credits.clone().try_acquire_owned().ok()?;
        Some(Credit {
            permit,
            pool: self.pool.clone(),
        })
    }

    /// Waits for a credit on this target.
    async fn credit(&self) -> Result<Credit<T>, Closed> {
        let permit = self
            .credits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Closed)?;
        Ok(Credit {
            permit,
            pool: self.pool.clone(),
        })
    }
}

/// Emptied batch buffers of one receiver, waiting for a sender to reuse
/// them. Holds at most one buffer per credit (plus one), so it never grows
/// past what is in flight anyway. Locked once per batch, never per record.
struct BatchPool<T> {
    free: Mutex<std::collections::VecDeque<Batch<T>>>,
    max: usize,
}

impl<T> BatchPool<T> {
    fn new(max: usize) -> Self {
        BatchPool {
            free: Mutex::new(std::collections::VecDeque::with_capacity(max)),
            max,
        }
    }

    /// An emptied buffer, or a new one of capacity `cap`.
    fn take(&self, cap: usize) -> Batch<T> {
        let reused = self.free.lock().ok().and_then(|mut f| f.pop_front());
        reused.unwrap_or_else(|| Batch::with_capacity(cap))
    }

    fn put(&self, batch: Batch<T>) {
        if let Ok(mut free) = self.free.lock() {
            if free.len() < self.max {
                free.push_back(batch);
            }
        }
    }
}

/// A sender's credit on a receiver's input: dropping it returns the credit.
pub struct Credit<T> {
    permit: OwnedSemaphorePermit,
    pool: Arc<BatchPool<T>>,
}

impl<T> Credit<T> {
    /// Returns the credit with the message's batch buffer, emptied, for the
    /// senders to fill again.
    pub fn recycle(self, mut batch: Batch<T>) {
        batch.clear();
        if batch.values.capacity() > 0 {
            self.pool.put(batch);
        }
        drop(self.permit);
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
                    pool: Arc::new(BatchPool::new(capacity.max(1) + 1)),
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
            msg.credit = Some(target.credit().await?);
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

    /// Whether [`Edge::two_way_writer`] gives a writer.
    #[inline]
    pub fn routes_two_way(&self) -> bool {
        self.parts.len() == 2 && self.partitioner.routes_records()
    }

    /// A writer that puts each record straight into its target's part, if
    /// this edge has two targets and its partitioner routes record by
    /// record: a record-at-a-time chain then skips the intermediate batch
    /// and the split. What it writes goes out with the next
    /// [`Edge::emit`], ahead of that call's batch.
    #[inline]
    pub fn two_way_writer(&mut self, expect: usize) -> Option<TwoWayWriter<'_, T, P>> {
        if !self.routes_two_way() {
            return None;
        }
        let (a, b) = self.parts.split_at_mut(1);
        Some(TwoWayWriter::new(
            &mut a[0],
            &mut b[0],
            &self.partitioner,
            expect,
        ))
    }

    /// Records written by a [`TwoWayWriter`] and not yet emitted.
    pub fn staged(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }

    /// The timestamps of the records not yet emitted, part by part.
    pub fn staged_timestamps(&self) -> impl Iterator<Item = &[Timestamp]> {
        self.parts.iter().map(|p| p.timestamps.as_slice())
    }

    /// Routes `batch` and sends each target its part followed by `signal`
    /// (every target gets a signal; only non-empty parts are sent otherwise).
    /// Returns the messages that must be awaited, if any mailbox was full.
    pub fn emit(
        &mut self,
        batch: &mut Batch<T>,
        signal: Signal,
    ) -> Result<Option<Blocked<T>>, Closed> {
        if batch.is_empty() && signal == Signal::None && self.staged() == 0 {
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
                batch: std::mem::replace(part, target.pool.take(cap)),
                signal,
                credit: None,
            };
            if let Some(b) = &mut blocked {
                b.sends.push((target.clone(), msg));
                continue;
            }
            match target.try_credit() {
                Some(credit) => {
                    msg.credit = Some(credit);
                    send_with_credit(&target.recipient, msg)?;
                }
                None => {
                    blocked = Some(Blocked {
                        sends: vec![(target.clone(), msg)],
                    })
                }
            }
        }
        Ok(blocked)
    }
}

/// Writes records straight into the two parts of an edge, each to the
/// target its key hashes to, one cursor per part. Its `Drop` publishes the
/// lengths, so a panic in user code (the key function included) leaves
/// both parts valid.
pub struct TwoWayWriter<'a, T, P> {
    p0: &'a mut Batch<T>,
    p1: &'a mut Batch<T>,
    partitioner: &'a P,
    len0: usize,
    len1: usize,
    cap0: usize,
    cap1: usize,
    v0: *mut T,
    v1: *mut T,
    t0: *mut Timestamp,
    t1: *mut Timestamp,
}

impl<'a, T, P> TwoWayWriter<'a, T, P> {
    #[inline(always)]
    fn new(p0: &'a mut Batch<T>, p1: &'a mut Batch<T>, partitioner: &'a P, expect: usize) -> Self {
        p0.reserve(expect);
        p1.reserve(expect);
        TwoWayWriter {
            len0: p0.values.len(),
            len1: p1.values.len(),
            cap0: p0.values.capacity().min(p0.timestamps.capacity()),
            cap1: p1.values.capacity().min(p1.timestamps.capacity()),
            v0: p0.values.as_mut_ptr(),
            v1: p1.values.as_mut_ptr(),
            t0: p0.timestamps.as_mut_ptr(),
            t1: p1.timestamps.as_mut_ptr(),
            p0,
            p1,
            partitioner,
        }
    }

    /// Publishes the lengths written so far.
    #[inline(always)]
    fn publish(&mut self) {
        // SAFETY: `0..len` of each part's vectors was written by `emit`
        // (or was there before).
        unsafe {
            self.p0.values.set_len(self.len0);
            self.p0.timestamps.set_len(self.len0);
            self.p1.values.set_len(self.len1);
            self.p1.timestamps.set_len(self.len1);
        }
    }

    #[cold]
    fn grow(&mut self) {
        self.publish();
        self.p0.reserve(self.len0.max(64));
        self.p1.reserve(self.len1.max(64));
        self.cap0 = self.p0.values.capacity().min(self.p0.timestamps.capacity());
        self.cap1 = self.p1.values.capacity().min(self.p1.timestamps.capacity());
        self.v0 = self.p0.values.as_mut_ptr();
        self.v1 = self.p1.values.as_mut_ptr();
        self.t0 = self.p0.timestamps.as_mut_ptr();
        self.t1 = self.p1.timestamps.as_mut_ptr();
    }
}

impl<T, P: Partitioner<T>> Emit<T> for TwoWayWriter<'_, T, P> {
    #[inline(always)]
    fn emit(&mut self, value: T, ts: Timestamp) {
        if self.len0 == self.cap0 || self.len1 == self.cap1 {
            self.grow();
        }
        let r = self.partitioner.route(&value, 2);
        debug_assert!(r < 2, "route returns a target below n");
        // SAFETY: both lengths are below their capacities (checked above)
        // and the pointers were refreshed after any reallocation.
        unsafe {
            let (dv, dt) = if r == 0 {
                (self.v0.add(self.len0), self.t0.add(self.len0))
            } else {
                (self.v1.add(self.len1), self.t1.add(self.len1))
            };
            dv.write(value);
            dt.write(ts);
        }
        self.len0 += 1 - r;
        self.len1 += r;
    }
}

impl<T, P> Drop for TwoWayWriter<'_, T, P> {
    fn drop(&mut self) {
        self.publish();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::keyed::{key_hash, key_partition};

    /// Splits `n` owned records among `targets` parts and checks that each
    /// record lands exactly once, in order, at the target owning its key.
    fn split_into(targets: usize) {
        let mut by = HashBy::new(|s: &String| s.len() % 7 + s.as_bytes()[1] as usize);
        let mut batch = Batch::new();
        for i in 0..1000 {
            batch.push(format!("r{i}"), i as Timestamp);
        }
        let mut parts: Vec<Batch<String>> = (0..targets).map(|_| Batch::new()).collect();
        // A part may already hold records: they stay first.
        parts[0].push("held".to_string(), -1);
        Partitioner::split(&mut by, &mut batch, &mut parts);
        assert!(batch.is_empty());
        assert_eq!(parts[0].values[0], "held");
        parts[0].values.remove(0);
        parts[0].timestamps.remove(0);
        let mut seen = vec![false; 1000];
        for (t, p) in parts.iter().enumerate() {
            let mut last = -1;
            for (v, ts) in p.iter() {
                let i: usize = v[1..].parse().unwrap();
                assert_eq!(ts, i as Timestamp, "timestamp travels with its record");
                assert!(ts > last, "order within a target is kept");
                last = ts;
                let k = v.len() % 7 + v.as_bytes()[1] as usize;
                assert_eq!(key_partition(key_hash(&k), targets), t);
                assert!(!seen[i], "record {i} delivered twice");
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|&s| s), "every record delivered");
    }

    #[test]
    fn hash_split_moves_each_record_once_to_its_owner() {
        for targets in [2, 3, 4, 5, 16] {
            split_into(targets);
        }
    }

    /// Records without drop glue take the one-pass split: same contract.
    #[test]
    fn hash_split_of_plain_records_moves_each_once_to_its_owner() {
        let mut by = HashBy::new(|r: &(u64, u32)| r.0 % 97);
        let mut batch = Batch::new();
        for i in 0..5000u64 {
            batch.push((i * 31, i as u32), i as Timestamp);
        }
        let mut parts: Vec<Batch<(u64, u32)>> = vec![Batch::new(), Batch::new()];
        parts[0].push((0, u32::MAX), -1);
        parts[1].push((1, u32::MAX), -1);
        Partitioner::split(&mut by, &mut batch, &mut parts);
        assert!(batch.is_empty());
        let mut seen = vec![false; 5000];
        for (t, p) in parts.iter().enumerate() {
            assert_eq!(p.values[0], (t as u64, u32::MAX), "held records stay first");
            let mut last = -1;
            for (&(k, i), ts) in p.iter().skip(1) {
                assert_eq!(ts, i as Timestamp, "timestamp travels with its record");
                assert!(ts > last, "order within a target is kept");
                last = ts;
                assert_eq!(key_partition(key_hash(&(k % 97)), 2), t);
                assert!(!seen[i as usize], "record {i} delivered twice");
                seen[i as usize] = true;
            }
        }
        assert!(seen.iter().all(|&s| s), "every record delivered");
    }

    /// The direct-to-part writer: same contract as the split, and a key
    /// function that panics half-way leaves both parts valid, holding what
    /// was written before.
    #[test]
    fn two_way_writer_puts_each_record_at_its_owner_and_survives_a_panic() {
        let by = HashBy::new(|s: &String| {
            assert!(s != "boom", "key function panics on purpose");
            s.len() % 7 + s.as_bytes()[1] as usize
        });
        let mut p0: Batch<String> = Batch::new();
        let mut p1: Batch<String> = Batch::new();
        p0.push("held".to_string(), -1);
        {
            // Starts small so that the writer has to grow mid-way.
            let mut w = TwoWayWriter::new(&mut p0, &mut p1, &by, 4);
            for i in 0..1000 {
                w.emit(format!("r{i}"), i as Timestamp);
            }
        }
        assert_eq!(p0.values[0], "held", "held records stay first");
        let mut seen = vec![false; 1000];
        for (t, p) in [&p0, &p1].into_iter().enumerate() {
            let mut last = -1;
            for (v, ts) in p.iter().filter(|(v, _)| *v != "held") {
                let i: usize = v[1..].parse().unwrap();
                assert_eq!(ts, i as Timestamp, "timestamp travels with its record");
                assert!(ts > last, "order within a target is kept");
                last = ts;
                let k = v.len() % 7 + v.as_bytes()[1] as usize;
                assert_eq!(key_partition(key_hash(&k), 2), t);
                assert!(!seen[i], "record {i} written twice");
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|&s| s), "every record written");

        let before = p0.len() + p1.len();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut w = TwoWayWriter::new(&mut p0, &mut p1, &by, 4);
            w.emit("after".to_string(), 1);
            w.emit("boom".to_string(), 2);
        }));
        assert!(result.is_err());
        assert_eq!(p0.len() + p1.len(), before + 1, "what was written stays");
        assert!(p0.iter().chain(p1.iter()).any(|(v, _)| v == "after"));
        assert_eq!(p0.values.len(), p0.timestamps.len());
        assert_eq!(p1.values.len(), p1.timestamps.len());
    }

    #[test]
    fn a_recycled_buffer_comes_back_empty_with_the_credit() {
        let credits = Arc::new(Semaphore::new(1));
        let pool = Arc::new(BatchPool::new(2));
        let credit = Credit {
            permit: credits.clone().try_acquire_owned().unwrap(),
            pool: pool.clone(),
        };
        assert_eq!(credits.available_permits(), 0);
        let mut batch = Batch::with_capacity(100);
        batch.push("r".to_string(), 1);
        let buffer = batch.values.as_ptr();
        credit.recycle(batch);
        assert_eq!(credits.available_permits(), 1, "the credit is back");
        // The next part is that buffer, emptied: no allocation.
        let next: Batch<String> = pool.take(16);
        assert!(next.is_empty());
        assert_eq!(next.values.as_ptr(), buffer);
        assert!(next.values.capacity() >= 100);
        // With none left, a new buffer of the asked capacity.
        assert!(pool.take(16).values.capacity() >= 16);
    }
}
