//! Arbitrary paths against fixed trigger-rule matchers, strip_query, and token extraction from
//! "name: value" header lines (":path: …" sets the path) with a fixed configuration's locations.
#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
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
    let _ = trigger::triggered(rules(), stripped);

    let headers = common::header_lines(&text);
    let req = Request::new(headers.clone());
    let _ = req.realm();
    let _ = req.is_cors_preflight();
    let path = req.path().to_string();
    let cfg = common::fixed_config();
    for found in token::extract(&cfg.locations, &req) {
        assert!(!found.token.is_empty());
        assert_eq!(found.token, found.token.trim());
        assert!(found.location < cfg.locations.len());
        assert!(
            path.contains(found.token) || headers.iter().any(|(_, v)| v.contains(found.token)),
            "token {:?} found nowhere in the request",
            found.token
        );
    }
});
