//! `Host` over the proxy-wasm imports.

use super::imports::{self, LogLevel};
use crate::runtime::{Host, HostError, MetricKind, Quiet};

pub struct AbiHost;

impl Quiet for AbiHost {
    fn log(&self, level: log::Level, message: &str) {
        let level = match level {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Trace => LogLevel::Trace,
        };
        imports::log(level, message);
    }

    fn log_level(&self) -> log::LevelFilter {
        // A host that cannot tell filters on its side: nothing is dropped here.
        match imports::log_level() {
            None | Some(LogLevel::Trace) => log::LevelFilter::Trace,
            Some(LogLevel::Debug) => log::LevelFilter::Debug,
            Some(LogLevel::Info) => log::LevelFilter::Info,
            Some(LogLevel::Warn) => log::LevelFilter::Warn,
            Some(LogLevel::Error | LogLevel::Critical) => log::LevelFilter::Error,
        }
    }

    fn now_ms(&self) -> Result<u64, HostError> {
        imports::now_millis()
    }

    fn plugin_config(&self, size: usize) -> Result<Vec<u8>, HostError> {
        imports::plugin_config(size)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        imports::property(path)
    }

    fn request_headers(&self) -> Result<Vec<u8>, HostError> {
        imports::request_headers()
    }

    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        imports::remove_request_header(name)
    }

    fn set_request_header(&self, name: &str, value: &str) -> Result<(), HostError> {
        imports::set_request_header(name, value)
    }

    fn add_request_header(&self, name: &str, value: &str) -> Result<(), HostError> {
        imports::add_request_header(name, value)
    }

    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        imports::set_effective_context(context_id)
    }

    fn set_tick_period_ms(&self, ms: u32) {
        imports::set_tick_period_ms(ms);
    }

    fn http_call_status(&self) -> Option<u32> {
        imports::http_call_status()
    }

    fn http_call_body(&self, size: usize) -> Result<Vec<u8>, HostError> {
        imports::http_call_body(size)
    }

    fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        imports::shared_data(key)
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> bool {
        imports::set_shared_data(key, value, cas)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        imports::define_metric(kind, name)
    }

    fn increment_metric(&self, id: u32, by: u64) {
        imports::increment_counter(id, by);
    }

    fn record_metric(&self, id: u32, value: u64) {
        imports::record_metric(id, value);
    }

    fn add_to_gauge(&self, id: u32, delta: i64) {
        imports::increment_metric(id, delta);
    }

    fn call_foreign_function(&self, name: &str, args: &[u8]) -> Result<Vec<u8>, HostError> {
        imports::call_foreign_function(name, args)
    }

    fn memory_bytes(&self) -> u64 {
        (core::arch::wasm32::memory_size(0) as u64) * 65_536
    }
}

impl Host for AbiHost {
    fn send_local_response(
        &self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        imports::send_local_response(status, headers, body)
    }

    fn resume_request(&self) -> Result<(), HostError> {
        imports::resume_request()
    }

    fn close_downstream(&self) -> Result<(), HostError> {
        imports::close_downstream()
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u64,
    ) -> Result<u32, HostError> {
        imports::http_call(cluster, headers, timeout_ms)
    }
}
