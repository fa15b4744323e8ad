//! `Quiet` and `Host` over the proxy-wasm imports: the one safe layer over them. Each call checks
//! the host's status and takes ownership of what the host returns.

use std::ptr::null_mut;

use smallvec::SmallVec;

use super::imports::*;
use crate::request::wire;
use crate::runtime::{Host, HostError, MetricKind, Quiet};

pub struct AbiHost;

/// What a call that returns module-allocated bytes leaves, read once it has succeeded.
struct Returned {
    data: *mut u8,
    len: usize,
}

impl Returned {
    fn new() -> Self {
        Self {
            data: null_mut(),
            len: 0,
        }
    }

    /// The bytes, when `status` says the host wrote them.
    fn take(self, status: u32) -> Result<Vec<u8>, HostError> {
        Status::check(status)?;
        // SAFETY: on success the host wrote a buffer it allocated through
        // `proxy_on_memory_allocate` (or nothing), which no one else owns.
        Ok(unsafe { take_host_buffer(self.data, self.len) })
    }
}

fn log_to_host(level: LogLevel, message: &str) {
    // SAFETY: pointer and length describe a live &str.
    unsafe {
        proxy_log(level, message.as_ptr(), message.len());
    }
}

/// For the panic hook, which may run before the runtime is set up.
pub fn log_critical(message: &str) {
    log_to_host(LogLevel::Critical, message);
}

fn header_value(map: MapType, key: &str) -> Result<Vec<u8>, HostError> {
    let mut out = Returned::new();
    // SAFETY: pointer and length describe a live &str; out-pointers are valid.
    let status = unsafe {
        proxy_get_header_map_value(map, key.as_ptr(), key.len(), &mut out.data, &mut out.len)
    };
    out.take(status)
}

fn buffer(kind: BufferType, size: usize) -> Result<Vec<u8>, HostError> {
    let mut out = Returned::new();
    // SAFETY: out-pointers are valid.
    let status = unsafe { proxy_get_buffer_bytes(kind, 0, size, &mut out.data, &mut out.len) };
    out.take(status)
}

fn increment(id: u32, offset: i64) {
    // SAFETY: plain value call. Envoy adds a negative offset to a gauge as a subtraction.
    unsafe {
        proxy_increment_metric(id, offset);
    }
}

impl Quiet for AbiHost {
    fn log(&self, level: log::Level, message: &str) {
        let level = match level {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Trace => LogLevel::Trace,
        };
        log_to_host(level, message);
    }

    fn log_level(&self) -> log::LevelFilter {
        let mut level = 0;
        // SAFETY: the host writes one u32 through the pointer.
        let status = unsafe { proxy_get_log_level(&mut level) };
        // A host that cannot tell filters on its side: nothing is dropped here.
        match (Status::check(status), level) {
            (Err(_), _) | (Ok(()), 0) => log::LevelFilter::Trace,
            (Ok(()), 1) => log::LevelFilter::Debug,
            (Ok(()), 2) => log::LevelFilter::Info,
            (Ok(()), 3) => log::LevelFilter::Warn,
            (Ok(()), _) => log::LevelFilter::Error,
        }
    }

    fn now_ms(&self) -> Result<u64, HostError> {
        let mut nanos: u64 = 0;
        // SAFETY: the host writes one u64 through the pointer.
        Status::check(unsafe { proxy_get_current_time_nanoseconds(&mut nanos) })?;
        Ok(nanos / 1_000_000)
    }

    fn plugin_config(&self, size: usize) -> Result<Vec<u8>, HostError> {
        buffer(BufferType::PluginConfiguration, size)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        // The segments joined by NUL, as Envoy reads a path; no allocation for the short ones.
        let mut serialized: SmallVec<[u8; 64]> = SmallVec::new();
        for (i, segment) in path.iter().enumerate() {
            if i > 0 {
                serialized.push(0);
            }
            serialized.extend_from_slice(segment.as_bytes());
        }
        let mut out = Returned::new();
        // SAFETY: pointer and length describe the live path buffer; out-pointers are valid.
        let status = unsafe {
            proxy_get_property(
                serialized.as_ptr(),
                serialized.len(),
                &mut out.data,
                &mut out.len,
            )
        };
        out.take(status).ok()
    }

    fn request_headers(&self) -> Result<Vec<u8>, HostError> {
        let mut out = Returned::new();
        // SAFETY: out-pointers are valid.
        let status = unsafe {
            proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut out.data, &mut out.len)
        };
        out.take(status)
    }

    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        // SAFETY: pointer and length describe a live &str.
        Status::check(unsafe {
            proxy_remove_header_map_value(MapType::HttpRequestHeaders, name.as_ptr(), name.len())
        })
    }

    fn set_request_header(&self, name: &str, value: &str) -> Result<(), HostError> {
        // SAFETY: pointers and lengths describe live &strs.
        Status::check(unsafe {
            proxy_replace_header_map_value(
                MapType::HttpRequestHeaders,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        })
    }

    fn add_request_header(&self, name: &str, value: &str) -> Result<(), HostError> {
        // SAFETY: pointers and lengths describe live &strs.
        Status::check(unsafe {
            proxy_add_header_map_value(
                MapType::HttpRequestHeaders,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        })
    }

    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        // SAFETY: plain value call.
        Status::check(unsafe { proxy_set_effective_context(context_id) })
    }

    fn set_tick_period_ms(&self, ms: u32) {
        // SAFETY: plain value call.
        unsafe {
            proxy_set_tick_period_milliseconds(ms);
        }
    }

    fn http_call_status(&self) -> Option<u32> {
        let bytes = header_value(MapType::HttpCallResponseHeaders, ":status").ok()?;
        std::str::from_utf8(&bytes).ok()?.parse().ok()
    }

    fn http_call_body(&self, size: usize) -> Result<Vec<u8>, HostError> {
        buffer(BufferType::HttpCallResponseBody, size)
    }

    fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let mut out = Returned::new();
        let mut cas = 0;
        // SAFETY: pointer and length describe a live &str; out-pointers are valid.
        let status = unsafe {
            proxy_get_shared_data(
                key.as_ptr(),
                key.len(),
                &mut out.data,
                &mut out.len,
                &mut cas,
            )
        };
        Some((out.take(status).ok()?, cas))
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> bool {
        // SAFETY: pointers and lengths describe live buffers.
        let status = unsafe {
            proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
        };
        Status::check(status).is_ok()
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
        };
        let mut id = 0;
        // SAFETY: pointer and length describe a live &str; the host writes the id.
        let status = unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) };
        Status::check(status).ok().map(|()| id)
    }

    fn increment_metric(&self, id: u32, by: u64) {
        increment(id, i64::try_from(by).unwrap_or(i64::MAX));
    }

    fn record_metric(&self, id: u32, value: u64) {
        // SAFETY: plain value call.
        unsafe {
            proxy_record_metric(id, value);
        }
    }

    fn add_to_gauge(&self, id: u32, delta: i64) {
        increment(id, delta);
    }

    fn call_foreign_function(&self, name: &str, args: &[u8]) -> Result<Vec<u8>, HostError> {
        let mut out = Returned::new();
        // SAFETY: pointers describe live buffers; out-pointers are valid.
        let status = unsafe {
            proxy_call_foreign_function(
                name.as_ptr(),
                name.len(),
                args.as_ptr(),
                args.len(),
                &mut out.data,
                &mut out.len,
            )
        };
        out.take(status)
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
        let map = wire::encode_map(headers);
        let details = "mesh_authn_denied";
        // SAFETY: all pointers describe live buffers for the duration of the call.
        Status::check(unsafe {
            proxy_send_local_response(
                status,
                details.as_ptr(),
                details.len(),
                body.as_ptr(),
                body.len(),
                map.as_ptr(),
                map.len(),
                -1,
            )
        })
    }

    fn resume_request(&self) -> Result<(), HostError> {
        // SAFETY: plain value call.
        Status::check(unsafe { proxy_continue_stream(StreamType::HttpRequest) })
    }

    fn close_downstream(&self) -> Result<(), HostError> {
        // SAFETY: plain value call.
        Status::check(unsafe { proxy_close_stream(StreamType::Downstream) })
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u64,
    ) -> Result<u32, HostError> {
        let headers = wire::encode_map(headers);
        let trailers = wire::encode_map(&[]);
        let mut token = 0;
        // SAFETY: all pointers describe live buffers; the host writes the token.
        Status::check(unsafe {
            proxy_http_call(
                cluster.as_ptr(),
                cluster.len(),
                headers.as_ptr(),
                headers.len(),
                std::ptr::null(),
                0,
                trailers.as_ptr(),
                trailers.len(),
                u32::try_from(timeout_ms).unwrap_or(u32::MAX),
                &mut token,
            )
        })?;
        Ok(token)
    }
}
