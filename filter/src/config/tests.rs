//! `pluginConfig` parsed and compiled: what is accepted, and every refusal naming its field.

use super::*;

const JWKS: &str =
    r#"{"keys":[{"kty":"oct","kid":"k","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}]}"#;

fn cfg(json: &str) -> Result<Config, ConfigError> {
    load(json.as_bytes(), &Workload::default())
}

fn rule(extra: &str) -> String {
    let jwks = serde_json::to_string(JWKS).unwrap_or_default();
    format!(r#"{{"jwtRules":[{{"issuer":"iss","jwks":{jwks}{extra}}}]}}"#)
}

#[test]
fn empty_config_is_no_rules() {
    let c = cfg("").unwrap();
    assert!(c.rules.is_empty());
    assert_eq!(c.clock_skew_seconds, 60);
    assert!(!c.require_token);
}

#[test]
fn errors_name_the_field() {
    let cases = [
        (rule(r#","audience":["a"]"#), "jwtRules[0].audience"),
        (r#"{"requireToken":"yes"}"#.to_string(), "requireToken"),
        (
            r#"{"jwtCacheBytes":268435457}"#.to_string(),
            "jwtCacheBytes",
        ),
        (
            r#"{"jwtCacheBytes":1099511627776}"#.to_string(),
            "jwtCacheBytes",
        ),
        (r#"{"jwtCacheBytes":-1}"#.to_string(), "jwtCacheBytes"),
        (r#"{"jwtCacheSize":1000001}"#.to_string(), "jwtCacheSize"),
        (
            r#"{"dpopReplayEntries":255}"#.to_string(),
            "dpopReplayEntries",
        ),
        (
            r#"{"dpopReplayEntries":4194305}"#.to_string(),
            "dpopReplayEntries",
        ),
        (rule(r#","dpop":{}"#), "jwtRules[0].dpop"),
        (rule(r#","dpop":{"mode":"MAYBE"}"#), "jwtRules[0].dpop.mode"),
        (
            rule(r#","dpop":{"mode":"REQUIRED","maxAge":"0s"}"#),
            "jwtRules[0].dpop.maxAge",
        ),
        (
            rule(r#","dpop":{"mode":"REQUIRED","maxAge":"3601s"}"#),
            "jwtRules[0].dpop.maxAge",
        ),
        (
            rule(r#","dpop":{"mode":"REQUIRED","origin":"https://a.example/v1"}"#),
            "jwtRules[0].dpop.origin",
        ),
        (
            rule(r#","dpop":{"mode":"REQUIRED","origin":"ftp://a.example"}"#),
            "jwtRules[0].dpop.origin",
        ),
        (
            rule(r#","certificateBinding":"ALWAYS""#),
            "jwtRules[0].certificateBinding",
        ),
        (
            rule(r#","fromHeaders":[{"name":"a b"}]"#),
            "jwtRules[0].fromHeaders[0].name",
        ),
        (
            rule(r#","fromHeaders":[{"name":"x","prefix":1}]"#),
            "jwtRules[0].fromHeaders[0].prefix",
        ),
        (
            r#"{"jwtRules":[{"issuer":"i","jwks":"nope"}]}"#.to_string(),
            "jwtRules[0].jwks",
        ),
        (
            r#"{"jwtRules":[{"issuer":"i"}]}"#.to_string(),
            "jwtRules[0]",
        ),
        (
            r#"{"triggerRules":[{"includedPaths":[{"regex":"("}]}]}"#.to_string(),
            "triggerRules[0].includedPaths[0]",
        ),
        (
            r#"{"triggerRules":[{"includedPaths":[{"glob":"/x"}]}]}"#.to_string(),
            "triggerRules[0].includedPaths[0]",
        ),
        (
            rule(r#","outputClaimToHeaders":[{"header":"x","claim":"a..b"}]"#),
            "jwtRules[0].outputClaimToHeaders[0].claim",
        ),
        (rule(r#","issuer":"""#), "jwtRules[0]"),
        (r#"{"clockSkewSeconds":-1}"#.to_string(), "clockSkewSeconds"),
        (r#"{"jwtRules":{}}"#.to_string(), "jwtRules"),
        (
            r#"{"maxPausedRequests":100001}"#.to_string(),
            "maxPausedRequests",
        ),
        (
            r#"{"maxPausedRequests":-1}"#.to_string(),
            "maxPausedRequests",
        ),
        (
            rule(
                r#","outputClaimToHeaders":[{"header":"x-a","claim":"a"},{"header":"X-A","claim":"b"}]"#,
            ),
            "jwtRules[0].outputClaimToHeaders[1].header",
        ),
        (
            rule(
                r#","outputPayloadToHeader":"x-p","outputClaimToHeaders":[{"header":"x-p","claim":"a"}]"#,
            ),
            "jwtRules[0].outputClaimToHeaders[0].header",
        ),
        (rule(r#","subjects":{}"#), "jwtRules[0].subjects"),
        (
            rule(r#","subjects":{"prefix":""}"#),
            "jwtRules[0].subjects.prefix",
        ),
        (
            rule(r#","subjects":{"exact":"a","suffix":"b"}"#),
            "jwtRules[0].subjects",
        ),
        (
            rule(r#","subjects":{"regex":"(","ignoreCase":false}"#),
            "jwtRules[0].subjects.regex",
        ),
        (rule(r#","subjects":"spiffe://""#), "jwtRules[0].subjects"),
        (rule(r#","maxLifetime":"0s""#), "jwtRules[0].maxLifetime"),
        (rule(r#","maxLifetime":"1h""#), "jwtRules[0].maxLifetime"),
        (rule(r#","presence":"MUST""#), "jwtRules[0].presence"),
        (
            rule(r#","spaceDelimitedClaims":["scope",""]"#),
            "jwtRules[0].spaceDelimitedClaims[1]",
        ),
        (
            rule(&format!(
                r#","spaceDelimitedClaims":{}"#,
                serde_json::to_string(&vec!["c"; 65]).unwrap()
            )),
            "jwtRules[0].spaceDelimitedClaims",
        ),
    ];
    for (json, field) in cases {
        let err = cfg(&json)
            .err()
            .unwrap_or_else(|| panic!("accepted: {json}"));
        assert!(
            err.to_string().contains(field),
            "{json}: {err} does not name {field}"
        );
    }
}

#[test]
fn repeated_members_are_refused_naming_them() {
    let cases = [
        (rule(r#","issuer":"other""#), "jwtRules[0].issuer"),
        (
            r#"{"portLevelMtls":{"8080":{"mode":"STRICT"},"8080":{"mode":"DISABLE"}}}"#.to_string(),
            "portLevelMtls.8080",
        ),
        (
            r#"{"requireToken":true,"requireToken":false}"#.to_string(),
            "requireToken",
        ),
        (
            r#"{"peerAuthentications":[{"metadata":{"name":"a","name":"b"},"spec":{}}]}"#
                .to_string(),
            "peerAuthentications[0].metadata.name",
        ),
    ];
    for (json, field) in cases {
        let err = cfg(&json).unwrap_err();
        assert_eq!(err.field, field, "{json}: {err}");
        assert!(err.message.contains("twice"), "{err}");
    }
    let dup_key = JWKS.replace(r#""kid":"k""#, r#""kid":"k","kid":"j""#);
    let inline = format!(
        r#"{{"jwtRules":[{{"issuer":"i","jwks":{}}}]}}"#,
        serde_json::to_string(&dup_key).unwrap()
    );
    let err = cfg(&inline).unwrap_err();
    assert!(err.field.starts_with("jwtRules[0].jwks"), "{err}");
    assert!(err.message.contains("named twice"), "{err}");
}

#[test]
fn trailing_garbage_rejected() {
    assert!(cfg("{} x").is_err());
}

#[test]
fn default_locations_only_without_explicit_ones() {
    let c = cfg(&rule("")).unwrap();
    assert_eq!(c.locations.len(), 2);
    let c = cfg(&rule(r#","fromCookies":["session"]"#)).unwrap();
    assert_eq!(c.locations.len(), 1);
    assert_eq!(c.locations[0].kind, LocationKind::Cookie("session".into()));
}

#[test]
fn shared_locations_list_every_rule() {
    let jwks = serde_json::to_string(JWKS).unwrap_or_default();
    let json = format!(
        r#"{{"jwtRules":[{{"issuer":"a","jwks":{jwks}}},{{"issuer":"b","jwks":{jwks}}}]}}"#
    );
    let c = cfg(&json).unwrap();
    assert_eq!(c.locations.len(), 2);
    assert!(c.locations.iter().all(|l| l.rules == vec![0, 1]));
}

#[test]
fn output_headers_are_lowercased_and_collected() {
    let c = cfg(&rule(
        r#","outputPayloadToHeader":"X-Jwt-Payload","outputClaimToHeaders":[{"header":"X-Sub","claim":"sub"}]"#,
    ))
    .unwrap();
    assert_eq!(c.output_headers, vec!["x-jwt-payload", "x-sub"]);
}

#[test]
fn output_header_cannot_be_token_header() {
    let err = cfg(&rule(r#","outputPayloadToHeader":"Authorization""#))
        .err()
        .unwrap();
    assert!(err.to_string().contains("authorization"));
}

#[test]
fn remote_sources_are_shared_and_derive_istio_clusters() {
    let json = r#"{"jwtRules":[
        {"issuer":"a","jwksUri":"https://idp.example.com/keys"},
        {"issuer":"b","jwksUri":"https://idp.example.com/keys"},
        {"issuer":"c","jwksUri":"http://127.0.0.1:9000/k","jwksCluster":"jwks","timeout":"1.5s","jwksCacheDuration":"30s"}
    ]}"#;
    let c = cfg(json).unwrap();
    assert_eq!(c.remotes.len(), 2);
    let r0 = &c.remotes[0];
    assert_eq!(r0.cluster, "outbound|443||idp.example.com");
    assert_eq!(
        (r0.authority.as_str(), r0.path.as_str()),
        ("idp.example.com", "/keys")
    );
    assert_eq!((r0.timeout_ms, r0.cache_duration_s), (5000, 600));
    let r1 = &c.remotes[1];
    assert_eq!(
        (r1.cluster.as_str(), r1.timeout_ms, r1.cache_duration_s),
        ("jwks", 1500, 30)
    );
    assert!(matches!(c.rules[0].keys, KeySource::Remote(0)));
    assert!(matches!(c.rules[1].keys, KeySource::Remote(0)));
    assert!(matches!(c.rules[2].keys, KeySource::Remote(1)));
}

#[test]
fn keys_are_discovered_from_an_issuer_url() {
    let c = cfg(r#"{"jwtRules":[{"issuer":"https://idp.example.com/tenant/"}]}"#).unwrap();
    let r = &c.remotes[0];
    assert!(r.discovery);
    assert_eq!(
        (r.uri.as_str(), r.cluster.as_str(), r.path.as_str()),
        (
            "https://idp.example.com/tenant/.well-known/openid-configuration",
            "outbound|443||idp.example.com",
            "/tenant/.well-known/openid-configuration"
        )
    );
    assert_eq!(r.fetch_timeout_ms(), 10_000, "two calls");
    let err = cfg(r#"{"jwtRules":[{"issuer":"testing@secure.istio.io"}]}"#).unwrap_err();
    assert_eq!(err.field, "jwtRules[0].issuer");
    assert!(err.message.contains("http(s) URL"), "{err}");
    let err = cfg(r#"{"jwtRules":[{"jwks":"{}"}]}"#).unwrap_err();
    assert_eq!(err.field, "jwtRules[0].issuer");
    let c = cfg(r#"{"jwtRules":[{"jwksUri":"https://idp.example.com/k"}]}"#).unwrap();
    assert_eq!(c.rules[0].issuer, None);
    assert!(!c.remotes[0].discovery);
}

#[test]
fn inline_jwks_wins_over_uri() {
    let c = cfg(&rule(r#","jwksUri":"https://idp/k""#)).unwrap();
    assert!(matches!(c.rules[0].keys, KeySource::Inline(_)));
    assert!(c.remotes.is_empty());
    assert_eq!(c.warnings.len(), 1);
}

#[test]
fn dpop_rules_compile() {
    let c = cfg(&rule(
        r#","dpop":{"mode":"OPTIONAL","maxAge":"90s","origin":"HTTPS://API.Example.com:443/"}"#,
    ))
    .unwrap();
    let d = c.rules[0].dpop.clone().unwrap();
    assert_eq!(
        (d.mode, d.max_age_s, d.origin.as_deref()),
        (Binding::Optional, 90, Some("https://api.example.com"))
    );
    assert!(c.dpop && c.dpop_replay_shards == 1024);
    let kinds: Vec<_> = c.locations.iter().map(|l| l.kind.clone()).collect();
    assert!(kinds.contains(&LocationKind::dpop()), "{kinds:?}");
    let c = cfg(&rule(r#","dpop":{"mode":"REQUIRED"}"#)).unwrap();
    assert_eq!(c.rules[0].dpop.as_ref().map(|d| d.max_age_s), Some(60));
    assert!(!cfg(&rule("")).unwrap().dpop);
}
