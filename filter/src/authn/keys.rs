//! Where a decision finds its keys and verifier: remote key sets as the caller holds them, the
//! signature verifier, the token cache and the DPoP replay store.

use crate::crypto::{InModule, Verifier};
use crate::jwt::cache::TokenCache;
use crate::jwt::dpop::DpopMemo;
use crate::jwt::jwks::Jwks;
use crate::replay::ReplayGuard;

/// The state of a remote key set, as the caller's key store knows it.
#[derive(Debug, Clone, Copy)]
pub enum RemoteKeys<'a> {
    Ready(&'a Jwks),
    /// Never fetched yet: the first fetch is pending.
    Loading,
    /// No keys were ever obtained and the last fetch failed.
    Failed,
}

pub trait KeyStore {
    fn remote(&self, index: usize) -> RemoteKeys<'_>;
    /// Whether a token with an unknown `kid` may trigger a refetch of this source now.
    fn may_refetch(&self, index: usize) -> bool;
    /// Changes whenever any key set changes (verified tokens are then forgotten).
    fn generation(&self) -> u64 {
        0
    }
}

/// What a decision depends on besides the configuration and the request.
pub struct Env<'a> {
    pub keys: &'a dyn KeyStore,
    pub verifier: &'a dyn Verifier,
    pub cache: Option<&'a mut TokenCache>,
    /// DPoP proofs seen; without it, a `dpop` rule refuses every proof.
    pub replay: Option<&'a mut dyn ReplayGuard>,
    /// Proof keys and the token hash kept from earlier requests; without it, each is computed
    /// again.
    pub dpop_memo: Option<&'a mut DpopMemo>,
}

impl<'a> Env<'a> {
    /// In-module signature checks, no cache.
    pub fn new(keys: &'a dyn KeyStore) -> Self {
        Self {
            keys,
            verifier: &InModule,
            cache: None,
            replay: None,
            dpop_memo: None,
        }
    }
}

/// A key store for configurations without remote key sets.
pub struct NoRemotes;

impl KeyStore for NoRemotes {
    fn remote(&self, _index: usize) -> RemoteKeys<'_> {
        RemoteKeys::Failed
    }
    fn may_refetch(&self, _index: usize) -> bool {
        false
    }
}
