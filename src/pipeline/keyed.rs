//! Keys: hashing records to parallel instances, and rolling keyed aggregation.
//!
//! Owns the [`Key`] bound, the key hash used by the exchange (so a key always
//! reaches the same instance), and [`KeyedAggregate`], which keeps one
//! accumulator per key and emits, after each batch, the updated result of
//! every key the batch touched (an upsert changelog). Never allocates per
//! record beyond what the user's key type itself needs.

use rustc_hash::{FxHashMap, FxHasher};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use super::aggregate::Aggregator;
use super::batch::{Batch, Timestamp};
use super::error::ConnectorError;
use super::operator::Operator;

/// What a key must be: hashable, comparable, cloneable, serialisable.
pub trait Key: Hash + Eq + Clone + Send + Serialize + DeserializeOwned + 'static {}
impl<T: Hash + Eq + Clone + Send + Serialize + DeserializeOwned + 'static> Key for T {}

/// The stable hash of a key used to pick its parallel instance.
#[inline]
pub fn key_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = FxHasher::default();
    key.hash(&mut h);
    // Fx's low bits are weak for small integers: mix before use.
    let x = h.finish();
    (x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (x >> 32)
}

/// The instance in `0..n` that owns a key hash.
#[inline]
pub fn key_partition(hash: u64, n: usize) -> usize {
    ((hash as u128 * n as u128) >> 64) as usize
}

struct Entry<Acc> {
    acc: Acc,
    ts: Timestamp,
    dirty: bool,
}

/// Rolling aggregation per key: emits `(key, result)` for each key updated
/// by a batch, once per batch, stamped with the latest timestamp of the key.
pub struct KeyedAggregate<KF, A: Aggregator<T>, T, K> {
    key: KF,
    agg: A,
    state: FxHashMap<K, Entry<A::Acc>>,
    touched: Vec<K>,
    _types: PhantomData<fn(T)>,
}

impl<KF: Clone, A: Aggregator<T>, T, K> Clone for KeyedAggregate<KF, A, T, K> {
    fn clone(&self) -> Self {
        KeyedAggregate::new(self.key.clone(), self.agg.clone())
    }
}

impl<KF, A: Aggregator<T>, T, K> KeyedAggregate<KF, A, T, K> {
    /// Aggregates with `agg` per `key(record)`.
    pub fn new(key: KF, agg: A) -> Self {
        KeyedAggregate {
            key,
            agg,
            state: FxHashMap::default(),
            touched: Vec::new(),
            _types: PhantomData,
        }
    }
}

impl<KF, A, T, K> Operator for KeyedAggregate<KF, A, T, K>
where
    KF: Fn(&T) -> K + Clone + Send + 'static,
    A: Aggregator<T>,
    T: Send + 'static,
    K: Key,
{
    type In = T;
    type Out = (K, A::Out);

    fn process(
        &mut self,
        input: &mut Batch<T>,
        out: &mut Batch<(K, A::Out)>,
    ) -> Result<(), ConnectorError> {
        for (v, ts) in input.drain() {
            let k = (self.key)(&v);
            match self.state.get_mut(&k) {
                Some(e) => {
                    self.agg.add(&mut e.acc, &v);
                    e.ts = e.ts.max(ts);
                    if !e.dirty {
                        e.dirty = true;
                        self.touched.push(k);
                    }
                }
                None => {
                    let mut acc = self.agg.init();
                    self.agg.add(&mut acc, &v);
                    self.touched.push(k.clone());
                    self.state.insert(
                        k,
                        Entry {
                            acc,
                            ts,
                            dirty: true,
                        },
                    );
                }
            }
        }
        for k in self.touched.drain(..) {
            let e = self.state.get_mut(&k).expect("touched key has state");
            e.dirty = false;
            let r = self.agg.result(&e.acc);
            out.push((k, r), e.ts);
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>, ConnectorError> {
        let entries: Vec<(&K, &A::Acc, Timestamp)> =
            self.state.iter().map(|(k, e)| (k, &e.acc, e.ts)).collect();
        serde_json::to_vec(&entries)
            .map_err(|e| ConnectorError::new(format!("keyed state snapshot: {e}")))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), ConnectorError> {
        let entries: Vec<(K, A::Acc, Timestamp)> = serde_json::from_slice(state)
            .map_err(|e| ConnectorError::new(format!("keyed state restore: {e}")))?;
        self.state = entries
            .into_iter()
            .map(|(k, acc, ts)| {
                (
                    k,
                    Entry {
                        acc,
                        ts,
                        dirty: false,
                    },
                )
            })
            .collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::aggregate::{Count, Sum};

    #[test]
    fn emits_one_update_per_touched_key_per_batch() {
        let mut op = KeyedAggregate::new(|w: &&str| w.to_string(), Count);
        let mut out = Batch::new();
        let mut input = Batch::from_parts(vec!["a", "b", "a"], vec![1, 2, 3]);
        op.process(&mut input, &mut out).unwrap();
        let mut got: Vec<_> = out.iter().map(|(v, t)| (v.clone(), t)).collect();
        got.sort();
        assert_eq!(got, vec![(("a".into(), 2), 3), (("b".into(), 1), 2)]);
        out.clear();
        op.process(&mut Batch::from_parts(vec!["b"], vec![9]), &mut out)
            .unwrap();
        assert_eq!(out.values, vec![("b".to_string(), 2)]);
    }

    #[test]
    fn snapshot_restore_roundtrip() {
        let mut op = KeyedAggregate::new(|x: &(u32, i64)| x.0, Sum::of(|x: &(u32, i64)| x.1));
        let mut out = Batch::new();
        op.process(
            &mut Batch::from_parts(vec![(1, 5), (2, 7), (1, 1)], vec![0, 0, 0]),
            &mut out,
        )
        .unwrap();
        let snap = op.snapshot().unwrap();
        let mut fresh = op.clone();
        fresh.restore(&snap).unwrap();
        out.clear();
        fresh
            .process(&mut Batch::from_parts(vec![(1, 10)], vec![0]), &mut out)
            .unwrap();
        assert_eq!(out.values, vec![(1, 16)]);
    }

    #[test]
    fn partition_is_in_range_and_spread() {
        let mut counts = [0usize; 4];
        for k in 0u64..10_000 {
            let p = key_partition(key_hash(&k), 4);
            counts[p] += 1;
        }
        for c in counts {
            assert!((2_000..3_000).contains(&c), "uneven spread: {counts:?}");
        }
    }
}
