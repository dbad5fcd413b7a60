// Broken attention kernels ("js targets") for the conformance harness zoo.
//
// Each kernel follows the same contract as correct.mjs but carries exactly one
// realistic mistake, marked with a `// BUG:` comment. Everything else is the
// plain two-pass kernel from correct.mjs, so the bug is the only difference.

function allocOut(dtype, n) {
  return dtype === "float32" ? new Float32Array(n) : new Float64Array(n);
}

// exp(s) without subtracting the row max: exp overflows to Infinity for
// logits above ~709 (Infinity / Infinity = NaN) and underflows to 0 for rows
// whose logits are all below ~-745 (0 / 0 = NaN).
export function attn_no_max({ q, k, v, keep, scale, shape, dtype }) {
  const { B, Hq, Hkv, Sq, Sk, D, Dv } = shape;
  const group = Hq / Hkv;
  const out = allocOut(dtype, B * Hq * Sq * Dv);
  const acc = new Float64Array(Dv);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const hk = Math.floor(h / group);
      const kBase = (b * Hkv + hk) * Sk * D;
      const vBase = (b * Hkv + hk) * Sk * Dv;
      for (let i = 0; i < Sq; i++) {
        const row = (b * Hq + h) * Sq + i;
        const qOff = row * D, keepOff = row * Sk, oOff = row * Dv;
        acc.fill(0);
        let l = 0, any = false;
        for (let j = 0; j < Sk; j++) {
          if (keep !== null && keep[keepOff + j] === 0) continue;
          any = true;
          const kOff = kBase + j * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qOff + d] * k[kOff + d];
          // BUG: no max subtraction; exp(scale * dot) overflows for large logits.
          const p = Math.exp(scale * dot);
          l += p;
          const vOff = vBase + j * Dv;
          for (let e = 0; e < Dv; e++) acc[e] += p * v[vOff + e];
        }
        if (!any) continue;
        for (let e = 0; e < Dv; e++) out[oOff + e] = acc[e] / l;
      }
    }
  }
  return out;
}

// Treats keep byte 1 as "masked" (confuses a keep mask with a mask-out mask).
export function attn_mask_inverted({ q, k, v, keep, scale, shape, dtype }) {
  const { B, Hq, Hkv, Sq, Sk, D, Dv } = shape;
  const group = Hq / Hkv;
  const out = allocOut(dtype, B * Hq * Sq * Dv);
  const s = new Float64Array(Sk);
  const acc = new Float64Array(Dv);
  // BUG: keep[...] === 1 means "attend", but it is treated as "masked out".
  const masked = (idx) => keep !== null && keep[idx] === 1;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const hk = Math.floor(h / group);
      const kBase = (b * Hkv + hk) * Sk * D;
      const vBase = (b * Hkv + hk) * Sk * Dv;
      for (let i = 0; i < Sq; i++) {
        const row = (b * Hq + h) * Sq + i;
        const qOff = row * D, keepOff = row * Sk, oOff = row * Dv;
        let m = -Infinity;
        for (let j = 0; j < Sk; j++) {
          if (masked(keepOff + j)) continue;
          const kOff = kBase + j * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qOff + d] * k[kOff + d];
          s[j] = scale * dot;
          if (s[j] > m) m = s[j];
        }
        if (m === -Infinity) continue;
        acc.fill(0);
        let l = 0;
        for (let j = 0; j < Sk; j++) {
          if (masked(keepOff + j)) continue;
          const p = Math.exp(s[j] - m);
          l += p;
          const vOff = vBase + j * Dv;
          for (let e = 0; e < Dv; e++) acc[e] += p * v[vOff + e];
        }
        for (let e = 0; e < Dv; e++) out[oOff + e] = acc[e] / l;
      }
    }
  }
  return out;
}

// Maps query head h to kv head h % Hkv (interleaved) instead of
// floor(h / (Hq / Hkv)) (contiguous groups). Only visible when 1 < Hkv < Hq.
export function attn_gqa_modulo({ q, k, v, keep, scale, shape, dtype }) {
  const { B, Hq, Hkv, Sq, Sk, D, Dv } = shape;
  const out = allocOut(dtype, B * Hq * Sq * Dv);
  const s = new Float64Array(Sk);
  const acc = new Float64Array(Dv);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      // BUG: should be Math.floor(h / (Hq / Hkv)).
      const hk = h % Hkv;
      const kBase = (b * Hkv + hk) * Sk * D;
      const vBase = (b * Hkv + hk) * Sk * Dv;
      for (let i = 0; i < Sq; i++) {
        const row = (b * Hq + h) * Sq + i;
        const qOff = row * D, keepOff = row * Sk, oOff = row * Dv;
        let m = -Infinity;
        for (let j = 0; j < Sk; j++) {
          if (keep !== null && keep[keepOff + j] === 0) continue;
          const kOff = kBase + j * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qOff + d] * k[kOff + d];
          s[j] = scale * dot;
          if (s[j] > m) m = s[j];
        }
        if (m === -Infinity) continue;
        acc.fill(0);
        let l = 0;
        for (let j = 0; j < Sk; j++) {
          if (keep !== null && keep[keepOff + j] === 0) continue;
          const p = Math.exp(s[j] - m);
          l += p;
          const vOff = vBase + j * Dv;
          for (let e = 0; e < Dv; e++) acc[e] += p * v[vOff + e];
        }
        for (let e = 0; e < Dv; e++) out[oOff + e] = acc[e] / l;
      }
    }
  }
  return out;
}

// Accumulates the weighted sum of v in a Float32Array, even for float64
// inputs: every `acc[e] += ...` is rounded to float32. Invisible at float32
// tolerance, but a float64 kernel that is only ~1e-7 accurate.
export function attn_float32_typed_accumulator({ q, k, v, keep, scale, shape, dtype }) {
  const { B, Hq, Hkv, Sq, Sk, D, Dv } = shape;
  const group = Hq / Hkv;
  const out = allocOut(dtype, B * Hq * Sq * Dv);
  const s = new Float64Array(Sk);
  // BUG: scratch accumulator is a Float32Array regardless of dtype.
  const acc = new Float32Array(Dv);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const hk = Math.floor(h / group);
      const kBase = (b * Hkv + hk) * Sk * D;
      const vBase = (b * Hkv + hk) * Sk * Dv;
      for (let i = 0; i < Sq; i++) {
        const row = (b * Hq + h) * Sq + i;
        const qOff = row * D, keepOff = row * Sk, oOff = row * Dv;
        let m = -Infinity;
        for (let j = 0; j < Sk; j++) {
          if (keep !== null && keep[keepOff + j] === 0) continue;
          const kOff = kBase + j * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qOff + d] * k[kOff + d];
          s[j] = scale * dot;
          if (s[j] > m) m = s[j];
        }
        if (m === -Infinity) continue;
        acc.fill(0);
        let l = 0;
        for (let j = 0; j < Sk; j++) {
          if (keep !== null && keep[keepOff + j] === 0) continue;
          const p = Math.exp(s[j] - m);
          l += p;
          const vOff = vBase + j * Dv;
          for (let e = 0; e < Dv; e++) acc[e] += p * v[vOff + e];
        }
        for (let e = 0; e < Dv; e++) out[oOff + e] = acc[e] / l;
      }
    }
  }
  return out;
}

// Only handles the unmasked case; refuses any keep mask.
export function attn_throws_on_mask({ q, k, v, keep, scale, shape, dtype }) {
  // BUG: masks (causal, windows, padding) are part of the contract.
  if (keep !== null) throw new Error("masks not supported");
  const { B, Hq, Hkv, Sq, Sk, D, Dv } = shape;
  const group = Hq / Hkv;
  const out = allocOut(dtype, B * Hq * Sq * Dv);
  const s = new Float64Array(Sk);
  const acc = new Float64Array(Dv);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const hk = Math.floor(h / group);
      const kBase = (b * Hkv + hk) * Sk * D;
      const vBase = (b * Hkv + hk) * Sk * Dv;
      for (let i = 0; i < Sq; i++) {
        const row = (b * Hq + h) * Sq + i;
        const qOff = row * D, oOff = row * Dv;
        let m = -Infinity;
        for (let j = 0; j < Sk; j++) {
          const kOff = kBase + j * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qOff + d] * k[kOff + d];
          s[j] = scale * dot;
          if (s[j] > m) m = s[j];
        }
        if (m === -Infinity) continue;
        acc.fill(0);
        let l = 0;
        for (let j = 0; j < Sk; j++) {
          const p = Math.exp(s[j] - m);
          l += p;
          const vOff = vBase + j * Dv;
          for (let e = 0; e < Dv; e++) acc[e] += p * v[vOff + e];
        }
        for (let e = 0; e < Dv; e++) out[oOff + e] = acc[e] / l;
      }
    }
  }
  return out;
}

// Uses the q/k head width D as the value/output row width (assumes D == Dv):
// the output has length B*Hq*Sq*D and v rows are read with stride D.
// Identical to the correct kernel when D == Dv.
export function attn_wrong_length({ q, k, v, keep, scale, shape, dtype }) {
  const { B, Hq, Hkv, Sq, Sk, D } = shape;
  // BUG: value/output row width taken from D instead of shape.Dv.
  const Dv = D;
  const group = Hq / Hkv;
  const out = allocOut(dtype, B * Hq * Sq * Dv);
  const s = new Float64Array(Sk);
  const acc = new Float64Array(Dv);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const hk = Math.floor(h / group);
      const kBase = (b * Hkv + hk) * Sk * D;
      const vBase = (b * Hkv + hk) * Sk * Dv;
      for (let i = 0; i < Sq; i++) {
        const row = (b * Hq + h) * Sq + i;
        const qOff = row * D, keepOff = row * Sk, oOff = row * Dv;
        let m = -Infinity;
        for (let j = 0; j < Sk; j++) {
          if (keep !== null && keep[keepOff + j] === 0) continue;
          const kOff = kBase + j * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qOff + d] * k[kOff + d];
          s[j] = scale * dot;
          if (s[j] > m) m = s[j];
        }
        if (m === -Infinity) continue;
        acc.fill(0);
        let l = 0;
        for (let j = 0; j < Sk; j++) {
          if (keep !== null && keep[keepOff + j] === 0) continue;
          const p = Math.exp(s[j] - m);
          l += p;
          const vOff = vBase + j * Dv;
          // Reads past the end of v give undefined -> NaN; harmless here since
          // the wrong output length is already a contract violation.
          for (let e = 0; e < Dv; e++) acc[e] += p * v[vOff + e];
        }
        for (let e = 0; e < Dv; e++) out[oOff + e] = acc[e] / l;
      }
    }
  }
  return out;
}
