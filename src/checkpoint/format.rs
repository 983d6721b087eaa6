//! The versioned binary envelope of a checkpoint's operator states.
//!
//! One `state` object per checkpoint:
//!
//! ```text
//! b"WEIRCHK\0"  u32 LE format version (1)  u32 LE task count
//! per task:     u32 LE header length, header (JSON: task uid, operator
//!               type), u64 LE state length, state bytes (the operator's
//!               own serde encoding)
//! ```
//!
//! The header names the operator's uid (its task name,
//! `job/stage#subtask`, stable for a job graph and parallelism) and its
//! Rust type (which spells the key, value and accumulator types), so a
//! restore into a job whose operator differs fails naming both. Never
//! interprets the state bytes themselves.

use serde::{Deserialize, Serialize};

use super::storage::TaskState;

/// Magic bytes at the start of every state object.
pub const MAGIC: &[u8; 8] = b"WEIRCHK\0";
/// The envelope version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    task: String,
    operator: String,
}

/// The operator signature stored in a header and compared on restore: the
/// operator's Rust type name with every closure type written `{closure}`.
/// Key, value, accumulator and aggregator types stay; where a closure was
/// defined does not (moving a `key_by` closure into a function must not
/// make a checkpoint unusable).
///
/// ```
/// use weir::checkpoint::format::operator_signature;
/// assert_eq!(
///     operator_signature("W<app::job::{{closure}}, Count, (u64, u64)>"),
///     "W<{closure}, Count, (u64, u64)>"
/// );
/// ```
pub fn operator_signature(type_name: &str) -> String {
    let mut out = String::with_capacity(type_name.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if token.ends_with("{{closure}}") {
            out.push_str("{closure}");
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in type_name.chars() {
        if matches!(c, '<' | '>' | ',' | ' ' | '(' | ')' | '[' | ']' | ';' | '&') {
            flush(&mut token, &mut out);
            out.push(c);
        } else {
            token.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

/// Encodes the states of every task.
///
/// ```
/// use weir::checkpoint::{format, TaskState};
/// let states = vec![TaskState { task: "j/1-window#0".into(), operator: "Count".into(), state: vec![1, 2] }];
/// let bytes = format::encode(&states);
/// assert_eq!(format::decode(&bytes).unwrap(), states);
/// ```
pub fn encode(states: &[TaskState]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + states.iter().map(|s| s.state.len() + 96).sum::<usize>());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(states.len() as u32).to_le_bytes());
    for s in states {
        let header = serde_json::to_vec(&Header {
            task: s.task.clone(),
            operator: s.operator.clone(),
        })
        .expect("a header of strings encodes");
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&(s.state.len() as u64).to_le_bytes());
        out.extend_from_slice(&s.state);
    }
    out
}

/// Decodes what [`encode`] wrote, naming what is wrong otherwise.
pub fn decode(bytes: &[u8]) -> Result<Vec<TaskState>, String> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(8)? != MAGIC {
        return Err("not a weir checkpoint (bad magic)".into());
    }
    let version = r.u32()?;
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}, this build reads {FORMAT_VERSION}"
        ));
    }
    let n = r.u32()?;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let len = r.u32()? as usize;
        let header: Header = serde_json::from_slice(r.take(len)?)
            .map_err(|e| format!("task header at byte {}: {e}", r.at))?;
        let len = usize::try_from(r.u64()?).map_err(|_| "state too large".to_string())?;
        let state = r.take(len)?.to_vec();
        out.push(TaskState {
            task: header.task,
            operator: header.operator,
            state,
        });
    }
    if r.at != bytes.len() {
        return Err(format!("{} bytes after the last task", bytes.len() - r.at));
    }
    Ok(out)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("truncated at byte {} (wanted {n} more)", self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_or_foreign_bytes_are_named() {
        let states = vec![TaskState {
            task: "j/1-window#0".into(),
            operator: "W".into(),
            state: vec![7; 10],
        }];
        let bytes = encode(&states);
        assert!(decode(&bytes[..bytes.len() - 1])
            .unwrap_err()
            .contains("truncated"));
        assert!(decode(b"nonsense-bytes").unwrap_err().contains("magic"));
        let mut v2 = bytes.clone();
        v2[8] = 2;
        assert!(decode(&v2).unwrap_err().contains("version 2"));
    }
}
