// Where the module's time goes on a request, in V8 without Envoy: a proxy-wasm host of its own
// runs the module's request path in a loop, beside the floor module (envoy-test/floor), and
// prints microseconds per request; with --profile, the module's functions by self and by
// inclusive time. For finding what to cut; how fast the filter is in Envoy is what `make bench`
// measures.
//
//   node envoy-test/profile.mjs [--case rs256|es256|es256-verify|dpop|network] [--requests N] [--profile]
//                               [--module PATH] [--floor PATH]
//
// rs256, es256: one cached bearer token (the module verifies it once, in the module).
// es256-verify: the ES256 bearer token with no cache, checked every request by this host's
// `verify_signature` (node's crypto): what a DPoP request is budgeted against. dpop: an ES256
// token bound to a client key, a fresh proof each request, checked by the host, the replay
// store in this host's shared data. network: the NETWORK plugin under STRICT, one mTLS connection
// each round trip (opened, its handshake over by its first bytes, closed); no floor beside it.
import crypto from "node:crypto";
import fs from "node:fs";
import inspector from "node:inspector";
import path from "node:path";
import { parseArgs } from "node:util";

const here = path.dirname(new URL(import.meta.url).pathname);
const release = path.join(here, "..", "target", "wasm32-wasip1", "release");
const { values: opt } = parseArgs({
  options: {
    case: { type: "string", default: "rs256" },
    requests: { type: "string", default: "100000" },
    profile: { type: "boolean", default: false },
    module: { type: "string", default: path.join(release, "mesh_authn.wasm") },
    floor: { type: "string", default: path.join(release, "wasm_floor.wasm") },
  },
});
const DPOP = opt.case === "dpop";
const VERIFY = opt.case === "es256-verify";
const NETWORK = opt.case === "network";
const N = DPOP || VERIFY || NETWORK ? Math.min(Number(opt.requests), 20000) : Number(opt.requests);
const ROUNDS = 5;

// Tokens, keys and proofs, made here.
const b64 = (x) => Buffer.from(x).toString("base64url");
const sha256 = (x) => crypto.createHash("sha256").update(x).digest();
function jws(header, payload, key) {
  const input = `${b64(JSON.stringify(header))}.${b64(JSON.stringify(payload))}`;
  const ec = header.alg.startsWith("ES");
  const sig = crypto.sign("sha256", Buffer.from(input), ec ? { key, dsaEncoding: "ieee-p1363" } : key);
  return `${input}.${b64(sig)}`;
}
const rsa = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
const ec = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
const client = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
const publicJwk = (k) => {
  const { kty, crv, x, y, n, e } = k.publicKey.export({ format: "jwk" });
  return kty === "EC" ? { crv, kty, x, y } : { e, kty, n };
};
const ISSUER = "https://profile.example";
const now = Math.floor(Date.now() / 1000);
const claims = (extra = {}) => ({ iss: ISSUER, sub: "profile", iat: now, exp: now + 7200, ...extra });
const jwks = JSON.stringify({
  keys: [{ ...publicJwk(rsa), kid: "rsa", alg: "RS256" }, { ...publicJwk(ec), kid: "ec", alg: "ES256" }],
});
const clientJwk = publicJwk(client);
const jkt = b64(sha256(JSON.stringify({ crv: clientJwk.crv, kty: "EC", x: clientJwk.x, y: clientJwk.y })));
const token = {
  rs256: () => jws({ alg: "RS256", kid: "rsa" }, claims(), rsa.privateKey),
  es256: () => jws({ alg: "ES256", kid: "ec" }, claims(), ec.privateKey),
  "es256-verify": () => jws({ alg: "ES256", kid: "ec" }, claims(), ec.privateKey),
  dpop: () => jws({ alg: "ES256", kid: "ec" }, claims({ cnf: { jkt } }), ec.privateKey),
  network: () => "",
}[opt.case]?.();
if (token === undefined) throw new Error(`--case: rs256, es256, es256-verify, dpop or network, not ${opt.case}`);
const HTU = "http://127.0.0.1:10000/";
const proofs = DPOP
  ? Array.from({ length: N * (ROUNDS + 1) + 100 }, () =>
      jws({ typ: "dpop+jwt", alg: "ES256", jwk: clientJwk },
        { jti: b64(crypto.randomBytes(16)), htm: "GET", htu: HTU, iat: now, ath: b64(sha256(token)) },
        client.privateKey))
  : [];
const rule = { issuer: ISSUER, jwks, ...(DPOP ? { dpop: { mode: "REQUIRED", maxAge: "3600s" } } : {}) };
const pluginConfig = Buffer.from(JSON.stringify(NETWORK ? { mtls: { mode: "STRICT" } } : {
  jwtRules: [rule], requireToken: true, signatureVerifier: DPOP || VERIFY ? "host" : "wasm",
  ...(DPOP ? { dpopReplayEntries: 4 << 20 } : {}), ...(VERIFY ? { jwtCacheSize: 0 } : {}),
}));

// A connection's properties as Envoy serializes them (an int as 8 little-endian bytes), before
// and after its TLS handshake.
const int64 = (n) => { const b = Buffer.alloc(8); b.writeBigInt64LE(BigInt(n)); return b; };
const connection = { handshook: false };
function property(name) {
  if (name === "plugin_root_id") return NETWORK ? Buffer.from("network") : null;
  if (!NETWORK) return null;
  return {
    "connection\0tls_version": Buffer.from("TLSv1.3"),
    "connection\0mtls": Buffer.of(connection.handshook ? 1 : 0),
    "destination\0port": int64(15006),
    "connection\0uri_san_peer_certificate": connection.handshook
      ? Buffer.from("spiffe://cluster.local/ns/bench/sa/client") : null,
  }[name] ?? null;
}

// The request as Envoy's HTTP connection manager hands it to filters.
const headers = [
  [":authority", "127.0.0.1:10000"], [":path", "/"], [":method", "GET"], [":scheme", "http"],
  ["authorization", `${DPOP ? "DPoP" : "Bearer"} ${token}`], ["x-forwarded-proto", "http"],
  ["x-request-id", "0b0b6c3e-7f3e-4a58-9c1e-2f0d1b7a9e11"],
];
function encodeMap(pairs) {
  const parts = pairs.map(([k, v]) => [Buffer.from(k), Buffer.from(v)]);
  const out = Buffer.alloc(4 + parts.reduce((n, [k, v]) => n + 10 + k.length + v.length, 0));
  out.writeUInt32LE(pairs.length, 0);
  let at = 4;
  for (const [k, v] of parts) { out.writeUInt32LE(k.length, at); out.writeUInt32LE(v.length, at + 4); at += 8; }
  for (const [k, v] of parts) { k.copy(out, at); at += k.length + 1; v.copy(out, at); at += v.length + 1; }
  return out;
}
const fixedMap = encodeMap(headers);
let proofAt = 0;
const requestMap = () => (DPOP ? encodeMap([...headers, ["dpop", proofs[proofAt++]]]) : fixedMap);

// The host: the calls the module makes, answered as Envoy answers them.
function host(file) {
  let x;
  const shared = new Map();
  const bytes = () => new Uint8Array(x.memory.buffer);
  const view = () => new DataView(x.memory.buffer);
  const text = (p, n) => Buffer.from(bytes().subarray(p, p + n)).toString();
  const give = (data, ptrPtr, sizePtr) => {
    const p = x.proxy_on_memory_allocate(data.length);
    bytes().set(data, p);
    view().setUint32(ptrPtr, p, true);
    view().setUint32(sizePtr, data.length, true);
    return 0;
  };
  const verify = (args) => {
    const f = {};
    for (let at = 0; at < args.length;) {
      const tag = args[at++];
      let len = 0;
      for (let shift = 0, b = 0x80; b & 0x80; shift += 7) { b = args[at++]; len |= (b & 0x7f) << shift; }
      f[tag >> 3] = args.subarray(at, at + len);
      at += len;
    }
    try {
      return crypto.verify(Buffer.from(f[1]).toString(), f[4], { key: Buffer.from(f[2]), format: "der", type: "spki" }, f[3]);
    } catch {
      return false;
    }
  };
  const env = {
    proxy_log: (level, p, n) => { if (level >= 3) console.error(`module: ${text(p, n)}`); return 0; },
    proxy_get_log_level: (p) => { view().setUint32(p, 2, true); return 0; },
    proxy_get_current_time_nanoseconds: (p) => { view().setBigUint64(p, BigInt(Date.now()) * 1000000n, true); return 0; },
    proxy_get_buffer_bytes: (type, start, max, pp, sp) => (type === 7 ? give(pluginConfig, pp, sp) : 1),
    proxy_get_header_map_pairs: (map, pp, sp) => give(requestMap(), pp, sp),
    proxy_get_header_map_value: () => 1,
    proxy_replace_header_map_value: () => 0,
    proxy_add_header_map_value: () => 0,
    proxy_remove_header_map_value: () => 0,
    proxy_send_local_response: () => { throw new Error("the module refused the request"); },
    proxy_get_shared_data: (kp, kn, vpp, vsp, casp) => {
      const e = shared.get(text(kp, kn));
      if (!e) return 1;
      give(e.value, vpp, vsp);
      view().setUint32(casp, e.cas, true);
      return 0;
    },
    proxy_set_shared_data: (kp, kn, vp, vn, cas) => {
      const k = text(kp, kn), e = shared.get(k);
      if (cas !== 0 && e && e.cas !== cas) return 8;
      shared.set(k, { value: bytes().slice(vp, vp + vn), cas: (e?.cas ?? 0) + 1 });
      return 0;
    },
    proxy_set_tick_period_milliseconds: () => 0,
    proxy_set_effective_context: () => 0,
    proxy_continue_stream: () => 0,
    proxy_close_stream: () => 0,
    proxy_define_metric: (type, p, n, idp) => { view().setUint32(idp, 1, true); return 0; },
    proxy_increment_metric: () => 0,
    proxy_record_metric: () => 0,
    proxy_http_call: () => 1,
    proxy_get_property: (p, n, pp, sp) => {
      const value = property(text(p, n));
      return value ? give(value, pp, sp) : 1;
    },
    proxy_call_foreign_function: (np, nn, ap, an, rpp, rsp) =>
      give(Uint8Array.of(0x08, verify(bytes().slice(ap, ap + an)) ? 1 : 0), rpp, rsp),
  };
  const wasi = {
    random_get: (p, n) => { crypto.randomFillSync(bytes().subarray(p, p + n)); return 0; },
    environ_get: () => 0,
    environ_sizes_get: (a, b) => { view().setUint32(a, 0, true); view().setUint32(b, 0, true); return 0; },
    fd_write: () => 0,
    proc_exit: (code) => { throw new Error(`proc_exit ${code}`); },
  };
  const module = new WebAssembly.Module(fs.readFileSync(file));
  x = new WebAssembly.Instance(module, { env, wasi_snapshot_preview1: wasi }).exports;
  x._initialize?.();
  x.proxy_on_context_create(1, 0);
  if (x.proxy_on_configure(1, pluginConfig.length) !== 1) throw new Error(`${file} refused its configuration`);
  let id = 2;
  if (NETWORK) {
    return () => {
      connection.handshook = false;
      x.proxy_on_context_create(id, 1);
      if (x.proxy_on_new_connection(id) !== 0) throw new Error("the connection was refused");
      connection.handshook = true;
      if (x.proxy_on_downstream_data(id, 100, 0) !== 0) throw new Error("the connection was refused");
      x.proxy_on_done(id);
      id++;
    };
  }
  return () => {
    x.proxy_on_context_create(id, 1);
    if (x.proxy_on_request_headers(id, headers.length, 0) !== 0) throw new Error("the request was paused");
    x.proxy_on_done(id);
    id++;
  };
}

/** Microseconds per request: the fastest of ROUNDS rounds of N, after one to warm up. */
function time(one) {
  let best = Infinity;
  for (let round = 0; round <= ROUNDS; round++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < N; i++) one();
    const us = Number(process.hrtime.bigint() - start) / 1000 / N;
    if (round > 0) best = Math.min(best, us);
  }
  return best;
}

const floor = DPOP || VERIFY || NETWORK ? null : time(host(opt.floor));
const filter = host(opt.module);
const session = new inspector.Session();
const post = (method, params) => new Promise((ok, fail) =>
  session.post(method, params, (err, res) => (err ? fail(err) : ok(res))));
if (opt.profile) {
  session.connect();
  await post("Profiler.enable");
  await post("Profiler.setSamplingInterval", { interval: 20 });
  await post("Profiler.start");
}
const us = time(filter);
console.log(`${opt.case}: the module ${us.toFixed(3)} us per ${NETWORK ? "connection" : "request"}` +
  (floor === null ? "" : `, the floor ${floor.toFixed(3)} us, the module's logic ${(us - floor).toFixed(3)} us`));
if (opt.profile) {
  const { profile } = await post("Profiler.stop");
  const self = new Map();
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  let inModule = 0;
  for (const id of profile.samples) {
    const frame = byId.get(id).callFrame;
    if (!frame.url.startsWith("wasm:")) continue;
    inModule++;
    const name = frame.functionName.replace(/17h[0-9a-f]{16}E$/, "");
    self.set(name, (self.get(name) ?? 0) + 1);
  }
  const share = inModule / profile.samples.length;
  console.log(`in the module's own code: ${(us * share).toFixed(3)} us per request ` +
    `(${(100 * share).toFixed(0)}% of the samples; the rest is this host), by self time:`);
  for (const [name, n] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 20)) {
    console.log(`  ${((us * n) / profile.samples.length).toFixed(3)}  ${name.slice(0, 120)}`);
  }
  // Inclusive: a function with what it calls, each function counted once per sample.
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const inclusive = new Map();
  for (const id of profile.samples) {
    const seen = new Set();
    for (let at = id; at !== undefined; at = parent.get(at)) {
      const frame = byId.get(at).callFrame;
      const name = frame.functionName.replace(/17h[0-9a-f]{16}E$/, "");
      if (!frame.url.startsWith("wasm:") || seen.has(name)) continue;
      seen.add(name);
      inclusive.set(name, (inclusive.get(name) ?? 0) + 1);
    }
  }
  console.log("by inclusive time:");
  for (const [name, n] of [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, 20)) {
    console.log(`  ${((us * n) / profile.samples.length).toFixed(3)}  ${name.slice(0, 120)}`);
  }
}
