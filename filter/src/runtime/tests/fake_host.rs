//! The fake proxy: contexts, headers, callouts, shared data, metrics, properties and the clock,
//! recorded for the tests to read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use super::super::host::{Host, HostError, MetricKind, Quiet};
use super::super::Runtime;
use super::ROOT;
use crate::crypto::verify_signature;
use crate::request::wire;

pub(super) type SharedData = Rc<RefCell<HashMap<String, (Vec<u8>, u32)>>>;
pub(super) type ForeignFunction = Box<dyn Fn(&[u8]) -> Result<Vec<u8>, HostError>>;

/// A proxy with one plugin: what the runtime did to it is recorded for the tests to read.
#[derive(Default)]
pub(super) struct Fake {
    pub(super) now_ms: u64,
    pub(super) config: Vec<u8>,
    pub(super) properties: HashMap<String, Vec<u8>>,
    /// Every property the runtime asked for, in order.
    pub(super) property_reads: Vec<String>,
    /// The context host calls act on.
    pub(super) current: u32,
    pub(super) headers: HashMap<u32, Vec<(String, String)>>,
    /// (context, status, body)
    pub(super) replies: Vec<(u32, u32, String)>,
    pub(super) resumed: Vec<u32>,
    pub(super) tick_ms: u32,
    /// (token, cluster, :path)
    pub(super) callouts: Vec<(u32, String, String)>,
    pub(super) answer: Option<(Option<u32>, Vec<u8>)>,
    pub(super) shared: SharedData,
    pub(super) metrics: Vec<(String, u64)>,
    pub(super) foreign_calls: usize,
    pub(super) foreign: Option<ForeignFunction>,
    /// Connection contexts and their properties (`connection/mtls`, …).
    pub(super) connections: HashMap<u32, HashMap<String, Vec<u8>>>,
    pub(super) closed: Vec<u32>,
    /// A local reply or a resumed request ends its stream before the host call returns, as
    /// Envoy may: the runtime is called back (`on_done`) from inside the call.
    pub(super) end_streams_at_once: bool,
    /// Streams ended that way.
    pub(super) ended: Vec<u32>,
}

/// The fake, and the runtime it belongs to (to call it back from inside a host call).
#[derive(Default)]
pub(super) struct FakeHost(pub(super) RefCell<Fake>, Weak<Runtime<FakeHost>>);

/// A runtime over a fake host that can call it back.
pub(super) fn runtime() -> Rc<Runtime<FakeHost>> {
    Rc::new_cyclic(|rt| Runtime::new(FakeHost(RefCell::default(), Weak::clone(rt))))
}

impl FakeHost {
    /// Ends the current stream from inside a host call, when the test asks for it.
    fn maybe_end_stream(&self) {
        let current = {
            let mut f = self.0.borrow_mut();
            if !f.end_streams_at_once {
                return;
            }
            let current = f.current;
            f.ended.push(current);
            current
        };
        if let Some(rt) = self.1.upgrade() {
            rt.on_done(current);
        }
    }
}

impl Quiet for FakeHost {
    fn log(&self, _level: log::Level, _message: &str) {}

    fn log_level(&self) -> log::LevelFilter {
        log::LevelFilter::Trace
    }

    fn now_ms(&self) -> Result<u64, HostError> {
        Ok(self.0.borrow().now_ms)
    }

    fn plugin_config(&self, size: usize) -> Result<Vec<u8>, HostError> {
        let f = self.0.borrow();
        assert_eq!(size, f.config.len());
        Ok(f.config.clone())
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let key = path.join("/");
        self.0.borrow_mut().property_reads.push(key.clone());
        let f = self.0.borrow();
        match f.connections.get(&f.current) {
            Some(props) => props.get(&key).cloned(),
            None => f.properties.get(&key).cloned(),
        }
    }

    fn request_headers(&self) -> Result<Vec<u8>, HostError> {
        let f = self.0.borrow();
        let headers = f.headers.get(&f.current).ok_or(HostError(2))?;
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Ok(wire::encode_map(&pairs))
    }

    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        let mut f = self.0.borrow_mut();
        let current = f.current;
        let headers = f.headers.get_mut(&current).ok_or(HostError(2))?;
        headers.retain(|(k, _)| k != name);
        Ok(())
    }

    fn set_request_header(&self, name: &str, value: &str) -> Result<(), HostError> {
        self.remove_request_header(name)?;
        self.add_request_header(name, value)
    }

    fn add_request_header(&self, name: &str, value: &str) -> Result<(), HostError> {
        let mut f = self.0.borrow_mut();
        let current = f.current;
        let headers = f.headers.get_mut(&current).ok_or(HostError(2))?;
        headers.push((name.to_string(), value.to_string()));
        Ok(())
    }

    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        let mut f = self.0.borrow_mut();
        if context_id != ROOT
            && !f.headers.contains_key(&context_id)
            && !f.connections.contains_key(&context_id)
        {
            return Err(HostError(2));
        }
        f.current = context_id;
        Ok(())
    }

    fn set_tick_period_ms(&self, ms: u32) {
        self.0.borrow_mut().tick_ms = ms;
    }

    fn http_call_status(&self) -> Option<u32> {
        self.0
            .borrow()
            .answer
            .as_ref()
            .and_then(|(status, _)| *status)
    }

    fn http_call_body(&self, size: usize) -> Result<Vec<u8>, HostError> {
        let f = self.0.borrow();
        let body = f
            .answer
            .as_ref()
            .map(|(_, b)| b.clone())
            .unwrap_or_default();
        assert_eq!(size, body.len());
        Ok(body)
    }

    fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.0.borrow().shared.borrow().get(key).cloned()
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> bool {
        let f = self.0.borrow();
        let mut shared = f.shared.borrow_mut();
        let current = shared.get(key).map_or(0, |(_, c)| *c);
        if cas != 0 && cas != current {
            return false;
        }
        shared.insert(key.to_string(), (value.to_vec(), current + 1));
        true
    }

    fn define_metric(&self, _kind: MetricKind, name: &str) -> Option<u32> {
        let mut f = self.0.borrow_mut();
        f.metrics.push((name.to_string(), 0));
        u32::try_from(f.metrics.len() - 1).ok()
    }

    fn increment_metric(&self, id: u32, by: u64) {
        self.0.borrow_mut().metrics[id as usize].1 += by;
    }

    fn record_metric(&self, id: u32, value: u64) {
        self.0.borrow_mut().metrics[id as usize].1 = value;
    }

    fn add_to_gauge(&self, id: u32, delta: i64) {
        let gauge = &mut self.0.borrow_mut().metrics[id as usize].1;
        *gauge = gauge
            .checked_add_signed(delta)
            .expect("a gauge never goes below 0");
    }

    fn call_foreign_function(&self, name: &str, args: &[u8]) -> Result<Vec<u8>, HostError> {
        assert_eq!(name, verify_signature::FUNCTION);
        let mut f = self.0.borrow_mut();
        f.foreign_calls += 1;
        match &f.foreign {
            Some(answer) => answer(args),
            None => Err(HostError(1)),
        }
    }

    fn memory_bytes(&self) -> u64 {
        1 << 20
    }
}

impl Host for FakeHost {
    fn send_local_response(
        &self,
        status: u32,
        _headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        {
            let mut f = self.0.borrow_mut();
            let current = f.current;
            let body = String::from_utf8_lossy(body).into_owned();
            f.replies.push((current, status, body));
        }
        self.maybe_end_stream();
        Ok(())
    }

    fn resume_request(&self) -> Result<(), HostError> {
        {
            let mut f = self.0.borrow_mut();
            let current = f.current;
            f.resumed.push(current);
        }
        self.maybe_end_stream();
        Ok(())
    }

    fn close_downstream(&self) -> Result<(), HostError> {
        let mut f = self.0.borrow_mut();
        let current = f.current;
        f.closed.push(current);
        Ok(())
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        _timeout_ms: u64,
    ) -> Result<u32, HostError> {
        let mut f = self.0.borrow_mut();
        let token = u32::try_from(f.callouts.len()).unwrap() + 100;
        let path = headers.iter().find(|(k, _)| *k == ":path").unwrap().1;
        f.callouts
            .push((token, cluster.to_string(), path.to_string()));
        Ok(token)
    }
}
