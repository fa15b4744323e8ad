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

use std::rc::Rc;

use super::gate::Gate;
use super::held::{Due, TICK_HANDSHAKE_MS};
use super::host::Quiet;
use super::root::{Decision, SharedRoot};
use super::{Action, Host, Runtime, NETWORK_ROOT_ID};
use crate::authn::{self, Admission};
use crate::config::Config;
use crate::error::AuthError;
use crate::request::Connection;

impl<H: Host> Runtime<H> {
    pub fn on_new_connection(&self, context_id: u32) -> Action {
        let gate = &mut Gate::open();
        let Some((_, root)) = self.take_new_stream(gate, context_id) else {
            return self.refuse_connection(
                gate,
                None,
                None,
                AuthError::Internal,
                "no configured plugin",
            );
        };
        if self.has_http_only_fields(gate, &root) {
            return self.refuse_connection(
                gate,
                Some(&root),
                None,
                AuthError::Internal,
                "HTTP-only fields in its config",
            );
        }
        let cfg = root.with(gate, |r| Rc::clone(r.config()));
        let conn = self.arriving_connection(&cfg);
        // A TLS caller's certificate is not known yet: the census counts plaintext connections.
        if !conn.tls {
            let now = self.host.quiet().now_ms().unwrap_or(0);
            self.census(gate, &root, &cfg, &conn, now);
        }
        match authn::admit_connection(&cfg, &conn, false) {
            Admission::AwaitHandshake => self.await_handshake(gate, context_id, conn.port, &root),
            decided => self.settle(gate, &root, conn.port, decided),
        }
    }

    /// Bytes from a held connection mean its TLS handshake is over: it is decided now. Any other
    /// connection was allowed already.
    pub fn on_downstream_data(&self, context_id: u32) -> Action {
        let gate = &mut Gate::open();
        match self.root_holding(gate, context_id) {
            Some(root) => self.decide_held(gate, context_id, self.connection_mtls(), &root),
            None => Action::Continue,
        }
    }

    /// The upstream's bytes reach a held connection only once it is decided; before its handshake
    /// ends the TLS socket keeps them.
    pub fn on_upstream_data(&self, context_id: u32) -> Action {
        let gate = &mut Gate::open();
        match self.root_holding(gate, context_id) {
            Some(root) if self.connection_mtls() => self.decide_held(gate, context_id, true, &root),
            _ => Action::Continue,
        }
    }

    /// Decides a held connection whose handshake is over, its peer having presented a
    /// certificate (`mtls`) or not.
    fn decide_held(
        &self,
        gate: &mut Gate,
        context_id: u32,
        mtls: bool,
        root: &SharedRoot,
    ) -> Action {
        let (port, cfg) = root.with(gate, |r| {
            (
                r.held().release(context_id).flatten(),
                Rc::clone(r.config()),
            )
        });
        let conn = self.handshook_connection(port, mtls, &cfg);
        self.settle(gate, root, port, authn::admit_connection(&cfg, &conn, true))
    }

    /// A connection as it arrives: TLS or plaintext, and its port. A TLS peer's certificate
    /// shows only once the handshake is over, so it is not asked for yet: the connection waits.
    /// The port names a plaintext caller in the census; a TLS one's matters only where ports
    /// have modes of their own (a refusal's log line reads it then).
    fn arriving_connection(&self, cfg: &Config) -> Connection {
        let tls = self
            .host
            .quiet()
            .property(&["connection", "tls_version"])
            .is_some();
        let port = (!tls || cfg.peer.policy.depends_on_port())
            .then(|| self.destination_port())
            .flatten();
        Connection {
            tls,
            port,
            ..Connection::default()
        }
    }

    /// A held TLS connection to `port` whose peer has (`mtls`) or has not presented a
    /// certificate. Its identity matters to a whole connection only against trustDomains: it is
    /// not read otherwise.
    fn handshook_connection(&self, port: Option<u32>, mtls: bool, cfg: &Config) -> Connection {
        let needs_identity = mtls && !cfg.peer.trust_domains.is_empty();
        Connection {
            tls: true,
            mtls,
            port,
            uri_san: needs_identity.then(|| self.uri_san()).flatten(),
            certificate_sha256: None,
        }
    }

    fn settle(
        &self,
        gate: &mut Gate,
        root: &SharedRoot,
        port: Option<u32>,
        admission: Admission,
    ) -> Action {
        match admission {
            Admission::Allow => {
                root.with(gate, |r| r.count_connection(Decision::Allowed));
                Action::Continue
            }
            Admission::Refuse(e, why) => self.refuse_connection(gate, Some(root), port, e, why),
            Admission::AwaitHandshake => self.refuse_connection(
                gate,
                Some(root),
                port,
                AuthError::Internal,
                "TLS state unknown",
            ),
        }
    }

    /// The root holding a connection at the gate, if any.
    fn root_holding(&self, gate: &mut Gate, context_id: u32) -> Option<SharedRoot> {
        let mut i = 0;
        while let Some(root) = self.root_at(gate, i) {
            if root.with(gate, |r| r.held().contains(context_id)) {
                return Some(root);
            }
            i += 1;
        }
        None
    }

    /// A plugin loaded as a network filter without the network root id cannot refuse its
    /// HTTP-only fields at start; it refuses every connection instead of enforcing less.
    fn has_http_only_fields(&self, gate: &mut Gate, root: &SharedRoot) -> bool {
        let Some((field, first)) = root.with(gate, |r| r.http_only_field()) else {
            return false;
        };
        if first {
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
        gate: &mut Gate,
        context_id: u32,
        port: Option<u32>,
        root: &SharedRoot,
    ) -> Action {
        let host = self.host.quiet();
        let now = host.now_ms().unwrap_or(0);
        let evicted = root.with(gate, |r| {
            let evicted = r.held().hold(context_id, port, now);
            r.tick_within(host, TICK_HANDSHAKE_MS);
            evicted
        });
        if let Some(old) = evicted {
            if host.set_effective_context(old).is_ok() {
                self.refuse_connection(
                    gate,
                    Some(root),
                    None,
                    AuthError::HandshakesBacklogged,
                    "held longest while the plugin held as many TLS handshakes as it may",
                );
            }
            let _ = host.set_effective_context(context_id);
        }
        Action::Continue
    }

    /// Runs in the root's tick: decides the held connections whose peer has presented a
    /// certificate, and refuses those past their deadline.
    pub(super) fn poll_handshakes(
        &self,
        gate: &mut Gate,
        root_id: u32,
        root: &SharedRoot,
        now_ms: u64,
    ) {
        let due = root.with(gate, |r| r.held().due(now_ms));
        if due.is_empty() {
            return;
        }
        let host = self.host.quiet();
        let cfg = root.with(gate, |r| Rc::clone(r.config()));
        for Due {
            context_id: id,
            deadline_ms,
            port,
        } in due
        {
            if host.set_effective_context(id).is_err() {
                root.with(gate, |r| r.held().release(id));
                continue;
            }
            // One host call while no certificate has been presented yet.
            let admission = if self.connection_mtls() {
                let conn = self.handshook_connection(port, true, &cfg);
                authn::admit_connection(&cfg, &conn, false)
            } else {
                Admission::AwaitHandshake
            };
            if admission == Admission::AwaitHandshake && now_ms < deadline_ms {
                root.with(gate, |r| r.held().back_off(id, now_ms));
                continue;
            }
            root.with(gate, |r| r.held().release(id));
            match admission {
                Admission::Allow => root.with(gate, |r| r.count_connection(Decision::Allowed)),
                Admission::Refuse(e, why) => {
                    self.refuse_connection(gate, Some(root), port, e, why);
                }
                Admission::AwaitHandshake => {
                    self.refuse_connection(
                        gate,
                        Some(root),
                        port,
                        AuthError::PeerAuthenticationFailed,
                        "no client certificate within the handshake timeout",
                    );
                }
            }
        }
        let _ = host.set_effective_context(root_id);
    }

    /// A root that goes away closes the connections it still holds.
    pub(super) fn close_paused_connections(&self, gate: &mut Gate, root: &SharedRoot) {
        let held = root.with(gate, |r| r.held().take_all());
        for id in held {
            if self.host.quiet().set_effective_context(id).is_ok() {
                self.refuse_connection(
                    gate,
                    Some(root),
                    None,
                    AuthError::Internal,
                    "its plugin was removed",
                );
            }
        }
    }

    /// Closes the current connection (`Pause`: no later filter starts); in a dry run counts and
    /// logs what enforcement would do, and lets it go on.
    fn refuse_connection(
        &self,
        gate: &mut Gate,
        root: Option<&SharedRoot>,
        port: Option<u32>,
        error: AuthError,
        why: &str,
    ) -> Action {
        let dry_run = error != AuthError::Internal
            && root.is_some_and(|root| root.with(gate, |r| r.config().dry_run));
        if let Some(root) = root {
            root.with(gate, |r| {
                r.count_connection(if dry_run {
                    Decision::DryRun(error)
                } else {
                    Decision::Refused(error)
                })
            });
        }
        let level = if dry_run {
            log::Level::Info
        } else {
            log::Level::Debug
        };
        if log::log_enabled!(level) {
            let port = port.or_else(|| self.destination_port());
            let peer = self
                .host
                .quiet()
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
        if self.host.reentrant(gate).close_downstream().is_err() {
            log::error!("could not close a refused connection");
        }
        Action::Pause
    }
}
