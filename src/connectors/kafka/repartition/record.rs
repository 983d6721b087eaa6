//! The wire format of a repartition topic.
//!
//! Owns [`Repartitioned`] (the codec of data records, both ways), [`Stamped`]
//! (a decoded record with its event time) and the control-record framing
//! ([`CONTROL_HEADER`], [`control_of`], [`control_payload`]).
//!
//! - A **data record** has no headers, no key, and the payload
//!   `ts (8 bytes, little-endian i64) ++ postcard(value)`: the event time
//!   travels exactly, whatever Kafka would accept as a record timestamp.
//! - A **control record** has the header `weir.ctl` whose value is the
//!   writer's index (decimal ASCII, `0..writers`), and the payload
//!   `postcard(Mark)`.
//!
//! Decoding never panics: a malformed data payload is an `Err` (the job's
//! dead letters), a malformed control record is reported and skipped.
//! Never hands a control record on as data.

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::marker::PhantomData;

use super::marks::Mark;
use crate::connectors::kafka::{KafkaDecode, KafkaEncode};
use crate::pipeline::Timestamp;

/// The header that marks a control record; its value is the writer index.
pub const CONTROL_HEADER: &str = "weir.ctl";

/// A decoded data record and its event time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped<T> {
    /// Event time, as the upstream stage had it.
    pub ts: Timestamp,
    /// The record.
    pub value: T,
}

/// The codec of a repartition topic's data records, for `T`: encodes with
/// the event time in front, decodes into [`Stamped`]. Carries the number
/// of upstream writers the reading side tracks.
///
/// ```
/// use weir::connectors::kafka::{KafkaDecode, KafkaEncode};
/// use weir::connectors::kafka::repartition::{Repartitioned, Stamped};
/// let codec = Repartitioned::<(String, u32)>::new(2);
/// let mut bytes = Vec::new();
/// codec.encode_at(&("ada".to_string(), 7), 12_345, &mut bytes).unwrap();
/// assert_eq!(bytes.len(), 8 + 1 + 3 + 1); // ts, length-prefixed str, varint
/// let back = codec.decode(&bytes).unwrap();
/// assert_eq!(back, Stamped { ts: 12_345, value: ("ada".to_string(), 7) });
/// ```
pub struct Repartitioned<T> {
    writers: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> Repartitioned<T> {
    /// The codec of a topic written by `writers` upstream writers.
    pub fn new(writers: usize) -> Self {
        Repartitioned {
            writers,
            _t: PhantomData,
        }
    }
}

impl<T> Clone for Repartitioned<T> {
    fn clone(&self) -> Self {
        Self::new(self.writers)
    }
}

impl<T> std::fmt::Debug for Repartitioned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repartitioned")
            .field("writers", &self.writers)
            .finish()
    }
}

impl<T: Serialize + 'static> KafkaEncode<T> for Repartitioned<T> {
    #[inline]
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), String> {
        self.encode_at(value, 0, out)
    }

    #[inline]
    fn encode_at(&self, value: &T, ts: Timestamp, out: &mut Vec<u8>) -> Result<(), String> {
        out.extend_from_slice(&ts.to_le_bytes());
        postcard::to_io(value, out)
            .map(|_| ())
            .map_err(|e| format!("unserialisable record: {e}"))
    }
}

impl<T: DeserializeOwned + Send + 'static> KafkaDecode for Repartitioned<T> {
    type Out = Stamped<T>;

    #[inline]
    fn decode(&self, payload: &[u8]) -> Result<Stamped<T>, String> {
        let (ts, rest) = payload
            .split_first_chunk::<8>()
            .ok_or_else(|| format!("repartition record of {} bytes", payload.len()))?;
        let value = postcard::from_bytes(rest).map_err(|e| format!("repartition record: {e}"))?;
        Ok(Stamped {
            ts: i64::from_le_bytes(*ts),
            value,
        })
    }

    #[inline]
    fn timestamp(&self, value: &Stamped<T>) -> Option<Timestamp> {
        Some(value.ts)
    }

    fn upstream_writers(&self) -> Option<usize> {
        Some(self.writers)
    }
}

/// A control record's writer: its index, and how many writers its stage
/// had when it wrote (`None`: not said).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Writer {
    /// Index in `0..of`.
    pub index: usize,
    /// The upstream stage's writer count when it wrote.
    pub of: Option<usize>,
}

/// The writer and mark of a control record, `None` for a data
/// record (no `weir.ctl` header), `Some(Err)` for a malformed one.
#[inline]
pub fn control_of<M: Message>(msg: &M) -> Option<Result<(Writer, Mark), String>> {
    let headers = msg.headers()?;
    let h = headers.iter().find(|h| h.key == CONTROL_HEADER)?;
    Some(parse_control(h.value, msg.payload().unwrap_or(&[])))
}

fn parse_control(writer: Option<&[u8]>, payload: &[u8]) -> Result<(Writer, Mark), String> {
    let bad = || format!("control record with writer {writer:?}");
    let text = writer
        .and_then(|w| std::str::from_utf8(w).ok())
        .ok_or_else(bad)?;
    let (index, of) = match text.split_once('/') {
        Some((i, n)) => (i, Some(n.parse::<usize>().map_err(|_| bad())?)),
        None => (text, None),
    };
    let index = index.parse::<usize>().map_err(|_| bad())?;
    let mark = postcard::from_bytes(payload).map_err(|e| format!("control record: {e}"))?;
    Ok((Writer { index, of }, mark))
}

/// The headers and payload of writer `writer`'s control record `mark`:
/// header `weir.ctl` = `"<index>"`, or `"<index>/<writers>"` when the
/// writer count is known (a reader configured for another count ignores
/// it: marks of a stage's earlier layout must not move the watermark of
/// its new one).
pub fn control_payload(writer: Writer, mark: Mark) -> (OwnedHeaders, Vec<u8>) {
    let id = match writer.of {
        Some(n) => format!("{}/{n}", writer.index),
        None => writer.index.to_string(),
    };
    let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
        key: CONTROL_HEADER,
        value: Some(id.as_bytes()),
    });
    let payload = postcard::to_allocvec(&mark).expect("a Mark always serialises");
    (headers, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        let c = Repartitioned::<String>::new(1);
        assert!(c.decode(&[1, 2, 3]).is_err());
        assert!(c.decode(&[0; 8]).is_err(), "no value after the time");
        let mut ok = Vec::new();
        c.encode_at(&"x".to_string(), -5, &mut ok).unwrap();
        assert_eq!(c.decode(&ok).unwrap().ts, -5);
        assert!(parse_control(Some(b"x"), &[]).is_err());
        assert!(parse_control(None, &[]).is_err());
        let idle = postcard::to_allocvec(&Mark::Idle).unwrap();
        assert_eq!(
            parse_control(Some(b"3"), &idle),
            Ok((Writer { index: 3, of: None }, Mark::Idle))
        );
        assert_eq!(
            parse_control(Some(b"3/4"), &idle),
            Ok((
                Writer {
                    index: 3,
                    of: Some(4)
                },
                Mark::Idle
            ))
        );
        assert!(parse_control(Some(b"3/x"), &idle).is_err());
    }
}
