//! The input side of an operator or sink task: what its channels' signals
//! add up to.
//!
//! Owns [`TaskInputs`]: the watermark minimum over inputs (idle and ended
//! ones left out) and the barrier count, updated from each message's
//! [`Signal`]. Pure bookkeeping shared by the operator and sink actors; it
//! never touches records.

use super::barrier::BarrierTracker;
use crate::pipeline::{InputWatermarks, Signal, Timestamp};

/// Watermarks and barriers across a task's inputs.
#[derive(Debug)]
pub struct TaskInputs {
    watermarks: InputWatermarks,
    barriers: BarrierTracker,
}

/// What one signal changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignalEffect {
    /// The combined watermark advanced to this.
    pub watermark: Option<Timestamp>,
    /// This barrier (and every older one) is now complete.
    pub barrier: Option<u64>,
}

impl TaskInputs {
    /// State for `n` inputs.
    pub fn new(n: usize) -> Self {
        TaskInputs {
            watermarks: InputWatermarks::new(n),
            barriers: BarrierTracker::default(),
        }
    }

    /// Input `input` delivered records: it is active again.
    pub fn on_data(&mut self, input: usize) {
        self.watermarks.on_data(input);
    }

    /// Applies `signal` from `input`.
    pub fn on_signal(&mut self, input: usize, signal: Signal) -> SignalEffect {
        match signal {
            Signal::None => SignalEffect::default(),
            Signal::Watermark(w) => SignalEffect {
                watermark: self.watermarks.on_watermark(input, w),
                barrier: None,
            },
            Signal::Idle => SignalEffect {
                watermark: self.watermarks.on_idle(input),
                barrier: None,
            },
            Signal::End => {
                let watermark = self.watermarks.on_end(input);
                SignalEffect {
                    watermark,
                    barrier: self.barriers.on_input_ended(self.watermarks.live()),
                }
            }
            Signal::Barrier(id) => SignalEffect {
                watermark: None,
                barrier: self.barriers.on_barrier(id, input, self.watermarks.live()),
            },
        }
    }

    /// True when every input has ended.
    pub fn all_ended(&self) -> bool {
        self.watermarks.all_ended()
    }

    /// True when every live input is idle.
    pub fn all_idle(&self) -> bool {
        self.watermarks.all_idle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_completes_a_barrier_the_ended_input_never_sent() {
        let mut t = TaskInputs::new(2);
        assert_eq!(t.on_signal(0, Signal::Barrier(3)).barrier, None);
        let e = t.on_signal(1, Signal::End);
        assert_eq!(e.barrier, Some(3));
        assert!(!t.all_ended());
    }

    #[test]
    fn watermark_is_the_minimum() {
        let mut t = TaskInputs::new(2);
        assert_eq!(t.on_signal(0, Signal::Watermark(10)).watermark, None);
        assert_eq!(t.on_signal(1, Signal::Watermark(7)).watermark, Some(7));
    }
}
