/* attn_online.c: a second correct attention kernel for the refimpl C ABI, FlashAttention-2 style.
 *
 *   int attn_online(int dtype_bits, const void *q, const void *k, const void *v, const unsigned char *keep,
 *                   const int64_t shape[7], double scale, void *out, void *weights);
 *
 * One pass over the keys in blocks of ATTN_BLOCK (16) with an online softmax: a running max m, a running sum
 * l and an unnormalised output accumulator acc. For each block: m_new = max(m, block max), alpha =
 * exp(m - m_new), l = alpha * l + sum exp(s - m_new), acc = alpha * acc + sum exp(s - m_new) v; the row is
 * divided by l once at the end. Arithmetic is in double for both dtypes. It never materialises the softmax
 * weights, so it never writes `weights` (the pointer is left alone). A row with no kept key gets zeros.
 *
 * Returns 0 on success, 2 for an unsupported dtype_bits, 3 for a shape it cannot handle, 4 if out of memory.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define ATTN_BLOCK 16

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

int attn_online(int dtype_bits, const void *q, const void *k, const void *v, const unsigned char *keep,
                const int64_t shape[7], double scale, void *out, void *weights)
{
    (void)weights; /* never written */
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

    double *acc = malloc(sizeof(double) * (size_t)Dv);
    if (acc == NULL)
        return 4;

    for (int64_t b = 0; b < B; b++) {
        for (int64_t h = 0; h < Hq; h++) {
            const int64_t hk = h / group;
            const size_t kbase = (size_t)((b * Hkv + hk) * Sk);
            for (int64_t i = 0; i < Sq; i++) {
                const size_t row = (size_t)((b * Hq + h) * Sq + i);
                const unsigned char *km = keep ? keep + row * (size_t)Sk : NULL;
                double m = -INFINITY, l = 0.0;
                for (int64_t e = 0; e < Dv; e++)
                    acc[e] = 0.0;

                for (int64_t j0 = 0; j0 < Sk; j0 += ATTN_BLOCK) {
                    const int64_t j1 = j0 + ATTN_BLOCK < Sk ? j0 + ATTN_BLOCK : Sk;
                    double s[ATTN_BLOCK];
                    double mb = -INFINITY;
                    for (int64_t j = j0; j < j1; j++) {
                        if (km && !km[j]) {
                            s[j - j0] = -INFINITY;
                            continue;
                        }
                        double dot = 0.0;
                        for (int64_t d = 0; d < D; d++)
                            dot += ld(q, dtype_bits, row * (size_t)D + (size_t)d) *
                                   ld(k, dtype_bits, (kbase + (size_t)j) * (size_t)D + (size_t)d);
                        s[j - j0] = scale * dot;
                        if (s[j - j0] > mb)
                            mb = s[j - j0];
                    }
                    if (mb == -INFINITY)
                        continue; /* the whole block is masked out: nothing to add */
                    const double m_new = mb > m ? mb : m;
                    const double alpha = exp(m - m_new); /* exp(-inf) = 0 on the first kept block */
                    l *= alpha;
                    for (int64_t e = 0; e < Dv; e++)
                        acc[e] *= alpha;
                    for (int64_t j = j0; j < j1; j++) {
                        if (s[j - j0] == -INFINITY)
                            continue;
                        const double p = exp(s[j - j0] - m_new);
                        l += p;
                        const size_t vrow = (kbase + (size_t)j) * (size_t)Dv;
                        for (int64_t e = 0; e < Dv; e++)
                            acc[e] += p * ld(v, dtype_bits, vrow + (size_t)e);
                    }
                    m = m_new;
                }

                const double inv = l > 0.0 ? 1.0 / l : 0.0; /* no kept key: zeros */
                for (int64_t e = 0; e < Dv; e++)
                    st(out, dtype_bits, row * (size_t)Dv + (size_t)e, acc[e] * inv);
            }
        }
    }
    free(acc);
    return 0;
}
