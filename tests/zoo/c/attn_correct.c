/* attn_correct.c: a straightforward, correct attention kernel for the refimpl C ABI
 * (see refimpl/harness/native/refimpl_attention.h).
 *
 *   int attn(int dtype_bits, const void *q, const void *k, const void *v, const unsigned char *keep,
 *            const int64_t shape[7], double scale, void *out, void *weights);
 *
 * Two passes per query row: scores over kept keys, the row max, exp(s - max), the sum, then the weighted sum
 * of v. All arithmetic is in double; for dtype_bits == 32 the inputs are widened to double and the output is
 * rounded to float once at the end. A row with no kept key gets zeros (and zero weights).
 *
 * Returns 0 on success, 2 for an unsupported dtype_bits, 3 for a shape it cannot handle, 4 if out of memory.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static double ld(const void *p, int bits, size_t i)
{
    return bits == 64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

static void st(void *p, int bits, size_t i, double x)
{
    if (bits == 64)
        ((double *)p)[i] = x;
    else
        ((float *)p)[i] = (float)x;
}

int attn(int dtype_bits, const void *q, const void *k, const void *v, const unsigned char *keep,
         const int64_t shape[7], double scale, void *out, void *weights)
{
    if (dtype_bits != 32 && dtype_bits != 64)
        return 2;
    if (shape == NULL)
        return 3;
    for (int i = 0; i < 7; i++)
        if (shape[i] < 0)
            return 3;
    const int64_t B = shape[0], Hq = shape[1], Hkv = shape[2], Sq = shape[3], Sk = shape[4], D = shape[5],
                  Dv = shape[6];
    if (Hkv == 0 || Hq % Hkv != 0)
        return 3;
    if (B == 0 || Hq == 0 || Sq == 0 || Dv == 0)
        return 0;
    const int64_t group = Hq / Hkv;

    double *s = malloc(sizeof(double) * (size_t)(Sk > 0 ? Sk : 1));
    double *acc = malloc(sizeof(double) * (size_t)Dv);
    if (s == NULL || acc == NULL) {
        free(s);
        free(acc);
        return 4;
    }

    for (int64_t b = 0; b < B; b++) {
        for (int64_t h = 0; h < Hq; h++) {
            const int64_t hk = h / group;
            const size_t kbase = (size_t)((b * Hkv + hk) * Sk);
            for (int64_t i = 0; i < Sq; i++) {
                const size_t row = (size_t)((b * Hq + h) * Sq + i);
                const unsigned char *km = keep ? keep + row * (size_t)Sk : NULL;

                /* pass 1: scores over kept keys and their max */
                double m = -INFINITY;
                for (int64_t j = 0; j < Sk; j++) {
                    if (km && !km[j])
                        continue;
                    double dot = 0.0;
                    for (int64_t d = 0; d < D; d++)
                        dot += ld(q, dtype_bits, row * (size_t)D + (size_t)d) *
                               ld(k, dtype_bits, (kbase + (size_t)j) * (size_t)D + (size_t)d);
                    s[j] = scale * dot;
                    if (s[j] > m)
                        m = s[j];
                }

                /* pass 2: exp(s - max) and the sum */
                double l = 0.0;
                int any = 0;
                for (int64_t j = 0; j < Sk; j++) {
                    if (km && !km[j]) {
                        s[j] = 0.0;
                        continue;
                    }
                    any = 1;
                    s[j] = exp(s[j] - m);
                    l += s[j];
                }

                for (int64_t e = 0; e < Dv; e++)
                    acc[e] = 0.0;
                if (any) {
                    const double inv = 1.0 / l;
                    for (int64_t j = 0; j < Sk; j++) {
                        s[j] *= inv;
                        const size_t vrow = (kbase + (size_t)j) * (size_t)Dv;
                        for (int64_t e = 0; e < Dv; e++)
                            acc[e] += s[j] * ld(v, dtype_bits, vrow + (size_t)e);
                    }
                }
                /* a row with no kept key: s[] is all zeros here, so weights and out are zeros */
                for (int64_t e = 0; e < Dv; e++)
                    st(out, dtype_bits, row * (size_t)Dv + (size_t)e, acc[e]);
                if (weights)
                    for (int64_t j = 0; j < Sk; j++)
                        st(weights, dtype_bits, row * (size_t)Sk + (size_t)j, s[j]);
            }
        }
    }
    free(s);
    free(acc);
    return 0;
}
