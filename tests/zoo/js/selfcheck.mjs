#!/usr/bin/env node
// Standalone self-check for the js attention zoo (plain Node 20, no packages).
//
//   node tests/zoo/js/selfcheck.mjs
//
// Uses its own reference (full score matrix per head, then softmax, then P @ V,
// all in float64) on deterministic random cases, and checks that
//   - the correct kernels match the reference on every case, and
//   - each broken kernel differs from the reference (or throws) on at least one
//     case, and matches on the cases where its bug cannot show.
// Prints one line per kernel; exits 1 on any unexpected result.

import * as correct from "./correct.mjs";
import * as broken from "./broken.mjs";

const TOL = { float64: 1e-12, float32: 1e-5 };

// ---------------------------------------------------------------- PRNG
function mulberry32(seed) {
  let a = seed >>> 0;
  return function () {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------- reference
// Independent of correct.mjs: materialises the (Sq, Sk) score matrix per
// (batch, head), softmaxes each row over kept keys, then multiplies by V.
function reference({ q, k, v, keep, scale, shape }) {
  const { B, Hq, Hkv, Sq, Sk, D, Dv } = shape;
  const out = new Float64Array(B * Hq * Sq * Dv);
  const groupSize = Hq / Hkv;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const kvh = Math.floor(h / groupSize);
      const S = new Float64Array(Sq * Sk);
      const K = new Uint8Array(Sq * Sk).fill(1);
      for (let i = 0; i < Sq; i++) {
        for (let j = 0; j < Sk; j++) {
          let dot = 0;
          for (let d = 0; d < D; d++) {
            dot += q[((b * Hq + h) * Sq + i) * D + d] * k[((b * Hkv + kvh) * Sk + j) * D + d];
          }
          S[i * Sk + j] = scale * dot;
          if (keep) K[i * Sk + j] = keep[((b * Hq + h) * Sq + i) * Sk + j];
        }
      }
      for (let i = 0; i < Sq; i++) {
        const kept = [];
        for (let j = 0; j < Sk; j++) if (K[i * Sk + j]) kept.push(j);
        if (kept.length === 0) continue; // zeros
        const mx = Math.max(...kept.map((j) => S[i * Sk + j]));
        const w = kept.map((j) => Math.exp(S[i * Sk + j] - mx));
        const z = w.reduce((x, y) => x + y, 0);
        for (let e = 0; e < Dv; e++) {
          let acc = 0;
          for (let t = 0; t < kept.length; t++) {
            acc += w[t] * v[((b * Hkv + kvh) * Sk + kept[t]) * Dv + e];
          }
          out[((b * Hq + h) * Sq + i) * Dv + e] = acc / z;
        }
      }
    }
  }
  return out;
}

// Sanity check of the reference itself on a hand-computed case.
function checkReference() {
  const e = Math.E;
  const shape = { B: 1, Hq: 1, Hkv: 1, Sq: 2, Sk: 2, D: 2, Dv: 2 };
  const q = new Float64Array([1, 0, 0, 0]);
  const k = new Float64Array([1, 0, 0, 1]);
  const v = new Float64Array([1, 2, 3, 4]);
  const keep = new Uint8Array([1, 1, 0, 0]); // row 1 fully masked
  const got = reference({ q, k, v, keep, scale: 1, shape });
  const p0 = e / (e + 1), p1 = 1 / (e + 1);
  const want = [p0 * 1 + p1 * 3, p0 * 2 + p1 * 4, 0, 0];
  for (let i = 0; i < 4; i++) {
    if (Math.abs(got[i] - want[i]) > 1e-14) {
      console.error(`reference sanity check failed at ${i}: ${got[i]} vs ${want[i]}`);
      process.exit(1);
    }
  }
}

// ---------------------------------------------------------------- cases
// maxLogit: inputs are scaled so that max |s_ij| over the whole case equals it.
function makeCase({ name, seed, dtype, B, Hq, Hkv, Sq, Sk, D, Dv, mask, maxLogit }) {
  const rnd = mulberry32(seed);
  const shape = { B, Hq, Hkv, Sq, Sk, D, Dv };
  const Arr = dtype === "float32" ? Float32Array : Float64Array;
  const fill = (n) => { const a = new Arr(n); for (let i = 0; i < n; i++) a[i] = 2 * rnd() - 1; return a; };
  const q = fill(B * Hq * Sq * D);
  const k = fill(B * Hkv * Sk * D);
  const v = fill(B * Hkv * Sk * Dv);

  let keep = null;
  if (mask) {
    keep = new Uint8Array(B * Hq * Sq * Sk);
    for (let b = 0; b < B; b++) for (let h = 0; h < Hq; h++) for (let i = 0; i < Sq; i++) {
      const row = (b * Hq + h) * Sq + i;
      for (let j = 0; j < Sk; j++) {
        let keepIt;
        if (mask === "causal") keepIt = j <= i + (Sk - Sq); // bottom-right aligned
        else keepIt = rnd() < 0.6;                          // "random" padding-ish
        keep[row * Sk + j] = keepIt ? 1 : 0;
      }
      // Guarantee at least one kept key, except for the deliberate empty row.
      if (!keep.subarray(row * Sk, row * Sk + Sk).some((x) => x)) keep[row * Sk] = 1;
    }
    // One fully masked row (b=0, h=last head, i=0).
    const row0 = (0 * Hq + (Hq - 1)) * Sq + 0;
    keep.fill(0, row0 * Sk, row0 * Sk + Sk);
  }

  // Choose scale so that the largest |logit| equals maxLogit.
  let maxAbsDot = 0;
  const group = Hq / Hkv;
  for (let b = 0; b < B; b++) for (let h = 0; h < Hq; h++) {
    const kvh = Math.floor(h / group);
    for (let i = 0; i < Sq; i++) for (let j = 0; j < Sk; j++) {
      let dot = 0;
      for (let d = 0; d < D; d++) dot += q[((b * Hq + h) * Sq + i) * D + d] * k[((b * Hkv + kvh) * Sk + j) * D + d];
      maxAbsDot = Math.max(maxAbsDot, Math.abs(dot));
    }
  }
  const scale = maxLogit / maxAbsDot;
  return { name, input: { q, k, v, keep, scale, shape, dtype } };
}

const CASES = [
  // Plain MHA, no mask, D == Dv, small logits: the "nothing unusual" case.
  makeCase({ name: "f64_mha_plain", seed: 1, dtype: "float64", B: 2, Hq: 3, Hkv: 3, Sq: 5, Sk: 20, D: 8, Dv: 8, mask: null, maxLogit: 5 }),
  makeCase({ name: "f32_mha_plain", seed: 2, dtype: "float32", B: 2, Hq: 3, Hkv: 3, Sq: 5, Sk: 20, D: 8, Dv: 8, mask: null, maxLogit: 5 }),
  // GQA (group 2), D != Dv, random keep with a fully masked row, Sk % 16 != 0.
  makeCase({ name: "f64_gqa_mask_dv", seed: 3, dtype: "float64", B: 2, Hq: 4, Hkv: 2, Sq: 6, Sk: 37, D: 8, Dv: 5, mask: "random", maxLogit: 20 }),
  makeCase({ name: "f32_gqa_mask_dv", seed: 4, dtype: "float32", B: 2, Hq: 4, Hkv: 2, Sq: 6, Sk: 37, D: 8, Dv: 5, mask: "random", maxLogit: 20 }),
  // Large logits (~1000), GQA group 3, causal keep, D != Dv.
  makeCase({ name: "f64_gqa_causal_big", seed: 5, dtype: "float64", B: 1, Hq: 6, Hkv: 2, Sq: 7, Sk: 50, D: 6, Dv: 9, mask: "causal", maxLogit: 1000 }),
  makeCase({ name: "f32_gqa_causal_big", seed: 6, dtype: "float32", B: 1, Hq: 6, Hkv: 2, Sq: 7, Sk: 50, D: 6, Dv: 9, mask: "causal", maxLogit: 1000 }),
  // Large logits, no mask, MQA (Hkv = 1), D == Dv.
  makeCase({ name: "f64_mqa_big", seed: 7, dtype: "float64", B: 1, Hq: 4, Hkv: 1, Sq: 4, Sk: 33, D: 4, Dv: 4, mask: null, maxLogit: 1000 }),
  // Small single-block case, GQA group 2, D == Dv, no mask.
  makeCase({ name: "f64_gqa_small", seed: 8, dtype: "float64", B: 1, Hq: 2, Hkv: 1, Sq: 3, Sk: 7, D: 3, Dv: 3, mask: null, maxLogit: 3 }),
];

// ---------------------------------------------------------------- comparison
// Max-norm relative error: max|got - ref| / max|ref| (absolute if ref is all 0).
// Returns { ok, detail }. NaN / wrong type / wrong length are mismatches.
function compare(result, ref, dtype) {
  const out = result && typeof result === "object" && "out" in result && !ArrayBuffer.isView(result) ? result.out : result;
  const want = dtype === "float32" ? Float32Array : Float64Array;
  if (!(out instanceof want)) return { ok: false, detail: `returned ${out?.constructor?.name ?? typeof out}, want ${want.name}` };
  if (out.length !== ref.length) return { ok: false, detail: `length ${out.length}, want ${ref.length}` };
  let maxDiff = 0, maxRef = 0, nonFinite = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(out[i] - ref[i]);
    if (!Number.isFinite(d)) nonFinite++;
    else if (d > maxDiff) maxDiff = d;
    maxRef = Math.max(maxRef, Math.abs(ref[i]));
  }
  if (nonFinite) return { ok: false, err: NaN, detail: `${nonFinite} non-finite output value(s)` };
  const err = maxRef > 0 ? maxDiff / maxRef : maxDiff;
  return { ok: err <= TOL[dtype], err, detail: `rel err ${err.toExponential(2)}` };
}

function cloneInput(inp) {
  return { ...inp, q: inp.q.slice(), k: inp.k.slice(), v: inp.v.slice(), keep: inp.keep ? inp.keep.slice() : null, shape: { ...inp.shape } };
}

function run(fn, c) {
  try {
    return compare(fn(cloneInput(c.input)), c.ref, c.input.dtype);
  } catch (e) {
    return { ok: false, threw: true, detail: `threw: ${e.message}` };
  }
}

// ---------------------------------------------------------------- expectations
// For each broken kernel: cases where its bug cannot show (must match).
const CLEAN = {
  attn_no_max: ["f64_mha_plain", "f64_gqa_mask_dv", "f32_gqa_mask_dv"],       // |logits| <= 20
  attn_mask_inverted: ["f64_mha_plain", "f32_mha_plain", "f64_mqa_big"],       // keep = null
  attn_gqa_modulo: ["f64_mha_plain", "f32_mha_plain", "f64_mqa_big", "f64_gqa_small"], // Hkv == Hq or Hkv == 1
  attn_float32_typed_accumulator: ["f32_mha_plain", "f32_gqa_mask_dv", "f32_gqa_causal_big"], // float32 tolerance
  attn_throws_on_mask: ["f64_mha_plain", "f32_mha_plain", "f64_mqa_big"],      // keep = null
  attn_wrong_length: ["f64_mha_plain", "f32_mha_plain", "f64_mqa_big", "f64_gqa_small"], // D == Dv
};

// ---------------------------------------------------------------- main
checkReference();
for (const c of CASES) c.ref = reference(c.input);

let failures = 0;
const pad = (s) => s.padEnd(32);

for (const [name, fn] of Object.entries(correct)) {
  if (typeof fn !== "function") continue;
  const bad = [];
  const worst = { float64: 0, float32: 0 };
  for (const c of CASES) {
    const r = run(fn, c);
    if (!r.ok) bad.push(`${c.name} (${r.detail})`);
    else worst[c.input.dtype] = Math.max(worst[c.input.dtype], r.err);
  }
  if (bad.length) {
    failures++;
    console.log(`FAIL ${pad(name)} correct kernel mismatches: ${bad.join("; ")}`);
  } else {
    console.log(`PASS ${pad(name)} matches all ${CASES.length} cases (worst rel err f64 ${worst.float64.toExponential(2)}, f32 ${worst.float32.toExponential(2)})`);
  }
}

for (const [name, fn] of Object.entries(broken)) {
  if (typeof fn !== "function") continue;
  const clean = CLEAN[name];
  if (!clean) {
    failures++;
    console.log(`FAIL ${pad(name)} no clean cases declared in selfcheck.mjs`);
    continue;
  }
  const differs = [];
  const cleanBad = [];
  for (const c of CASES) {
    const r = run(fn, c);
    if (clean.includes(c.name)) {
      if (!r.ok) cleanBad.push(`${c.name} (${r.detail})`);
    } else if (!r.ok) {
      differs.push(`${c.name} (${r.detail})`);
    }
  }
  if (differs.length === 0 || cleanBad.length) {
    failures++;
    const why = [];
    if (differs.length === 0) why.push("bug never detected");
    if (cleanBad.length) why.push(`mismatch on clean case(s): ${cleanBad.join("; ")}`);
    console.log(`FAIL ${pad(name)} ${why.join("; ")}`);
  } else {
    console.log(`PASS ${pad(name)} differs on ${differs.length} case(s), e.g. ${differs[0]}; matches on ${clean.length} clean case(s)`);
  }
}

if (failures) {
  console.log(`selfcheck: ${failures} kernel(s) failed`);
  process.exit(1);
}
console.log("selfcheck: all kernels behave as expected");
