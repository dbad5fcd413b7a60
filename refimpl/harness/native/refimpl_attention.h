/* refimpl_attention.h: the C ABI of an attention kernel that `refimpl check --target c:LIB.so:SYMBOL` calls.
 *
 *   int SYMBOL(int dtype_bits, const void *q, const void *k, const void *v, const unsigned char *keep,
 *              const int64_t shape[7], double scale, void *out, void *weights);
 *
 * dtype_bits  64: q, k, v, out, weights are double; 32: float (float16/bfloat16 cases arrive as float32
 *             values that are exactly representable in the case's precision; the output is judged as float32).
 * shape       {B, Hq, Hkv, Sq, Sk, D, Dv}; Hq is a multiple of Hkv: query head h reads kv head h / (Hq / Hkv).
 * q           (B, Hq, Sq, D), row-major (C order), contiguous.
 * k           (B, Hkv, Sk, D);  v: (B, Hkv, Sk, Dv).
 * keep        NULL (every key attended) or (B, Hq, Sq, Sk) bytes, 1 = attend, 0 = masked out; causal masks,
 *             sliding windows and padding all arrive folded into it.
 * scale       the softmax scale (refimpl passes 1/sqrt(D) when the case has none of its own).
 * out         (B, Hq, Sq, Dv), written by the kernel: out = softmax(scale * q k^T over kept keys) v.
 *             A query row with no kept key: zeros, NaN or the mean of v are accepted.
 * weights     NULL, or (B, Hq, Sq, Sk) the kernel may fill with the softmax weights (then they are judged).
 * returns     0 on success; any other value is an error, reported with its code, and nothing is judged.
 *
 * The arrays belong to refimpl: the kernel must not keep pointers to them after it returns, nor write to q, k,
 * v or keep. It runs in refimpl's worker process: a crash is that case's `crash`, a hang its `timeout`.
 */
#ifndef REFIMPL_ATTENTION_H
#define REFIMPL_ATTENTION_H
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int (*refimpl_attention_fn)(int dtype_bits, const void *q, const void *k, const void *v,
                                    const unsigned char *keep, const int64_t shape[7], double scale, void *out,
                                    void *weights);

#ifdef __cplusplus
}
#endif
#endif
