//! The labelled series: names Envoy's tag extraction reads, the census's modes, the keys' age.

use super::*;

/// (labels, metric) of a stat name, or `None` unless it is `(<label>=.=<value>;.;)+<metric>`.
fn parse(name: &str) -> Option<(Vec<(&str, &str)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = name;
    while let Some((pair, tail)) = rest.split_once(";.;") {
        let (label, value) = pair.split_once("=.=")?;
        if value.contains(['=', ';']) {
            return None;
        }
        labels.push((label, value));
        rest = tail;
    }
    Some((labels, rest))
}

#[test]
fn every_series_is_labelled_as_envoy_extracts_it() {
    let mut p = Proxy::with(
        json!({"jwtRules": [{"issuer": ISS, "jwks": jwks("a")}],
               "mtls": {"mode": "PERMISSIVE"}}),
        |f| {
            f.properties
                .insert("destination/port".into(), 8080i64.to_le_bytes().to_vec());
        },
    );
    p.request(None);
    p.tick();
    let names: Vec<String> = p.fake().metrics.iter().map(|(n, _)| n.clone()).collect();
    assert!(names.len() > 30, "{names:?}");
    for name in &names {
        let (labels, metric) = parse(name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(labels.first(), Some(&("plugin", "test")), "{name}");
        assert!(
            labels.iter().all(|(l, _)| metrics::LABELS.contains(l)),
            "{name}"
        );
        assert!(
            metric.starts_with("mesh_authn_")
                && metric.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{name}"
        );
        let counter = metric.ends_with("_total");
        let gauge = metric.ends_with("_bytes")
            || metric.ends_with("_entries")
            || metric.ends_with("_seconds")
            || metric.ends_with("_connections");
        assert!(counter ^ gauge, "{name}: a counter ends in _total");
    }
    assert!(names.contains(&series_of("plaintext_port_8080_PERMISSIVE")));
}

#[test]
fn the_plugin_label_keeps_istio_names_and_nothing_that_ends_a_label() {
    for (name, label) in [
        (&b"istio-system.mesh-authn"[..], "istio-system.mesh-authn"),
        (b"a;.;b=.=c", "a_._b_._c"),
        (b"caf\xc3\xa9", "caf__"),
        (b"", "unnamed"),
    ] {
        let p = Proxy::with(inline_config(), |f| {
            f.properties.insert("plugin_name".into(), name.to_vec());
        });
        let f = p.fake();
        let (labels, _) = parse(&f.metrics[0].0).unwrap();
        assert_eq!(labels[0], ("plugin", label));
    }
    let long = vec![b'x'; 300];
    let p = Proxy::with(inline_config(), |f| {
        f.properties.insert("plugin_name".into(), long);
    });
    let first = p.fake().metrics[0].0.clone();
    let (labels, _) = parse(&first).unwrap();
    assert_eq!(labels[0].1.len(), 128);
}

#[test]
fn a_dry_run_strict_port_counts_its_plaintext_callers_as_strict() {
    let cfg = json!({"mtls": {"mode": "PERMISSIVE"}, "portLevelMtls": {"9443": {"mode": "STRICT"}},
                     "dryRun": true});
    let port = |p: &Proxy, n: i64| {
        p.fake()
            .properties
            .insert("destination/port".into(), n.to_le_bytes().to_vec());
    };
    let mut p = Proxy::new(cfg);
    port(&p, 9443);
    assert_eq!(p.request(None).1, Action::Continue, "a dry run");
    p.request(None);
    port(&p, 8080);
    p.request(None);
    p.tick();
    assert_eq!(p.metric("plaintext_port_9443_STRICT"), 2);
    assert_eq!(p.metric("dry_run_refused_peer_plaintext"), 2);
    assert_eq!(p.metric("plaintext_port_8080_PERMISSIVE"), 1);

    // Enforced, STRICT refuses instead of counting.
    let mut p = Proxy::new(json!({"mtls": {"mode": "STRICT"}}));
    p.request(None);
    p.tick();
    assert!(!p.defines("mesh_authn_plaintext_total"));
    assert_eq!(p.metric("refused_peer_plaintext"), 1);
}

#[test]
fn the_keys_age_is_the_oldest_remote_key_sets() {
    let p = Proxy::new(remote_config());
    p.tick();
    assert_eq!(p.metric("jwks_age_seconds"), 0, "no keys yet");
    p.answer(Some(200), jwks("a").as_bytes());
    p.advance(42_000);
    p.tick();
    assert_eq!(p.metric("jwks_age_seconds"), 42);

    // Inline keys have no age.
    let p = Proxy::new(inline_config());
    p.advance(42_000);
    p.tick();
    assert_eq!(p.metric("jwks_age_seconds"), 0);
}

#[test]
fn the_tags_operators_are_told_to_extract_are_the_labels() {
    let istio = include_str!("../../../../docs/monitoring/istio-stats.yaml");
    let listed: Vec<&str> = istio
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("extraStatTags:"))
        .skip(1)
        .map_while(|l| l.trim_start().strip_prefix("- "))
        .collect();
    assert_eq!(listed, metrics::LABELS);
    let envoy = include_str!("../../../../docs/monitoring/envoy-stats-tags.yaml");
    for label in metrics::LABELS {
        let line = format!("{{tag_name: {label}, regex: '({label}=\\.=(.*?);\\.;)'}}");
        assert!(envoy.contains(&line), "{line}");
    }
}
