//! The proxy-wasm ABI bindings: the host's imports behind safe functions, `Host` implemented over
//! them, a `log` backend over `proxy_log`, and the exported callbacks that hand each call to the
//! runtime. The only `unsafe` code of the crate.
//!
//! No proxy-wasm SDK: its helpers panic on unexpected statuses and on non-UTF-8 header values (a
//! panic kills the VM), and its dispatcher exports every callback, each of which Envoy then
//! enters on every request (README, Design decisions).
#![allow(unsafe_code)]

mod exports;
mod host;
mod imports;
mod logger;
