#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use config_schema::convert::{convert, to_yaml, Options};
use serde_json::{json, Value};

fn example(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/examples/istio/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn named<'a>(plugins: &'a [Value], name: &str) -> &'a Value {
    plugins
        .iter()
        .find(|p| p["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no plugin {name}"))
}

#[test]
fn request_authentications_become_selected_plugins() {
    let plugins = convert(&example("request-authentication.yaml"), &Options::default()).unwrap();
    assert_eq!(plugins.len(), 3);
    let gateway_api = named(&plugins, "public-api-jwt");
    assert_eq!(
        gateway_api["spec"]["targetRefs"],
        json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public"}])
    );
    let gw = named(&plugins, "jwt-example-jwt");
    assert_eq!(gw["metadata"]["namespace"], "istio-system");
    assert_eq!(
        gw["spec"]["selector"],
        json!({"matchLabels": {"istio": "ingressgateway"}})
    );
    assert_eq!(gw["spec"]["phase"], "AUTHN");
    assert_eq!(gw["spec"]["failStrategy"], "FAIL_CLOSE");
    assert_eq!(
        gw["spec"]["pluginConfig"]["jwtRules"][0]["issuer"],
        "testing@secure.istio.io"
    );
    let foo = named(&plugins, "httpbin-jwt");
    assert_eq!(
        foo["spec"]["pluginConfig"]["jwtRules"][0]["fromHeaders"],
        json!([{"name": "x-jwt-assertion"}])
    );
}

#[test]
fn peer_authentications_become_one_mesh_plugin() {
    let opts = Options {
        sha256: Some("ab".repeat(32)),
        ..Options::default()
    };
    let plugins = convert(&example("peer-authentication.yaml"), &opts).unwrap();
    assert_eq!(plugins.len(), 1);
    let p = &plugins[0];
    assert_eq!(p["metadata"]["namespace"], "istio-system");
    assert!(p["spec"].get("selector").is_none(), "mesh-wide");
    assert_eq!(p["spec"]["sha256"], "ab".repeat(32));
    assert_eq!(
        (&p["spec"]["type"], &p["spec"]["pluginName"]),
        (&json!("NETWORK"), &json!("network"))
    );
    let pas = p["spec"]["pluginConfig"]["peerAuthentications"]
        .as_array()
        .unwrap();
    assert_eq!(pas.len(), 3);
    assert_eq!(pas[2]["spec"]["portLevelMtls"]["8080"]["mode"], "DISABLE");
    assert!(
        pas[2]["metadata"].get("uid").is_none(),
        "only what resolution reads is kept"
    );

    // Each proxy resolves its own mode from the converted list, with Istio's precedence.
    let plugin_config = p["spec"]["pluginConfig"].to_string();
    let at = |ns: &str, app: &str| {
        let node = mesh_authn::peer::Workload {
            namespace: ns.into(),
            labels: [("app".to_string(), app.to_string())].into(),
            gateway: false,
        };
        mesh_authn::config::load(plugin_config.as_bytes(), &node)
            .unwrap()
            .peer
            .policy
    };
    assert_eq!(
        at("foo", "httpbin").mode,
        mesh_authn::peer::Mode::Permissive
    );
    let bar = at("bar", "httpbin");
    assert_eq!(bar.mode, mesh_authn::peer::Mode::Strict);
    assert_eq!(bar.ports.get(&8080), Some(&mesh_authn::peer::Mode::Disable));
    assert_eq!(at("legacy", "curl").mode, mesh_authn::peer::Mode::Strict);
}

#[test]
fn legacy_policies() {
    let plugins = convert(&example("legacy-policy.yaml"), &Options::default()).unwrap();
    let p = named(&plugins, "jwt-example-policy");
    assert_eq!(p["metadata"]["namespace"], "foo");
    assert_eq!(
        p["spec"]["selector"],
        json!({"matchLabels": {"app": "httpbin"}})
    );
    assert!(p["spec"].get("type").is_none(), "HTTP, the default");
    let peers = named(&plugins, "jwt-example-policy-peers");
    assert_eq!(peers["spec"]["selector"], p["spec"]["selector"]);
    assert_eq!(peers["spec"]["type"], "NETWORK");
    assert_eq!(peers["spec"]["pluginName"], "network");
    assert_eq!(
        peers["spec"]["pluginConfig"],
        json!({"mtls": {"mode": "STRICT"}})
    );
    let cfg = &p["spec"]["pluginConfig"];
    assert!(cfg.get("mtls").is_none(), "peers go to the NETWORK plugin");
    assert_eq!(cfg["requireToken"], true);
    assert_eq!(cfg["principalBinding"], "USE_ORIGIN");
    assert!(
        cfg.get("triggerRules").is_none(),
        "per origin, not per plugin"
    );
    assert_eq!(
        cfg["jwtRules"][0]["triggerRules"],
        json!([
            {"excludedPaths": [{"exact": "/health_check"}], "includedPaths": []},
            {"excludedPaths": [], "includedPaths": [{"prefix": "/api/"}]},
        ])
    );
    let mesh = named(&plugins, "default-policy-peers");
    assert_eq!(mesh["spec"]["type"], "NETWORK");
    assert_eq!(mesh["metadata"]["namespace"], "istio-system");
    assert_eq!(
        mesh["spec"]["pluginConfig"],
        json!({"mtls": {"mode": "PERMISSIVE"}})
    );
}

#[test]
fn output_is_yaml_the_filter_accepts() {
    let all = format!(
        "{}\n---\n{}",
        example("request-authentication.yaml"),
        example("peer-authentication.yaml")
    );
    let yaml = to_yaml(&convert(&all, &Options::default()).unwrap()).unwrap();
    assert_eq!(yaml.matches("kind: WasmPlugin").count(), 4);
    assert!(
        yaml.contains("creationTimestamp: '2026-01-01T00:00:00Z'"),
        "{yaml}"
    );
}

#[test]
fn what_cannot_be_expressed_is_refused_with_a_reason() {
    let ra = |ns: &str, name: &str, selector: &str, extra: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  {selector}\n  jwtRules:\n  - issuer: i\n    jwksUri: https://idp.example.com/k\n{extra}\n---\n"
        )
    };
    let cases = [
        (
            format!(
                "{}{}",
                ra("foo", "a", "", ""),
                ra("foo", "b", "selector: {matchLabels: {app: x}}", "")
            ),
            "merge",
        ),
        (
            format!(
                "{}{}",
                ra("istio-system", "m", "", ""),
                ra("foo", "b", "", "")
            ),
            "mesh-wide",
        ),
        (
            ra("foo", "a", "", "    outputClaimToHeader: []"),
            "jwtRules[0].outputClaimToHeader",
        ),
        (ra("foo", "a", "targetRefs: []", ""), "targetRefs"),
        (
            ra(
                "foo",
                "a",
                "targetRefs: [{kind: Gateway, name: gw}]\n  selector: {matchLabels: {app: x}}",
                "",
            ),
            "only one of targetRefs or selector",
        ),
        (
            ra("foo", "a", "targetRefs: [{kind: Service, name: w, namespace: bar}]", ""),
            "cross namespace",
        ),
        (
            format!(
                "{}{}",
                ra("foo", "a", "", ""),
                ra("foo", "b", "targetRefs: [{kind: Gateway, name: gw}]", "")
            ),
            "merge",
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: foo}\n\
             spec:\n  targetRefs: [{kind: Service, name: w}]\n  mtls: {mode: STRICT}\n"
                .to_string(),
            "PeerAuthentication has no targetRefs",
        ),
        (
            ra("foo", "a", "", "    fromHeaders: [{name: 'bad header'}]"),
            "fromHeaders[0].name",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: y}\n".to_string(),
            "ConfigMap",
        ),
    ];
    for (yaml, needle) in cases {
        let err = convert(&yaml, &Options::default())
            .err()
            .unwrap_or_else(|| panic!("accepted:\n{yaml}"));
        assert!(err.contains(needle), "{err} does not mention {needle}");
    }
}

#[test]
fn legacy_origins_keep_their_own_trigger_rules() {
    let yaml = r#"
apiVersion: authentication.istio.io/v1alpha1
kind: Policy
metadata: {name: two-issuers, namespace: foo}
spec:
  targets: [{name: httpbin}]
  origins:
  - jwt:
      issuer: a@example.com
      jwksUri: https://a.example.com/jwks.json
      trigger_rules: [{included_paths: [{prefix: /a/}]}]
  - jwt:
      issuer: b@example.com
      jwksUri: https://b.example.com/jwks.json
      trigger_rules: [{included_paths: [{prefix: /b/}], excluded_paths: [{exact: /b/health}]}]
  - jwt:
      issuer: c@example.com
      jwksUri: https://c.example.com/jwks.json
"#;
    let plugins = convert(yaml, &Options::default()).unwrap();
    let rules = &named(&plugins, "two-issuers-policy")["spec"]["pluginConfig"]["jwtRules"];
    assert_eq!(
        rules[0]["triggerRules"],
        json!([{"excludedPaths": [], "includedPaths": [{"prefix": "/a/"}]}])
    );
    assert_eq!(
        rules[1]["triggerRules"],
        json!([{"excludedPaths": [{"exact": "/b/health"}], "includedPaths": [{"prefix": "/b/"}]}])
    );
    assert!(rules[2].get("triggerRules").is_none());
}

#[test]
fn request_authentications_with_discovery_or_without_issuer() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: oidc, namespace: foo}
spec:
  jwtRules:
  - issuer: https://accounts.example.com
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: any-issuer, namespace: bar}
spec:
  jwtRules:
  - jwksUri: https://keys.example.com/jwks.json
"#;
    let plugins = convert(yaml, &Options::default()).unwrap();
    let oidc = &named(&plugins, "oidc-jwt")["spec"]["pluginConfig"]["jwtRules"][0];
    assert_eq!(oidc, &json!({"issuer": "https://accounts.example.com"}));
    let any = &named(&plugins, "any-issuer-jwt")["spec"]["pluginConfig"]["jwtRules"][0];
    assert!(any.get("issuer").is_none());
    let bad = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n\
               metadata: {name: x, namespace: foo}\nspec:\n  jwtRules:\n  - issuer: not-a-url\n";
    let err = convert(bad, &Options::default()).unwrap_err();
    assert!(err.contains("jwtRules[0].issuer"), "{err}");
}

#[test]
fn the_dry_run_annotation_becomes_dry_run() {
    let ra = |name: &str, ns: &str, dry: bool| {
        let annotation = if dry {
            "\n  annotations: {istio.io/dry-run: \"true\"}"
        } else {
            ""
        };
        format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n\
             metadata:\n  name: {name}\n  namespace: {ns}{annotation}\n\
             spec:\n  jwtRules:\n  - issuer: i\n    jwksUri: https://idp.example.com/k\n---\n"
        )
    };
    let plugins = convert(&ra("a", "foo", true), &Options::default()).unwrap();
    assert_eq!(plugins[0]["spec"]["pluginConfig"]["dryRun"], true);
    let plugins = convert(&ra("a", "foo", false), &Options::default()).unwrap();
    assert!(plugins[0]["spec"]["pluginConfig"].get("dryRun").is_none());
    let err = convert(
        &format!("{}{}", ra("a", "foo", true), ra("b", "foo", false)),
        &Options::default(),
    )
    .unwrap_err();
    assert!(
        err.contains("istio.io/dry-run") && err.contains("foo/b"),
        "{err}"
    );

    let pa = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
              metadata:\n  name: default\n  namespace: istio-system\n  \
              annotations: {istio.io/dry-run: \"true\"}\nspec: {mtls: {mode: STRICT}}\n";
    let plugins = convert(pa, &Options::default()).unwrap();
    assert_eq!(plugins[0]["spec"]["pluginConfig"]["dryRun"], true);
    assert_eq!(plugins[0]["spec"]["type"], "NETWORK");
}

#[test]
fn target_refs_and_new_jwt_rule_fields_are_carried() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ingress, namespace: istio-ingress}
spec:
  targetRefs:
  - {kind: Gateway, group: gateway.networking.k8s.io, name: public}
  jwtRules:
  - issuer: https://idp.example.com
    jwksUri: https://idp.example.com/keys
    spaceDelimitedClaims: [scope, roles]
    presence: REQUIRED
    outputClaimToHeaders: [{header: x-scope, claim: scope}]
    certificateBinding: OPTIONAL
    dpop: {mode: REQUIRED, maxAge: 30s, origin: "https://api.example.com"}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: waypoint, namespace: foo}
spec:
  targetRef: {kind: Service, name: reviews}
  jwtRules:
  - issuer: https://idp.example.com
    jwksUri: https://idp.example.com/keys
"#;
    let plugins = convert(yaml, &Options::default()).unwrap();
    assert_eq!(plugins.len(), 2);
    let named = |n: &str| {
        plugins
            .iter()
            .find(|p| p["metadata"]["name"] == n)
            .unwrap()
            .clone()
    };
    let spec = &named("ingress-jwt")["spec"];
    assert_eq!(
        spec["targetRefs"],
        json!([{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "public"}])
    );
    assert!(spec.get("selector").is_none());
    let rule = &spec["pluginConfig"]["jwtRules"][0];
    assert_eq!(rule["spaceDelimitedClaims"], json!(["scope", "roles"]));
    assert_eq!(rule["presence"], json!("REQUIRED"));
    // This filter's extensions, in a policy written for it, pass through.
    assert_eq!(rule["certificateBinding"], json!("OPTIONAL"));
    assert_eq!(
        rule["dpop"],
        json!({"mode": "REQUIRED", "maxAge": "30s", "origin": "https://api.example.com"})
    );
    assert_eq!(
        named("waypoint-jwt")["spec"]["targetRefs"],
        json!([{"kind": "Service", "name": "reviews"}])
    );
}
