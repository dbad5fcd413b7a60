// Check a JavaScript attention function against a refimpl export, with Node alone (no Python):
//
//     node tools/conform.mjs DIR kernel.mjs fn [--timeout SECONDS]
//
// DIR is what `refimpl export --out DIR` wrote (index.json and one JSON file per case, schema refimpl-export/1).
// fn follows refimpl's JavaScript target contract (README: "Kernels in C, C++, Rust or JavaScript"):
//     fn({q, k, v, keep, scale, shape, dtype}) -> Float64Array | Float32Array (B, Hq, Sq, Dv) or {out, weights}
// Each case runs in a worker thread with a time limit (default 30 s): a throw, a hang or process.exit() is that
// case's error and the run goes on. A case's output rows that have a key must lie within its tolerance.atol of
// the expected float64 output; a row with no key may be zeros, NaN or the mean of V; padding rows (absent_rows)
// are not judged. Cases the contract cannot express (additive masks, softcap, ALiBi) are n/a.
// Prints one line per case, then "N passed, N failed" and "RESULT: all targets conform" (exit 0) or
// "RESULT: NON-CONFORMANCE" (exit 1); a bad command line or export is exit 2 with the reason.
import { readFileSync, existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";

const usage = "usage: node tools/conform.mjs DIR kernel.mjs fn [--timeout SECONDS]";
const args = process.argv.slice(2);
let timeout = 30;
const ti = args.indexOf("--timeout");
if (ti >= 0) { timeout = Number(args[ti + 1]); args.splice(ti, 2); }
if (args.length !== 3 || !(timeout > 0)) { console.error(usage); process.exit(2); }
const [dir, file, fnName] = args;
const indexPath = join(dir, "index.json");
if (!existsSync(indexPath)) { console.error(`conform.mjs: ${indexPath} not found: DIR must be a refimpl export`); process.exit(2); }
if (!existsSync(file)) { console.error(`conform.mjs: no file ${file}`); process.exit(2); }
let index;
try { index = JSON.parse(readFileSync(indexPath, "utf8")); } catch (e) { console.error(`conform.mjs: ${indexPath}: ${e.message}`); process.exit(2); }
if (index.schema !== "refimpl-export-index/1" || !Array.isArray(index.cases)) {
  console.error(`conform.mjs: ${indexPath} is not a refimpl export index (schema refimpl-export-index/1)`); process.exit(2);
}

const num = (x) => x === "Inf" ? Infinity : x === "-Inf" ? -Infinity : x === "NaN" ? NaN : x;
const flat = (a) => (a === null || a === undefined) ? null : a.values.flat(Infinity).map(num);

// --- one worker thread runs the user's function; a timeout or a crash ends it and the next case gets a new one ---
const workerSource = `
  import { parentPort, workerData } from "node:worker_threads";
  const mod = await import(workerData.url);
  const fn = mod[workerData.name];
  parentPort.on("message", async (m) => {
    try {
      if (typeof fn !== "function") throw new TypeError("the module exports no function " + JSON.stringify(workerData.name));
      let r = await fn(m);
      let w = null;
      if (r && !ArrayBuffer.isView(r) && typeof r === "object" && "out" in r) { w = r.weights ?? null; r = r.out; }
      if (!(r instanceof Float64Array || r instanceof Float32Array))
        throw new TypeError("the function returned " + (r === null ? "null" : ArrayBuffer.isView(r) ? r.constructor.name : typeof r) + "; expected a Float64Array or Float32Array");
      parentPort.postMessage({ ok: true, out: Array.from(r), weights: w === null ? null : Array.from(w) });
    } catch (e) { parentPort.postMessage({ ok: false, error: (e && e.name ? e.name + ": " : "") + (e && e.message !== undefined ? e.message : String(e)) }); }
  });`;
let worker = null;
const start = () => new Worker(new URL("data:text/javascript," + encodeURIComponent(workerSource)),
  { workerData: { url: pathToFileURL(resolve(file)).href, name: fnName }, stdout: false });
const call = (msg) => new Promise((done) => {
  if (worker === null) worker = start();
  const w = worker;
  const onMessage = (r) => finish(r);
  const onError = (e) => { worker = null; finish({ ok: false, error: `crash: ${e && e.message ? e.message : e}` }); };
  const onExit = (code) => { worker = null; finish({ ok: false, error: `crash: the function's thread exited (code ${code})` }); };
  const timer = setTimeout(() => { worker = null; w.terminate(); finish({ ok: false, error: `timeout: no answer in ${timeout} s` }); }, timeout * 1000);
  let settled = false;
  function finish(r) {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    w.off("message", onMessage); w.off("error", onError); w.off("exit", onExit);
    done(r);
  }
  w.on("message", onMessage); w.on("error", onError); w.on("exit", onExit);
  w.postMessage(msg);
});

let passed = 0, failed = 0, na = 0;
for (const entry of index.cases) {
  let c;
  try { c = JSON.parse(readFileSync(join(dir, entry.file), "utf8")); }
  catch (e) { console.log(`error ${entry.id}: unreadable case file ${entry.file}: ${e.message}`); failed++; continue; }
  try {
    const f = c.features, inp = c.inputs, ex = c.expected, tl = c.tolerance;
    const why = (inp.mask && inp.mask.dtype !== "bool") ? "an additive mask" : f.softcap ? "softcap" : f.alibi ? "ALiBi" : null;
    if (why) { console.log(`n/a ${c.id}: a JavaScript target has no ${why}`); na++; continue; }
    const T = f.dtype === "float64" ? Float64Array : Float32Array;
    const dtype = f.dtype === "float64" ? "float64" : "float32";
    const [B, Hq, Sq, D] = inp.q.shape, [, Hkv, Sk, Dv] = inp.v.shape;
    const keep = flat(inp.keep);
    const scale = f.scale === null ? 1 / Math.sqrt(D) : f.scale;
    const r = await call({ q: T.from(flat(inp.q)), k: T.from(flat(inp.k)), v: T.from(flat(inp.v)),
      keep: keep === null ? null : Uint8Array.from(keep.map((x) => x ? 1 : 0)), scale, dtype,
      shape: { B, Hq, Hkv, Sq, Sk, D, Dv } });
    if (!r.ok) { console.log(`error ${c.id}: ${r.error}`); failed++; continue; }
    if (r.out.length !== B * Hq * Sq * Dv) { console.log(`error ${c.id}: returned ${r.out.length} values, expected B*Hq*Sq*Dv = ${B * Hq * Sq * Dv}`); failed++; continue; }
    const want = flat(ex.output), dead = flat(ex.dead_rows), absent = flat(ex.absent_rows), V = flat(inp.v);
    // computed in float32 (the case's own dtype, or float16/bfloat16 carried in it): refimpl check's own budget
    const atol = dtype === "float64" ? tl.atol : (tl.budget_atol ?? tl.atol_float32 ?? tl.atol);
    const slope = dtype === "float64" ? null : (tl.budget_slope ?? null);
    let so = 0, ss = 0;
    let worst = 0, problem = null;
    for (let row = 0; row < B * Hq * Sq && !problem; row++) {
      if (absent && absent[row]) continue;
      const o = r.out.slice(row * Dv, row * Dv + Dv);
      if (dead[row]) {
        const b = Math.floor(row / (Hq * Sq)), h = Math.floor(row / Sq) % Hq, hk = Math.floor(h / (Hq / Hkv));
        const mean = Array.from({ length: Dv }, (_, e) => { let s = 0; for (let j = 0; j < Sk; j++) s += V[((b * Hkv + hk) * Sk + j) * Dv + e]; return s / Sk; });
        const mx = Math.max(...mean.map(Math.abs));
        const ok = o.every((x) => x === 0) || o.every((x) => Number.isNaN(x)) ||
          o.every((x, e) => Number.isFinite(x) && Math.abs(x - mean[e]) <= 1e-2 * Math.abs(mean[e]) + 1e-3 * (1 + mx));
        if (!ok) problem = `a row with no key (${row}) is not zeros, NaN or the mean of V`;
        continue;
      }
      for (let e = 0; e < Dv; e++) {
        const d = Math.abs(o[e] - want[row * Dv + e]);
        const ratio = Number.isNaN(d) ? Infinity : atol > 0 ? d / atol : (d === 0 ? 0 : Infinity);
        if (ratio > worst) worst = ratio;
        so += o[e] * want[row * Dv + e]; ss += want[row * Dv + e] * want[row * Dv + e];
      }
    }
    const k = ss === 0 ? 1 : so / ss;                 // the least-squares slope of the output on the expected one
    if (!problem && slope !== null && !(Math.abs(k - 1) <= slope)) {
      problem = `scaled by ${k.toPrecision(6)} against the expected output (its least-squares slope); rounding allows 1 +- ${slope.toPrecision(3)}`;
      worst = Math.max(worst, Math.abs(k - 1) / slope);
    }
    if (problem || worst > 1) { console.log(`FAIL ${worst.toPrecision(3)} ${c.id}: ${problem ?? `worst |output - expected| / atol = ${worst.toPrecision(3)} (atol ${atol.toPrecision(3)})`}`); failed++; }
    else { console.log(`pass ${worst.toPrecision(2)} ${c.id}`); passed++; }
  } catch (e) { console.log(`error ${c.id}: malformed case: ${e.message}`); failed++; }
}
if (worker !== null) await worker.terminate();
console.log(`${passed} passed, ${failed} failed, ${na} n/a`);
if (passed + failed === 0) { console.log("RESULT: NOTHING CHECKED"); process.exit(2); }
console.log(failed === 0 ? "RESULT: all targets conform" : "RESULT: NON-CONFORMANCE");
process.exit(failed === 0 ? 0 : 1);
