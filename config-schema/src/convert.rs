//! Istio authentication resources → mesh-authn WasmPlugins.
//!
//! Input: RequestAuthentication and PeerAuthentication (`security.istio.io`), and the older
//! `authentication.istio.io/v1alpha1` Policy / MeshPolicy, as `kubectl get -o yaml` prints them
//! (several documents, or a `List`). Output: WasmPlugins whose `pluginConfig` the filter accepts;
//! every one is checked with the filter's own configuration loader before it is returned.
//! Peer authentication becomes `type: NETWORK` plugins (connections refused as Istio refuses
//! them), end-user authentication `HTTP` ones.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

pub struct Options {
    pub root_namespace: String,
    pub url: String,
    pub sha256: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            root_namespace: "istio-system".into(),
            url: "oci://ghcr.io/example/mesh-authn:0.1.0".into(),
            sha256: None,
        }
    }
}

/// RequestAuthentication `jwtRules` fields the filter implements.
const JWT_RULE_FIELDS: &[&str] = &[
    "issuer",
    "audiences",
    "jwksUri",
    "jwks",
    "fromHeaders",
    "fromParams",
    "fromCookies",
    "outputPayloadToHeader",
    "forwardOriginalToken",
    "outputClaimToHeaders",
    "timeout",
    "spaceDelimitedClaims",
    "presence",
    // Extensions of this filter, no Istio field: passed through from a policy written for it.
    "certificateBinding",
    "dpop",
];

/// RequestAuthentications grouped by (namespace, selector): the selector, merged rules, names,
/// and whether each is a dry run.
type RequestAuthGroups =
    BTreeMap<(String, String), (Option<Value>, Vec<Value>, Vec<String>, Vec<bool>)>;

struct Resource {
    api_version: String,
    kind: String,
    name: String,
    namespace: String,
    creation_timestamp: Option<String>,
    spec: Map<String, Value>,
    /// Istio's `istio.io/dry-run: "true"` annotation.
    dry_run: bool,
}

impl Resource {
    fn id(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    fn from_value(v: &Value) -> Result<Self, String> {
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(String::from);
        let kind = s("/kind").ok_or("a document has no kind")?;
        let name = s("/metadata/name").ok_or(format!("a {kind} has no metadata.name"))?;
        let namespace = match (s("/metadata/namespace"), kind.as_str()) {
            (Some(ns), _) => ns,
            // MeshPolicy was cluster-scoped.
            (None, "MeshPolicy") => String::new(),
            (None, _) => return Err(format!("{kind} {name} has no metadata.namespace")),
        };
        let spec = match v.get("spec") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(format!("{kind} {namespace}/{name}: spec is not an object")),
        };
        Ok(Self {
            api_version: s("/apiVersion").unwrap_or_default(),
            kind,
            name,
            namespace,
            creation_timestamp: s("/metadata/creationTimestamp"),
            spec,
            dry_run: s("/metadata/annotations/istio.io~1dry-run").as_deref() == Some("true"),
        })
    }
}

fn documents(yaml: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(yaml) {
        let v = Value::deserialize(doc).map_err(|e| format!("invalid YAML: {e}"))?;
        match v {
            Value::Null => {}
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                out.extend(
                    m.get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Converts every supported resource in `yaml`; anything that cannot be expressed is an error
/// naming the resource and the field.
pub fn convert(yaml: &str, opts: &Options) -> Result<Vec<Value>, String> {
    let mut request_auth = RequestAuthGroups::new();
    let mut peer_auth = Vec::new();
    let mut peer_dry_run: Vec<(String, bool)> = Vec::new();
    let mut plugins = Vec::new();

    for doc in documents(yaml)? {
        let r = Resource::from_value(&doc)?;
        let group = r.api_version.split('/').next().unwrap_or("");
        match (group, r.kind.as_str()) {
            ("security.istio.io", "RequestAuthentication") => {
                let selector = attachment(&r)?;
                let key = (
                    r.namespace.clone(),
                    selector.as_ref().map(Value::to_string).unwrap_or_default(),
                );
                let rules = jwt_rules(&r)?;
                let entry = request_auth.entry(key).or_insert((
                    selector,
                    Vec::new(),
                    Vec::new(),
                    Vec::new(),
                ));
                entry.1.extend(rules);
                entry.2.push(r.name.clone());
                entry.3.push(r.dry_run);
            }
            ("security.istio.io", "PeerAuthentication") => {
                // Istio's PeerAuthentication has no targetRefs (its API refuses them).
                reject_target_refs(&r)?;
                let mut meta = json!({"name": r.name, "namespace": r.namespace});
                if let Some(ts) = &r.creation_timestamp {
                    meta["creationTimestamp"] = json!(ts);
                }
                peer_auth.push(json!({
                    "apiVersion": r.api_version, "kind": "PeerAuthentication",
                    "metadata": meta, "spec": r.spec,
                }));
                peer_dry_run.push((r.id(), r.dry_run));
            }
            ("authentication.istio.io", "Policy" | "MeshPolicy") => {
                plugins.extend(legacy_policy(&r, opts)?);
            }
            _ => return Err(format!("{}: not an Istio authentication resource", r.id())),
        }
    }

    check_overlaps(&request_auth, &opts.root_namespace)?;
    for ((namespace, _), (selector, rules, names, dry_runs)) in request_auth {
        let ids: Vec<(String, bool)> = names
            .iter()
            .zip(&dry_runs)
            .map(|(n, d)| (format!("RequestAuthentication {namespace}/{n}"), *d))
            .collect();
        let mut cfg = json!({"jwtRules": rules});
        if one_dry_run_setting(&ids)? {
            cfg["dryRun"] = json!(true);
        }
        let name = format!("{}-jwt", names.join("-"));
        plugins.push(wasm_plugin(
            &name,
            &namespace,
            selector,
            cfg,
            Kind::Http,
            opts,
        ));
    }
    if !peer_auth.is_empty() {
        let mut cfg =
            json!({"peerAuthentications": peer_auth, "rootNamespace": opts.root_namespace});
        if one_dry_run_setting(&peer_dry_run)? {
            cfg["dryRun"] = json!(true);
        }
        plugins.push(wasm_plugin(
            "mesh-authn-peer-authentication",
            &opts.root_namespace,
            None,
            cfg,
            Kind::Network,
            opts,
        ));
    }
    for p in &plugins {
        let name = p
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let cfg = p
            .pointer("/spec/pluginConfig")
            .cloned()
            .unwrap_or(Value::Null);
        let network = p.pointer("/spec/type").and_then(Value::as_str) == Some("NETWORK");
        mesh_authn::config::parse(cfg.to_string().as_bytes())
            .and_then(|raw| {
                if network {
                    mesh_authn::config::check_network(&raw)?;
                }
                mesh_authn::config::compile(&raw, &Default::default())
            })
            .map_err(|e| format!("WasmPlugin {name}: the filter refuses the result: {e}"))?;
    }
    Ok(plugins)
}

/// Resources that become one plugin must agree on `istio.io/dry-run`: a plugin runs dry or not.
fn one_dry_run_setting(resources: &[(String, bool)]) -> Result<bool, String> {
    let dry = resources.iter().filter(|(_, d)| *d).count();
    if dry == 0 || dry == resources.len() {
        return Ok(dry > 0);
    }
    let list = |want: bool| {
        resources
            .iter()
            .filter(|(_, d)| *d == want)
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(format!(
        "{} (istio.io/dry-run) and {} become one plugin, which runs dry or not; \
         annotate all of them alike",
        list(true),
        list(false)
    ))
}

fn reject_target_refs(r: &Resource) -> Result<(), String> {
    for f in ["targetRef", "targetRefs"] {
        if r.spec.contains_key(f) {
            return Err(format!(
                "{}: spec.{f}: Istio's {} has no {f}; use spec.selector",
                r.id(),
                r.kind
            ));
        }
    }
    Ok(())
}

/// What the resource is attached to, as the WasmPlugin's fields: `{"selector": …}` or
/// `{"targetRefs": […]}` (a Gateway, GatewayClass, Service or ServiceEntry, which WasmPlugins take
/// as RequestAuthentications do; the hidden singular `targetRef` becomes a list of one); none for
/// the whole namespace. Istio allows only one of them.
fn attachment(r: &Resource) -> Result<Option<Value>, String> {
    let selector = match r.spec.get("selector") {
        None | Some(Value::Null) => None,
        Some(s) => match s.get("matchLabels") {
            Some(Value::Object(m)) if !m.is_empty() => Some(json!({"matchLabels": m})),
            Some(Value::Object(_)) | None => None,
            Some(_) => {
                return Err(format!(
                    "{}: spec.selector.matchLabels is not a map",
                    r.id()
                ))
            }
        },
    };
    let refs = match (r.spec.get("targetRef"), r.spec.get("targetRefs")) {
        (None | Some(Value::Null), None | Some(Value::Null)) => None,
        (Some(one), None | Some(Value::Null)) => Some(vec![one.clone()]),
        (None | Some(Value::Null), Some(Value::Array(list))) => Some(list.clone()),
        (None | Some(Value::Null), Some(_)) => {
            return Err(format!("{}: spec.targetRefs is not a list", r.id()))
        }
        (Some(_), Some(_)) => {
            return Err(format!(
                "{}: only one of targetRefs or selector can be set (targetRef and targetRefs are \
                 both)",
                r.id()
            ))
        }
    };
    match (selector, refs) {
        (Some(_), Some(_)) => Err(format!(
            "{}: only one of targetRefs or selector can be set",
            r.id()
        )),
        (Some(s), None) => Ok(Some(json!({ "selector": s }))),
        (None, Some(refs)) if refs.is_empty() => Err(format!(
            "{}: spec.targetRefs is empty: name a target, or leave it out for the namespace",
            r.id()
        )),
        (None, Some(refs)) => {
            for (i, t) in refs.iter().enumerate() {
                let field = |f: &str| t.get(f).and_then(Value::as_str).unwrap_or("");
                if field("kind").is_empty() || field("name").is_empty() {
                    return Err(format!(
                        "{}: spec.targetRefs[{i}] needs a kind and a name",
                        r.id()
                    ));
                }
                if !field("namespace").is_empty() {
                    return Err(format!(
                        "{}: spec.targetRefs[{i}].namespace: cross namespace referencing is not \
                         supported",
                        r.id()
                    ));
                }
            }
            Ok(Some(json!({ "targetRefs": refs })))
        }
        (None, None) => Ok(None),
    }
}

fn jwt_rules(r: &Resource) -> Result<Vec<Value>, String> {
    let rules = match r.spec.get("jwtRules") {
        None => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(format!("{}: spec.jwtRules is not a list", r.id())),
    };
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let m = rule
                .as_object()
                .ok_or(format!("{}: spec.jwtRules[{i}] is not an object", r.id()))?;
            if let Some(f) = m.keys().find(|k| !JWT_RULE_FIELDS.contains(&k.as_str())) {
                return Err(format!(
                    "{}: spec.jwtRules[{i}].{f} is not supported by mesh-authn",
                    r.id()
                ));
            }
            Ok(rule.clone())
        })
        .collect()
}

/// WasmPlugins cannot say "this namespace except these workloads": rule sets that Istio would
/// merge for one workload must already be one plugin, or the plugins would refuse each other's
/// tokens ("Jwt issuer is not configured").
fn check_overlaps(groups: &RequestAuthGroups, root_namespace: &str) -> Result<(), String> {
    let mesh_wide: Vec<&String> = groups
        .iter()
        .filter(|((ns, sel), _)| ns == root_namespace && sel.is_empty())
        .flat_map(|(_, (_, _, names, _))| names)
        .collect();
    if !mesh_wide.is_empty() && groups.len() > 1 {
        return Err(format!(
            "RequestAuthentication {root_namespace}/{} applies mesh-wide and overlaps the others; \
             merge their jwtRules into one resource",
            mesh_wide
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    for ((ns, sel), (_, _, names, _)) in groups {
        if !sel.is_empty() && groups.contains_key(&(ns.clone(), String::new())) {
            return Err(format!(
                "RequestAuthentication {ns}/{} selects workloads that the namespace-wide one in \
                 {ns} also covers; merge their jwtRules into the selecting resource",
                names.join(",")
            ));
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Http,
    /// The connection-level plugin: Envoy's network wasm filter, selected by its root id.
    Network,
}

/// `attach`: the plugin's `selector` or `targetRefs`, as `attachment` gives them.
fn wasm_plugin(
    name: &str,
    namespace: &str,
    selector: Option<Value>,
    cfg: Value,
    kind: Kind,
    opts: &Options,
) -> Value {
    let mut spec = json!({
        "url": opts.url,
        "phase": "AUTHN",
        "failStrategy": "FAIL_CLOSE",
        "pluginConfig": cfg,
    });
    if kind == Kind::Network {
        spec["type"] = json!("NETWORK");
        spec["pluginName"] = json!(mesh_authn::runtime::NETWORK_ROOT_ID);
    }
    if let Some(Value::Object(attach)) = selector {
        for (k, v) in attach {
            spec[k] = v;
        }
    }
    if let Some(sha) = &opts.sha256 {
        spec["sha256"] = json!(sha);
    }
    json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

/// `authentication.istio.io/v1alpha1` Policy: `targets` by service name become `app: <name>`
/// selectors (the label Istio's samples use), `peers` the workload's mTLS mode (a NETWORK plugin,
/// `<name>-policy-peers`), `origins` JWT rules that are required unless `originIsOptional` (an
/// HTTP plugin, `<name>-policy`).
fn legacy_policy(r: &Resource, opts: &Options) -> Result<Vec<Value>, String> {
    let spec = &r.spec;
    let at = |f: &str| format!("{}: spec.{f}", r.id());
    let mut peer_cfg = Map::new();
    let mut cfg = Map::new();

    let targets = spec
        .get("targets")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if targets.len() > 1 {
        return Err(format!(
            "{} has several targets; split it into one Policy per target",
            at("targets")
        ));
    }
    let target = targets.first();
    let target_name = target.and_then(|t| t.get("name")).and_then(Value::as_str);
    let target_ports: Vec<String> = target
        .and_then(|t| t.get("ports"))
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| {
                    p.get("number")
                        .and_then(Value::as_u64)
                        .map(|n| n.to_string())
                })
                .collect()
        })
        .unwrap_or_default();

    if let Some(peers) = spec.get("peers").and_then(Value::as_array) {
        let mode = match peers.first() {
            None => None,
            Some(p) => match p.get("mtls") {
                Some(Value::Null) | Some(Value::Object(_)) => Some(
                    p.pointer("/mtls/mode")
                        .and_then(Value::as_str)
                        .unwrap_or("STRICT")
                        .to_string(),
                ),
                _ => return Err(format!("{} supports only mtls peers", at("peers[0]"))),
            },
        };
        if let Some(mode) = mode {
            if target_ports.is_empty() {
                peer_cfg.insert("mtls".into(), json!({"mode": mode}));
            } else {
                let ports: Map<String, Value> = target_ports
                    .iter()
                    .map(|p| (p.clone(), json!({"mode": mode})))
                    .collect();
                peer_cfg.insert("portLevelMtls".into(), Value::Object(ports));
            }
        }
    }

    let origins = spec
        .get("origins")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut rules = Vec::new();
    for (i, o) in origins.iter().enumerate() {
        let jwt = o
            .get("jwt")
            .and_then(Value::as_object)
            .ok_or(at(&format!("origins[{i}].jwt")) + " is missing")?;
        let mut rule = Map::new();
        for (k, v) in jwt {
            match k.as_str() {
                "issuer" | "audiences" | "jwksUri" | "jwks" => {
                    rule.insert(k.clone(), v.clone());
                }
                "jwtHeaders" | "jwt_headers" => {
                    let headers: Vec<Value> = v
                        .as_array()
                        .map(|a| a.iter().map(|h| json!({"name": h})).collect())
                        .unwrap_or_default();
                    rule.insert("fromHeaders".into(), Value::Array(headers));
                }
                "jwtParams" | "jwt_params" => {
                    rule.insert("fromParams".into(), v.clone());
                }
                // Per origin, as Istio's OriginAuthenticator reads them: an origin applies only
                // where its own rules trigger.
                "triggerRules" | "trigger_rules" => {
                    rule.insert("triggerRules".into(), legacy_trigger_rules(v));
                }
                other => {
                    return Err(format!(
                        "{} is not supported by mesh-authn",
                        at(&format!("origins[{i}].jwt.{other}"))
                    ))
                }
            }
        }
        rules.push(Value::Object(rule));
    }
    if !rules.is_empty() {
        cfg.insert("jwtRules".into(), Value::Array(rules));
        let optional = spec
            .get("originIsOptional")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        cfg.insert("requireToken".into(), json!(!optional));
    }
    if let Some(b) = spec.get("principalBinding").and_then(Value::as_str) {
        if !cfg.is_empty() {
            cfg.insert("principalBinding".into(), json!(b));
        }
    }

    let (namespace, selector) = if r.kind == "MeshPolicy" {
        (opts.root_namespace.clone(), None)
    } else {
        (
            r.namespace.clone(),
            target_name.map(|n| json!({"selector": {"matchLabels": {"app": n}}})),
        )
    };
    if r.dry_run {
        for c in [&mut peer_cfg, &mut cfg] {
            if !c.is_empty() {
                c.insert("dryRun".into(), json!(true));
            }
        }
    }
    let mut plugins = Vec::new();
    if !peer_cfg.is_empty() {
        plugins.push(wasm_plugin(
            &format!("{}-policy-peers", r.name),
            &namespace,
            selector.clone(),
            Value::Object(peer_cfg),
            Kind::Network,
            opts,
        ));
    }
    if !cfg.is_empty() {
        plugins.push(wasm_plugin(
            &format!("{}-policy", r.name),
            &namespace,
            selector,
            Value::Object(cfg),
            Kind::Http,
            opts,
        ));
    }
    Ok(plugins)
}

fn legacy_trigger_rules(v: &Value) -> Value {
    let rules = v.as_array().cloned().unwrap_or_default();
    Value::Array(
        rules
            .iter()
            .map(|rule| {
                let list = |camel: &str, snake: &str| {
                    rule.get(camel)
                        .or_else(|| rule.get(snake))
                        .cloned()
                        .unwrap_or(json!([]))
                };
                json!({
                    "excludedPaths": list("excludedPaths", "excluded_paths"),
                    "includedPaths": list("includedPaths", "included_paths"),
                })
            })
            .collect(),
    )
}

pub fn to_yaml(docs: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        let yaml = serde_norway::to_string(d).map_err(|e| e.to_string())?;
        out.extend(yaml.lines().map(|l| quote_timestamp(l) + "\n"));
    }
    Ok(out)
}

/// YAML 1.1 readers (PyYAML, yaml.v2 into typed fields) turn a plain RFC 3339 scalar into a
/// timestamp; the filter wants the string.
fn quote_timestamp(line: &str) -> String {
    match line.split_once("creationTimestamp: ") {
        Some((indent, ts)) if indent.trim().is_empty() && !ts.starts_with(['\'', '"']) => {
            format!("{indent}creationTimestamp: '{ts}'")
        }
        _ => line.to_string(),
    }
}
