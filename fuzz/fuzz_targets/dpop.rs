//! DPoP proofs (RFC 9449): arbitrary bytes as a proof never pass and never crash; and a proof
//! signed here for an arbitrary `htu` passes for that very URI exactly when the URI normalizes,
//! its normalization being idempotent. The first byte picks which. Either way the answer is the
//! same with the keys and token hash earlier inputs left in a `DpopMemo` as without them.
#![no_main]

use std::cell::RefCell;
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use mesh_authn::crypto::InModule;
use mesh_authn::error::AuthError;
use mesh_authn::jwt::dpop::{self, DpopMemo, Expected};
use serde_json::json;
use sha2::{Digest, Sha256};
use test_tokens::{mint, Key};

const NOW: u64 = 1_800_000_000;
const TOKEN: &str = "an.access.token";

fn expected(uri: &str) -> Expected<'_> {
    Expected {
        method: "GET",
        uri,
        access_token: TOKEN,
        now_s: NOW,
        max_age_s: 60,
        skew_s: 60,
    }
}

fn public_jwk() -> &'static serde_json::Value {
    static JWK: OnceLock<serde_json::Value> = OnceLock::new();
    JWK.get_or_init(|| {
        let mut jwk = Key::P256.jwk("x");
        jwk.as_object_mut().expect("an object").remove("kid");
        jwk
    })
}

thread_local! {
    /// The keys and token hash earlier inputs left.
    static WARM: RefCell<DpopMemo> = RefCell::new(DpopMemo::new());
}

/// The answer with nothing kept, which must be the answer with what earlier inputs kept.
fn check(proof: &str, expected: &dpop::Expected<'_>) -> Result<dpop::Checked, AuthError> {
    let cold = dpop::check(proof, expected, &InModule, &mut DpopMemo::new());
    let warm = WARM.with(|m| dpop::check(proof, expected, &InModule, &mut m.borrow_mut()));
    assert_eq!(warm, cold, "what the memo kept changed the answer for {proof:?}");
    cold
}

fuzz_target!(|data: &[u8]| {
    let Some((&select, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    if select % 2 == 0 {
        let result = check(&text, &expected("https://api.example.com/"));
        assert!(result.is_err(), "an unsigned proof passed: {text:?}");
        return;
    }
    let htu = text.as_ref();
    let normalized = dpop::normalize_uri(htu);
    assert_eq!(
        normalized.as_deref(),
        dpop::normalize_uri_in_full(htu).as_deref(),
        "the shortcut disagrees: {htu:?}"
    );
    if let Some(n) = &normalized {
        assert!(n.starts_with("http://") || n.starts_with("https://"), "{n}");
        assert_eq!(dpop::normalize_uri(n).as_deref(), Some(n.as_ref()), "not idempotent: {htu:?}");
    }
    let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(TOKEN.as_bytes()));
    let proof = mint(
        &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk()}),
        &json!({"jti": "j", "htm": "GET", "htu": htu, "iat": NOW, "ath": ath}),
    );
    match check(&proof, &expected(htu)) {
        Ok(_) => assert!(normalized.is_some(), "passed with a URI that does not normalize"),
        Err(AuthError::DpopProofWrongRequest) => assert!(normalized.is_none(), "{htu:?}"),
        Err(AuthError::DpopProofMalformed) => assert!(proof.len() > dpop::MAX_PROOF_BYTES),
        Err(e) => panic!("{e:?} for a proof made for {htu:?}"),
    }
});
