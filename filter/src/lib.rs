//! mesh-authn: Istio's end-user (JWT) authentication as a proxy-wasm HTTP filter.
//!
//! Everything but `host` and `plugin` is plain Rust with no proxy-wasm dependency, so it is tested
//! on the host with `cargo test`.

pub mod authn;
pub mod cache;
pub mod claims;
pub mod config;
pub mod der;
pub mod ecdsa;
pub mod error;
pub mod fetcher;
pub mod hostcrypto;
pub mod jwks;
pub mod jws;
pub mod paths;
pub mod peer;
pub mod remote;
pub mod request;
pub mod rsa_pkcs1;
pub mod token;
pub mod wire;

#[cfg(target_arch = "wasm32")]
mod host;
#[cfg(target_arch = "wasm32")]
mod plugin;
