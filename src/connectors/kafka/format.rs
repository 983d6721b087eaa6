//! Value formats of Kafka records.
//!
//! Owns [`KafkaDecode`] (record payload bytes → a value, or why it is
//! malformed) with [`Bytes`], [`Text`] and [`Json`], and [`KafkaEncode`]
//! (a value → payload bytes) with [`JsonValue`] and [`TextValue`] (and raw
//! bytes for `Vec<u8>`). Decoding never panics and never allocates beyond
//! the value itself: a malformed payload is an `Err` that the source sends,
//! unchanged, to the dead-letter topic.

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
