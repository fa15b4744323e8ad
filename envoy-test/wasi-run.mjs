// Cargo runner for wasm32-wasip1: runs the unit tests where usize is 32 bits, under node:wasi.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';

const [path, ...args] = process.argv.slice(2);
// panic=abort on wasm loses libtest's captured output: print a failing test's message live.
const env = { RUST_TEST_NOCAPTURE: '1' };
for (const [k, v] of Object.entries(process.env)) if (/^(RUST|CARGO_|TERM$|NO_COLOR$)/.test(k)) env[k] = v;
const wasi = new WASI({ version: 'preview1', args: [path, ...args], env, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(path));
const imports = wasi.getImportObject();
// The proxy-wasm host functions (module "env") are linked in but never called by unit tests.
for (const { module: m, name } of WebAssembly.Module.imports(module)) {
  if (imports[m]?.[name]) continue;
  (imports[m] ??= {})[name] = () => { throw new Error(`host import ${m}.${name} called outside Envoy`); };
}
const { _start, memory } = (await WebAssembly.instantiate(module, imports)).exports;
try {
  // Only _start and memory: node refuses a module that also exports _initialize (the filter's).
  process.exitCode = wasi.start({ exports: { _start, memory } });
} catch (e) {
  console.error(`\n${path}: wasm trap (a panic aborts on wasm): ${e.stack ?? e}`);
  process.exitCode = 134;
}
