//! Keys: hashing records to parallel instances, and rolling keyed aggregation.
//!
//! Owns the [`Key`] bound, the key hash used by the exchange (so a key always
//! reaches the same instance), and [`KeyedAggregate`], which keeps one
//! accumulator per key and emits, after each batch, the updated result of
//! every key the batch touched (an upsert changelog). Never allocates per
//! record beyond what the user's key type itself needs.

use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::hash::Hash;
use std::marker::PhantomData;

use super::aggregate::Aggregator;
use super::batch::{Batch, Timestamp};
use super::error::ConnectorError;
use super::operator::Operator;

/// What a key must be: hashable, comparable, cloneable, serialisable.
pub trait Key: Hash + Eq + Clone + Send + Serialize + DeserializeOwned + 'static {}
impl<T: Hash + Eq + Clone + Send + Serialize + DeserializeOwned + 'static> Key for T {}

pub use super::key_hash::{key_hash, StableHasher};

/// The instance in `0..n` that owns a key hash.
///
/// Taken from the bits just below the top 7 (multiply-shift over `hash << 7`),
/// so the keys one instance receives keep varied low and top bits. Part of
/// where state lives, like [`key_hash`]: never change it (the golden values
/// in `key_hash`'s tests pin both).
#[inline]
pub fn key_partition(hash: u64, n: usize) -> usize {
    (((hash << 7) as u128 * n as u128) >> 64) as usize
}

/// Which keys one copy of a stage owns after a rescale: those whose
/// [`key_partition`] among `count` partitions (a repartition topic's,
/// which placed each key by the same rule) is one of `mine`.
///
/// ```
/// use weir::pipeline::keyed::{key_hash, key_partition, KeyGroups};
/// let p = key_partition(key_hash("u7"), 4) as i32;
/// assert!(KeyGroups::new(4, vec![p]).owns(key_hash("u7")));
/// assert!(!KeyGroups::new(4, (0..4).filter(|q| *q != p).collect()).owns(key_hash("u7")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGroups {
    count: usize,
    mine: Vec<i32>,
}

impl KeyGroups {
    /// Partitions `mine` of `count`.
    pub fn new(count: usize, mut mine: Vec<i32>) -> Self {
        mine.sort_unstable();
        KeyGroups {
            count: count.max(1),
            mine,
        }
    }

    /// Whether the key with stable hash `hash` is this copy's.
    pub fn owns(&self, hash: u64) -> bool {
        self.mine
            .binary_search(&(key_partition(hash, self.count) as i32))
            .is_ok()
    }
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
        self.state.clear();
        self.take_keys(state, None)
    }

    fn restore_keys(
        &mut self,
        states: &[Vec<u8>],
        keys: Option<&KeyGroups>,
    ) -> Result<(), ConnectorError> {
        let Some(keys) = keys else {
            return super::operator::refuse_split::<Self>(states);
        };
        self.state.clear();
        for s in states {
            self.take_keys(s, Some(keys))?;
        }
        Ok(())
    }
}

impl<KF, A, T, K> KeyedAggregate<KF, A, T, K>
where
    A: Aggregator<T>,
    K: Key,
{
    /// Adds the entries of snapshot `state` (those `keys` owns, if given).
    fn take_keys(&mut self, state: &[u8], keys: Option<&KeyGroups>) -> Result<(), ConnectorError> {
        let entries: Vec<(K, A::Acc, Timestamp)> = serde_json::from_slice(state)
            .map_err(|e| ConnectorError::new(format!("keyed state restore: {e}")))?;
        for (k, acc, ts) in entries {
            if keys.is_some_and(|g| !g.owns(key_hash(&k))) {
                continue;
            }
            let entry = Entry {
                acc,
                ts,
                dirty: false,
            };
            self.state.insert(k, entry);
        }
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
        // Sequential integers, strided integers and strings, over several widths.
        let keys: Vec<Box<dyn Fn(u64) -> u64>> = vec![
            Box::new(|k| key_hash(&k)),
            Box::new(|k| key_hash(&(k << 10))),
            Box::new(|k| key_hash(&format!("user-{k:04}"))),
        ];
        for hash in &keys {
            for n in [2usize, 3, 4, 7, 16] {
                let mut counts = vec![0usize; n];
                for k in 0u64..20_000 {
                    counts[key_partition(hash(k), n)] += 1;
                }
                // Within four standard deviations of a uniform random spread.
                let even = 20_000 / n;
                let bound = 4.0 * (even as f64).sqrt();
                for &c in &counts {
                    assert!(
                        (c.abs_diff(even) as f64) < bound,
                        "uneven spread over {n}: {counts:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn partition_bits_leave_the_map_control_byte_free() {
        // Within one instance's keys, the top 7 bits (hashbrown's control byte) still take
        // all 128 values: the partition is not read from them.
        let mut seen = [false; 128];
        for k in 0u64..20_000 {
            let h = key_hash(&k);
            if key_partition(h, 2) == 0 {
                seen[(h >> 57) as usize] = true;
            }
        }
        assert!(
            seen.iter().all(|&s| s),
            "control bytes of instance 0's keys"
        );
    }
}
