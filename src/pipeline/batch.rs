//! Batches: the unit of data exchange between actors.
//!
//! Owns the [`Batch`] container (records plus their event timestamps, as two
//! parallel vectors) and the in-band control [`Signal`]s that travel with it.
//! Nothing here allocates per record: a batch is filled by pushing into
//! pre-sized vectors and drained by moving records out, so its buffers can be
//! reused batch after batch.

/// Event time in milliseconds since the Unix epoch.
pub type Timestamp = i64;

/// The largest watermark: sent when an input ends, it fires every window.
pub const MAX_WATERMARK: Timestamp = i64::MAX;

/// A batch of records with one event timestamp per record.
///
/// `values[i]` has timestamp `timestamps[i]`; both vectors always have the
/// same length.
///
/// ```
/// use weir::pipeline::Batch;
/// let mut b = Batch::with_capacity(2);
/// b.push("a", 10);
/// b.push("b", 20);
/// assert_eq!(b.len(), 2);
/// assert_eq!(b.iter().map(|(v, t)| (*v, t)).collect::<Vec<_>>(), vec![("a", 10), ("b", 20)]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Batch<T> {
    /// The records.
    pub values: Vec<T>,
    /// Their event timestamps (milliseconds).
    pub timestamps: Vec<Timestamp>,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Batch<T> {
    /// An empty batch that has not allocated.
    pub fn new() -> Self {
        Batch {
            values: Vec::new(),
            timestamps: Vec::new(),
        }
    }

    /// An empty batch with room for `n` records.
    pub fn with_capacity(n: usize) -> Self {
        Batch {
            values: Vec::with_capacity(n),
            timestamps: Vec::with_capacity(n),
        }
    }

    /// Builds a batch from records and timestamps of equal length.
    ///
    /// # Panics
    /// If the two vectors differ in length.
    pub fn from_parts(values: Vec<T>, timestamps: Vec<Timestamp>) -> Self {
        assert_eq!(
            values.len(),
            timestamps.len(),
            "batch parts differ in length"
        );
        Batch { values, timestamps }
    }

    /// Number of records.
    #[inline]
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when the batch holds no record.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Appends one record.
    #[inline]
    pub fn push(&mut self, value: T, ts: Timestamp) {
        self.values.push(value);
        self.timestamps.push(ts);
    }

    /// Reserves room for `n` more records.
    #[inline]
    pub fn reserve(&mut self, n: usize) {
        self.values.reserve(n);
        self.timestamps.reserve(n);
    }

    /// Removes every record, keeping the buffers.
    #[inline]
    pub fn clear(&mut self) {
        self.values.clear();
        self.timestamps.clear();
    }

    /// Moves the records out, leaving an empty batch with room for `cap` records.
    #[inline]
    pub fn take(&mut self, cap: usize) -> Batch<T> {
        std::mem::replace(self, Batch::with_capacity(cap))
    }

    /// Iterates over `(record, timestamp)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&T, Timestamp)> {
        self.values.iter().zip(self.timestamps.iter().copied())
    }

    /// Moves every record out as `(record, timestamp)`, keeping the buffers.
    pub fn drain(&mut self) -> impl Iterator<Item = (T, Timestamp)> + '_ {
        self.values.drain(..).zip(self.timestamps.drain(..))
    }

    /// The largest timestamp in the batch, if any.
    pub fn max_timestamp(&self) -> Option<Timestamp> {
        self.timestamps.iter().copied().max()
    }
}

/// In-band control information that follows a batch on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Nothing beyond the batch.
    None,
    /// From now on this input sends no record with a timestamp below this.
    Watermark(Timestamp),
    /// This input is idle: leave it out of the watermark minimum until it
    /// sends data or a watermark again.
    Idle,
    /// This input has ended; nothing follows on it.
    End,
    /// Checkpoint barrier `id`: every record of this input before it
    /// belongs to checkpoint `id`, every record after it to a later one.
    Barrier(u64),
}
