"""What operators apply is valid: every Istio resource we ship or generate passes Istio's CRD
schemas, and every pluginConfig in the repository passes the generated JSON Schema."""

from __future__ import annotations

import copy
import json
import re
import subprocess

import jsonschema
import pytest
import yaml

import harness
import oci_image

CRD_CHECK = harness.REPO / "envoy-test" / "crd"
SCHEMA = json.loads((harness.REPO / "config-schema" / "plugin-config.schema.json").read_text())
EXAMPLES = sorted((harness.REPO / "config-schema" / "examples" / "istio").glob("*.yaml"))


def shipped() -> list[dict]:
    return [d for d in yaml.safe_load_all((harness.REPO / "wasm-plugin.yaml").read_text()) if d]


def converted() -> list[dict]:
    out = subprocess.run(
        ["cargo", "run", "-q", "-p", "config-schema", "--bin", "mesh-authn-convert", "--",
         *map(str, EXAMPLES)], cwd=harness.REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def crd_check(docs: list[dict]) -> list[dict]:
    if not (CRD_CHECK / "node_modules").is_dir():
        pytest.fail("run `make setup` (npm ci in envoy-test/crd) first", pytrace=False)
    out = subprocess.run(["node", "validate.mjs"], cwd=CRD_CHECK, input=json.dumps(docs),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def doc_plugin_configs() -> list[tuple[str, dict]]:
    """Every ```json block of the README and the docs: each is a pluginConfig."""
    out = []
    for doc in [harness.REPO / "README.md", *sorted((harness.REPO / "docs").glob("*.md"))]:
        blocks = re.findall(r"```json\n(.*?)```", doc.read_text(), re.S)
        out += [(f"{doc.relative_to(harness.REPO)} json block {i}", json.loads(b)) for i, b in enumerate(blocks)]
    return out


def test_shipped_resources_pass_istio_crd_schemas():
    docs = shipped()
    assert {d["kind"] for d in docs} == {"WasmPlugin", "AuthorizationPolicy", "ServiceEntry", "DestinationRule"}
    results = crd_check(docs)
    assert [r for r in results if not r["valid"]] == []
    assert len(results) == len(docs)


def test_release_documents_pass_istio_crd_schemas(wasm_module):
    """What a user applies from a release: the template pinned to this build's image digest."""
    digest = oci_image.manifest_digest(oci_image.build(wasm_module.read_bytes(), "1.2.3"))
    text = oci_image.release_documents((harness.REPO / "wasm-plugin.yaml").read_text(), "1.2.3", digest)
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert all(d["spec"]["sha256"] for d in docs if d["kind"] == "WasmPlugin")
    assert [r for r in crd_check(docs) if not r["valid"]] == []


def test_crd_check_can_fail():
    bad = copy.deepcopy([d for d in shipped() if d["kind"] == "WasmPlugin"][0])
    bad["spec"]["phase"] = "BEFORE_EVERYTHING"
    bad_sha = copy.deepcopy(bad)
    bad_sha["spec"]["phase"] = "AUTHN"
    bad_sha["spec"]["sha256"] = "not-a-digest"
    results = crd_check([bad, bad_sha])
    assert [r["valid"] for r in results] == [False, False]
    assert "phase" in results[0]["error"] and "sha256" in results[1]["error"]


def test_converter_output_passes_istio_crd_schemas():
    docs = converted()
    assert len(docs) >= 4 and all(d["kind"] == "WasmPlugin" for d in docs)
    assert [r for r in crd_check(docs) if not r["valid"]] == []


def plugin_configs() -> list[tuple[str, dict]]:
    configs = [(f"wasm-plugin.yaml:{d['metadata']['name']}", d["spec"]["pluginConfig"])
               for d in shipped() if d["kind"] == "WasmPlugin"]
    configs += doc_plugin_configs()
    return configs


@pytest.mark.parametrize("where, config", plugin_configs(), ids=lambda v: v if isinstance(v, str) else "")
def test_example_configs_pass_the_json_schema(where, config):
    jsonschema.Draft202012Validator(SCHEMA).validate(config)


def test_converted_configs_pass_the_json_schema():
    for d in converted():
        jsonschema.Draft202012Validator(SCHEMA).validate(d["spec"]["pluginConfig"])


@pytest.mark.parametrize("bad", [
    {"jwtRules": [{"issuer": "i", "jwks": "{}", "audience": ["a"]}]},
    {"requireToken": "yes"},
    {"mtls": {"mode": "STRIKT"}},
    {"triggerRules": [{"includedPaths": [{"glob": "/x"}]}]},
])
def test_json_schema_rejects_what_the_filter_rejects(bad):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(bad)
