//! What stands for a token in the cache: a 128-bit SipHash-1-3 of the whole token under a key
//! drawn from the proxy's CSPRNG when the cache is made. Keeping 16 bytes instead of the token
//! (about 0.55 KiB for RS256) is what lets the default budget hold twenty thousand users.
//!
//! A keyed PRF, not a plain hash: a client never sees a digest and does not know the key, so it
//! cannot construct a token whose digest is another token's (short of 2^64 requests for a chance
//! collision with any one cached token); a fast unkeyed hash would let it search offline.

use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

use siphasher::sip128::{Hasher128, SipHasher13};

pub type Digest = u128;

#[derive(Debug, Clone, Copy)]
pub struct DigestKey(u64, u64);

impl DigestKey {
    /// Std's `RandomState` keys come from the host's `random_get` (BoringSSL's CSPRNG in Envoy);
    /// two values it hashes are two secret 64-bit words.
    pub fn random() -> Self {
        let state = RandomState::new();
        Self(state.hash_one(0u8), state.hash_one(1u8))
    }

    pub fn digest(self, token: &str) -> Digest {
        let mut h = SipHasher13::new_with_keys(self.0, self.1);
        h.write(token.as_bytes());
        h.finish128().as_u128()
    }
}

/// The index hashes digests, which are uniformly random already: it takes their low bits as is.
pub type PassThrough = BuildHasherDefault<LowBits>;

#[derive(Debug, Default)]
pub struct LowBits(u64);

impl Hasher for LowBits {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}
