//! The proxy-wasm ABI bindings: the host's imports and the spec's types (`imports`), `Quiet` and
//! `Host` implemented over them as the one safe layer (`host`), a `log` backend over `proxy_log`
//! (`logger`), and the exported callbacks that hand each call to the runtime (`exports`).
//!
//! No proxy-wasm SDK: its helpers panic on unexpected statuses and on non-UTF-8 header values (a
//! panic kills the VM), and its dispatcher exports every callback, each of which Envoy then
//! enters on every request (README, Design decisions).
// The crate denies unsafe code (lib.rs); calling the host's imports and taking ownership of the
// buffers it allocates cannot be done without it, and this module is the only place that does.
#![allow(unsafe_code)]

mod exports;
mod host;
mod imports;
mod logger;
