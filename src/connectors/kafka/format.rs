//! Value formats of Kafka records.
//!
//! Owns [`KafkaDecode`] (record payload bytes → a value, or why it is
//! malformed) with [`Bytes`], [`Text`] and [`Json`] ([`WithPositions`]
//! also keeps each record's partition and offset, as [`FromKafka`]), and
//! [`KafkaEncode`] (a value → payload bytes) with [`JsonValue`] and
//! [`TextValue`] (and raw bytes for `Vec<u8>`). Decoding never panics and
//! never allocates beyond the value itself: a malformed payload is an
//! `Err` that the source sends, unchanged, to the dead-letter topic.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Display;
use std::io::Write;
use std::marker::PhantomData;

/// Turns a Kafka payload into a record.
pub trait KafkaDecode: Clone + Send + Sync + 'static {
    /// The record type.
    type Out: Send + 'static;
    /// Decodes `payload` (empty for a null payload), or says why it is malformed.
    fn decode(&self, payload: &[u8]) -> Result<Self::Out, String>;

    /// Decodes the payload of the message at `offset` of `partition`: the
    /// source calls this one. The default ignores where it was read.
    #[inline]
    fn decode_at(
        &self,
        payload: &[u8],
        _partition: i32,
        _offset: i64,
    ) -> Result<Self::Out, String> {
        self.decode(payload)
    }

    /// The event time a decoded record carries in its payload (weir's own
    /// formats, e.g. repartition topics), used when the source has no
    /// timestamp extractor; `None` (the default): the Kafka record's
    /// timestamp.
    #[inline]
    fn timestamp(&self, _value: &Self::Out) -> Option<crate::pipeline::Timestamp> {
        None
    }

    /// For a repartition topic: the number of upstream writers whose
    /// control records (watermark, idle, end of input) the source must
    /// track in every partition, and never hand on as records (see
    /// `connectors::kafka::repartition`). `None` (the default): a plain
    /// topic, whose records are all data.
    fn upstream_writers(&self) -> Option<usize> {
        None
    }
}

/// A record with where it was read: its partition and offset in the
/// source topic (`-1` for both when unknown). Serialises as `value` alone,
/// so a late record written out as JSON is the payload that came in.
///
/// ```
/// use weir::connectors::kafka::FromKafka;
/// let r = FromKafka { value: 7u32, partition: 2, offset: 41 };
/// assert_eq!(serde_json::to_string(&r).unwrap(), "7");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromKafka<T> {
    /// The decoded record.
    pub value: T,
    /// Its partition.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
}

impl<T: Serialize> Serialize for FromKafka<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

/// Decodes with `D` and keeps each record's partition and offset
/// ([`FromKafka`]); see `KafkaSource::with_positions`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WithPositions<D>(pub D);

impl<D: KafkaDecode> KafkaDecode for WithPositions<D> {
    type Out = FromKafka<D::Out>;
    #[inline]
    fn decode(&self, payload: &[u8]) -> Result<Self::Out, String> {
        self.decode_at(payload, -1, -1)
    }
    #[inline]
    fn decode_at(&self, payload: &[u8], partition: i32, offset: i64) -> Result<Self::Out, String> {
        Ok(FromKafka {
            value: self.0.decode_at(payload, partition, offset)?,
            partition,
            offset,
        })
    }
    #[inline]
    fn timestamp(&self, value: &Self::Out) -> Option<crate::pipeline::Timestamp> {
        self.0.timestamp(&value.value)
    }
    fn upstream_writers(&self) -> Option<usize> {
        self.0.upstream_writers()
    }
}

/// The payload as raw bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bytes;

impl KafkaDecode for Bytes {
    type Out = Vec<u8>;
    #[inline]
    fn decode(&self, payload: &[u8]) -> Result<Vec<u8>, String> {
        Ok(payload.to_vec())
    }
}

/// The payload as UTF-8 text.
#[derive(Debug, Clone, Copy, Default)]
pub struct Text;

impl KafkaDecode for Text {
    type Out = String;
    #[inline]
    fn decode(&self, payload: &[u8]) -> Result<String, String> {
        std::str::from_utf8(payload)
            .map(str::to_string)
            .map_err(|e| format!("invalid UTF-8: {e}"))
    }
}

/// The payload as a JSON document decoded into `T` with serde.
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T> Default for Json<T> {
    fn default() -> Self {
        Json(PhantomData)
    }
}

impl<T> Clone for Json<T> {
    fn clone(&self) -> Self {
        Json(PhantomData)
    }
}

impl<T: DeserializeOwned + Send + 'static> KafkaDecode for Json<T> {
    type Out = T;
    #[inline]
    fn decode(&self, payload: &[u8]) -> Result<T, String> {
        serde_json::from_slice(payload).map_err(|e| format!("invalid JSON: {e}"))
    }
}

/// Turns a record into a Kafka payload.
pub trait KafkaEncode<T>: Clone + Send + Sync + 'static {
    /// Writes the payload of `value` into `out` (cleared by the caller).
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), String>;

    /// Writes the payload of `value`, whose event time is `ts`: the sink
    /// calls this one. The default ignores the time (it travels as the
    /// Kafka record's timestamp); weir's repartition format keeps it in
    /// the payload.
    #[inline]
    fn encode_at(
        &self,
        value: &T,
        _ts: crate::pipeline::Timestamp,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        self.encode(value, out)
    }
}

/// The record as a JSON document.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonValue;

impl<T: Serialize> KafkaEncode<T> for JsonValue {
    #[inline]
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), String> {
        serde_json::to_writer(out, value).map_err(|e| format!("unserialisable record: {e}"))
    }
}

/// The record's `Display` text.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextValue;

impl<T: Display> KafkaEncode<T> for TextValue {
    #[inline]
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), String> {
        write!(out, "{value}").map_err(|e| e.to_string())
    }
}

impl KafkaEncode<Vec<u8>> for Bytes {
    #[inline]
    fn encode(&self, value: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), String> {
        out.extend_from_slice(value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
    struct R {
        a: u32,
    }

    #[test]
    fn with_positions_keeps_where_each_record_was_read() {
        let d = WithPositions(Json::<R>::default());
        let r = d.decode_at(br#"{"a":1}"#, 3, 17).unwrap();
        assert_eq!(
            r,
            FromKafka {
                value: R { a: 1 },
                partition: 3,
                offset: 17
            }
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"a":1}"#,
            "serialises as the value"
        );
        let e = d.decode_at(b"{nope", 3, 18).unwrap_err();
        assert!(e.starts_with("invalid JSON"), "{e}");
    }

    #[test]
    fn json_round_trip_and_errors() {
        let j = Json::<R>::default();
        assert_eq!(j.decode(br#"{"a":3}"#).unwrap(), R { a: 3 });
        assert!(j.decode(b"{").unwrap_err().starts_with("invalid JSON"));
        let mut out = Vec::new();
        JsonValue.encode(&R { a: 4 }, &mut out).unwrap();
        assert_eq!(out, br#"{"a":4}"#);
    }

    #[test]
    fn text_rejects_bad_utf8() {
        assert_eq!(Text.decode(b"hi").unwrap(), "hi");
        assert!(Text.decode(&[0xff, 0xfe]).is_err());
        assert_eq!(Bytes.decode(&[0xff]).unwrap(), vec![0xff]);
    }
}
