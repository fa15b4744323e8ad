//! The connection-level (NETWORK) plugin: Istio's PeerAuthentication enforced on whole
//! connections, before any HTTP filter or `tcp_proxy` sees a byte. A refused connection is closed
//! without a response.
//!
//! A plaintext connection is decided when it arrives; refused, the filters after this one never
//! start, so no upstream is connected. A TLS connection must go on: `tcp_proxy` stops reading the
//! socket until its upstream connects, and the handshake needs those reads. Until its handshake
//! shows a certificate it is held at the gate instead: its first bytes either way (client data,
//! or the upstream's first bytes once the handshake is done) decide it, and the root's tick polls
//! it for callers that send nothing.

use std::cell::RefCell;
use std::rc::Rc;

use super::root::{Decision, Handshake, Root};
use super::{Action, Host, Runtime, NETWORK_ROOT_ID};
use crate::authn::{self, Admission};
use crate::error::AuthError;

/// How soon a held TLS connection is first asked whether its peer presented a certificate; the
/// interval then doubles up to `MAX_POLL_MS`, so connections that stall cost little. Client-first
/// protocols are decided sooner, by their first bytes.
pub const TICK_HANDSHAKE_MS: u32 = 5;
const MAX_POLL_MS: u64 = 1_000;
/// A TLS connection that has shown no client certificate by then is refused.
const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// TLS connections one plugin holds at the gate per VM; past it a new one is refused.
pub const MAX_PAUSED_CONNECTIONS: usize = 10_000;

impl<H: Host> Runtime<H> {
    pub fn on_new_connection(&self, context_id: u32) -> Action {
        let Some((_, root)) = self.take_new_stream(context_id) else {
            return self.refuse_connection(None, None, AuthError::Internal, "no configured plugin");
        };
        if self.has_http_only_fields(&root) {
            return self.refuse_connection(
                Some(&root),
                None,
                AuthError::Internal,
                "HTTP-only fields in its config",
            );
        }
        let conn = self.connection(true);
        let cfg = Rc::clone(&root.borrow().config);
        // A TLS caller's certificate is not known yet: the census counts plaintext connections.
        if !conn.tls {
            let now = self.host.now_ms().unwrap_or(0);
            self.census(&root, &cfg, &conn, now);
        }
        match authn::admit_connection(&cfg, &conn, false) {
            Admission::AwaitHandshake => self.await_handshake(context_id, &root, conn.port),
            decided => self.settle(&root, conn.port, decided),
        }
    }

    /// Bytes from a held connection mean its TLS handshake is over: it is decided now. Any other
    /// connection was allowed already.
    pub fn on_downstream_data(&self, context_id: u32) -> Action {
        match self.root_awaiting(context_id) {
            Some(root) => self.decide_held(context_id, &root),
            None => Action::Continue,
        }
    }

    /// The upstream's bytes reach a held connection only once it is decided; before its handshake
    /// ends the TLS socket keeps them.
    pub fn on_upstream_data(&self, context_id: u32) -> Action {
        match self.root_awaiting(context_id) {
            Some(root) if self.connection_mtls() => self.decide_held(context_id, &root),
            _ => Action::Continue,
        }
    }

    /// Decides a held connection whose handshake is over.
    fn decide_held(&self, context_id: u32, root: &Rc<RefCell<Root>>) -> Action {
        root.borrow_mut().handshakes.remove(&context_id);
        let conn = self.connection(true);
        let admission = authn::admit_connection(&root.borrow().config, &conn, true);
        self.settle(root, conn.port, admission)
    }

    fn settle(&self, root: &Rc<RefCell<Root>>, port: Option<u32>, admission: Admission) -> Action {
        match admission {
            Admission::Allow => {
                root.borrow_mut().count_connection(Decision::Allowed);
                Action::Continue
            }
            Admission::Refuse(e, why) => self.refuse_connection(Some(root), port, e, why),
            Admission::AwaitHandshake => {
                self.refuse_connection(Some(root), port, AuthError::Internal, "TLS state unknown")
            }
        }
    }

    fn root_awaiting(&self, context_id: u32) -> Option<Rc<RefCell<Root>>> {
        self.contexts
            .borrow()
            .roots
            .iter()
            .find(|(_, r)| {
                r.try_borrow().is_ok_and(|r| {
                    !r.handshakes.is_empty() && r.handshakes.contains_key(&context_id)
                })
            })
            .map(|(_, r)| Rc::clone(r))
    }

    /// A plugin loaded as a network filter without the network root id cannot refuse its
    /// HTTP-only fields at start; it refuses every connection instead of enforcing less.
    fn has_http_only_fields(&self, root: &Rc<RefCell<Root>>) -> bool {
        let mut r = root.borrow_mut();
        let Some(field) = r.config.http_only_field else {
            return false;
        };
        if !r.http_only_logged {
            r.http_only_logged = true;
            log::error!(
                "pluginConfig.{field}: needs the HTTP plugin, but this plugin is loaded as a network \
                 filter; every connection is refused. A NETWORK WasmPlugin with pluginName \
                 \"{NETWORK_ROOT_ID}\" has such a configuration refused when it is loaded"
            );
        }
        true
    }

    fn await_handshake(
        &self,
        context_id: u32,
        root: &Rc<RefCell<Root>>,
        port: Option<u32>,
    ) -> Action {
        let now = self.host.now_ms().unwrap_or(0);
        let tick_slower = {
            let mut r = root.borrow_mut();
            if r.handshakes.len() >= MAX_PAUSED_CONNECTIONS {
                drop(r);
                return self.refuse_connection(
                    Some(root),
                    port,
                    AuthError::Internal,
                    "too many connections awaiting their TLS handshake",
                );
            }
            r.handshakes.insert(
                context_id,
                Handshake {
                    deadline_ms: now.saturating_add(HANDSHAKE_TIMEOUT_MS),
                    next_poll_ms: now.saturating_add(u64::from(TICK_HANDSHAKE_MS)),
                    poll_interval_ms: u64::from(TICK_HANDSHAKE_MS),
                },
            );
            r.tick_ms == 0 || r.tick_ms > TICK_HANDSHAKE_MS
        };
        if tick_slower {
            self.set_tick(root, TICK_HANDSHAKE_MS);
        }
        Action::Continue
    }

    /// Runs in the root's tick: decides the held connections whose peer has presented a
    /// certificate, and refuses those past their deadline.
    pub(super) fn poll_handshakes(&self, root_id: u32, root: &Rc<RefCell<Root>>, now_ms: u64) {
        let due: Vec<(u32, u64)> = root
            .borrow()
            .handshakes
            .iter()
            .filter(|(_, h)| h.next_poll_ms <= now_ms)
            .map(|(id, h)| (*id, h.deadline_ms))
            .collect();
        if due.is_empty() {
            return;
        }
        for (id, deadline_ms) in due {
            if self.host.set_effective_context(id).is_err() {
                root.borrow_mut().handshakes.remove(&id);
                continue;
            }
            // One host call while no certificate has been presented yet.
            let admission = if self.connection_mtls() {
                let conn = self.connection(true);
                authn::admit_connection(&root.borrow().config, &conn, false)
            } else {
                Admission::AwaitHandshake
            };
            if admission == Admission::AwaitHandshake && now_ms < deadline_ms {
                if let Some(h) = root.borrow_mut().handshakes.get_mut(&id) {
                    h.poll_interval_ms = h.poll_interval_ms.saturating_mul(2).min(MAX_POLL_MS);
                    h.next_poll_ms = now_ms.saturating_add(h.poll_interval_ms).min(deadline_ms);
                }
                continue;
            }
            root.borrow_mut().handshakes.remove(&id);
            match admission {
                Admission::Allow => root.borrow_mut().count_connection(Decision::Allowed),
                Admission::Refuse(e, why) => {
                    self.refuse_connection(Some(root), None, e, why);
                }
                Admission::AwaitHandshake => {
                    self.refuse_connection(
                        Some(root),
                        None,
                        AuthError::PeerAuthenticationFailed,
                        "no client certificate within the handshake timeout",
                    );
                }
            }
        }
        let _ = self.host.set_effective_context(root_id);
    }

    /// A root that goes away closes the connections it still holds.
    pub(super) fn close_paused_connections(&self, root: &Rc<RefCell<Root>>) {
        let paused = std::mem::take(&mut root.borrow_mut().handshakes);
        for id in paused.into_keys() {
            if self.host.set_effective_context(id).is_ok() {
                self.refuse_connection(
                    Some(root),
                    None,
                    AuthError::Internal,
                    "its plugin was removed",
                );
            }
        }
    }

    fn connection_mtls(&self) -> bool {
        self.host
            .property(&["connection", "mtls"])
            .is_some_and(|b| crate::request::wire::decode_bool(&b))
    }

    /// Closes the current connection (`Pause`: no later filter starts); in a dry run counts and
    /// logs what enforcement would do, and lets it go on.
    fn refuse_connection(
        &self,
        root: Option<&Rc<RefCell<Root>>>,
        port: Option<u32>,
        error: AuthError,
        why: &str,
    ) -> Action {
        let dry_run =
            error != AuthError::Internal && root.is_some_and(|r| r.borrow().config.dry_run);
        if let Some(root) = root {
            root.borrow_mut().count_connection(if dry_run {
                Decision::DryRun(error)
            } else {
                Decision::Refused(error)
            });
        }
        let level = if dry_run {
            log::Level::Info
        } else {
            log::Level::Debug
        };
        if log::log_enabled!(level) {
            let peer = self
                .host
                .property(&["source", "address"])
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            let what = if dry_run {
                "dry run: would refuse"
            } else {
                "refused"
            };
            log::log!(
                level,
                "{what} connection from {peer} to port {port:?}: {why}"
            );
        }
        if dry_run {
            return Action::Continue;
        }
        if self.host.close_downstream().is_err() {
            log::error!("could not close a refused connection");
        }
        Action::Pause
    }
}
