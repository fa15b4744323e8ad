//! proxy-wasm contexts: the root context compiles the configuration once; each HTTP context asks
//! the pure core for a verdict and applies it.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use crate::authn::{self, Verdict};
use crate::config::{self, Config};
use crate::error::{AuthError, Denial};
use crate::host;
use crate::request::Request;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Default)]
struct Root {
    config: Option<Rc<Config>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = match host::plugin_config(plugin_configuration_size) {
            Ok(b) => b,
            Err(e) => {
                host::log(
                    LogLevel::Error,
                    &format!("cannot read pluginConfig (host status {})", e.0),
                );
                return false;
            }
        };
        match config::load(&bytes) {
            Ok(cfg) => {
                for w in &cfg.warnings {
                    host::log(LogLevel::Warn, &w.clone());
                }
                host::log(
                    LogLevel::Info,
                    &format!("configured {} JWT rule(s)", cfg.rules.len()),
                );
                self.config = Some(Rc::new(cfg));
                true
            }
            Err(e) => {
                host::log(LogLevel::Error, &e.to_string());
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            config: self.config.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    config: Option<Rc<Config>>,
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (req, read) = match host::request_headers() {
            Ok(h) => (Request::new(h), true),
            Err(_) => (Request::default(), false),
        };
        let verdict = match (&self.config, read, host::now_seconds()) {
            (Some(cfg), true, Ok(now)) => authn::authenticate(cfg, &req, now),
            _ => Verdict::Deny(AuthError::Internal),
        };
        match verdict {
            Verdict::Allow(fwd) => {
                let applied = fwd
                    .remove
                    .iter()
                    .try_for_each(|h| host::remove_request_header(h))
                    .and_then(|()| {
                        fwd.set
                            .iter()
                            .try_for_each(|(k, v)| host::set_request_header(k, v))
                    });
                match applied {
                    Ok(()) => Action::Continue,
                    // A spoofed output header that could not be removed must not reach the upstream.
                    Err(_) => deny(&req, AuthError::Internal),
                }
            }
            Verdict::Deny(e) => deny(&req, e),
        }
    }
}

fn deny(req: &Request, error: AuthError) -> Action {
    let d = Denial::new(error, &req.realm());
    host::log(
        LogLevel::Debug,
        &format!(
            "{} {}: {}",
            d.status,
            crate::paths::strip_query(req.path()),
            d.body
        ),
    );
    let headers: Vec<(&str, &str)> = d.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if host::send_local_response(d.status, &headers, d.body.as_bytes()).is_err() {
        host::log(LogLevel::Error, "could not send the local reply");
    }
    Action::Pause
}
