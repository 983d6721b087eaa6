//! Line-oriented file input: one file or every file of a directory.
//!
//! Owns [`FileSource`] (text lines or JSON lines) and its reader. Files are
//! read in name order; with parallelism `p`, instance `s` reads the files at
//! positions `s, s + p, ..`. A line that does not decode is counted and sent
//! to the dead-letter output with its file and line number, and reading goes
//! on. The position (file, byte offset, line) is reported so a restart can
//! seek. Never panics on bad input; a missing path is rejected at build time.
//!
//! Event time: the files of one instance are read one after another, so a
//! file not read yet holds the watermark, as a Kafka partition that has not
//! delivered does. The watermark stays back until the instance reaches its
//! last file, then follows that file's largest timestamp minus the bound.
//! Earlier files' windows wait in the window operator until then (bounded
//! input: memory grows with the open windows of the files before the last).

use serde::de::DeserializeOwned;
use serde_json::json;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::format::{Decode, Json, Text};
use crate::pipeline::{
    Batch, BuildError, ConnectorError, DeadLetter, DeadLetters, ReaderWatermark, Source,
    SourceReader, SourceStatus, TaskContext, TaskMetrics, Timestamp,
};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Reads lines from a file or a directory of files.
///
/// ```no_run
/// use weir::connectors::FileSource;
/// #[derive(serde::Deserialize)]
/// struct Click { user: String, ts: i64 }
/// let text = FileSource::lines("input.txt");
/// let clicks = FileSource::json::<Click>("clicks/").with_timestamps(|c: &Click| c.ts);
/// # let _ = (text, clicks);
/// ```
#[derive(Clone)]
pub struct FileSource<D: Decode, F = fn(&<D as Decode>::Out) -> Timestamp> {
    path: PathBuf,
    decode: D,
    ts: Option<F>,
}

impl FileSource<Text> {
    /// Each line is a `String`; stamped with the time it is read.
    pub fn lines(path: impl Into<PathBuf>) -> Self {
        FileSource {
            path: path.into(),
            decode: Text,
            ts: None,
        }
    }

    /// Each line is a JSON `T`; malformed lines go to the dead-letter output.
    pub fn json<T: DeserializeOwned + Send + 'static>(
        path: impl Into<PathBuf>,
    ) -> FileSource<Json<T>> {
        FileSource {
            path: path.into(),
            decode: Json::default(),
            ts: None,
        }
    }
}

impl<D: Decode, F> FileSource<D, F> {
    /// Stamps records with `f(record)` instead of the read time.
    pub fn with_timestamps<G: Fn(&D::Out) -> Timestamp>(self, f: G) -> FileSource<D, G> {
        FileSource {
            path: self.path,
            decode: self.decode,
            ts: Some(f),
        }
    }
}

fn list_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))? {
        let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

impl<D, F> Source for FileSource<D, F>
where
    D: Decode,
    F: Fn(&D::Out) -> Timestamp + Clone + Send + Sync + 'static,
{
    type Out = D::Out;
    type Reader = FileReader<D, F>;

    fn validate(&self) -> Result<(), BuildError> {
        list_files(&self.path)
            .map(|_| ())
            .map_err(|e| BuildError::invalid("source.path", e))
    }

    fn open(&self, ctx: &TaskContext) -> Result<Self::Reader, ConnectorError> {
        let all = list_files(&self.path).map_err(ConnectorError::new)?;
        let p = ctx.parallelism.max(1);
        let files = all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % p == ctx.subtask)
            .map(|(_, f)| f)
            .collect();
        Ok(FileReader {
            files,
            file_index: 0,
            current: None,
            offset: 0,
            line_no: 0,
            buf: String::new(),
            decode: self.decode.clone(),
            ts: self.ts.clone(),
            dead_letters: ctx.dead_letters.clone(),
            metrics: ctx.metrics.clone(),
            bound_ms: ctx.watermarks.bound_ms(),
            file_max_ts: i64::MIN,
            emitted: i64::MIN,
        })
    }
}

/// One instance's reader of a [`FileSource`].
pub struct FileReader<D, F> {
    files: Vec<PathBuf>,
    file_index: usize,
    current: Option<BufReader<File>>,
    offset: u64,
    line_no: u64,
    buf: String,
    decode: D,
    ts: Option<F>,
    dead_letters: DeadLetters,
    metrics: std::sync::Arc<TaskMetrics>,
    /// The watermark bound (`None`: no watermarks).
    bound_ms: Option<i64>,
    /// Largest timestamp read from the current file.
    file_max_ts: Timestamp,
    /// Last watermark reported.
    emitted: Timestamp,
}

impl<D, F> FileReader<D, F> {
    fn open_current(&mut self) -> Result<bool, ConnectorError> {
        if self.current.is_some() {
            return Ok(true);
        }
        let Some(path) = self.files.get(self.file_index) else {
            return Ok(false);
        };
        let mut f = File::open(path)
            .map_err(|e| ConnectorError::new(format!("{}: {e}", path.display())))?;
        if self.offset > 0 {
            f.seek(SeekFrom::Start(self.offset))?;
        }
        self.current = Some(BufReader::with_capacity(256 * 1024, f));
        Ok(true)
    }
}

impl<D, F> SourceReader for FileReader<D, F>
where
    D: Decode,
    F: Fn(&D::Out) -> Timestamp + Send + 'static,
{
    type Out = D::Out;

    fn poll(
        &mut self,
        out: &mut Batch<D::Out>,
        max: usize,
    ) -> Result<SourceStatus, ConnectorError> {
        let now = now_ms();
        let mut bad = Vec::new();
        let mut n = 0;
        while n < max {
            if !self.open_current()? {
                break;
            }
            self.buf.clear();
            let reader = self.current.as_mut().expect("opened");
            let read = reader.read_line(&mut self.buf).map_err(|e| {
                ConnectorError::new(format!(
                    "{}: line {}: {e}",
                    self.files[self.file_index].display(),
                    self.line_no + 1
                ))
            })?;
            if read == 0 {
                self.current = None;
                self.file_index += 1;
                self.offset = 0;
                self.line_no = 0;
                self.file_max_ts = i64::MIN;
                continue;
            }
            self.offset += read as u64;
            self.line_no += 1;
            let line = self.buf.trim_end_matches(['\n', '\r']);
            match self.decode.decode(line) {
                Ok(v) => {
                    let ts = match &self.ts {
                        Some(f) => f(&v),
                        None => now,
                    };
                    self.file_max_ts = self.file_max_ts.max(ts);
                    out.push(v, ts);
                    n += 1;
                }
                Err(reason) => bad.push(DeadLetter {
                    reason,
                    source: self.files[self.file_index].display().to_string(),
                    position: format!("line {}", self.line_no),
                    payload: line.to_string(),
                }),
            }
        }
        self.dead_letters.send_from(&self.metrics, bad);
        Ok(if self.file_index >= self.files.len() {
            SourceStatus::Finished
        } else {
            SourceStatus::Ready
        })
    }

    fn position(&self) -> Option<serde_json::Value> {
        Some(json!({ "file": self.file_index, "offset": self.offset, "line": self.line_no }))
    }

    /// A file not read yet holds the watermark; on the last file it follows
    /// that file's largest timestamp.
    fn watermark(&mut self) -> ReaderWatermark {
        let Some(bound) = self.bound_ms else {
            return ReaderWatermark::Derived;
        };
        if self.file_index + 1 < self.files.len() || self.file_max_ts == i64::MIN {
            return if self.emitted > i64::MIN {
                ReaderWatermark::At(self.emitted)
            } else {
                ReaderWatermark::Held
            };
        }
        self.emitted = self.emitted.max(self.file_max_ts.saturating_sub(bound));
        ReaderWatermark::At(self.emitted)
    }

    fn seek(&mut self, position: &serde_json::Value) -> Result<(), ConnectorError> {
        let get = |k: &str| {
            position
                .get(k)
                .and_then(|v| v.as_u64())
                .ok_or_else(|| ConnectorError::new(format!("file source: bad position {position}")))
        };
        self.file_index = get("file")? as usize;
        self.offset = get("offset")?;
        self.line_no = get("line")?;
        self.current = None;
        Ok(())
    }
}
