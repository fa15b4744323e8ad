//! mesh-authn: Istio's end-user (JWT) and peer authentication as a proxy-wasm HTTP filter.
//!
//! Layers, each using only those above it:
//! - `error`: why a request or a configuration was refused; `json`: JSON with one meaning;
//! - `crypto`: signature algorithms, keys, and who verifies (the module or the host);
//! - `jwt`: compact JWS parsing, claims, key sets, the verified-token cache;
//! - `request`: the header view, the wire encoding it comes in, token locations, trigger paths;
//! - `peer`: PeerAuthentication policies and peer identities;
//! - `remote`: where remote key sets come from, and the fetch state workers share;
//! - `config`: `pluginConfig`, parsed and compiled once;
//! - `authn`: the decision for one request;
//! - `runtime`: contexts, fetches, paused requests and counters, over the `Host` trait;
//! - `abi` (wasm32 only): the proxy-wasm bindings, which implement `Host`.
//!
//! Everything but `abi` is plain Rust, unit-tested on the host (and compiled to wasm32).
#![deny(unsafe_code)]

pub mod authn;
pub mod config;
pub mod crypto;
pub mod error;
pub mod json;
pub mod jwt;
pub mod pattern;
pub mod peer;
pub mod remote;
pub mod replay;
pub mod request;
pub mod runtime;

#[cfg(target_arch = "wasm32")]
mod abi;
