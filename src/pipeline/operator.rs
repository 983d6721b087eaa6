//! The operator interface and the stateless operators that chain into one actor.
//!
//! Owns [`Operator`] (batch in, batch out, watermark hook, state snapshot) and
//! the stateless operators [`Map`], [`Filter`], [`FlatMap`] plus [`Chain`],
//! which fuses two operators into one so consecutive stateless steps run in
//! one actor without a channel between them (Flink's operator chaining).
//!
//! Must never allocate, lock or dispatch dynamically per record: closures are
//! generic type parameters, monomorphised into the loop.

use std::marker::PhantomData;

use super::batch::{Batch, Timestamp};
use super::context::TaskContext;
use super::error::ConnectorError;

/// A step of a pipeline: consumes batches of `In`, appends `Out` records to
/// an output batch.
///
/// Operators are cloned once per parallel instance (and again on restart),
/// so a clone must be a fresh, independent instance.
pub trait Operator: Clone + Send + 'static {
    /// Record type consumed.
    type In: Send + 'static;
    /// Record type produced.
    type Out: Send + 'static;

    /// Called once when the task starts, before any batch.
    fn open(&mut self, _ctx: &TaskContext) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// True when the operator works record at a time ([`Operator::on_record`]
    /// is implemented): a chain of such operators runs as one fused loop,
    /// with no intermediate batch between its steps.
    const RECORD_AT_A_TIME: bool = false;

    /// Processes one record, emitting results to `out`. Only called when
    /// [`Operator::RECORD_AT_A_TIME`] is true.
    #[inline(always)]
    fn on_record<E: Emit<Self::Out>>(&mut self, _value: Self::In, _ts: Timestamp, _out: &mut E) {
        unreachable!("{} is not record-at-a-time", std::any::type_name::<Self>())
    }

    /// Moves every record out of `input` (leaving it empty, buffers kept)
    /// and appends results to `out`.
    fn process(
        &mut self,
        input: &mut Batch<Self::In>,
        out: &mut Batch<Self::Out>,
    ) -> Result<(), ConnectorError>;

    /// The combined input watermark advanced to `watermark`: emit what it
    /// completes (window results) into `out`. Stateless operators do nothing.
    fn on_watermark(
        &mut self,
        _watermark: Timestamp,
        _out: &mut Batch<Self::Out>,
    ) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Serialises the operator's state (empty for stateless operators).
    fn snapshot(&self) -> Result<Vec<u8>, ConnectorError> {
        Ok(Vec::new())
    }

    /// Restores state produced by [`Operator::snapshot`].
    fn restore(&mut self, _state: &[u8]) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Restores, after a rescale, the keys `keys` assigns to this instance
    /// from the snapshots of the instances that held them before (each
    /// from [`Operator::snapshot`]); `None`: the input was not partitioned
    /// by key, so state cannot be split. The default suits stateless
    /// operators (empty snapshots) and refuses anything else, naming the
    /// operator: keyed operators override it.
    fn restore_keys(
        &mut self,
        states: &[Vec<u8>],
        _keys: Option<&crate::pipeline::keyed::KeyGroups>,
    ) -> Result<(), ConnectorError> {
        refuse_split::<Self>(states)
    }
}

/// What [`Operator::restore_keys`] does for state it cannot split: nothing
/// for empty snapshots, an error naming operator `O` otherwise.
pub(crate) fn refuse_split<O>(states: &[Vec<u8>]) -> Result<(), ConnectorError> {
    if states.iter().all(|s| s.is_empty()) {
        return Ok(());
    }
    Err(ConnectorError::new(format!(
        "operator {} cannot take over state that other instances held before a rescale \
         (its input is not partitioned by key, or it keeps no per-key state)",
        crate::checkpoint::format::operator_signature(std::any::type_name::<O>())
    )))
}

/// Where a record-at-a-time operator sends its output.
pub trait Emit<T> {
    /// Emits one record.
    fn emit(&mut self, value: T, ts: Timestamp);
}

impl<T> Emit<T> for Batch<T> {
    #[inline(always)]
    fn emit(&mut self, value: T, ts: Timestamp) {
        self.push(value, ts);
    }
}

/// Declares a stateless operator holding one user closure `f`: the struct,
/// a `Clone` that clones the closure, and `new(f)`.
macro_rules! closure_operator {
    ($(#[$doc:meta])* $name:ident<F, $i:ident, $o:ident>, $new_doc:literal) => {
        $(#[$doc])*
        pub struct $name<F, $i, $o> {
            f: F,
            _types: PhantomData<fn($i) -> $o>,
        }
        closure_operator!(@impls $name<F, $i, $o>, $new_doc);
    };
    ($(#[$doc:meta])* $name:ident<F, $t:ident>, $new_doc:literal) => {
        $(#[$doc])*
        pub struct $name<F, $t> {
            f: F,
            _types: PhantomData<fn($t) -> $t>,
        }
        closure_operator!(@impls $name<F, $t>, $new_doc);
    };
    (@impls $name:ident<F $(, $p:ident)*>, $new_doc:literal) => {
        impl<F: Clone $(, $p)*> Clone for $name<F $(, $p)*> {
            fn clone(&self) -> Self {
                Self::new(self.f.clone())
            }
        }

        impl<F $(, $p)*> $name<F $(, $p)*> {
            #[doc = $new_doc]
            pub fn new(f: F) -> Self {
                $name {
                    f,
                    _types: PhantomData,
                }
            }
        }
    };
}

/// The operator that passes records through unchanged: the start of a chain.
pub struct Identity<T>(PhantomData<fn(T) -> T>);

impl<T> Clone for Identity<T> {
    fn clone(&self) -> Self {
        Identity(PhantomData)
    }
}

impl<T> Default for Identity<T> {
    fn default() -> Self {
        Identity(PhantomData)
    }
}

impl<T: Send + 'static> Operator for Identity<T> {
    type In = T;
    type Out = T;
    const RECORD_AT_A_TIME: bool = true;

    #[inline(always)]
    fn on_record<E: Emit<T>>(&mut self, value: T, ts: Timestamp, out: &mut E) {
        out.emit(value, ts);
    }

    #[inline]
    fn process(&mut self, input: &mut Batch<T>, out: &mut Batch<T>) -> Result<(), ConnectorError> {
        if out.is_empty() {
            std::mem::swap(input, out);
        } else {
            out.values.append(&mut input.values);
            out.timestamps.append(&mut input.timestamps);
        }
        Ok(())
    }
}

closure_operator!(
    /// Applies a function to every record.
    Map<F, I, O>,
    "A map operator over `f`."
);

impl<F, I, O> Operator for Map<F, I, O>
where
    F: FnMut(I) -> O + Clone + Send + 'static,
    I: Send + 'static,
    O: Send + 'static,
{
    type In = I;
    type Out = O;
    const RECORD_AT_A_TIME: bool = true;

    #[inline(always)]
    fn on_record<E: Emit<O>>(&mut self, value: I, ts: Timestamp, out: &mut E) {
        out.emit((self.f)(value), ts);
    }

    #[inline]
    fn process(&mut self, input: &mut Batch<I>, out: &mut Batch<O>) -> Result<(), ConnectorError> {
        let f = &mut self.f;
        out.values.extend(input.values.drain(..).map(f));
        out.timestamps.append(&mut input.timestamps);
        Ok(())
    }
}

closure_operator!(
    /// Keeps the records for which a predicate holds.
    Filter<F, T>,
    "A filter operator over `f`."
);

impl<F, T> Operator for Filter<F, T>
where
    F: FnMut(&T) -> bool + Clone + Send + 'static,
    T: Send + 'static,
{
    type In = T;
    type Out = T;
    const RECORD_AT_A_TIME: bool = true;

    #[inline(always)]
    fn on_record<E: Emit<T>>(&mut self, value: T, ts: Timestamp, out: &mut E) {
        if (self.f)(&value) {
            out.emit(value, ts);
        }
    }

    #[inline]
    fn process(&mut self, input: &mut Batch<T>, out: &mut Batch<T>) -> Result<(), ConnectorError> {
        // Compact in place (each record visited once, in order), moving
        // timestamps along; then hand the buffer over.
        let f = &mut self.f;
        let Batch { values, timestamps } = input;
        let len = values.len();
        debug_assert_eq!(len, timestamps.len());
        let vp = values.as_mut_ptr();
        let tp = timestamps.as_mut_ptr();
        // SAFETY: `values` is set to length 0 first, so if `f` panics the
        // records not yet visited are leaked, never dropped twice. Each
        // index `read < len` is visited once: a kept record is moved down to
        // `keep <= read` (distinct slots when they differ), a dropped one is
        // dropped in place; afterwards `0..keep` holds the kept records.
        // Timestamps are `Copy` and `keep <= read < len` stays in bounds.
        unsafe {
            values.set_len(0);
            let mut keep = 0usize;
            for read in 0..len {
                let v = vp.add(read);
                if f(&*v) {
                    if keep != read {
                        std::ptr::copy_nonoverlapping(v, vp.add(keep), 1);
                        *tp.add(keep) = *tp.add(read);
                    }
                    keep += 1;
                } else {
                    std::ptr::drop_in_place(v);
                }
            }
            values.set_len(keep);
            timestamps.set_len(keep);
        }
        Identity::default().process(input, out)
    }
}

closure_operator!(
    /// Maps every record to zero or more records, which keep its timestamp.
    FlatMap<F, I, O>,
    "A flat-map operator over `f`."
);

impl<F, I, O, It> Operator for FlatMap<F, I, O>
where
    F: FnMut(I) -> It + Clone + Send + 'static,
    It: IntoIterator<Item = O>,
    I: Send + 'static,
    O: Send + 'static,
{
    type In = I;
    type Out = O;
    const RECORD_AT_A_TIME: bool = true;

    #[inline(always)]
    fn on_record<E: Emit<O>>(&mut self, value: I, ts: Timestamp, out: &mut E) {
        for o in (self.f)(value) {
            out.emit(o, ts);
        }
    }

    #[inline]
    fn process(&mut self, input: &mut Batch<I>, out: &mut Batch<O>) -> Result<(), ConnectorError> {
        let f = &mut self.f;
        for (v, ts) in input.values.drain(..).zip(input.timestamps.drain(..)) {
            for o in f(v) {
                out.values.push(o);
                out.timestamps.push(ts);
            }
        }
        Ok(())
    }
}

closure_operator!(
    /// Overwrites each record's event timestamp with one taken from the record.
    AssignTimestamps<F, T>,
    "Stamps records with `f(record)`."
);

impl<F, T> Operator for AssignTimestamps<F, T>
where
    F: FnMut(&T) -> Timestamp + Clone + Send + 'static,
    T: Send + 'static,
{
    type In = T;
    type Out = T;
    const RECORD_AT_A_TIME: bool = true;

    #[inline(always)]
    fn on_record<E: Emit<T>>(&mut self, value: T, _ts: Timestamp, out: &mut E) {
        let ts = (self.f)(&value);
        out.emit(value, ts);
    }

    #[inline]
    fn process(&mut self, input: &mut Batch<T>, out: &mut Batch<T>) -> Result<(), ConnectorError> {
        let f = &mut self.f;
        for (v, ts) in input.values.iter().zip(input.timestamps.iter_mut()) {
            *ts = f(v);
        }
        Identity::default().process(input, out)
    }
}

/// Appends to a batch through raw pointers with the length kept in a
/// register: the fused loop's output. Its `Drop` publishes the length, so a
/// panic in user code leaves the batch valid.
pub struct BatchWriter<'a, T> {
    batch: &'a mut Batch<T>,
    len: usize,
    cap: usize,
    vp: *mut T,
    tp: *mut Timestamp,
}

impl<'a, T> BatchWriter<'a, T> {
    /// A writer appending to `batch`, with room reserved for `expect` records.
    #[inline(always)]
    pub fn new(batch: &'a mut Batch<T>, expect: usize) -> Self {
        batch.reserve(expect);
        let len = batch.values.len();
        let cap = batch.values.capacity().min(batch.timestamps.capacity());
        let vp = batch.values.as_mut_ptr();
        let tp = batch.timestamps.as_mut_ptr();
        BatchWriter {
            batch,
            len,
            cap,
            vp,
            tp,
        }
    }

    #[cold]
    fn grow(&mut self) {
        // SAFETY: `0..len` of both vectors was written by `emit`.
        unsafe {
            self.batch.values.set_len(self.len);
            self.batch.timestamps.set_len(self.len);
        }
        self.batch.reserve(self.len.max(64));
        self.cap = self
            .batch
            .values
            .capacity()
            .min(self.batch.timestamps.capacity());
        self.vp = self.batch.values.as_mut_ptr();
        self.tp = self.batch.timestamps.as_mut_ptr();
    }
}

impl<T> Emit<T> for BatchWriter<'_, T> {
    #[inline(always)]
    fn emit(&mut self, value: T, ts: Timestamp) {
        if self.len == self.cap {
            self.grow();
        }
        // SAFETY: `len < cap` for both vectors (checked above), and the
        // pointers were refreshed after any reallocation.
        unsafe {
            self.vp.add(self.len).write(value);
            self.tp.add(self.len).write(ts);
        }
        self.len += 1;
    }
}

impl<T> Drop for BatchWriter<'_, T> {
    fn drop(&mut self) {
        // SAFETY: `0..len` of both vectors was initialised by `emit`.
        unsafe {
            self.batch.values.set_len(self.len);
            self.batch.timestamps.set_len(self.len);
        }
    }
}

/// Feeds records into operator `B`, whose output goes to `out`.
pub struct ChainEmit<'a, B, E> {
    b: &'a mut B,
    out: &'a mut E,
}

impl<'a, B, E> ChainEmit<'a, B, E> {
    /// Records emitted here run through `b` into `out`.
    #[inline(always)]
    pub fn new(b: &'a mut B, out: &'a mut E) -> Self {
        ChainEmit { b, out }
    }
}

impl<B: Operator, E: Emit<B::Out>> Emit<B::In> for ChainEmit<'_, B, E> {
    #[inline(always)]
    fn emit(&mut self, value: B::In, ts: Timestamp) {
        self.b.on_record(value, ts, self.out);
    }
}

/// Two operators fused: `A`'s output feeds `B`, record by record when both
/// allow it, otherwise through a reused buffer.
pub struct Chain<A: Operator, B> {
    a: A,
    b: B,
    mid: Batch<A::Out>,
}

impl<A: Operator, B: Clone> Clone for Chain<A, B> {
    fn clone(&self) -> Self {
        Chain::new(self.a.clone(), self.b.clone())
    }
}

impl<A: Operator, B> Chain<A, B> {
    /// Fuses `a` then `b`.
    pub fn new(a: A, b: B) -> Self {
        Chain {
            a,
            b,
            mid: Batch::new(),
        }
    }
}

impl<A, B> Operator for Chain<A, B>
where
    A: Operator,
    B: Operator<In = A::Out>,
{
    type In = A::In;
    type Out = B::Out;
    const RECORD_AT_A_TIME: bool = A::RECORD_AT_A_TIME && B::RECORD_AT_A_TIME;

    #[inline(always)]
    fn on_record<E: Emit<B::Out>>(&mut self, value: A::In, ts: Timestamp, out: &mut E) {
        self.a.on_record(
            value,
            ts,
            &mut ChainEmit {
                b: &mut self.b,
                out,
            },
        );
    }

    #[inline]
    fn process(
        &mut self,
        input: &mut Batch<A::In>,
        out: &mut Batch<B::Out>,
    ) -> Result<(), ConnectorError> {
        if Self::RECORD_AT_A_TIME {
            // One fused loop over the batch: no intermediate buffers.
            let mut w = BatchWriter::new(out, input.len());
            for (v, ts) in input.values.drain(..).zip(input.timestamps.drain(..)) {
                self.on_record(v, ts, &mut w);
            }
            return Ok(());
        }
        self.a.process(input, &mut self.mid)?;
        self.b.process(&mut self.mid, out)
    }

    fn open(&mut self, ctx: &TaskContext) -> Result<(), ConnectorError> {
        self.a.open(ctx)?;
        self.b.open(ctx)
    }

    fn on_watermark(
        &mut self,
        wm: Timestamp,
        out: &mut Batch<B::Out>,
    ) -> Result<(), ConnectorError> {
        self.a.on_watermark(wm, &mut self.mid)?;
        if !self.mid.is_empty() {
            self.b.process(&mut self.mid, out)?;
        }
        self.b.on_watermark(wm, out)
    }

    fn snapshot(&self) -> Result<Vec<u8>, ConnectorError> {
        let a = self.a.snapshot()?;
        let b = self.b.snapshot()?;
        let mut buf = Vec::with_capacity(8 + a.len() + b.len());
        buf.extend_from_slice(&(a.len() as u64).to_le_bytes());
        buf.extend_from_slice(&a);
        buf.extend_from_slice(&b);
        Ok(buf)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), ConnectorError> {
        let (a, b) = split_chain_state(state)?;
        self.a.restore(a)?;
        self.b.restore(b)
    }

    fn restore_keys(
        &mut self,
        states: &[Vec<u8>],
        keys: Option<&crate::pipeline::keyed::KeyGroups>,
    ) -> Result<(), ConnectorError> {
        let mut a = Vec::with_capacity(states.len());
        let mut b = Vec::with_capacity(states.len());
        for s in states {
            let (x, y) = split_chain_state(s)?;
            a.push(x.to_vec());
            b.push(y.to_vec());
        }
        self.a.restore_keys(&a, keys)?;
        self.b.restore_keys(&b, keys)
    }
}

/// A [`Chain`]'s snapshot split into its two operators' snapshots.
fn split_chain_state(state: &[u8]) -> Result<(&[u8], &[u8]), ConnectorError> {
    if state.len() < 8 {
        return Err(ConnectorError::new("chain state truncated"));
    }
    let (len, rest) = state.split_at(8);
    let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
    if rest.len() < len {
        return Err(ConnectorError::new("chain state truncated"));
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(v: &[u64]) -> Batch<u64> {
        Batch::from_parts(v.to_vec(), v.iter().map(|x| *x as i64 * 10).collect())
    }

    #[test]
    fn map_keeps_timestamps() {
        let mut op = Map::new(|x: u64| x * 2);
        let mut out = Batch::new();
        op.process(&mut batch(&[1, 2, 3]), &mut out).unwrap();
        assert_eq!(out.values, vec![2, 4, 6]);
        assert_eq!(out.timestamps, vec![10, 20, 30]);
    }

    #[test]
    fn filter_drops_with_timestamps() {
        let mut op = Filter::new(|x: &u64| x % 2 == 1);
        let mut out = Batch::new();
        let mut input = batch(&[1, 2, 3, 4, 5]);
        op.process(&mut input, &mut out).unwrap();
        assert!(input.is_empty());
        assert_eq!(out.values, vec![1, 3, 5]);
        assert_eq!(out.timestamps, vec![10, 30, 50]);
    }

    #[test]
    fn flat_map_repeats_timestamp() {
        let mut op = FlatMap::new(|x: u64| vec![x; x as usize]);
        let mut out = Batch::new();
        op.process(&mut batch(&[0, 1, 2]), &mut out).unwrap();
        assert_eq!(out.values, vec![1, 2, 2]);
        assert_eq!(out.timestamps, vec![10, 20, 20]);
    }

    #[test]
    fn assign_timestamps_overwrites() {
        let mut op = AssignTimestamps::new(|x: &u64| *x as i64 + 1000);
        let mut out = Batch::new();
        op.process(&mut batch(&[1, 2]), &mut out).unwrap();
        assert_eq!(out.timestamps, vec![1001, 1002]);
    }

    #[test]
    fn chain_fuses_in_order() {
        let mut op = Chain::new(
            Chain::new(Filter::new(|x: &u64| x % 3 != 0), Map::new(|x: u64| x * 2)),
            Map::new(|x: u64| x + 1),
        );
        let mut out = Batch::new();
        for _ in 0..2 {
            out.clear();
            op.process(&mut batch(&[1, 2, 3, 4]), &mut out).unwrap();
            assert_eq!(out.values, vec![3, 5, 9]);
        }
    }
}
