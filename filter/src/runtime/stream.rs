//! The HTTP stream: a request's headers read from Envoy, decided by `authn`, and the verdict
//! applied (headers removed and set, a local reply, or the request parked until its keys arrive);
//! parked requests resumed exactly once; the plaintext census.

use std::cell::RefCell;
use std::rc::Rc;

use super::*;

impl<H: Host> Runtime<H> {
    /// The current stream's request, with its connection when the config needs it.
    pub(super) fn current_request(&self, root: &Rc<RefCell<Root>>) -> Option<Request> {
        let req = Request::from_wire(self.host.request_headers().ok()?)?;
        Some(if root.borrow().config.peer.needs_connection {
            req.with_connection(self.connection(false))
        } else {
            req
        })
    }

    pub(super) fn request_headers(&self, context_id: u32, root: &Rc<RefCell<Root>>) -> Action {
        let cfg = Rc::clone(&root.borrow().config);
        let (Some(req), Ok(now_ms)) = (self.current_request(root), self.host.now_ms()) else {
            let d = self.deny(&Request::default(), AuthError::Internal, cfg.denial_body);
            root.borrow_mut().count(d);
            return Action::Pause;
        };
        if cfg.peer.census {
            self.census(root, &cfg, req.connection(), now_ms);
        }
        // The only host call made while the root is borrowed is verify_signature, which never
        // calls back into the VM.
        let verdict = root.borrow_mut().decide(&self.host, &req, now_ms);
        let Verdict::Wait { remote, refetch } = verdict else {
            let decision = self.apply(verdict, &req, &cfg);
            root.borrow_mut().count(decision);
            return action(decision);
        };
        {
            let mut r = root.borrow_mut();
            let config = Rc::clone(&r.config);
            // Past the cap a request is answered as a failed fetch would answer it.
            let refused = if r.waiters.len() >= config.max_paused_requests {
                Some(if refetch {
                    AuthError::NoMatchingKey
                } else {
                    AuthError::JwksFetchFailed
                })
            } else {
                None
            };
            let found = config.remotes.get(remote).zip(r.sources.get_mut(remote));
            let (Some((spec, src)), None) = (found, refused) else {
                drop(r);
                let decision = self.refuse(&req, refused.unwrap_or(AuthError::Internal), &cfg);
                root.borrow_mut().count(decision);
                return action(decision);
            };
            if refetch {
                src.want_refetch = true;
            }
            let ticket = src.ticket(spec, refetch, now_ms);
            r.waiters.push(Waiter {
                context_id,
                remote,
                ticket,
            });
        }
        self.kick(root);
        Action::Pause
    }

    /// Resumes, exactly once each, the waiters whose keys arrived, whose fetch ended, or whose
    /// deadline passed.
    pub(super) fn resume_ready(&self, root_id: u32, root: &Rc<RefCell<Root>>, now_ms: u64) {
        let ready: Vec<Waiter> = {
            let mut r = root.borrow_mut();
            let (ready, waiting): (Vec<Waiter>, Vec<Waiter>) =
                std::mem::take(&mut r.waiters).into_iter().partition(|w| {
                    r.sources
                        .get(w.remote)
                        .is_none_or(|s| s.ready(&w.ticket, now_ms))
                });
            r.waiters = waiting;
            ready
        };
        if ready.is_empty() {
            return;
        }
        let cfg = Rc::clone(&root.borrow().config);
        for w in ready {
            if self.host.set_effective_context(w.context_id).is_err() {
                continue;
            }
            let Some(req) = self.current_request(root) else {
                let d = self.deny(&Request::default(), AuthError::Internal, cfg.denial_body);
                root.borrow_mut().count(d);
                continue;
            };
            // Resumed requests never wait again.
            let verdict = match root.borrow_mut().decide(&self.host, &req, now_ms) {
                Verdict::Wait { refetch: true, .. } => Verdict::Deny(AuthError::NoMatchingKey),
                Verdict::Wait { .. } => Verdict::Deny(AuthError::JwksFetchFailed),
                v => v,
            };
            let decision = self.apply(verdict, &req, &cfg);
            root.borrow_mut().count(decision);
            if action(decision) == Action::Continue {
                let _ = self.host.resume_request();
            }
        }
        let _ = self.host.set_effective_context(root_id);
    }

    /// Counts a caller without mTLS on a PERMISSIVE port (the plaintext census); logs its address
    /// now and then.
    pub(super) fn census(
        &self,
        root: &Rc<RefCell<Root>>,
        cfg: &Config,
        conn: &Connection,
        now_ms: u64,
    ) {
        if conn.mtls || cfg.peer.policy.for_port(conn.port) != Mode::Permissive {
            return;
        }
        let log_now = root
            .borrow_mut()
            .census
            .count(&self.host, conn.port, now_ms);
        if log_now && log::log_enabled!(log::Level::Info) {
            let peer = self
                .host
                .property(&["source", "address"])
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            log::info!(
                "plaintext census: {peer} called port {:?} without mTLS (PERMISSIVE); \
                 STRICT would refuse it",
                conn.port
            );
        }
    }

    /// Applies a final verdict to the current request.
    pub(super) fn apply(&self, verdict: Verdict, req: &Request, cfg: &Config) -> Decision {
        match verdict {
            Verdict::Allow(fwd) => {
                let applied = fwd
                    .remove
                    .iter()
                    .try_for_each(|h| self.host.remove_request_header(h))
                    .and_then(|()| {
                        fwd.writes().try_for_each(|(k, v, copy)| {
                            if copy {
                                self.host.add_request_header(k, v)
                            } else {
                                self.host.set_request_header(k, v)
                            }
                        })
                    })
                    .and_then(|()| match &fwd.path {
                        Some(path) => self.host.set_request_header(":path", path),
                        None => Ok(()),
                    })
                    .and_then(|()| match &cfg.decision_header {
                        Some(h) => self.host.set_request_header(h, "allow"),
                        None => Ok(()),
                    });
                match applied {
                    Ok(()) => Decision::Allowed,
                    // A spoofed output header that could not be removed must not reach the upstream.
                    Err(_) => self.deny(req, AuthError::Internal, cfg.denial_body),
                }
            }
            Verdict::Deny(e) => self.refuse(req, e, cfg),
            Verdict::Wait { .. } => self.deny(req, AuthError::Internal, cfg.denial_body),
        }
    }

    /// Refuses the current request; in a dry run lets it go on instead, with no identity from
    /// it (every output header a client sent is removed) and the decision it would have had.
    pub(super) fn refuse(&self, req: &Request, error: AuthError, cfg: &Config) -> Decision {
        if !cfg.dry_run || error == AuthError::Internal {
            return self.deny(req, error, cfg.denial_body);
        }
        let passed = cfg
            .output_headers
            .iter()
            .filter(|h| req.header(h).is_some())
            .try_for_each(|h| self.host.remove_request_header(h))
            .and_then(|()| match &cfg.decision_header {
                Some(h) => self
                    .host
                    .set_request_header(h, &format!("deny; reason=\"{}\"", error.reason())),
                None => Ok(()),
            });
        if passed.is_err() {
            return self.deny(req, AuthError::Internal, cfg.denial_body);
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
    pub(super) fn deny(&self, req: &Request, error: AuthError, style: DenialBody) -> Decision {
        let d = Denial::new(error, &req.realm(), style);
        log::debug!(
            "{} {}: {}",
            d.status,
            strip_query(req.path()),
            error.reason()
        );
        let headers: Vec<(&str, &str)> = d.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if self
            .host
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
