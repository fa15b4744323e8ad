//! What DPoP checks on one worker keep between requests, because a client sends the same header
//! and token with every proof: each proof header that verified, parsed (its key's curve point
//! checked and encoded for the host, its thumbprint taken), and the last access token's SHA-256
//! (`ath`).
//!
//! Both are exact. Headers are found by the keyed digest the token cache uses, a PRF a client
//! cannot aim at another header's entry; the token is compared whole. Neither grows with clients:
//! headers are forgotten oldest first past `MAX_HEADERS`, and one token is kept.

use std::collections::{HashMap, VecDeque};

use sha2::{Digest as _, Sha256};

use super::ProofHeader;
use crate::jwt::cache::digest::{Digest, DigestKey, PassThrough};
use crate::jwt::cache::LastToken;

/// About 300 bytes each: at most about 1.2 MiB per worker.
pub const MAX_HEADERS: usize = 4096;

#[derive(Debug)]
pub struct DpopMemo {
    key: DigestKey,
    headers: HashMap<Digest, ProofHeader, PassThrough>,
    /// Digests in the order their headers were kept.
    order: VecDeque<Digest>,
    /// The last access token's SHA-256.
    token: LastToken<[u8; 32]>,
}

impl DpopMemo {
    pub fn new() -> Self {
        Self {
            key: DigestKey::random(),
            headers: HashMap::default(),
            order: VecDeque::new(),
            token: LastToken::default(),
        }
    }

    /// What stands for a header's text here.
    pub fn digest(&self, header: &str) -> Digest {
        self.key.digest(header)
    }

    /// A header kept before, by its digest.
    pub fn header(&self, digest: Digest) -> Option<&ProofHeader> {
        self.headers.get(&digest)
    }

    /// Keeps the header of a proof that verified; forgets the oldest past `MAX_HEADERS`.
    pub fn keep(&mut self, digest: Digest, header: ProofHeader) {
        if self.headers.contains_key(&digest) {
            return;
        }
        while self.order.len() >= MAX_HEADERS {
            if let Some(old) = self.order.pop_front() {
                self.headers.remove(&old);
            }
        }
        self.headers.insert(digest, header);
        self.order.push_back(digest);
    }

    /// The token's SHA-256, which a proof's `ath` must be.
    pub fn token_sha256(&mut self, token: &str) -> [u8; 32] {
        self.token
            .get_or(token, |t| Sha256::digest(t.as_bytes()).into())
    }

    pub fn len(&self) -> usize {
        self.headers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }
}

impl Default for DpopMemo {
    fn default() -> Self {
        Self::new()
    }
}
