//! Arbitrary paths against fixed trigger-rule matchers, strip_query, the canonical path, and token
//! extraction from "name: value" header lines (":path: …" sets the path) with a fixed
//! configuration's locations.
//!
//! The canonical path is idempotent, and a path it calls plain resolves, by the `url` crate's
//! WHATWG parser (an independent implementation), to the same bytes once both are fully decoded
//! and repeated slashes merged: so it never shortens a path into an excluded one unless the raw
//! path resolves there.
#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mesh_authn::request::path::canonical;
use mesh_authn::request::trigger::{self, PathMatcher, StringMatch};
use mesh_authn::request::{strip_query, token, Request};

type Rules = Vec<(Vec<PathMatcher>, Vec<PathMatcher>)>;

fn rules() -> &'static Rules {
    static R: OnceLock<Rules> = OnceLock::new();
    R.get_or_init(|| {
        let m = |s: StringMatch| PathMatcher::new(&s).expect("fixed pattern compiles");
        vec![
            (
                vec![
                    m(StringMatch::Exact("/api/public".into())),
                    m(StringMatch::Suffix(".css".into())),
                ],
                vec![
                    m(StringMatch::Prefix("/api/".into())),
                    m(StringMatch::Suffix(".secure".into())),
                    m(StringMatch::Regex("/v[0-9]+/admin".into())),
                    m(StringMatch::Regex("(/[a-z]+)*/é+".into())),
                    m(StringMatch::Regex(r"/\p{Greek}+/.*".into())),
                ],
            ),
            (vec![m(StringMatch::Prefix("/healthz".into()))], vec![]),
        ]
    })
}

fn decode(path: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(path).collect()
}

fn merge_slashes(bytes: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if !(b == b'/' && out.last() == Some(&b'/')) {
            out.push(b);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    let stripped = strip_query(&text);
    assert!(text.starts_with(stripped));
    assert!(!stripped.contains(['?', '#']));
    for (excluded, included) in rules() {
        for m in excluded.iter().chain(included) {
            let _ = m.matches(&text);
            let _ = m.matches(stripped);
        }
    }
    let _ = trigger::triggered(rules(), &text);

    let c = canonical(&text);
    let again = canonical(&c.path);
    assert_eq!(again.path, c.path, "not idempotent: {text:?}");
    assert!(
        c.ambiguous || !again.ambiguous,
        "a plain path became ambiguous: {text:?}"
    );
    assert!(c.path.starts_with('/') && !c.path.contains("//"));
    if !c.ambiguous {
        // The WHATWG parser trims spaces around a URL and keeps a Windows drive letter (`/c:/..`,
        // `/c|/..`) from `..`; in an HTTP path they can only be data.
        let spelled = stripped
            .replace(' ', "%20")
            .replace(':', "%3A")
            .replace('|', "%7C");
        let reference =
            url::Url::parse(&format!("http://h{spelled}")).expect("a plain path makes a valid URL");
        assert_eq!(
            merge_slashes(&decode(reference.path())),
            decode(&c.path),
            "{text:?} resolves elsewhere than its canonical form {:?}",
            c.path
        );
        for (excluded, _) in rules() {
            for m in excluded {
                if m.matches(&c.path) {
                    assert!(m.matches(&canonical(reference.path()).path));
                }
            }
        }
    }

    let headers = common::header_lines(&text);
    let req = Request::new(headers.clone());
    let _ = req.realm();
    let _ = req.is_cors_preflight();
    let path = req.path().to_string();
    let cfg = common::fixed_config();
    let decoded_path = String::from_utf8_lossy(&decode(&path)).into_owned();
    let mut params = Vec::new();
    for found in token::extract(&cfg.locations, &req) {
        let t = found.token.as_ref();
        assert!(!t.is_empty());
        assert_eq!(t, t.trim());
        assert!(found.location < cfg.locations.len());
        assert!(
            path.contains(t)
                || decoded_path.contains(t)
                || headers.iter().any(|(_, v)| v.contains(t)),
            "token {t:?} found nowhere in the request"
        );
        if let Some(token::LocationKind::Param(name)) =
            cfg.locations.get(found.location).map(|l| &l.kind)
        {
            params.push(name.as_str());
        }
    }
    // Removing the parameters that carried tokens keeps everything else and leaves none of them.
    if let Some(rewritten) = token::without_params(&path, &params) {
        assert!(rewritten.len() < path.len());
        assert_eq!(strip_query(&rewritten), strip_query(&path));
        let again = Request::new(vec![(":path".into(), rewritten.clone())]);
        for found in token::extract(&cfg.locations, &again) {
            let is_param = matches!(
                cfg.locations.get(found.location).map(|l| &l.kind),
                Some(token::LocationKind::Param(name)) if params.contains(&name.as_str())
            );
            assert!(!is_param, "{rewritten:?} still carries a token parameter");
        }
    }
});
