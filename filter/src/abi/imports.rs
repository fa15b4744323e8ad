//! The proxy-wasm ABI (0.2.1) imports, each behind a safe function that checks the host's status
//! and takes ownership of what the host returns.

use crate::request::wire;
use crate::runtime::{HostError, MetricKind};

/// proxy-wasm's log levels.
#[derive(Clone, Copy)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

#[derive(Clone, Copy)]
enum MapType {
    HttpRequestHeaders = 0,
    HttpCallResponseHeaders = 6,
}

#[derive(Clone, Copy)]
enum BufferType {
    HttpCallResponseBody = 4,
    PluginConfiguration = 7,
}

const STREAM_HTTP_REQUEST: u32 = 0;
const STREAM_DOWNSTREAM: u32 = 2;

#[allow(clashing_extern_declarations)]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_close_stream(stream_type: u32) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
    fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        return_token: *mut u32,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
}

const OK: u32 = 0;

fn check(status: u32) -> Result<(), HostError> {
    if status == OK {
        Ok(())
    } else {
        Err(HostError(status))
    }
}

/// Where the host copies what a call returns; the buffer is handed back to `take_host_buffer`.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    match std::alloc::Layout::array::<u8>(size) {
        // SAFETY: the layout has a non-zero size.
        Ok(layout) if size > 0 => unsafe { std::alloc::alloc(layout) },
        _ => std::ptr::null_mut(),
    }
}

/// Takes ownership of a buffer the host allocated through `proxy_on_memory_allocate`.
///
/// # Safety
/// `data`/`size` must come from a successful host call that returns module-allocated memory.
unsafe fn take_host_buffer(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        Vec::new()
    } else {
        // SAFETY: `proxy_on_memory_allocate` allocated exactly `size` bytes, align 1, here.
        unsafe { Vec::from_raw_parts(data, size, size) }
    }
}

pub fn now_millis() -> Result<u64, HostError> {
    let mut nanos: u64 = 0;
    // SAFETY: the host writes one u64 through the pointer.
    check(unsafe { proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok(nanos / 1_000_000)
}

pub fn log(level: LogLevel, message: &str) {
    // SAFETY: pointer and length describe a live &str.
    unsafe {
        proxy_log(level as u32, message.as_ptr(), message.len());
    }
}

/// The level the host logs this module at; None when it cannot tell.
pub fn log_level() -> Option<LogLevel> {
    let mut level = 0;
    // SAFETY: the host writes one u32 through the pointer.
    check(unsafe { proxy_get_log_level(&mut level) }).ok()?;
    Some(match level {
        0 => LogLevel::Trace,
        1 => LogLevel::Debug,
        2 => LogLevel::Info,
        3 => LogLevel::Warn,
        4 => LogLevel::Error,
        _ => LogLevel::Critical,
    })
}

pub fn plugin_config(size: usize) -> Result<Vec<u8>, HostError> {
    buffer(BufferType::PluginConfiguration, size)
}

fn buffer(kind: BufferType, size: usize) -> Result<Vec<u8>, HostError> {
    let mut data = std::ptr::null_mut();
    let mut len = 0;
    // SAFETY: out-pointers are valid; the returned buffer is then owned by us.
    unsafe {
        check(proxy_get_buffer_bytes(
            kind as u32,
            0,
            size,
            &mut data,
            &mut len,
        ))?;
        Ok(take_host_buffer(data, len))
    }
}

pub fn request_headers() -> Result<Vec<u8>, HostError> {
    let mut data = std::ptr::null_mut();
    let mut len = 0;
    // SAFETY: out-pointers are valid; the returned buffer is then owned by us.
    unsafe {
        check(proxy_get_header_map_pairs(
            MapType::HttpRequestHeaders as u32,
            &mut data,
            &mut len,
        ))?;
        Ok(take_host_buffer(data, len))
    }
}

pub fn remove_request_header(name: &str) -> Result<(), HostError> {
    // SAFETY: pointer and length describe a live &str.
    check(unsafe {
        proxy_remove_header_map_value(
            MapType::HttpRequestHeaders as u32,
            name.as_ptr(),
            name.len(),
        )
    })
}

pub fn set_request_header(name: &str, value: &str) -> Result<(), HostError> {
    // SAFETY: pointers and lengths describe live &strs.
    check(unsafe {
        proxy_replace_header_map_value(
            MapType::HttpRequestHeaders as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn add_request_header(name: &str, value: &str) -> Result<(), HostError> {
    // SAFETY: pointers and lengths describe live &strs.
    check(unsafe {
        proxy_add_header_map_value(
            MapType::HttpRequestHeaders as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn send_local_response(
    status: u32,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), HostError> {
    let map = wire::encode_map(headers);
    let details = "mesh_authn_denied";
    // SAFETY: all pointers describe live buffers for the duration of the call.
    check(unsafe {
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

pub fn http_call_status() -> Option<u32> {
    let key = ":status";
    let mut data = std::ptr::null_mut();
    let mut len = 0;
    // SAFETY: out-pointers are valid; the returned buffer is then owned by us.
    let bytes = unsafe {
        if proxy_get_header_map_value(
            MapType::HttpCallResponseHeaders as u32,
            key.as_ptr(),
            key.len(),
            &mut data,
            &mut len,
        ) != OK
        {
            return None;
        }
        take_host_buffer(data, len)
    };
    std::str::from_utf8(&bytes).ok()?.parse().ok()
}

pub fn http_call_body(size: usize) -> Result<Vec<u8>, HostError> {
    buffer(BufferType::HttpCallResponseBody, size)
}

/// The answer goes to `proxy_on_http_call_response` of the context current at the call.
pub fn http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    timeout_ms: u64,
) -> Result<u32, HostError> {
    let headers = wire::encode_map(headers);
    let trailers = wire::encode_map(&[]);
    let mut token = 0;
    // SAFETY: all pointers describe live buffers; the host writes the token.
    check(unsafe {
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

pub fn shared_data(key: &str) -> Option<(Vec<u8>, u32)> {
    let mut data = std::ptr::null_mut();
    let mut len = 0;
    let mut cas = 0;
    // SAFETY: out-pointers are valid; the returned buffer is then owned by us.
    unsafe {
        if proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut len, &mut cas) != OK {
            return None;
        }
        Some((take_host_buffer(data, len), cas))
    }
}

pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> bool {
    // SAFETY: pointers and lengths describe live buffers.
    unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) == OK
    }
}

pub fn set_tick_period_ms(ms: u32) {
    // SAFETY: plain value call.
    unsafe {
        proxy_set_tick_period_milliseconds(ms);
    }
}

pub fn set_effective_context(context_id: u32) -> Result<(), HostError> {
    // SAFETY: plain value call.
    check(unsafe { proxy_set_effective_context(context_id) })
}

pub fn resume_request() -> Result<(), HostError> {
    // SAFETY: plain value call.
    check(unsafe { proxy_continue_stream(STREAM_HTTP_REQUEST) })
}

pub fn close_downstream() -> Result<(), HostError> {
    // SAFETY: plain value call.
    check(unsafe { proxy_close_stream(STREAM_DOWNSTREAM) })
}

pub fn define_metric(kind: MetricKind, name: &str) -> Option<u32> {
    let kind: u32 = match kind {
        MetricKind::Counter => 0,
        MetricKind::Gauge => 1,
    };
    let mut id = 0;
    // SAFETY: pointer and length describe a live &str; the host writes the id.
    let status = unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) };
    (status == OK).then_some(id)
}

pub fn record_metric(id: u32, value: u64) {
    // SAFETY: plain value call.
    unsafe {
        proxy_record_metric(id, value);
    }
}

/// Calls a host extension (Envoy's "foreign functions", e.g. `verify_signature`).
pub fn call_foreign_function(name: &str, args: &[u8]) -> Result<Vec<u8>, HostError> {
    let mut data = std::ptr::null_mut();
    let mut len = 0;
    // SAFETY: pointers describe live buffers; the returned buffer is then owned by us.
    unsafe {
        check(proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            args.as_ptr(),
            args.len(),
            &mut data,
            &mut len,
        ))?;
        Ok(take_host_buffer(data, len))
    }
}

pub fn increment_counter(id: u32, by: u64) {
    increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
}

/// Envoy adds a negative offset to a gauge as a subtraction.
pub fn increment_metric(id: u32, offset: i64) {
    // SAFETY: plain value call.
    unsafe {
        proxy_increment_metric(id, offset);
    }
}

/// A host property, e.g. `["plugin_name"]`.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    let serialized = path.join("\0");
    let mut data = std::ptr::null_mut();
    let mut len = 0;
    // SAFETY: out-pointers are valid; the returned buffer is then owned by us.
    unsafe {
        if proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut len) != OK {
            return None;
        }
        Some(take_host_buffer(data, len))
    }
}
