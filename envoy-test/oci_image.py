"""Builds the module's OCI image without a Docker daemon: an OCI image layout (directory and tar)
in the Wasm OCI image format Istio's `oci://` loader accepts (config media type
application/vnd.module.wasm.config.v1+json, one layer application/vnd.module.wasm.content.layer.v1+wasm
holding the module itself). Push it with any OCI tool, e.g. `oras cp --from-oci-layout` or
`skopeo copy oci:<dir>:<tag> docker://<registry>/<repo>:<tag>`.

    python envoy-test/oci_image.py [--wasm PATH] [--out DIR] [--tag TAG]
    python envoy-test/oci_image.py --release VERSION      (what `make release` runs)

Prints the manifest digest (the WasmPlugin `sha256` for an oci:// url) and the module's sha256
(for http:// or file:// urls). The output is reproducible: the same module gives the same digests.
A release also writes `wasm-plugin.yaml` pinned to the image's digest (the repository's copy is
the unpinned template) and SHA256SUMS.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

CONFIG_TYPE = "application/vnd.module.wasm.config.v1+json"
LAYER_TYPE = "application/vnd.module.wasm.content.layer.v1+wasm"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
REPO = Path(__file__).resolve().parent.parent


def _canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _descriptor(media_type: str, blob: bytes, **extra) -> dict:
    return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
            "size": len(blob), **extra}


def build(wasm: bytes, tag: str) -> dict[str, bytes]:
    """The image layout's files, by path."""
    config = _canonical({"architecture": "wasm", "os": "wasip1", "rootfs": {"type": "layers", "diff_ids": [
        "sha256:" + hashlib.sha256(wasm).hexdigest()]}})
    manifest = _canonical({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": _descriptor(CONFIG_TYPE, config),
        "layers": [_descriptor(LAYER_TYPE, wasm,
                               annotations={"org.opencontainers.image.title": "plugin.wasm"})],
    })
    index = _canonical({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [_descriptor(MANIFEST_TYPE, manifest,
                                  annotations={"org.opencontainers.image.ref.name": tag})],
    })
    blobs = {f"blobs/sha256/{hashlib.sha256(b).hexdigest()}": b for b in (config, manifest, wasm)}
    return {"oci-layout": _canonical({"imageLayoutVersion": "1.0.0"}), "index.json": index, **blobs}


def write(files: dict[str, bytes], out: Path) -> Path:
    for path, blob in files.items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(blob)
    tar_path = out.parent / f"{out.name}.tar"  # not with_suffix: a version's dots are no suffix
    with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(files):
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(files[path]), 0, 0o644
            tar.addfile(info, io.BytesIO(files[path]))
    return tar_path


def manifest_digest(files: dict[str, bytes]) -> str:
    return json.loads(files["index.json"])["manifests"][0]["digest"]


PINNED = re.compile(r"^\s*sha256:", re.M)
URL = re.compile(r"^(\s*)url: (oci://\S+?)(?::[\w.-]+)?$", re.M)


def release_documents(template: str, version: str, digest: str) -> str:
    """`wasm-plugin.yaml` as a release ships it: every WasmPlugin's `url` at the release's tag, and
    a `sha256` line after it with the image's manifest digest. The template in the repository
    carries no digest, so no commit has to re-pin it."""
    if PINNED.search(template):
        raise ValueError("the template must not pin a digest: the release writes it")
    pinned, count = URL.subn(
        lambda m: f"{m.group(1)}url: {m.group(2)}:{version}\n{m.group(1)}sha256: "
                  f"{digest.removeprefix('sha256:')}", template)
    if count == 0:
        raise ValueError("no oci:// url in the template")
    return pinned


def release(wasm: bytes, version: str, template: Path, out: Path) -> dict[str, str]:
    """What `make release VERSION=x.y.z` writes to `out`: the OCI image layout and its tar, the
    pinned WasmPlugin documents, and SHA256SUMS. Returns the digests."""
    files = build(wasm, version)
    digest = manifest_digest(files)
    image = out / f"mesh-authn-{version}"
    tar_path = write(files, image)
    docs = out / "wasm-plugin.yaml"
    docs.write_text(release_documents(template.read_text(), version, digest))
    module = out / "mesh_authn.wasm"
    module.write_bytes(wasm)
    sums = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in (tar_path, docs, module)]
    (out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return {"manifest": digest, "module": hashlib.sha256(wasm).hexdigest()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wasm", type=Path, default=REPO / "target/wasm32-wasip1/release/mesh_authn.wasm")
    ap.add_argument("--out", type=Path, default=REPO / "target/oci/mesh-authn")
    ap.add_argument("--tag", default="0.1.0")
    ap.add_argument("--release", metavar="VERSION",
                    help="write the release of this version to target/dist/VERSION")
    args = ap.parse_args()
    wasm = args.wasm.read_bytes()
    if args.release:
        out = REPO / "target" / "dist" / args.release
        out.mkdir(parents=True, exist_ok=True)
        digests = release(wasm, args.release, REPO / "wasm-plugin.yaml", out)
        print(f"release {args.release} in {out}: OCI image mesh-authn-{args.release}(.tar), "
              f"wasm-plugin.yaml pinned to {digests['manifest']}, SHA256SUMS")
        return 0
    files = build(wasm, args.tag)
    tar_path = write(files, args.out)
    print(f"OCI image layout: {args.out} (tar: {tar_path}), tag {args.tag}")
    print(f"manifest digest (WasmPlugin sha256 for oci://): {manifest_digest(files).removeprefix('sha256:')}")
    print(f"module sha256 (for http:// or file:// urls): {hashlib.sha256(wasm).hexdigest()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
