#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use serde_json::json;
use test_tokens::{mint, Key};

use super::*;
use crate::crypto::InModule;

const NOW: u64 = 1_800_000_000;
const TOKEN: &str = "an.access.token";
const URI: &str = "https://api.example.com/orders/42";

fn expected() -> Expected<'static> {
    Expected {
        method: "POST",
        uri: URI,
        access_token: TOKEN,
        now_s: NOW,
        max_age_s: 60,
        skew_s: 60,
    }
}

fn public_jwk(key: Key) -> Value {
    let mut jwk = key.jwk("proof");
    jwk.as_object_mut().unwrap().remove("kid");
    jwk
}

fn claims() -> Value {
    json!({"jti": "e1j3V_bKic8-LAEB", "htm": "POST", "htu": URI, "iat": NOW,
           "ath": URL_SAFE_NO_PAD.encode(Sha256::digest(TOKEN.as_bytes()))})
}

fn proof_with(header: Value, claims: Value) -> String {
    mint(&header, &claims)
}

fn header(alg: &str, key: Key) -> Value {
    let h = json!({"typ": "dpop+jwt", "alg": alg, "jwk": public_jwk(key)});
    match alg {
        "Ed25519" => patch(h, json!({"x-signer": "EdDSA"})),
        _ => h,
    }
}

fn patch(mut base: Value, with: Value) -> Value {
    for (k, v) in with.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

thread_local! {
    /// Every key and token hash this test thread's proofs have left.
    static WARM: std::cell::RefCell<DpopMemo> = std::cell::RefCell::new(DpopMemo::new());
}

/// The answer with nothing kept, which must be the answer with what earlier proofs kept, and
/// with what this one kept.
fn checked(proof: &str) -> Result<Checked, AuthError> {
    let cold = check(proof, &expected(), &InModule, &mut DpopMemo::new());
    for _ in 0..2 {
        let warm = WARM.with(|m| check(proof, &expected(), &InModule, &mut m.borrow_mut()));
        assert_eq!(warm, cold, "what the memo kept changed the answer");
    }
    cold
}

#[test]
fn a_proof_from_each_asymmetric_key_kind_passes() {
    for (alg, key) in [
        ("ES256", Key::P256),
        ("ES384", Key::P384),
        ("ES512", Key::P521),
        ("RS256", Key::Rsa),
        ("PS256", Key::Rsa),
        ("EdDSA", Key::Ed25519),
        ("Ed25519", Key::Ed25519),
    ] {
        let c = checked(&proof_with(header(alg, key), claims())).unwrap();
        let jwk = public_jwk(key);
        assert_eq!(Some(c.jkt), thumbprint(jwk.as_object().unwrap()), "{alg}");
        assert_eq!(c.remember_until_s, NOW + 120);
        assert_eq!(
            c.jti_hash,
            <[u8; 32]>::from(Sha256::digest(b"e1j3V_bKic8-LAEB"))
        );
    }
}

#[test]
fn rfc_7638_thumbprint_vector() {
    let jwk = json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    });
    let t = thumbprint(jwk.as_object().unwrap()).unwrap();
    assert_eq!(
        URL_SAFE_NO_PAD.encode(t),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

#[test]
fn every_check_of_rfc_9449_section_4_3() {
    use AuthError::*;
    let es = header("ES256", Key::P256);
    let private = patch(
        es.clone(),
        json!({"jwk": patch(public_jwk(Key::P256), json!({"d": "AAAA"}))}),
    );
    let cases: Vec<(&str, String, AuthError)> = vec![
        ("two segments", "a.b".into(), DpopProofMalformed),
        ("not base64", "!.!.!".into(), DpopProofMalformed),
        (
            "typ JWT",
            proof_with(patch(es.clone(), json!({"typ": "JWT"})), claims()),
            DpopProofMalformed,
        ),
        (
            "no typ",
            proof_with(patch(es.clone(), json!({"typ": null})), claims()),
            DpopProofMalformed,
        ),
        (
            "alg none",
            proof_with(patch(es.clone(), json!({"alg": "none"})), claims()),
            DpopProofMalformed,
        ),
        (
            "HS256 with the secret as jwk",
            proof_with(header("HS256", Key::Hmac), claims()),
            DpopProofMalformed,
        ),
        (
            "ES256 over an RSA jwk",
            proof_with(
                json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(Key::Rsa), "x-signer": "ES256"}),
                claims(),
            ),
            DpopProofMalformed,
        ),
        (
            "private jwk",
            proof_with(private, claims()),
            DpopProofMalformed,
        ),
        (
            "no jwk",
            proof_with(patch(es.clone(), json!({"jwk": null})), claims()),
            DpopProofMalformed,
        ),
        (
            "crit",
            proof_with(patch(es.clone(), json!({"crit": ["x"], "x": 1})), claims()),
            DpopProofMalformed,
        ),
        (
            "no jti",
            proof_with(es.clone(), patch(claims(), json!({"jti": null}))),
            DpopProofMalformed,
        ),
        (
            "empty jti",
            proof_with(es.clone(), patch(claims(), json!({"jti": ""}))),
            DpopProofMalformed,
        ),
        (
            "long jti",
            proof_with(es.clone(), patch(claims(), json!({"jti": "j".repeat(257)}))),
            DpopProofMalformed,
        ),
        (
            "no ath",
            proof_with(es.clone(), patch(claims(), json!({"ath": null}))),
            DpopProofMalformed,
        ),
        (
            "iat a string",
            proof_with(es.clone(), patch(claims(), json!({"iat": "1800000000"}))),
            DpopProofMalformed,
        ),
        (
            "negative iat",
            proof_with(es.clone(), patch(claims(), json!({"iat": -1}))),
            DpopProofMalformed,
        ),
        (
            "another key signed",
            proof_with(
                patch(
                    es.clone(),
                    json!({"x-signer": "ES384", "jwk": public_jwk(Key::P256)}),
                ),
                claims(),
            ),
            DpopProofSignature,
        ),
        (
            "GET for POST",
            proof_with(es.clone(), patch(claims(), json!({"htm": "GET"}))),
            DpopProofWrongRequest,
        ),
        (
            "post for POST",
            proof_with(es.clone(), patch(claims(), json!({"htm": "post"}))),
            DpopProofWrongRequest,
        ),
        (
            "other path",
            proof_with(
                es.clone(),
                patch(
                    claims(),
                    json!({"htu": "https://api.example.com/orders/43"}),
                ),
            ),
            DpopProofWrongRequest,
        ),
        (
            "other host",
            proof_with(
                es.clone(),
                patch(
                    claims(),
                    json!({"htu": "https://evil.example.com/orders/42"}),
                ),
            ),
            DpopProofWrongRequest,
        ),
        (
            "http for https",
            proof_with(
                es.clone(),
                patch(claims(), json!({"htu": "http://api.example.com/orders/42"})),
            ),
            DpopProofWrongRequest,
        ),
        (
            "user info",
            proof_with(
                es.clone(),
                patch(
                    claims(),
                    json!({"htu": "https://a@api.example.com/orders/42"}),
                ),
            ),
            DpopProofWrongRequest,
        ),
        (
            "too old",
            proof_with(es.clone(), patch(claims(), json!({"iat": NOW - 121}))),
            DpopProofStale,
        ),
        (
            "from the future",
            proof_with(es.clone(), patch(claims(), json!({"iat": NOW + 61}))),
            DpopProofStale,
        ),
        (
            "another token",
            proof_with(
                es.clone(),
                patch(
                    claims(),
                    json!({"ath": URL_SAFE_NO_PAD.encode(Sha256::digest(b"other"))}),
                ),
            ),
            DpopProofWrongToken,
        ),
        (
            "huge",
            format!("{}.{}.", "a".repeat(MAX_PROOF_BYTES), "b"),
            DpopProofMalformed,
        ),
    ];
    for (what, proof, want) in cases {
        assert_eq!(checked(&proof), Err(want), "{what}");
    }
    for (what, c) in [
        ("oldest", patch(claims(), json!({"iat": NOW - 120}))),
        ("newest", patch(claims(), json!({"iat": NOW + 60}))),
        (
            "fractional iat",
            patch(claims(), json!({"iat": NOW as f64 + 0.5})),
        ),
        (
            "query and fragment ignored",
            patch(claims(), json!({"htu": format!("{URI}?a=1#f")})),
        ),
        (
            "spelled otherwise",
            patch(
                claims(),
                json!({"htu": "HTTPS://API.example.COM:443/orders/./x/../%34%32"}),
            ),
        ),
    ] {
        assert!(checked(&proof_with(es.clone(), c)).is_ok(), "{what}");
    }
}

#[test]
fn uris_normalize_as_rfc_3986_section_6() {
    for (a, b) in [
        ("https://Example.com", "https://example.com/"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("https://example.com:/a", "https://example.com/a"),
        ("https://example.com:8443/a", "https://example.com:8443/a"),
        (
            "https://example.com/%7euser/%2fx",
            "https://example.com/~user/%2Fx",
        ),
        (
            "https://example.com/a/b/../../c/./d",
            "https://example.com/c/d",
        ),
        ("https://example.com/a/..", "https://example.com/"),
        ("https://[::1]:443/a", "https://[::1]/a"),
        ("https://[::1]:8443/a", "https://[::1]:8443/a"),
        ("https://example.com/a?q#f", "https://example.com/a"),
    ] {
        assert_eq!(normalize_uri(a).as_deref(), Some(b), "{a}");
    }
    for bad in [
        "ftp://example.com/",
        "example.com/a",
        "https://",
        "https://u@example.com/",
        "https://example.com:x/",
        "https://example.com/%zz",
        "https://example.com/%4",
        "https://example.com/é",
        "https://[::1/",
    ] {
        assert_eq!(normalize_uri(bad), None, "{bad}");
    }
}

#[test]
fn the_shortcut_answers_as_normalizing_in_full() {
    let mut shortcut = 0;
    for scheme in ["https", "http", "HTTPS", "ftp"] {
        for authority in [
            "example.com",
            "Example.com",
            "a-b.c9",
            "",
            "h:443",
            "h:80",
            "h:8443",
            "h:",
            "h:x",
            "h:1:2",
            "[::1]",
            "[::1]:443",
            "u@h",
            "h%41",
            "h_x",
            "h!",
        ] {
            for path in [
                "", "/", "//a", "/a/b", "/a/./b", "/a/../b", "/a/.", "/..", "/.a/..b", "/%7e",
                "/a%2f", "/a?q", "/a#f", "/é", "/a b", "/a\u{1}",
            ] {
                let uri = format!("{scheme}://{authority}{path}");
                let (fast, full) = (normalize_uri(&uri), normalize_uri_in_full(&uri));
                assert_eq!(fast.as_deref(), full.as_deref(), "{uri}");
                shortcut += usize::from(matches!(fast, Some(Cow::Borrowed(_))));
            }
        }
    }
    assert!(shortcut > 20, "{shortcut}");
}

#[test]
fn a_kept_header_stands_only_for_its_own_text() {
    let mut memo = DpopMemo::new();
    let mut run = |proof: &str, exp: &Expected<'_>| {
        let got = check(proof, exp, &InModule, &mut memo);
        (got, memo.len())
    };
    let good = proof_with(header("ES256", Key::P256), claims());
    assert!(run(&good, &expected()).0.is_ok());
    let with_jwk = |members: Value| {
        let jwk = patch(public_jwk(Key::P256), members);
        proof_with(
            patch(header("ES256", Key::P256), json!({ "jwk": jwk })),
            claims(),
        )
    };
    for (what, members) in [
        ("use enc", json!({"use": "enc"})),
        ("alg of another curve", json!({"alg": "ES384"})),
        ("kid a number", json!({"kid": 7})),
        ("private member", json!({"d": "AAAA"})),
    ] {
        let got = run(&with_jwk(members), &expected());
        assert_eq!(got, (Err(AuthError::DpopProofMalformed), 1), "{what}");
    }
    let other_token = Expected {
        access_token: "another.access.token",
        ..expected()
    };
    assert_eq!(
        run(&good, &other_token).0,
        Err(AuthError::DpopProofWrongToken)
    );
    assert!(
        run(&good, &expected()).0.is_ok(),
        "the token hash follows the token"
    );
    let bad_signature = proof_with(
        patch(header("ES384", Key::P384), json!({"x-signer": "ES512"})),
        claims(),
    );
    assert_eq!(
        run(&bad_signature, &expected()),
        (Err(AuthError::DpopProofSignature), 1),
        "the header of a proof that failed is not kept"
    );
    let (got, kept) = run(&with_jwk(json!({"use": "sig", "kid": "k"})), &expected());
    assert_eq!(
        (got.is_ok(), kept),
        (true, 2),
        "another text, another entry"
    );
}

#[test]
fn kept_headers_are_bounded_oldest_first() {
    let mut memo = DpopMemo::new();
    let parsed = proof_header(&URL_SAFE_NO_PAD.encode(header("ES256", Key::P256).to_string()));
    let parsed = parsed.unwrap();
    let name = |i: usize| format!("header-{i}");
    for i in 0..=memo::MAX_HEADERS {
        memo.keep(memo.digest(&name(i)), parsed.clone());
    }
    assert_eq!(memo.len(), memo::MAX_HEADERS);
    assert!(memo.header(memo.digest(&name(0))).is_none());
    assert!(memo.header(memo.digest(&name(1))).is_some());
}
