//! Callouts a root makes through Envoy's `http_call`: key sets and discovery documents fetched by
//! the worker that won the shared lease, their answers published to every worker, and the pump
//! that starts due fetches and resumes the requests that waited for them.

use std::cell::RefCell;
use std::rc::Rc;

use super::*;

impl<H: Host> Runtime<H> {
    pub(super) fn http_call_response(
        &self,
        root_id: u32,
        root: &Rc<RefCell<Root>>,
        token: u32,
        body_size: usize,
    ) {
        let now = self.host.now_ms().unwrap_or(0);
        let Some(call) = root.borrow_mut().calls.remove(&token) else {
            return;
        };
        let what = match &call {
            Call::Discovery { .. } => "discovery document",
            Call::Keys { .. } => "JWKS",
        };
        let result = match self.host.http_call_status() {
            Some(200) if body_size > MAX_JWKS_BYTES => {
                Err(format!("{what}: body larger than {MAX_JWKS_BYTES} bytes"))
            }
            Some(200) => self
                .host
                .http_call_body(body_size)
                .map_err(|e| format!("{what}: cannot read body (host status {})", e.0)),
            Some(code) => Err(format!("{what}: HTTP status {code}")),
            None => Err(format!(
                "{what}: no response (connection failure or timeout)"
            )),
        };
        let (index, result) = match call {
            Call::Keys { index, uri } => {
                log::debug!("jwks: answer from {uri}");
                (index, result)
            }
            Call::Discovery { index } => {
                let spec = root.borrow().config.remotes.get(index).cloned();
                let target = spec
                    .as_ref()
                    .ok_or_else(String::new)
                    .and_then(|spec| result.and_then(|doc| discovery::keys_target(spec, &doc)));
                match target {
                    Ok(target) => {
                        log::debug!(
                            "jwks {}: keys at {} (cluster {:?})",
                            spec.as_ref().map_or("", |s| s.uri.as_str()),
                            target.uri,
                            target.cluster
                        );
                        self.fetch_keys(root, index, &target, now);
                        return;
                    }
                    Err(reason) => (index, Err(reason)),
                }
            }
        };
        let (uri, outcome, metrics) = {
            let mut r = root.borrow_mut();
            let config = Rc::clone(&r.config);
            let Some((spec, source)) = config.remotes.get(index).zip(r.sources.get_mut(index))
            else {
                return;
            };
            let outcome = source.complete(
                spec,
                &mut Shared(&self.host),
                now,
                result.as_deref().map_err(Clone::clone),
            );
            (spec.uri.clone(), outcome, r.metrics)
        };
        match outcome {
            Outcome::Published { keys, cut_from } => {
                Metrics::bump(&self.host, metrics.fetch_success);
                log::info!("jwks {uri}: fetched {keys} key(s)");
                if let Some(n) = cut_from {
                    Metrics::bump(&self.host, metrics.keys_cut);
                    log::warn!("jwks {uri}: {}", jwks::cut_warning(n));
                }
            }
            Outcome::Failed {
                reason,
                retry_in_ms,
            } => {
                Metrics::bump(&self.host, metrics.fetch_failed);
                log::warn!("jwks {uri}: fetch failed: {reason}; retrying in {retry_in_ms} ms");
            }
        }
        self.pump(root_id, root, now);
    }

    /// Runs in root-context callbacks only. Starts the fetches this worker won, resumes the
    /// waiters that can go on, and sets the tick.
    pub(super) fn pump(&self, root_id: u32, root: &Rc<RefCell<Root>>, now_ms: u64) {
        let due: Vec<usize> = {
            let mut r = root.borrow_mut();
            let config = Rc::clone(&r.config);
            let mut due = Vec::new();
            for (i, (spec, src)) in config.remotes.iter().zip(r.sources.iter_mut()).enumerate() {
                if src.poll(spec, &mut Shared(&self.host), now_ms) == Poll::Fetch {
                    due.push(i);
                }
            }
            due
        };
        for index in due {
            self.fetch(root, index, now_ms);
        }
        self.resume_ready(root_id, root, now_ms);

        let (wanted, current) = {
            let r = root.borrow();
            let wanted = if !r.handshakes.is_empty() {
                network::TICK_HANDSHAKE_MS
            } else if r.busy() {
                TICK_BUSY_MS
            } else {
                TICK_IDLE_MS
            };
            (wanted, r.tick_ms)
        };
        if wanted != current {
            self.set_tick(root, wanted);
        }
    }

    /// Starts a fetch this worker won: the discovery document first, when the source has one.
    pub(super) fn fetch(&self, root: &Rc<RefCell<Root>>, index: usize, now_ms: u64) {
        let Some(spec) = root.borrow().config.remotes.get(index).cloned() else {
            return;
        };
        let call = if spec.discovery {
            Call::Discovery { index }
        } else {
            Call::Keys {
                index,
                uri: spec.uri.clone(),
            }
        };
        let target = KeysTarget {
            uri: spec.uri.clone(),
            cluster: spec.cluster.clone(),
            authority: spec.authority.clone(),
            path: spec.path.clone(),
        };
        self.call(root, &spec, call, &target, now_ms);
    }

    pub(super) fn fetch_keys(
        &self,
        root: &Rc<RefCell<Root>>,
        index: usize,
        target: &KeysTarget,
        now_ms: u64,
    ) {
        let Some(spec) = root.borrow().config.remotes.get(index).cloned() else {
            return;
        };
        let call = Call::Keys {
            index,
            uri: target.uri.clone(),
        };
        self.call(root, &spec, call, target, now_ms);
    }

    pub(super) fn call(
        &self,
        root: &Rc<RefCell<Root>>,
        spec: &RemoteJwks,
        call: Call,
        target: &KeysTarget,
        now_ms: u64,
    ) {
        let headers = [
            (":method", "GET"),
            (":path", target.path.as_str()),
            (":authority", target.authority.as_str()),
            ("accept", "application/json"),
        ];
        match self
            .host
            .http_call(&target.cluster, &headers, spec.timeout_ms)
        {
            Ok(token) => {
                log::debug!(
                    "jwks {}: fetching {} through cluster {:?}",
                    spec.uri,
                    target.uri,
                    target.cluster
                );
                root.borrow_mut().calls.insert(token, call);
            }
            Err(e) => {
                let reason = format!(
                    "cannot call cluster {:?} (host status {})",
                    target.cluster, e.0
                );
                let index = match call {
                    Call::Discovery { index } | Call::Keys { index, .. } => index,
                };
                let metrics = {
                    let mut r = root.borrow_mut();
                    if let Some(src) = r.sources.get_mut(index) {
                        src.complete(spec, &mut Shared(&self.host), now_ms, Err(reason.clone()));
                    }
                    r.metrics
                };
                Metrics::bump(&self.host, metrics.fetch_failed);
                log::warn!("jwks {}: {reason}; is the cluster defined?", spec.uri);
            }
        }
    }
}
