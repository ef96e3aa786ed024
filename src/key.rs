//! Keyed hashes for descriptor MACs, completion stamps and kernel tags: SipHash-2-4 with an
//! explicit 128-bit key drawn from the OS random source.
//!
//! std's `RandomState` would do the hashing, but its key cannot be read or set, so a worker
//! started by `exec` (the `Spawn` start method) or by the fork server could never share it.
//! A [`Key`] is two `u64` words: the pool's process creates it, forked workers inherit it, and
//! other workers receive it over their private socket (never in argv or the environment). It
//! never touches shared memory. This module owns no other state.

use std::hash::{Hash, Hasher};

use bytemuck::{Pod, Zeroable};

/// A 128-bit SipHash key.
#[derive(Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub(crate) struct Key {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A fresh key from the OS random source (`getrandom`).
    pub(crate) fn random() -> Key {
        let draw = || getrandom::u64().expect("the OS random source (getrandom(2), Linux 3.17+) works");
        Key { k0: draw(), k1: draw() }
    }

    /// The key from its two words.
    pub(crate) fn from_words(k0: u64, k1: u64) -> Key {
        Key { k0, k1 }
    }

    /// The key's two words (a spawned child's one-time token travels as text in its marker).
    pub(crate) fn words(&self) -> (u64, u64) {
        (self.k0, self.k1)
    }

    /// The keyed hash of `value`.
    pub(crate) fn hash_one<T: Hash>(&self, value: T) -> u64 {
        // SipHasher (SipHash-2-4) is deprecated in favour of RandomState, whose key cannot be
        // chosen; it is the only std hasher that takes an explicit key.
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new_with_keys(self.k0, self.k1);
        value.hash(&mut h);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_hash_alike_and_different_keys_do_not() {
        let a = Key::random();
        let b = a;
        assert_eq!(a.hash_one((1u32, [2u8; 5].as_slice())), b.hash_one((1u32, [2u8; 5].as_slice())));
        let c = Key::random();
        assert_ne!(a, c);
        assert_ne!(a.hash_one(7u64), c.hash_one(7u64));
    }
}
