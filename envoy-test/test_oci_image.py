"""The OCI image of the module: a valid OCI image layout in the Wasm image format Istio's loader
accepts, reproducible, and the module it carries runs in Envoy."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile

import harness
import oci_image


def resolve_wasm(layout: dict[str, bytes]) -> bytes:
    """What Istio's fetcher does with a Wasm OCI image: index → manifest → the wasm layer, with
    every digest checked."""
    def blob(desc: dict) -> bytes:
        data = layout[f"blobs/sha256/{desc['digest'].removeprefix('sha256:')}"]
        assert hashlib.sha256(data).hexdigest() == desc["digest"].removeprefix("sha256:")
        assert len(data) == desc["size"]
        return data

    assert json.loads(layout["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    (desc,) = json.loads(layout["index.json"])["manifests"]
    assert desc["mediaType"] == oci_image.MANIFEST_TYPE
    manifest = json.loads(blob(desc))
    assert manifest["config"]["mediaType"] == "application/vnd.module.wasm.config.v1+json"
    blob(manifest["config"])
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.module.wasm.content.layer.v1+wasm"
    return blob(layer)


def test_layout_is_a_wasm_image_and_reproducible(wasm_module, tmp_path):
    wasm = wasm_module.read_bytes()
    files = oci_image.build(wasm, "test")
    assert resolve_wasm(files) == wasm
    assert oci_image.build(wasm, "test") == files
    tar_path = oci_image.write(files, tmp_path / "img")
    with tarfile.open(tar_path) as tar:
        assert sorted(tar.getnames()) == sorted(files)
        assert tar.extractfile("index.json").read() == files["index.json"]
    assert oci_image.build(wasm + b"\0", "test")["index.json"] != files["index.json"]


def test_cli_prints_digests(wasm_module, tmp_path):
    out = subprocess.run([sys.executable, str(harness.REPO / "envoy-test" / "oci_image.py"),
                          "--wasm", str(wasm_module), "--out", str(tmp_path / "img")],
                         capture_output=True, text=True, check=True).stdout
    digest = oci_image.manifest_digest(oci_image.build(wasm_module.read_bytes(), "0.1.0"))
    assert digest.removeprefix("sha256:") in out
    assert hashlib.sha256(wasm_module.read_bytes()).hexdigest() in out


def test_module_from_the_image_runs_in_envoy(wasm_module, upstream, tmp_path):
    layout = oci_image.build(wasm_module.read_bytes(), "test")
    pulled = tmp_path / "plugin.wasm"
    pulled.write_bytes(resolve_wasm(layout))
    gw = harness.start_gateway({"from-oci": {"requireToken": True, "jwtRules": [
        {"issuer": "i", "jwks": '{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}'}]}},
        harness.scratch_dir(), upstream.port, wasm=pulled)
    try:
        resp = gw.get("from-oci", "/")
        assert (resp.status, resp.text) == (401, "Jwt is missing")
    finally:
        gw.envoy.stop()


def test_a_release_pins_this_build(wasm_module, tmp_path):
    """`make release`: the image, wasm-plugin.yaml with every WasmPlugin at the release's tag and
    pinned to the image's digest (the template itself pins nothing), and SHA256SUMS."""
    import yaml
    template = harness.REPO / "wasm-plugin.yaml"
    assert not oci_image.PINNED.search(template.read_text()), "the template must not pin a digest"
    digests = oci_image.release(wasm_module.read_bytes(), "9.8.7", template, tmp_path)
    layout = {str(p.relative_to(tmp_path / "mesh-authn-9.8.7")): p.read_bytes()
              for p in (tmp_path / "mesh-authn-9.8.7").rglob("*") if p.is_file()}
    assert resolve_wasm(layout) == wasm_module.read_bytes()
    assert digests["manifest"] == oci_image.manifest_digest(oci_image.build(wasm_module.read_bytes(), "9.8.7"))
    docs = [d for d in yaml.safe_load_all((tmp_path / "wasm-plugin.yaml").read_text()) if d]
    shipped = [d for d in yaml.safe_load_all(template.read_text()) if d]
    plugins = [d for d in docs if d["kind"] == "WasmPlugin"]
    assert plugins and all(p["spec"]["sha256"] == digests["manifest"].removeprefix("sha256:") and
                           p["spec"]["url"].endswith(":9.8.7") for p in plugins)
    # Nothing else changes: the same resources, the same pluginConfigs.
    strip = lambda d: {**d, "spec": {k: v for k, v in d["spec"].items() if k not in ("url", "sha256")}}
    assert [strip(d) for d in docs] == [strip(d) for d in shipped]
    sums = dict(reversed(line.split("  ")) for line in (tmp_path / "SHA256SUMS").read_text().splitlines())
    assert sums["mesh_authn.wasm"] == hashlib.sha256(wasm_module.read_bytes()).hexdigest()
    assert sums["mesh-authn-9.8.7.tar"] == hashlib.sha256((tmp_path / "mesh-authn-9.8.7.tar").read_bytes()).hexdigest()
    assert sums["wasm-plugin.yaml"] == hashlib.sha256((tmp_path / "wasm-plugin.yaml").read_bytes()).hexdigest()
