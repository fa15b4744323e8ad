use super::validation::is_rfc3339_utc;
use super::*;
use serde_json::json;

fn pa(ns: &str, name: &str, ts: &str, spec: serde_json::Value) -> PeerAuthentication {
    serde_json::from_value(json!({
        "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": ts,
                     "uid": "0e1f", "resourceVersion": "7", "generation": 1},
        "spec": spec,
    }))
    .unwrap()
}

fn workload(ns: &str, app: &str) -> Workload {
    Workload {
        namespace: ns.into(),
        labels: [
            ("app".to_string(), app.to_string()),
            ("version".to_string(), "v1".to_string()),
        ]
        .into(),
        gateway: false,
    }
}

const T1: &str = "2026-01-01T00:00:00Z";
const T2: &str = "2026-02-01T00:00:00Z";

fn mode(m: &str) -> serde_json::Value {
    json!({"mtls": {"mode": m}})
}

fn sel(app: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut v = json!({"selector": {"matchLabels": {"app": app}}});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    v
}

#[test]
fn precedence_table() {
    use Mode::*;
    let foo_httpbin = workload("foo", "httpbin");
    type Case = (
        &'static str,
        Vec<PeerAuthentication>,
        Mode,
        Vec<(u32, Mode)>,
    );
    let cases: Vec<Case> = vec![
        ("nothing: mesh default", vec![], Permissive, vec![]),
        (
            "mesh strict",
            vec![pa("istio-system", "default", T1, mode("STRICT"))],
            Strict,
            vec![],
        ),
        (
            "mesh unset",
            vec![pa("istio-system", "default", T1, mode("UNSET"))],
            Permissive,
            vec![],
        ),
        (
            "mesh spec empty",
            vec![pa("istio-system", "default", T1, json!({}))],
            Permissive,
            vec![],
        ),
        (
            "other namespace",
            vec![pa("bar", "default", T1, mode("STRICT"))],
            Permissive,
            vec![],
        ),
        (
            "namespace over mesh",
            vec![
                pa("istio-system", "default", T1, mode("STRICT")),
                pa("foo", "ns", T1, mode("DISABLE")),
            ],
            Disable,
            vec![],
        ),
        (
            "namespace unset inherits mesh",
            vec![
                pa("istio-system", "default", T1, mode("STRICT")),
                pa("foo", "ns", T1, mode("UNSET")),
            ],
            Strict,
            vec![],
        ),
        (
            "workload over namespace",
            vec![
                pa("foo", "ns", T1, mode("STRICT")),
                pa("foo", "wl", T1, sel("httpbin", mode("DISABLE"))),
            ],
            Disable,
            vec![],
        ),
        (
            "workload unset inherits namespace",
            vec![
                pa("foo", "ns", T1, mode("STRICT")),
                pa("foo", "wl", T1, sel("httpbin", mode("UNSET"))),
            ],
            Strict,
            vec![],
        ),
        (
            "selector not matching",
            vec![pa("foo", "wl", T1, sel("other", mode("STRICT")))],
            Permissive,
            vec![],
        ),
        (
            "selector in root namespace ignored",
            vec![pa("istio-system", "wl", T1, sel("httpbin", mode("STRICT")))],
            Permissive,
            vec![],
        ),
        (
            "oldest namespace policy wins",
            vec![
                pa("foo", "b-new", T2, mode("DISABLE")),
                pa("foo", "a-old", T1, mode("STRICT")),
            ],
            Strict,
            vec![],
        ),
        (
            "fractional seconds are later, not earlier",
            vec![
                pa("foo", "a-new", "2026-01-01T00:00:00.5Z", mode("DISABLE")),
                pa("foo", "b-old", T1, mode("STRICT")),
            ],
            Strict,
            vec![],
        ),
        (
            "fractions compare as numbers",
            vec![
                pa("foo", "a-new", "2026-01-01T00:00:00.25Z", mode("DISABLE")),
                pa("foo", "b-old", "2026-01-01T00:00:00.1Z", mode("STRICT")),
            ],
            Strict,
            vec![],
        ),
        (
            "a missing timestamp is oldest",
            vec![pa("foo", "a-dated", T1, mode("DISABLE")), {
                let mut p = pa("foo", "b-undated", T1, mode("STRICT"));
                p.metadata.creation_timestamp = None;
                p
            }],
            Strict,
            vec![],
        ),
        (
            "same age: name order",
            vec![
                pa("foo", "b", T1, mode("DISABLE")),
                pa("foo", "a", T1, mode("STRICT")),
            ],
            Strict,
            vec![],
        ),
        (
            "port level from workload policy",
            vec![pa(
                "foo",
                "wl",
                T1,
                sel(
                    "httpbin",
                    json!({"mtls": {"mode": "STRICT"}, "portLevelMtls": {"8080": {"mode": "DISABLE"}}}),
                ),
            )],
            Strict,
            vec![(8080, Disable)],
        ),
        (
            "port level unset inherits the workload's mode",
            vec![
                pa("foo", "ns", T1, mode("STRICT")),
                pa(
                    "foo",
                    "wl",
                    T1,
                    sel(
                        "httpbin",
                        json!({"portLevelMtls": {"8080": {"mode": "UNSET"}, "9090": {"mode": "PERMISSIVE"}}}),
                    ),
                ),
            ],
            Strict,
            vec![(8080, Strict), (9090, Permissive)],
        ),
        (
            "port level on a namespace policy ignored",
            vec![pa(
                "foo",
                "ns",
                T1,
                json!({"mtls": {"mode": "STRICT"}, "portLevelMtls": {"8080": {"mode": "DISABLE"}}}),
            )],
            Strict,
            vec![],
        ),
        (
            "empty selector is namespace wide",
            vec![pa(
                "foo",
                "ns",
                T1,
                json!({"selector": {"matchLabels": {}}, "mtls": {"mode": "STRICT"}}),
            )],
            Strict,
            vec![],
        ),
        (
            "selector needs every label",
            vec![pa(
                "foo",
                "wl",
                T1,
                json!({"selector": {"matchLabels": {"app": "httpbin", "version": "v2"}}, "mtls": {"mode": "STRICT"}}),
            )],
            Permissive,
            vec![],
        ),
    ];
    for (name, policies, want_mode, want_ports) in cases {
        let got = resolve(&policies, "istio-system", &foo_httpbin);
        assert_eq!(got.mode, want_mode, "{name}");
        assert_eq!(
            got.ports.into_iter().collect::<Vec<_>>(),
            want_ports,
            "{name}"
        );
    }
}

#[test]
fn workload_in_root_namespace_uses_mesh_policy_only() {
    let policies = vec![
        pa("istio-system", "default", T1, mode("PERMISSIVE")),
        pa("istio-system", "wl", T1, sel("httpbin", mode("STRICT"))),
    ];
    assert_eq!(
        resolve(
            &policies,
            "istio-system",
            &workload("istio-system", "httpbin")
        )
        .mode,
        Mode::Permissive
    );
}

#[test]
fn ports_resolve() {
    let p = EffectivePolicy {
        mode: Mode::Strict,
        ports: [(8080, Mode::Disable)].into(),
    };
    assert_eq!(p.for_port(Some(8080)), Mode::Disable);
    assert_eq!(p.for_port(Some(9090)), Mode::Strict);
    assert_eq!(p.for_port(None), Mode::Strict);
    assert!(p.checks_anything());
    assert!(!EffectivePolicy {
        mode: Mode::Permissive,
        ports: [(1, Mode::Disable)].into()
    }
    .checks_anything());
}

#[test]
fn validation_names_fields() {
    let bad = [
        (pa("foo", "x", "yesterday", json!({})), "creationTimestamp"),
        (
            pa(
                "foo",
                "x",
                T1,
                json!({"portLevelMtls": {"http": {"mode": "STRICT"}}}),
            ),
            "portLevelMtls.http",
        ),
        (
            pa(
                "foo",
                "x",
                T1,
                json!({"portLevelMtls": {"0": {"mode": "STRICT"}}}),
            ),
            "portLevelMtls.0",
        ),
        (pa("foo", "", T1, json!({})), "metadata.name"),
        (pa("", "x", T1, json!({})), "metadata.namespace"),
    ];
    for (p, field) in bad {
        let err = validate(&[p]).unwrap_err();
        assert!(err.field.contains(field), "{err:?}");
    }
    let mut wrong_kind = pa("foo", "x", T1, json!({}));
    wrong_kind.kind = Some("RequestAuthentication".into());
    assert!(validate(&[wrong_kind]).unwrap_err().field.ends_with("kind"));
    assert!(
        serde_json::from_value::<PeerAuthenticationSpec>(json!({"mtls": {"mode": "strict"}}))
            .is_err()
    );
    assert!(serde_json::from_value::<PeerAuthenticationSpec>(json!({"mtl": {}})).is_err());
    assert!(is_rfc3339_utc("2026-01-01T00:00:00.123Z"));
    assert!(!is_rfc3339_utc("2026-01-01T00:00:00+02:00"));
}
