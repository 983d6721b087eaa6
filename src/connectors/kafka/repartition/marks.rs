//! Event time of one partition of a repartition topic, from the control
//! records of its upstream writers.
//!
//! Owns [`Mark`] (what one control record says: a watermark, idle, end of
//! input) and `UpstreamMarks` (per partition: what each upstream writer
//! said last, and the watermark rule). Pure bookkeeping: never talks to
//! librdkafka, never reads data records, never lets the watermark move
//! back or pass a writer that has not written yet.
//!
//! The rule: a partition's event time is the minimum, over the upstream
//! writers that are neither idle nor ended, of the latest watermark each
//! wrote into it; a writer not heard from yet holds it (`i64::MIN`). A
//! partition whose writers are all idle or ended is quiet: it holds no one
//! back until a writer writes a watermark again.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::pipeline::Timestamp;

/// What one control record says about its writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mark {
    /// No record with an earlier event time follows from this writer.
    Watermark(Timestamp),
    /// The writer's input is idle: leave it out of the minimum until it
    /// writes a watermark again.
    Idle,
    /// The writer's input ended: nothing follows from it.
    End,
}

/// Where one writer stands in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriterState {
    Unheard,
    Active,
    Idle,
    Ended,
}

impl WriterState {
    fn name(self) -> &'static str {
        match self {
            WriterState::Unheard => "unheard",
            WriterState::Active => "active",
            WriterState::Idle => "idle",
            WriterState::Ended => "end",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "unheard" => WriterState::Unheard,
            "active" => WriterState::Active,
            "idle" => WriterState::Idle,
            "end" => WriterState::Ended,
            _ => return None,
        })
    }
}

/// What each upstream writer last said in one partition.
///
/// ```text
/// writers 0 and 1; 0 wrote 5_000, 1 nothing yet  -> i64::MIN (held)
/// 1 writes 3_000                                  -> 3_000
/// 1 writes Idle                                   -> 5_000
/// 0 writes End                                    -> quiet
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpstreamMarks {
    /// Per writer: its largest watermark (`i64::MIN`: none) and state.
    writers: Vec<(Timestamp, WriterState)>,
}

impl UpstreamMarks {
    /// A partition with `writers` upstream writers, none heard from.
    pub fn new(writers: usize) -> Self {
        UpstreamMarks {
            writers: vec![(i64::MIN, WriterState::Unheard); writers],
        }
    }

    /// Applies writer `writer`'s `mark`; false (ignored) for a writer
    /// outside the configured count.
    pub fn apply(&mut self, writer: usize, mark: Mark) -> bool {
        let Some((wm, state)) = self.writers.get_mut(writer) else {
            return false;
        };
        match mark {
            Mark::Watermark(t) => {
                *wm = (*wm).max(t);
                *state = WriterState::Active;
            }
            Mark::Idle => *state = WriterState::Idle,
            Mark::End => *state = WriterState::Ended,
        }
        true
    }

    /// The minimum over active and unheard writers of their watermark
    /// (`i64::MIN` while one is unheard); `i64::MAX` when all are quiet.
    #[inline]
    pub fn watermark(&self) -> Timestamp {
        self.writers
            .iter()
            .filter(|(_, s)| matches!(s, WriterState::Active | WriterState::Unheard))
            .map(|(t, _)| *t)
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Every writer is idle or ended: the partition holds no one back.
    #[inline]
    pub fn quiet(&self) -> bool {
        self.writers
            .iter()
            .all(|(_, s)| matches!(s, WriterState::Idle | WriterState::Ended))
    }

    /// Every writer wrote its end of input (and there is at least one):
    /// nothing more comes into this partition.
    pub fn ended(&self) -> bool {
        !self.writers.is_empty() && self.writers.iter().all(|(_, s)| *s == WriterState::Ended)
    }

    /// For a checkpoint: `[[watermark or null, state], ..]` by writer.
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.writers
                .iter()
                .map(|(t, s)| json!([(*t > i64::MIN).then_some(*t), s.name()]))
                .collect(),
        )
    }

    /// Merges a checkpoint's view (from [`to_json`](Self::to_json)): the
    /// larger watermark; the checkpoint's state where nothing was heard
    /// since. Malformed entries are ignored.
    pub fn restore(&mut self, saved: &Value) {
        let Some(saved) = saved.as_array() else {
            return;
        };
        if saved.len() != self.writers.len() {
            // Saved under another upstream layout (a rescale): its writer
            // indices read other input partitions; hold for the new ones.
            return;
        }
        for ((wm, state), s) in self.writers.iter_mut().zip(saved) {
            let t = s.get(0).and_then(Value::as_i64);
            let st = s
                .get(1)
                .and_then(Value::as_str)
                .and_then(WriterState::parse);
            if let Some(t) = t {
                *wm = (*wm).max(t);
            }
            if let (WriterState::Unheard, Some(st)) = (*state, st) {
                *state = st;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unheard_writer_holds_and_quiet_writers_stop_holding() {
        let mut m = UpstreamMarks::new(2);
        assert_eq!(m.watermark(), i64::MIN);
        assert!(m.apply(0, Mark::Watermark(5_000)));
        assert_eq!(m.watermark(), i64::MIN, "writer 1 not heard yet");
        m.apply(1, Mark::Watermark(3_000));
        assert_eq!(m.watermark(), 3_000);
        m.apply(1, Mark::Watermark(2_000));
        assert_eq!(m.watermark(), 3_000, "never moves back");
        m.apply(1, Mark::Idle);
        assert_eq!(m.watermark(), 5_000);
        assert!(!m.quiet());
        m.apply(0, Mark::End);
        assert!(m.quiet());
        assert!(!m.ended(), "writer 1 is only idle");
        m.apply(1, Mark::Watermark(9_000));
        assert_eq!(m.watermark(), 9_000, "an idle writer is active again");
        assert!(!m.apply(2, Mark::Idle), "outside the configured count");
    }

    #[test]
    fn a_checkpointed_view_restores() {
        let mut m = UpstreamMarks::new(3);
        m.apply(0, Mark::Watermark(7_000));
        m.apply(1, Mark::End);
        let saved = m.to_json();
        let mut r = UpstreamMarks::new(3);
        r.restore(&saved);
        assert_eq!(r, m);
        assert_eq!(r.watermark(), i64::MIN, "writer 2 still unheard");
        let mut none = UpstreamMarks::new(0);
        none.restore(&json!("junk"));
        assert!(none.quiet());
        // Saved for 3 writers, restored for 2 (the upstream was rescaled):
        // nothing is taken over, every new writer holds until heard.
        let mut rescaled = UpstreamMarks::new(2);
        rescaled.restore(&saved);
        assert_eq!(rescaled, UpstreamMarks::new(2));
        assert_eq!(rescaled.watermark(), i64::MIN);
    }

    #[test]
    fn marks_round_trip_through_postcard() {
        for m in [
            Mark::Watermark(-3),
            Mark::Watermark(1 << 40),
            Mark::Idle,
            Mark::End,
        ] {
            let bytes = postcard::to_allocvec(&m).unwrap();
            assert!(bytes.len() <= 9);
            assert_eq!(postcard::from_bytes::<Mark>(&bytes).unwrap(), m);
        }
    }
}
