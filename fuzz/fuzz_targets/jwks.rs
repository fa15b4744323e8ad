//! Arbitrary bytes as a JWKS document; every usable key is then asked for candidates and used to
//! verify a fixed signature under every algorithm.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_authn::crypto::{self, Alg};
use mesh_authn::jwt::jwks;

const ALGS: [&str; 13] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
    "HS256", "HS384", "HS512",
];

fuzz_target!(|data: &[u8]| {
    let Ok((set, skipped)) = jwks::parse(data) else {
        return;
    };
    assert!(!set.keys.is_empty(), "a parsed JWKS has at least one key");
    assert!(set.keys.len() <= jwks::MAX_KEYS);
    let _ = skipped.len();
    let sig = [0x5au8; 64];
    for alg in ALGS.iter().filter_map(|a| Alg::from_name(a)) {
        let first_kid = set.keys.first().and_then(|k| k.kid.as_deref());
        for kid in [None, Some("rsa"), first_kid] {
            for key in set.candidates(alg, kid) {
                assert!(alg.fits(&key.key.material));
                assert!(kid.is_none() || key.kid.as_deref() == kid);
                let _ = crypto::verify(alg, &key.key.material, b"header.payload", &sig);
            }
        }
    }
});
