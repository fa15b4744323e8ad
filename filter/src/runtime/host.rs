//! What the runtime asks of the proxy. The ABI bindings implement it over proxy-wasm; unit tests
//! fake it. Calls act on the context the host is currently calling back (or the one made current
//! with `set_effective_context`), as in proxy-wasm.

/// A host call that did not succeed, with the host's status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// Host calls that never call back into the VM: the only ones a root may make while its state
/// is borrowed (see `gate`).
pub trait Quiet {
    fn log(&self, level: log::Level, message: &str);
    /// The level the proxy logs this module at; lower levels are not even formatted.
    fn log_level(&self) -> log::LevelFilter;
    fn now_ms(&self) -> Result<u64, HostError>;
    fn plugin_config(&self, size: usize) -> Result<Vec<u8>, HostError>;
    /// A property such as `["connection", "mtls"]`, in the host's encoding.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;

    /// The current request's headers, in the proxy-wasm map encoding.
    fn request_headers(&self) -> Result<Vec<u8>, HostError>;
    fn remove_request_header(&self, name: &str) -> Result<(), HostError>;
    fn set_request_header(&self, name: &str, value: &str) -> Result<(), HostError>;
    /// Another copy of a header, after those already there.
    fn add_request_header(&self, name: &str, value: &str) -> Result<(), HostError>;
    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError>;
    fn set_tick_period_ms(&self, ms: u32);

    /// The `:status` of the callout being answered; None when it failed without an answer.
    fn http_call_status(&self) -> Option<u32>;
    fn http_call_body(&self, size: usize) -> Result<Vec<u8>, HostError>;

    /// Data shared by every VM of the plugin, with its compare-and-swap version.
    fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// `cas` 0 writes unconditionally; otherwise the write fails unless the entry still has it.
    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> bool;

    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32>;
    fn increment_metric(&self, id: u32, by: u64);
    fn record_metric(&self, id: u32, value: u64);
    /// A gauge every VM of the plugin adds its share to.
    fn add_to_gauge(&self, id: u32, delta: i64);

    /// A host extension, e.g. Envoy's `verify_signature`.
    fn call_foreign_function(&self, name: &str, args: &[u8]) -> Result<Vec<u8>, HostError>;
    /// The VM's linear memory, which only grows.
    fn memory_bytes(&self) -> u64;
}

/// Host calls that may call back into the VM before they return: a local reply or a resumed
/// request can end its stream (`on_done`), a callout can fail at once (`on_http_call_response`).
/// The runtime reaches them only through `gate::Proxy::reentrant`.
pub trait Host: Quiet {
    fn send_local_response(
        &self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError>;
    /// Lets the current (paused) request go on.
    fn resume_request(&self) -> Result<(), HostError>;
    /// Closes the current connection without a response.
    fn close_downstream(&self) -> Result<(), HostError>;
    /// Starts a callout; its answer goes to the root that is current now, with the returned token.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u64,
    ) -> Result<u32, HostError>;
}
