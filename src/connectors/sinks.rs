//! The local sinks: stdout, file, blackhole and collect.
//!
//! Owns [`StdoutSink`], [`FileSink`], [`BlackholeSink`] and [`CollectSink`].
//! Each encodes a whole batch into one buffer and writes it with one call
//! (one lock per batch for stdout and collect, never per record), and
//! flushes at the end of every batch so output is visible promptly and
//! nothing is lost when the job stops.

use std::fs::File;
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::format::{Encode, JsonLines, Lines};
use crate::pipeline::{Batch, BuildError, ConnectorError, Sink, SinkWriter, TaskContext};

/// Writes records to standard output, one line each.
///
/// ```
/// use weir::connectors::StdoutSink;
/// let text: StdoutSink<String, _> = StdoutSink::lines();
/// let json: StdoutSink<Vec<u32>, _> = StdoutSink::json();
/// # let _ = (text, json);
/// ```
pub struct StdoutSink<T, E> {
    encode: E,
    _types: PhantomData<fn(T)>,
}

impl<T> StdoutSink<T, Lines> {
    /// Each record's `Display`, one per line.
    pub fn lines() -> Self {
        StdoutSink {
            encode: Lines,
            _types: PhantomData,
        }
    }
}

impl<T> StdoutSink<T, JsonLines> {
    /// Each record as a line of JSON.
    pub fn json() -> Self {
        StdoutSink {
            encode: JsonLines,
            _types: PhantomData,
        }
    }
}

impl<T: Send + 'static, E: Encode<T>> Sink for StdoutSink<T, E> {
    type In = T;
    type Writer = EncodingWriter<T, E, Stdout>;

    fn open(&self, _ctx: &TaskContext) -> Result<Self::Writer, ConnectorError> {
        Ok(EncodingWriter::new(self.encode.clone(), Stdout))
    }
}

/// Writes records to a file, one line each (`path` at parallelism 1,
/// `path.<instance>` above).
pub struct FileSink<T, E> {
    path: PathBuf,
    encode: E,
    _types: PhantomData<fn(T)>,
}

impl<T> FileSink<T, Lines> {
    /// Each record's `Display`, one per line.
    pub fn lines(path: impl Into<PathBuf>) -> Self {
        FileSink {
            path: path.into(),
            encode: Lines,
            _types: PhantomData,
        }
    }
}

impl<T> FileSink<T, JsonLines> {
    /// Each record as a line of JSON.
    pub fn json(path: impl Into<PathBuf>) -> Self {
        FileSink {
            path: path.into(),
            encode: JsonLines,
            _types: PhantomData,
        }
    }
}

impl<T: Send + 'static, E: Encode<T>> Sink for FileSink<T, E> {
    type In = T;
    type Writer = EncodingWriter<T, E, File>;

    fn validate(&self) -> Result<(), BuildError> {
        let parent = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(BuildError::invalid(
                "sink.path",
                format!("directory {} does not exist", parent.display()),
            ));
        }
        Ok(())
    }

    fn open(&self, ctx: &TaskContext) -> Result<Self::Writer, ConnectorError> {
        let path = if ctx.parallelism == 1 {
            self.path.clone()
        } else {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{}", ctx.subtask));
            PathBuf::from(p)
        };
        let file = File::create(&path)
            .map_err(|e| ConnectorError::new(format!("{}: {e}", path.display())))?;
        Ok(EncodingWriter::new(self.encode.clone(), file))
    }
}

/// Standard output as a `Write` that locks once per call.
pub struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stdout().lock().write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        std::io::stdout().lock().write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

/// Encodes a batch into one buffer and writes it at once.
pub struct EncodingWriter<T, E, W> {
    encode: E,
    out: W,
    buf: Vec<u8>,
    _types: PhantomData<fn(T)>,
}

impl<T, E, W> EncodingWriter<T, E, W> {
    fn new(encode: E, out: W) -> Self {
        EncodingWriter {
            encode,
            out,
            buf: Vec::with_capacity(64 * 1024),
            _types: PhantomData,
        }
    }
}

impl<T: Send + 'static, E: Encode<T>, W: Write + Send + 'static> SinkWriter
    for EncodingWriter<T, E, W>
{
    type In = T;

    fn write(&mut self, batch: &mut Batch<T>) -> Result<(), ConnectorError> {
        self.buf.clear();
        for v in &batch.values {
            self.encode.encode(v, &mut self.buf);
        }
        batch.clear();
        self.out.write_all(&self.buf)?;
        self.out.flush()?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        self.out.flush()?;
        Ok(())
    }
}

/// Discards records (after touching each, so the work is not optimised away).
pub struct BlackholeSink<T>(PhantomData<fn(T)>);

impl<T> Default for BlackholeSink<T> {
    fn default() -> Self {
        BlackholeSink(PhantomData)
    }
}

impl<T> BlackholeSink<T> {
    /// A blackhole.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<T: Send + 'static> Sink for BlackholeSink<T> {
    type In = T;
    type Writer = BlackholeWriter<T>;

    fn open(&self, _ctx: &TaskContext) -> Result<Self::Writer, ConnectorError> {
        Ok(BlackholeWriter(PhantomData))
    }
}

/// The writer of a [`BlackholeSink`].
pub struct BlackholeWriter<T>(PhantomData<fn(T)>);

impl<T: Send + 'static> SinkWriter for BlackholeWriter<T> {
    type In = T;

    #[inline]
    fn write(&mut self, batch: &mut Batch<T>) -> Result<(), ConnectorError> {
        for v in batch.values.drain(..) {
            std::hint::black_box(v);
        }
        batch.timestamps.clear();
        Ok(())
    }
}

/// Keeps every record in memory, for tests; read them from [`Collected`].
pub struct CollectSink<T> {
    store: Collected<T>,
}

/// The records a [`CollectSink`] received, shared by all its instances.
pub struct Collected<T>(Arc<Mutex<Vec<T>>>);

impl<T> Clone for Collected<T> {
    fn clone(&self) -> Self {
        Collected(self.0.clone())
    }
}

impl<T> Collected<T> {
    /// Takes the records received so far.
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Number of records received so far.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when nothing was received.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> CollectSink<T> {
    /// A sink and the handle to read what it collects.
    pub fn new() -> (Self, Collected<T>) {
        let store = Collected(Arc::new(Mutex::new(Vec::new())));
        (
            CollectSink {
                store: store.clone(),
            },
            store,
        )
    }
}

impl<T: Send + 'static> Sink for CollectSink<T> {
    type In = T;
    type Writer = Collected<T>;

    fn open(&self, _ctx: &TaskContext) -> Result<Self::Writer, ConnectorError> {
        Ok(self.store.clone())
    }
}

impl<T: Send + 'static> SinkWriter for Collected<T> {
    type In = T;

    fn write(&mut self, batch: &mut Batch<T>) -> Result<(), ConnectorError> {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.append(&mut batch.values);
        batch.timestamps.clear();
        Ok(())
    }
}
