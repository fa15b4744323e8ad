//! The HTTP stream: a request's headers read from Envoy, decided by `authn`, and the verdict
//! applied (headers removed and set, a local reply, or the request parked until its keys arrive);
//! parked requests resumed exactly once; the plaintext census.

use std::rc::Rc;

use super::gate::Gate;
use super::host::{Host, Quiet};
use super::root::{Decision, SharedRoot};
use super::Action;
use super::Runtime;
use crate::authn::Verdict;
use crate::config::Config;
use crate::error::{AuthError, Denial, DenialBody, DpopChallenge};
use crate::peer::Mode;
use crate::request::{strip_query, Connection, Request};

impl<H: Host> Runtime<H> {
    /// The current stream's request, with its connection when the config needs it.
    fn current_request(&self, cfg: &Config) -> Option<Request> {
        let req = Request::from_wire(self.host.quiet().request_headers().ok()?)?;
        Some(if cfg.peer.needs_connection || cfg.certificate_bound {
            req.with_connection(self.connection(cfg))
        } else {
            req
        })
    }

    pub(super) fn request_headers(
        &self,
        gate: &mut Gate,
        context_id: u32,
        root: &SharedRoot,
    ) -> Action {
        let host = self.host.quiet();
        let cfg = root.with(gate, |r| Rc::clone(r.config()));
        let (Some(req), Ok(now_ms)) = (self.current_request(&cfg), host.now_ms()) else {
            let d = self.deny(gate, &Request::default(), AuthError::Internal, Some(&cfg));
            root.with(gate, |r| r.count(d));
            return Action::Pause;
        };
        if cfg.peer.census {
            self.census(gate, root, &cfg, req.connection(), now_ms);
        }
        let verdict = root.with(gate, |r| r.decide(host, &req, now_ms));
        let Verdict::Wait { remote, refetch } = verdict else {
            let decision = self.apply(gate, verdict, &req, &cfg);
            root.with(gate, |r| r.count(decision));
            return action(decision);
        };
        let parked = root.with(gate, |r| {
            let parked = r.park(context_id, remote, refetch, now_ms);
            if parked.is_ok() {
                r.set_tick(host, super::TICK_NOW_MS);
            }
            parked
        });
        if let Err(error) = parked {
            let decision = self.refuse(gate, &req, error, &cfg);
            root.with(gate, |r| r.count(decision));
            return action(decision);
        }
        Action::Pause
    }

    /// Resumes, exactly once each, the waiters whose keys arrived, whose fetch ended, or whose
    /// deadline passed.
    pub(super) fn resume_ready(
        &self,
        gate: &mut Gate,
        root_id: u32,
        root: &SharedRoot,
        now_ms: u64,
    ) {
        let (ready, cfg) = root.with(gate, |r| (r.take_ready(now_ms), Rc::clone(r.config())));
        if ready.is_empty() {
            return;
        }
        let host = self.host.quiet();
        for w in ready {
            if host.set_effective_context(w.context_id).is_err() {
                continue;
            }
            let Some(req) = self.current_request(&cfg) else {
                let d = self.deny(gate, &Request::default(), AuthError::Internal, Some(&cfg));
                root.with(gate, |r| r.count(d));
                continue;
            };
            // Resumed requests never wait again.
            let verdict = match root.with(gate, |r| r.decide(host, &req, now_ms)) {
                Verdict::Wait { refetch: true, .. } => Verdict::Deny(AuthError::NoMatchingKey),
                Verdict::Wait { .. } => Verdict::Deny(AuthError::JwksFetchFailed),
                v => v,
            };
            let decision = self.apply(gate, verdict, &req, &cfg);
            root.with(gate, |r| r.count(decision));
            if action(decision) == Action::Continue {
                let _ = self.host.reentrant(gate).resume_request();
            }
        }
        let _ = host.set_effective_context(root_id);
    }

    /// Counts a caller without mTLS on a PERMISSIVE port, or a STRICT one in a dry run (the
    /// plaintext census); logs its address
    /// now and then.
    pub(super) fn census(
        &self,
        gate: &mut Gate,
        root: &SharedRoot,
        cfg: &Config,
        conn: &Connection,
        now_ms: u64,
    ) {
        let mode = cfg.peer.policy.for_port(conn.port);
        let counted = match mode {
            Mode::Permissive => true,
            // A port about to go STRICT: the census names who still calls it in plaintext.
            Mode::Strict => cfg.dry_run,
            Mode::Unset | Mode::Disable => false,
        };
        if conn.mtls || !counted {
            return;
        }
        let host = self.host.quiet();
        let log_now = root.with(gate, |r| r.count_plaintext(host, conn.port, mode, now_ms));
        if log_now && log::log_enabled!(log::Level::Info) {
            let peer = host
                .property(&["source", "address"])
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            log::info!(
                "plaintext census: {peer} called port {:?} without mTLS ({}); \
                 STRICT would refuse it",
                conn.port,
                mode.name()
            );
        }
    }

    /// Applies a final verdict to the current request.
    fn apply(&self, gate: &mut Gate, verdict: Verdict, req: &Request, cfg: &Config) -> Decision {
        let host = self.host.quiet();
        match verdict {
            Verdict::Allow(fwd) => {
                let applied = fwd
                    .remove
                    .iter()
                    .try_for_each(|h| host.remove_request_header(h))
                    .and_then(|()| {
                        fwd.writes().try_for_each(|(k, v, copy)| {
                            if copy {
                                host.add_request_header(k, v)
                            } else {
                                host.set_request_header(k, v)
                            }
                        })
                    })
                    .and_then(|()| match &fwd.path {
                        Some(path) => host.set_request_header(":path", path),
                        None => Ok(()),
                    })
                    .and_then(|()| match &cfg.decision_header {
                        Some(h) => host.set_request_header(h, "allow"),
                        None => Ok(()),
                    });
                match applied {
                    Ok(()) => Decision::Allowed,
                    // A spoofed output header that could not be removed must not reach the upstream.
                    Err(_) => self.deny(gate, req, AuthError::Internal, Some(cfg)),
                }
            }
            Verdict::Deny(e) => self.refuse(gate, req, e, cfg),
            Verdict::Wait { .. } => self.deny(gate, req, AuthError::Internal, Some(cfg)),
        }
    }

    /// Refuses the current request; in a dry run lets it go on instead, with no identity from
    /// it (every output header a client sent is removed) and the decision it would have had.
    fn refuse(&self, gate: &mut Gate, req: &Request, error: AuthError, cfg: &Config) -> Decision {
        if !cfg.dry_run || error == AuthError::Internal {
            return self.deny(gate, req, error, Some(cfg));
        }
        let host = self.host.quiet();
        let passed = cfg
            .output_headers
            .iter()
            .filter(|h| req.header(h).is_some())
            .try_for_each(|h| host.remove_request_header(h))
            .and_then(|()| match &cfg.decision_header {
                Some(h) => {
                    host.set_request_header(h, &format!("deny; reason=\"{}\"", error.reason()))
                }
                None => Ok(()),
            });
        if passed.is_err() {
            return self.deny(gate, req, AuthError::Internal, Some(cfg));
        }
        log::info!(
            "dry run: would refuse {} {}: {}",
            error.http_status(),
            strip_query(req.path()),
            error.reason()
        );
        Decision::DryRun(error)
    }

    /// Answers the current request with the error's local reply.
    pub(super) fn deny(
        &self,
        gate: &mut Gate,
        req: &Request,
        error: AuthError,
        cfg: Option<&Config>,
    ) -> Decision {
        let style = cfg.map_or(DenialBody::Text, |c| c.denial_body);
        let dpop = match (cfg.is_some_and(|c| c.dpop), req.header("authorization")) {
            (false, _) => DpopChallenge::None,
            (true, Some(a)) if a.starts_with("DPoP ") => DpopChallenge::Used,
            (true, _) => DpopChallenge::Offered,
        };
        let d = Denial::with_dpop(error, &req.realm(), style, dpop);
        log::debug!(
            "{} {}: {}",
            d.status,
            strip_query(req.path()),
            error.reason()
        );
        let headers: Vec<(&str, &str)> = d.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if self
            .host
            .reentrant(gate)
            .send_local_response(d.status, &headers, d.body.as_bytes())
            .is_err()
        {
            log::error!("could not send the local reply");
        }
        Decision::Refused(error)
    }
}

/// What the proxy does with a decided request: a refused one stays paused behind its reply.
pub(super) fn action(decision: Decision) -> Action {
    match decision {
        Decision::Allowed | Decision::DryRun(_) => Action::Continue,
        Decision::Refused(_) => Action::Pause,
    }
}
