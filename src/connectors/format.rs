//! Record formats of the line-based connectors.
//!
//! Owns [`Decode`] (one line of input → a record, or the reason it is
//! malformed) with [`Text`] and [`Json`], and [`Encode`] (a record → bytes of
//! output) with [`Lines`] and [`JsonLines`]. Decoding never panics: a bad line
//! is an `Err` that the source turns into a dead letter.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Display;
use std::io::Write;
use std::marker::PhantomData;

/// Turns one line into a record.
pub trait Decode: Clone + Send + Sync + 'static {
    /// The record type.
    type Out: Send + 'static;
    /// Decodes `line` (without its newline), or says why it is malformed.
    fn decode(&self, line: &str) -> Result<Self::Out, String>;
}

/// Each line is a `String` record.
#[derive(Debug, Clone, Copy, Default)]
pub struct Text;

impl Decode for Text {
    type Out = String;
    #[inline]
    fn decode(&self, line: &str) -> Result<String, String> {
        Ok(line.to_string())
    }
}

/// Each line is a JSON document decoded into `T` with serde.
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

impl<T: DeserializeOwned + Send + 'static> Decode for Json<T> {
    type Out = T;
    #[inline]
    fn decode(&self, line: &str) -> Result<T, String> {
        serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))
    }
}

/// Turns a record into output bytes (one line per record).
pub trait Encode<T>: Clone + Send + Sync + 'static {
    /// Appends the encoded record, newline included, to `out`.
    fn encode(&self, value: &T, out: &mut Vec<u8>);
}

/// `Display` of the record, one per line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lines;

impl<T: Display> Encode<T> for Lines {
    #[inline]
    fn encode(&self, value: &T, out: &mut Vec<u8>) {
        let _ = writeln!(out, "{value}");
    }
}

/// The record as one line of JSON.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<T: Serialize> Encode<T> for JsonLines {
    #[inline]
    fn encode(&self, value: &T, out: &mut Vec<u8>) {
        if let Err(e) = serde_json::to_writer(&mut *out, value) {
            let _ = write!(out, "{{\"error\":\"unserialisable record: {e}\"}}");
        }
        out.push(b'\n');
    }
}
