//! What DPoP checks on one worker keep between requests, because a client sends the same header
//! and token with every proof: each proof header that verified, parsed (its key's curve point
//! checked and encoded for the host, its thumbprint taken), and the last access token's `ath` (its
//! SHA-256, base64url-encoded).
//!
//! Both are exact. Headers are found by the keyed digest the token cache uses, a PRF a client
//! cannot aim at another header's entry; the token is compared whole. Neither grows with clients:
//! headers are forgotten oldest first past `MAX_HEADERS`, and one token is kept.

use std::collections::{HashMap, VecDeque};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest as _, Sha256};

use super::ProofHeader;
use crate::jwt::cache::digest::{Digest, DigestKey, PassThrough};
use crate::jwt::cache::LastToken;

/// A SHA-256 in unpadded base64url.
const ATH_LEN: usize = 43;

/// About 300 bytes each: at most about 1.2 MiB per worker.
pub const MAX_HEADERS: usize = 4096;

#[derive(Debug)]
pub struct DpopMemo {
    key: DigestKey,
    headers: HashMap<Digest, ProofHeader, PassThrough>,
    /// Digests in the order their headers were kept.
    order: VecDeque<Digest>,
    /// The last access token's `ath`.
    token: LastToken<[u8; ATH_LEN]>,
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

    /// What a proof's `ath` must be for this token: its SHA-256, base64url-encoded.
    pub fn ath(&mut self, token: &str) -> [u8; ATH_LEN] {
        self.token.get_or(token, |t| {
            let mut ath = [0u8; ATH_LEN];
            let sha256 = Sha256::digest(t.as_bytes());
            // Always 43 bytes: the length is what it is checked against.
            let _ = URL_SAFE_NO_PAD.encode_slice(sha256, &mut ath);
            ath
        })
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
