//! Aligning checkpoint barriers across a task's inputs (exactly-once state).
//!
//! Owns [`BarrierAligner`]: once an input has delivered barrier `n`, what it
//! sends next waits (stashed, in order) until every live input has
//! delivered `n`, so the snapshot taken at `n` holds exactly the records
//! before the barrier on every input, as Flink's aligned checkpoints do.
//! Stashed batches give their credit back at once (the batch is moved out
//! of its message): credits are shared by all of a task's senders, and an
//! input whose messages held every credit could keep the inputs that have
//! not delivered the barrier from ever sending it. What is stashed is
//! therefore bounded by how much a fast input sends while the slowest
//! catches up to the barrier. With alignment off (at-least-once), nothing
//! is ever held. Pure bookkeeping: it never runs user code.

use std::collections::VecDeque;

use crate::pipeline::{Batch, Signal};

/// Inputs held at a barrier, and what they sent meanwhile.
#[derive(Debug)]
pub(crate) struct BarrierAligner<T> {
    on: bool,
    blocked: Vec<bool>,
    /// Messages held back, oldest first: (input, batch, signal).
    stash: VecDeque<(usize, Batch<T>, Signal)>,
    /// Stashed messages per input: while an input has some, its new ones
    /// queue behind them (an input's messages are handled in order).
    stashed: Vec<usize>,
}

impl<T> BarrierAligner<T> {
    /// An aligner for `inputs` inputs; `on` false never holds anything.
    pub fn new(inputs: usize, on: bool) -> Self {
        BarrierAligner {
            on: on && inputs > 1,
            blocked: vec![false; inputs],
            stash: VecDeque::new(),
            stashed: vec![0; inputs],
        }
    }

    /// Holds a message from `input` if it must wait (its input is blocked
    /// at a barrier, or older messages of it are still held): the batch is
    /// moved into the stash and `true` returned.
    #[inline]
    pub fn hold(&mut self, input: usize, batch: &mut Batch<T>, signal: Signal) -> bool {
        if !self.on || (!self.blocked[input] && self.stashed[input] == 0) {
            return false;
        }
        self.stash.push_back((input, std::mem::take(batch), signal));
        self.stashed[input] += 1;
        true
    }

    /// `input` delivered a barrier that is not complete yet.
    pub fn block(&mut self, input: usize) {
        if self.on {
            self.blocked[input] = true;
        }
    }

    /// The pending barrier completed: every input flows again (held
    /// messages first, see [`BarrierAligner::next_ready`]).
    pub fn release(&mut self) {
        self.blocked.fill(false);
    }

    /// The oldest held message of an input that is not blocked, if any.
    pub fn next_ready(&mut self) -> Option<(usize, Batch<T>, Signal)> {
        let at = self.stash.iter().position(|(i, _, _)| !self.blocked[*i])?;
        let m = self.stash.remove(at).expect("position is in range");
        self.stashed[m.0] -= 1;
        Some(m)
    }

    /// True when a held message could be handled now.
    pub fn has_ready(&self) -> bool {
        self.stash.iter().any(|(i, _, _)| !self.blocked[*i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(v: &[u32]) -> Batch<u32> {
        let mut b = Batch::new();
        for x in v {
            b.push(*x, 0);
        }
        b
    }

    #[test]
    fn an_input_past_the_barrier_waits_for_the_others_in_order() {
        let mut a = BarrierAligner::new(2, true);
        assert!(!a.hold(0, &mut batch(&[1]), Signal::None));
        a.block(0); // input 0 delivered barrier 1
        let mut b = batch(&[2]);
        assert!(a.hold(0, &mut b, Signal::None));
        assert!(b.is_empty(), "the batch moved into the stash");
        assert!(a.hold(0, &mut batch(&[3]), Signal::Barrier(2)));
        assert!(!a.hold(1, &mut batch(&[9]), Signal::None), "input 1 flows");
        assert!(!a.has_ready());
        a.release(); // input 1 delivered barrier 1
                     // A new message of input 0 queues behind its held ones.
        assert!(a.hold(0, &mut batch(&[4]), Signal::None));
        let got: Vec<_> = std::iter::from_fn(|| a.next_ready())
            .map(|(i, b, s)| (i, b.values, s))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, vec![2], Signal::None),
                (0, vec![3], Signal::Barrier(2)),
                (0, vec![4], Signal::None)
            ]
        );
        assert!(!a.hold(0, &mut batch(&[5]), Signal::None));
    }

    #[test]
    fn off_or_single_input_never_holds() {
        let mut a = BarrierAligner::new(2, false);
        a.block(0);
        assert!(!a.hold(0, &mut batch(&[1]), Signal::None));
        let mut a = BarrierAligner::new(1, true);
        a.block(0);
        assert!(!a.hold(0, &mut batch(&[1]), Signal::None));
    }

    #[test]
    fn a_held_message_blocked_again_stays_behind_the_others() {
        let mut a = BarrierAligner::new(2, true);
        a.block(0);
        assert!(a.hold(0, &mut batch(&[1]), Signal::Barrier(2)));
        a.release();
        let (i, _, s) = a.next_ready().unwrap();
        assert_eq!((i, s), (0, Signal::Barrier(2)));
        a.block(0); // barrier 2 from input 0 is pending again
        assert!(a.hold(0, &mut batch(&[2]), Signal::None));
        assert!(!a.has_ready());
    }
}
