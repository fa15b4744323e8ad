//! Who checks a signature the host can check (RS256/384/512, ES256/384/512): Envoy's
//! `verify_signature` (BoringSSL) or this module, and the start-up self-test that decides whether
//! the host's verifier can be used at all. The host is reached through a plain function, so this
//! layer knows nothing of the runtime.

use std::cell::Cell;

use super::{verify, verify_signature, Alg, InModule, Key, Verifier};

/// Who checks the signatures the host can check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Module,
    /// The host; the module when a host call fails.
    HostOrModule,
    /// The host only: a failed host call refuses the token.
    Host,
}

/// One call of the host's `verify_signature` with the encoded arguments: its raw result, or why
/// the call failed.
pub trait HostCall: Fn(&[u8]) -> Result<Vec<u8>, String> {}
impl<F: Fn(&[u8]) -> Result<Vec<u8>, String>> HostCall for F {}

/// The verifier a policy stands for. A host call that fails refuses the token, or with
/// `HostOrModule` is answered by the module; either way it is counted (`failed`), so neither
/// verifier silently stands in for the other.
pub struct PolicyVerifier<F> {
    policy: Policy,
    call: F,
    failed: Cell<u64>,
}

impl<F: HostCall> PolicyVerifier<F> {
    pub fn new(policy: Policy, call: F) -> Self {
        Self {
            policy,
            call,
            failed: Cell::new(0),
        }
    }

    /// Host calls that failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.get()
    }
}

impl<F: HostCall> Verifier for PolicyVerifier<F> {
    fn verify(&self, alg: Alg, key: &Key, input: &[u8], sig: &[u8]) -> bool {
        if self.policy == Policy::Module
            || verify_signature::host_alg(alg).is_none()
            || key.host_der.is_none()
        {
            return InModule.verify(alg, key, input, sig);
        }
        // Only what is no signature (wrong length; for ECDSA, r or s not in [1, n-1]) has no host
        // encoding: it cannot verify, and BoringSSL would refuse it.
        let Some(args) = verify_signature::request(alg, key, input, sig) else {
            return false;
        };
        let answer = (self.call)(&args).and_then(|r| {
            verify_signature::parse_result(&r).ok_or_else(|| "an unreadable result".into())
        });
        match answer {
            Ok(valid) => valid,
            Err(why) => {
                self.failed.set(self.failed.get() + 1);
                let fallback = self.policy == Policy::HostOrModule;
                log::debug!(
                    "verify_signature failed ({why}); {}",
                    if fallback {
                        "the module checks the signature"
                    } else {
                        "the token is refused"
                    }
                );
                fallback && verify(alg, &key.material, input, sig)
            }
        }
    }
}

/// Whether the host verifies the self-test signature and refuses it once altered.
pub fn host_verifier_works(call: impl HostCall) -> bool {
    let answer = |args: &[u8]| {
        call(args)
            .ok()
            .and_then(|r| verify_signature::parse_result(&r))
    };
    verify_signature::self_test_requests()
        .is_some_and(|(good, bad)| answer(&good) == Some(true) && answer(&bad) == Some(false))
}
