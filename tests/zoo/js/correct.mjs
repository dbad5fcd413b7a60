// Correct attention kernels ("js targets") for the conformance harness zoo.
//
// Contract: attn({ q, k, v, keep, scale, shape, dtype }) -> out
//   shape = { B, Hq, Hkv, Sq, Sk, D, Dv }
//   q: (B, Hq, Sq, D), k: (B, Hkv, Sk, D), v: (B, Hkv, Sk, Dv), row-major
//   keep: null or Uint8Array (B, Hq, Sq, Sk), 1 = attend, 0 = masked out
//   out: (B, Hq, Sq, Dv), Float64Array for "float64", Float32Array for "float32"
// All arithmetic is done in float64 (plain JS numbers).

function allocOut(dtype, n) {
  return dtype === "float32" ? new Float32Array(n) : new Float64Array(n);
}

// Straightforward two-pass softmax per query row.
export function attn({ q, k, v, keep, scale, shape, dtype }) {
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
        const qOff = row * D;
        const keepOff = row * Sk;
        const oOff = row * Dv;

        // Pass 1: scores and max over kept keys.
        let m = -Infinity;
        for (let j = 0; j < Sk; j++) {
          if (keep !== null && keep[keepOff + j] === 0) continue;
          const kOff = kBase + j * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qOff + d] * k[kOff + d];
          s[j] = scale * dot;
          if (s[j] > m) m = s[j];
        }
        if (m === -Infinity) continue; // no kept key: row stays zero

        // Pass 2: exp, sum, weighted sum of v.
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

// FlashAttention-2 style online softmax over key blocks of BLOCK keys.
const BLOCK = 16;

export function attn_online({ q, k, v, keep, scale, shape, dtype }) {
  const { B, Hq, Hkv, Sq, Sk, D, Dv } = shape;
  const group = Hq / Hkv;
  const out = allocOut(dtype, B * Hq * Sq * Dv);
  const sBlk = new Float64Array(BLOCK);
  const kept = new Uint8Array(BLOCK);
  const acc = new Float64Array(Dv);

  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const hk = Math.floor(h / group);
      const kBase = (b * Hkv + hk) * Sk * D;
      const vBase = (b * Hkv + hk) * Sk * Dv;
      for (let i = 0; i < Sq; i++) {
        const row = (b * Hq + h) * Sq + i;
        const qOff = row * D;
        const keepOff = row * Sk;
        const oOff = row * Dv;

        let m = -Infinity; // running max
        let l = 0;         // running sum of exp(s - m)
        acc.fill(0);       // running (unnormalised) output

        for (let j0 = 0; j0 < Sk; j0 += BLOCK) {
          const j1 = Math.min(j0 + BLOCK, Sk);
          // Scores for this block and the block max.
          let mBlk = -Infinity;
          for (let j = j0; j < j1; j++) {
            const t = j - j0;
            if (keep !== null && keep[keepOff + j] === 0) { kept[t] = 0; continue; }
            kept[t] = 1;
            const kOff = kBase + j * D;
            let dot = 0;
            for (let d = 0; d < D; d++) dot += q[qOff + d] * k[kOff + d];
            sBlk[t] = scale * dot;
            if (sBlk[t] > mBlk) mBlk = sBlk[t];
          }
          if (mBlk === -Infinity) continue; // whole block masked

          const mNew = m > mBlk ? m : mBlk;
          // Rescale the running state (exp(-Inf) = 0 on the first kept block).
          const alpha = Math.exp(m - mNew);
          if (alpha !== 1) {
            l *= alpha;
            for (let e = 0; e < Dv; e++) acc[e] *= alpha;
          }
          for (let j = j0; j < j1; j++) {
            const t = j - j0;
            if (!kept[t]) continue;
            const p = Math.exp(sBlk[t] - mNew);
            l += p;
            const vOff = vBase + j * Dv;
            for (let e = 0; e < Dv; e++) acc[e] += p * v[vOff + e];
          }
          m = mNew;
        }
        if (l === 0) continue; // no kept key: row stays zero
        for (let e = 0; e < Dv; e++) out[oOff + e] = acc[e] / l;
      }
    }
  }
  return out;
}
