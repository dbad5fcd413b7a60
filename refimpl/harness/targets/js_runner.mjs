// The Node side of a JavaScript target (refimpl/harness/targets/js_targets.py): imports the user's ES module
// once, then answers one call per line on stdin with one line on stdout.
//   request:  {"q": b64, "k": b64, "v": b64, "keep": b64|null, "dtype": "float64"|"float32", "scale": x,
//              "shape": {B, Hq, Hkv, Sq, Sk, D, Dv}}   (arrays row-major, little-endian, base64)
//   answer:   {"ok": true, "dtype": ..., "out": b64, "weights": b64|null} or {"ok": false, "error": "..."}
// argv: node js_runner.mjs FILE FUNCTION. The user's console.log goes to stderr, never into the answers.
import { pathToFileURL } from "node:url";
import { createInterface } from "node:readline";

const [file, name] = process.argv.slice(2);
const write = process.stdout.write.bind(process.stdout);
console.log = (...a) => process.stderr.write(a.join(" ") + "\n");
const answer = (obj) => write(JSON.stringify(obj) + "\n");

const typed = (b64, T) => {
  const buf = Buffer.from(b64, "base64");
  return new T(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
};
const b64 = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString("base64");

let fn;
try {
  const mod = await import(pathToFileURL(file).href);
  fn = mod[name];
  if (typeof fn !== "function") {
    answer({ ok: false, load: true, error: `${file} exports no function ${JSON.stringify(name)} (exports: ${Object.keys(mod).join(", ") || "none"})` });
    process.exit(0);
  }
} catch (e) {
  answer({ ok: false, load: true, error: `cannot import ${file}: ${e && e.stack ? e.stack.split("\n")[0] : e}` });
  process.exit(0);
}
answer({ ok: true, ready: true });

const describe = (x) => x === null ? "null" : x === undefined ? "undefined"
  : ArrayBuffer.isView(x) ? x.constructor.name : Array.isArray(x) ? "Array" : typeof x;

for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  if (!line) continue;
  let r;
  try {
    r = JSON.parse(line);
    const T = r.dtype === "float32" ? Float32Array : Float64Array;
    const args = { q: typed(r.q, T), k: typed(r.k, T), v: typed(r.v, T), keep: r.keep === null ? null : typed(r.keep, Uint8Array),
                   scale: r.scale, shape: r.shape, dtype: r.dtype };
    let res = await fn(args);
    let weights = null;
    if (res && !ArrayBuffer.isView(res) && typeof res === "object" && "out" in res) {
      weights = res.weights ?? null;
      res = res.out;
    }
    if (!(res instanceof Float64Array || res instanceof Float32Array)) {
      answer({ ok: false, error: `TypeError: the target returned ${describe(res)}; expected a Float64Array or Float32Array (B, Hq, Sq, Dv) or {out, weights}` });
      continue;
    }
    if (weights !== null && !(weights instanceof Float64Array || weights instanceof Float32Array)) {
      answer({ ok: false, error: `TypeError: weights is ${describe(weights)}; expected a Float64Array or Float32Array (B, Hq, Sq, Sk)` });
      continue;
    }
    answer({ ok: true, dtype: res instanceof Float64Array ? "float64" : "float32", out: b64(res),
             weights: weights === null ? null : b64(weights),
             wdtype: weights instanceof Float32Array ? "float32" : "float64" });
  } catch (e) {
    answer({ ok: false, error: `${e && e.name ? e.name : "Error"}: ${e && e.message !== undefined ? e.message : e}` });
  }
}
