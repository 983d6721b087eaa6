//! The key hash that decides where keyed state lives: which parallel
//! instance a key goes to, here and in every process and version that will
//! ever restore that state.
//!
//! Owns [`StableHasher`], a fully specified hash, and [`key_hash`]. Must
//! never depend on anything that may change between builds, machines or
//! dependency versions: not `std`'s `DefaultHasher` (unspecified, seeded),
//! not a hashing crate's current algorithm (rustc-hash 2 changed Fx's),
//! not the machine's word size or byte order.
//!
//! The algorithm (Fx's word step, as rustc-hash 1 had it, pinned here):
//! `h = (h.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95)` over
//! 64-bit words. Integers of every width are one word (zero- or
//! sign-extended to 64 bits as their unsigned value; `usize`/`isize` as 64
//! bits); byte strings are read as little-endian 8-byte words, then a
//! 4-, 2- and 1-byte tail. What a key type feeds the hasher is its `Hash`
//! implementation: `str` writes its bytes then `0xff`, tuples and structs
//! (derived) their fields in order, enums their discriminant (`isize`) then
//! their fields. The golden values in the tests pin all of this: a change
//! that moves any key fails them.

use std::hash::{Hash, Hasher};

const SEED: u64 = 0x517c_c1b7_2722_0a95;

/// A hasher with a fixed, documented algorithm (see the module doc).
///
/// ```
/// use std::hash::Hasher;
/// use weir::pipeline::keyed::StableHasher;
/// let mut h = StableHasher::default();
/// h.write_u64(1);
/// assert_eq!(h.finish(), 0x517c_c1b7_2722_0a95);
/// ```
#[derive(Default, Clone, Copy, Debug)]
pub struct StableHasher {
    hash: u64,
}

impl StableHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for StableHasher {
    #[inline]
    fn write(&mut self, mut bytes: &[u8]) {
        while bytes.len() >= 8 {
            let (word, rest) = bytes.split_at(8);
            self.add(u64::from_le_bytes(word.try_into().expect("8 bytes")));
            bytes = rest;
        }
        if bytes.len() >= 4 {
            let (word, rest) = bytes.split_at(4);
            self.add(u32::from_le_bytes(word.try_into().expect("4 bytes")) as u64);
            bytes = rest;
        }
        if bytes.len() >= 2 {
            let (word, rest) = bytes.split_at(2);
            self.add(u16::from_le_bytes(word.try_into().expect("2 bytes")) as u64);
            bytes = rest;
        }
        if let Some(&b) = bytes.first() {
            self.add(b as u64);
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64)
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(i as u64)
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64)
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i)
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64)
    }
    #[inline]
    fn write_i8(&mut self, i: i8) {
        self.add(i as u8 as u64)
    }
    #[inline]
    fn write_i16(&mut self, i: i16) {
        self.add(i as u16 as u64)
    }
    #[inline]
    fn write_i32(&mut self, i: i32) {
        self.add(i as u32 as u64)
    }
    #[inline]
    fn write_i64(&mut self, i: i64) {
        self.add(i as u64)
    }
    #[inline]
    fn write_i128(&mut self, i: i128) {
        self.write_u128(i as u128)
    }
    #[inline]
    fn write_isize(&mut self, i: isize) {
        self.add(i as i64 as u64)
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// The stable hash of a key, which picks its parallel instance (with
/// [`key_partition`](super::keyed::key_partition)): the same on every
/// machine and in every weir version.
///
/// ```
/// use weir::pipeline::keyed::key_hash;
/// assert_eq!(key_hash(&42u64), 42u64.wrapping_mul(0x517c_c1b7_2722_0a95));
/// ```
#[inline]
pub fn key_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = StableHasher::default();
    key.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::keyed::key_partition;

    /// Golden values: these must never change (state placed by one weir
    /// version is restored by the next). A failure here means keys would
    /// move between instances: a checkpoint of keyed state would restore
    /// into the wrong ones. The values were computed by a separate
    /// implementation of the module doc's algorithm (a few lines of Python),
    /// not by this code.
    #[test]
    fn golden_values_never_change() {
        assert_eq!(key_hash(&0u64), 0);
        assert_eq!(key_hash(&7u64), 0x3a69_4c02_11ee_4a13);
        assert_eq!(key_hash(&7u32), key_hash(&7u64));
        assert_eq!(key_hash(&-1i64), key_hash(&u64::MAX));
        assert_eq!(key_hash("u1"), 0xfaa8_602f_16df_b70c);
        assert_eq!(key_hash(&String::from("u1")), key_hash("u1"));
        assert_eq!(key_hash("a longer user name"), 0xeb1f_91c8_04d9_6f25);
        assert_eq!(key_hash(&(3u64, "x")), 0xf512_d24b_2ef2_e835);
        let parts: Vec<usize> = (0..8u64).map(|k| key_partition(key_hash(&k), 4)).collect();
        assert_eq!(parts, vec![0, 2, 1, 0, 3, 2, 1, 0]);
    }

    #[test]
    fn byte_strings_use_every_byte() {
        let a = key_hash(&[1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15][..]);
        let b = key_hash(&[1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16][..]);
        assert_ne!(a, b);
    }
}
