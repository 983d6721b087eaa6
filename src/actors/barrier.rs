//! Counting checkpoint barriers across a task's inputs.
//!
//! Owns [`BarrierTracker`]: a barrier is complete at a task when every
//! input that has not ended has delivered it. Barriers are not aligned
//! (records of an input that already delivered barrier `n` are processed
//! before the others deliver it), which gives at-least-once state: a
//! restore may replay such records. Pure bookkeeping, no I/O.

use std::collections::BTreeMap;

/// Which inputs delivered which pending barriers.
#[derive(Debug, Default)]
pub struct BarrierTracker {
    seen: BTreeMap<u64, Vec<usize>>,
    last_done: u64,
}

impl BarrierTracker {
    /// Input `input` delivered barrier `id`; `live` inputs have not ended.
    /// Returns the highest barrier now complete, if any (older pending
    /// barriers are complete with it).
    pub fn on_barrier(&mut self, id: u64, input: usize, live: usize) -> Option<u64> {
        if id <= self.last_done {
            return None;
        }
        let inputs = self.seen.entry(id).or_default();
        if !inputs.contains(&input) {
            inputs.push(input);
        }
        self.complete(live)
    }

    /// An input ended: `live` inputs remain. Returns the highest barrier
    /// that this completes, if any.
    pub fn on_input_ended(&mut self, live: usize) -> Option<u64> {
        self.complete(live)
    }

    fn complete(&mut self, live: usize) -> Option<u64> {
        let done = self
            .seen
            .iter()
            .filter(|(_, ins)| ins.len() >= live)
            .map(|(id, _)| *id)
            .max()?;
        self.seen = self.seen.split_off(&(done + 1));
        self.last_done = done;
        Some(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_when_all_live_inputs_delivered() {
        let mut t = BarrierTracker::default();
        assert_eq!(t.on_barrier(1, 0, 2), None);
        assert_eq!(
            t.on_barrier(1, 0, 2),
            None,
            "the same input twice counts once"
        );
        assert_eq!(t.on_barrier(1, 1, 2), Some(1));
    }

    #[test]
    fn an_ended_input_no_longer_holds_barriers_back() {
        let mut t = BarrierTracker::default();
        assert_eq!(t.on_barrier(4, 0, 2), None);
        assert_eq!(t.on_input_ended(1), Some(4));
    }

    #[test]
    fn a_newer_barrier_completes_older_ones() {
        let mut t = BarrierTracker::default();
        t.on_barrier(1, 0, 2);
        t.on_barrier(2, 0, 2);
        assert_eq!(t.on_barrier(2, 1, 2), Some(2));
        assert_eq!(t.on_barrier(1, 1, 2), None, "1 was completed with 2");
    }
}
