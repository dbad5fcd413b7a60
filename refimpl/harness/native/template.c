/* A minimal correct attention kernel of refimpl's C ABI (refimpl_attention.h): a starting point.
 * Build:  gcc -O2 -shared -fPIC -o libattn.so attn.c -lm
 * Check:  refimpl check --target c:./libattn.so:attn
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include "refimpl_attention.h"

#define KERNEL(NAME, T)                                                                                    \
static int NAME(const T *q, const T *k, const T *v, const unsigned char *keep, const int64_t *shape,       \
                double scale, T *out, T *weights) {                                                        \
    int64_t B = shape[0], Hq = shape[1], Hkv = shape[2], Sq = shape[3], Sk = shape[4], D = shape[5];       \
    int64_t Dv = shape[6];                                                                                 \
    if (Hkv <= 0 || Hq % Hkv != 0) return 3;                                                               \
    double *p = malloc(sizeof(double) * (Sk > 0 ? Sk : 1));                                                \
    if (!p) return 4;                                                                                      \
    for (int64_t b = 0; b < B; b++) for (int64_t h = 0; h < Hq; h++) {                                     \
        int64_t g = h / (Hq / Hkv);                      /* the kv head of query head h */                 \
        const T *kh = k + (b * Hkv + g) * Sk * D, *vh = v + (b * Hkv + g) * Sk * Dv;                       \
        for (int64_t i = 0; i < Sq; i++) {                                                                 \
            const T *qi = q + ((b * Hq + h) * Sq + i) * D;                                                 \
            const unsigned char *ki = keep ? keep + ((b * Hq + h) * Sq + i) * Sk : NULL;                   \
            double m = -INFINITY, z = 0.0;                                                                 \
            for (int64_t j = 0; j < Sk; j++) {                                                             \
                double s = 0.0;                                                                            \
                for (int64_t d = 0; d < D; d++) s += (double)qi[d] * (double)kh[j * D + d];                \
                p[j] = (ki && !ki[j]) ? -INFINITY : s * scale;                                             \
                if (p[j] > m) m = p[j];                                                                    \
            }                                                                                              \
            for (int64_t j = 0; j < Sk; j++) { p[j] = isinf(m) ? 0.0 : exp(p[j] - m); z += p[j]; }        \
            T *o = out + ((b * Hq + h) * Sq + i) * Dv;                                                     \
            for (int64_t e = 0; e < Dv; e++) {                                                             \
                double acc = 0.0;                                                                          \
                for (int64_t j = 0; j < Sk; j++) acc += p[j] * (double)vh[j * Dv + e];                     \
                o[e] = (T)(z > 0 ? acc / z : 0.0);         /* a row with no key: zeros */                  \
            }                                                                                              \
            if (weights)                                                                                   \
                for (int64_t j = 0; j < Sk; j++)                                                           \
                    weights[((b * Hq + h) * Sq + i) * Sk + j] = (T)(z > 0 ? p[j] / z : 0.0);               \
        }                                                                                                  \
    }                                                                                                      \
    free(p);                                                                                               \
    return 0;                                                                                              \
}

KERNEL(attn_f64, double)
KERNEL(attn_f32, float)

int attn(int dtype_bits, const void *q, const void *k, const void *v, const unsigned char *keep,
         const int64_t shape[7], double scale, void *out, void *weights) {
    if (dtype_bits == 64) return attn_f64(q, k, v, keep, shape, scale, out, weights);
    if (dtype_bits == 32) return attn_f32(q, k, v, keep, shape, scale, out, weights);
    return 2;                                            /* a dtype this kernel does not take */
}
