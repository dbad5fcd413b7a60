/* attn_broken.c: deliberately broken attention kernels for the refimpl C ABI, to check that the conformance
 * harness catches each kind of failure. Every symbol has the ABI signature
 *
 *   int SYMBOL(int dtype_bits, const void *q, const void *k, const void *v, const unsigned char *keep,
 *              const int64_t shape[7], double scale, void *out, void *weights);
 *
 * and is a correct kernel except for exactly one realistic mistake, marked with a BUG comment:
 *
 *   attn_mask_inverted      treats keep byte 1 as masked out (and 0 as attended)
 *   attn_no_max             exp(s) without subtracting the row max: overflows to inf/inf = NaN on large logits
 *   attn_gqa_modulo         query head h reads kv head h % Hkv instead of h / (Hq / Hkv)
 *   attn_last_key_dropped   key loop runs j < Sk - 1, so the last key is never attended
 *   attn_float_accum_reset  blocked softmax (blocks of 32 keys) that resets the running sum at every block but
 *                           not the output accumulator: wrong whenever a row spans more than one block
 *   attn_segfault_on_wide   scratch buffer only exists for D <= 64; for D > 64 it dereferences NULL (a crash)
 *   attn_error_code         returns 7 whenever keep is not NULL
 *
 * Not a kernel to use: see README.md.
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

/* 0 if the shape is usable, else the error code (3) */
static int check_shape(const int64_t shape[7])
{
    if (shape == NULL)
        return 3;
    for (int i = 0; i < 7; i++)
        if (shape[i] < 0)
            return 3;
    if (shape[2] == 0 || shape[1] % shape[2] != 0)
        return 3;
    return 0;
}

static double dot_qk(int bits, const void *q, const void *k, size_t qrow, size_t krow, int64_t D)
{
    double dot = 0.0;
    for (int64_t d = 0; d < D; d++)
        dot += ld(q, bits, qrow * (size_t)D + (size_t)d) * ld(k, bits, krow * (size_t)D + (size_t)d);
    return dot;
}

/* normalise p[0..Sk) by l (p holds exp values, 0 for masked keys), write out and weights for one row */
static void finish_row(int bits, const void *v, size_t row, size_t kbase, int64_t Sk, int64_t Dv, double *p,
                       double l, double *acc, void *out, void *weights)
{
    for (int64_t e = 0; e < Dv; e++)
        acc[e] = 0.0;
    const double inv = l > 0.0 ? 1.0 / l : 0.0;
    for (int64_t j = 0; j < Sk; j++) {
        p[j] *= inv;
        const size_t vrow = (kbase + (size_t)j) * (size_t)Dv;
        for (int64_t e = 0; e < Dv; e++)
            acc[e] += p[j] * ld(v, bits, vrow + (size_t)e);
    }
    for (int64_t e = 0; e < Dv; e++)
        st(out, bits, row * (size_t)Dv + (size_t)e, acc[e]);
    if (weights)
        for (int64_t j = 0; j < Sk; j++)
            st(weights, bits, row * (size_t)Sk + (size_t)j, p[j]);
}

#define SHAPE_VARS                                                                                             \
    const int64_t B = shape[0], Hq = shape[1], Hkv = shape[2], Sq = shape[3], Sk = shape[4], D = shape[5],     \
                  Dv = shape[6];                                                                               \
    const int64_t group = Hq / Hkv;                                                                            \
    (void)group

#define ALLOC_ROW_BUFFERS                                                                                      \
    double *p = malloc(sizeof(double) * (size_t)(Sk > 0 ? Sk : 1));                                           \
    double *acc = malloc(sizeof(double) * (size_t)(Dv > 0 ? Dv : 1));                                         \
    if (p == NULL || acc == NULL) {                                                                            \
        free(p);                                                                                               \
        free(acc);                                                                                             \
        return 4;                                                                                              \
    }

/* ------------------------------------------------------------------------------------------------------- */

int attn_mask_inverted(int dtype_bits, const void *q, const void *k, const void *v, const unsigned char *keep,
                       const int64_t shape[7], double scale, void *out, void *weights)
{
    if (dtype_bits != 32 && dtype_bits != 64)
        return 2;
    int rc = check_shape(shape);
    if (rc)
        return rc;
    SHAPE_VARS;
    ALLOC_ROW_BUFFERS
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Hq; h++) {
            const size_t kbase = (size_t)((b * Hkv + h / group) * Sk);
            for (int64_t i = 0; i < Sq; i++) {
                const size_t row = (size_t)((b * Hq + h) * Sq + i);
                const unsigned char *km = keep ? keep + row * (size_t)Sk : NULL;
                double m = -INFINITY, l = 0.0;
                for (int64_t j = 0; j < Sk; j++) {
                    /* BUG: keep byte 1 means "attend", but this reads it as "masked" (the polarity of a
                     * PyTorch-style boolean attn_mask vs a key_padding_mask got swapped). */
                    if (km && km[j]) {
                        p[j] = -INFINITY;
                        continue;
                    }
                    p[j] = scale * dot_qk(dtype_bits, q, k, row, kbase + (size_t)j, D);
                    if (p[j] > m)
                        m = p[j];
                }
                for (int64_t j = 0; j < Sk; j++) {
                    p[j] = p[j] == -INFINITY ? 0.0 : exp(p[j] - m);
                    l += p[j];
                }
                finish_row(dtype_bits, v, row, kbase, Sk, Dv, p, l, acc, out, weights);
            }
        }
    free(p);
    free(acc);
    return 0;
}

int attn_no_max(int dtype_bits, const void *q, const void *k, const void *v, const unsigned char *keep,
                const int64_t shape[7], double scale, void *out, void *weights)
{
    if (dtype_bits != 32 && dtype_bits != 64)
        return 2;
    int rc = check_shape(shape);
    if (rc)
        return rc;
    SHAPE_VARS;
    ALLOC_ROW_BUFFERS
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Hq; h++) {
            const size_t kbase = (size_t)((b * Hkv + h / group) * Sk);
            for (int64_t i = 0; i < Sq; i++) {
                const size_t row = (size_t)((b * Hq + h) * Sq + i);
                const unsigned char *km = keep ? keep + row * (size_t)Sk : NULL;
                double l = 0.0;
                for (int64_t j = 0; j < Sk; j++) {
                    if (km && !km[j]) {
                        p[j] = 0.0;
                        continue;
                    }
                    /* BUG: exp of the raw logit, without subtracting the row max first. Mathematically the
                     * same softmax, but exp overflows to inf for logits above ~709 and the row becomes
                     * inf / inf = NaN. */
                    p[j] = exp(scale * dot_qk(dtype_bits, q, k, row, kbase + (size_t)j, D));
                    l += p[j];
                }
                finish_row(dtype_bits, v, row, kbase, Sk, Dv, p, l, acc, out, weights);
            }
        }
    free(p);
    free(acc);
    return 0;
}

int attn_gqa_modulo(int dtype_bits, const void *q, const void *k, const void *v, const unsigned char *keep,
                    const int64_t shape[7], double scale, void *out, void *weights)
{
    if (dtype_bits != 32 && dtype_bits != 64)
        return 2;
    int rc = check_shape(shape);
    if (rc)
        return rc;
    SHAPE_VARS;
    ALLOC_ROW_BUFFERS
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Hq; h++) {
            /* BUG: interleaved head mapping h % Hkv; the contract groups consecutive query heads,
             * h / (Hq / Hkv). Identical when Hq == Hkv, wrong under GQA. */
            const size_t kbase = (size_t)((b * Hkv + h % Hkv) * Sk);
            for (int64_t i = 0; i < Sq; i++) {
                const size_t row = (size_t)((b * Hq + h) * Sq + i);
                const unsigned char *km = keep ? keep + row * (size_t)Sk : NULL;
                double m = -INFINITY, l = 0.0;
                for (int64_t j = 0; j < Sk; j++) {
                    if (km && !km[j]) {
                        p[j] = -INFINITY;
                        continue;
                    }
                    p[j] = scale * dot_qk(dtype_bits, q, k, row, kbase + (size_t)j, D);
                    if (p[j] > m)
                        m = p[j];
                }
                for (int64_t j = 0; j < Sk; j++) {
                    p[j] = p[j] == -INFINITY ? 0.0 : exp(p[j] - m);
                    l += p[j];
                }
                finish_row(dtype_bits, v, row, kbase, Sk, Dv, p, l, acc, out, weights);
            }
        }
    free(p);
    free(acc);
    return 0;
}

int attn_last_key_dropped(int dtype_bits, const void *q, const void *k, const void *v,
                          const unsigned char *keep, const int64_t shape[7], double scale, void *out,
                          void *weights)
{
    if (dtype_bits != 32 && dtype_bits != 64)
        return 2;
    int rc = check_shape(shape);
    if (rc)
        return rc;
    SHAPE_VARS;
    ALLOC_ROW_BUFFERS
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Hq; h++) {
            const size_t kbase = (size_t)((b * Hkv + h / group) * Sk);
            for (int64_t i = 0; i < Sq; i++) {
                const size_t row = (size_t)((b * Hq + h) * Sq + i);
                const unsigned char *km = keep ? keep + row * (size_t)Sk : NULL;
                double m = -INFINITY, l = 0.0;
                for (int64_t j = 0; j < Sk; j++)
                    p[j] = -INFINITY;
                /* BUG: off-by-one, the key loop stops at Sk - 1 and the last key is never attended. */
                for (int64_t j = 0; j < Sk - 1; j++) {
                    if (km && !km[j])
                        continue;
                    p[j] = scale * dot_qk(dtype_bits, q, k, row, kbase + (size_t)j, D);
                    if (p[j] > m)
                        m = p[j];
                }
                for (int64_t j = 0; j < Sk; j++) {
                    p[j] = p[j] == -INFINITY ? 0.0 : exp(p[j] - m);
                    l += p[j];
                }
                finish_row(dtype_bits, v, row, kbase, Sk, Dv, p, l, acc, out, weights);
            }
        }
    free(p);
    free(acc);
    return 0;
}

#define RESET_BLOCK 32

int attn_float_accum_reset(int dtype_bits, const void *q, const void *k, const void *v,
                           const unsigned char *keep, const int64_t shape[7], double scale, void *out,
                           void *weights)
{
    (void)weights; /* blocked kernel: never materialises the weights */
    if (dtype_bits != 32 && dtype_bits != 64)
        return 2;
    int rc = check_shape(shape);
    if (rc)
        return rc;
    SHAPE_VARS;
    double *acc = malloc(sizeof(double) * (size_t)(Dv > 0 ? Dv : 1));
    if (acc == NULL)
        return 4;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Hq; h++) {
            const size_t kbase = (size_t)((b * Hkv + h / group) * Sk);
            for (int64_t i = 0; i < Sq; i++) {
                const size_t row = (size_t)((b * Hq + h) * Sq + i);
                const unsigned char *km = keep ? keep + row * (size_t)Sk : NULL;
                double m = -INFINITY, l = 0.0;
                for (int64_t e = 0; e < Dv; e++)
                    acc[e] = 0.0;
                for (int64_t j0 = 0; j0 < Sk; j0 += RESET_BLOCK) {
                    const int64_t j1 = j0 + RESET_BLOCK < Sk ? j0 + RESET_BLOCK : Sk;
                    double s[RESET_BLOCK];
                    double mb = -INFINITY;
                    for (int64_t j = j0; j < j1; j++) {
                        if (km && !km[j]) {
                            s[j - j0] = -INFINITY;
                            continue;
                        }
                        s[j - j0] = scale * dot_qk(dtype_bits, q, k, row, kbase + (size_t)j, D);
                        if (s[j - j0] > mb)
                            mb = s[j - j0];
                    }
                    if (mb == -INFINITY)
                        continue;
                    const double m_new = mb > m ? mb : m;
                    const double alpha = exp(m - m_new);
                    /* BUG: the running sum is re-initialised per key block (copied from the per-block
                     * partial-sum code) instead of rescaled and carried: l should be l * alpha. The
                     * accumulator is carried correctly, so a row spanning more than one block is divided
                     * by the last block's sum only. */
                    l = 0.0;
                    for (int64_t e = 0; e < Dv; e++)
                        acc[e] *= alpha;
                    for (int64_t j = j0; j < j1; j++) {
                        if (s[j - j0] == -INFINITY)
                            continue;
                        const double pj = exp(s[j - j0] - m_new);
                        l += pj;
                        const size_t vrow = (kbase + (size_t)j) * (size_t)Dv;
                        for (int64_t e = 0; e < Dv; e++)
                            acc[e] += pj * ld(v, dtype_bits, vrow + (size_t)e);
                    }
                    m = m_new;
                }
                const double inv = l > 0.0 ? 1.0 / l : 0.0;
                for (int64_t e = 0; e < Dv; e++)
                    st(out, dtype_bits, row * (size_t)Dv + (size_t)e, acc[e] * inv);
            }
        }
    free(acc);
    return 0;
}

#define WIDE_MAX_D 64

int attn_segfault_on_wide(int dtype_bits, const void *q, const void *k, const void *v,
                          const unsigned char *keep, const int64_t shape[7], double scale, void *out,
                          void *weights)
{
    if (dtype_bits != 32 && dtype_bits != 64)
        return 2;
    int rc = check_shape(shape);
    if (rc)
        return rc;
    SHAPE_VARS;
    double qbuf[WIDE_MAX_D];
    /* BUG: the query row is staged in a fixed stack buffer sized for D <= 64; the "wide head" path that was
     * meant to malloc one was never written, so for D > 64 the scratch pointer stays NULL and the copy below
     * dereferences it. (volatile so the compiler keeps the plain NULL store rather than folding it.) */
    double *volatile qrow_scratch = D <= WIDE_MAX_D ? qbuf : NULL;
    ALLOC_ROW_BUFFERS
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Hq; h++) {
            const size_t kbase = (size_t)((b * Hkv + h / group) * Sk);
            for (int64_t i = 0; i < Sq; i++) {
                const size_t row = (size_t)((b * Hq + h) * Sq + i);
                const unsigned char *km = keep ? keep + row * (size_t)Sk : NULL;
                double *qr = qrow_scratch;
                for (int64_t d = 0; d < D; d++)
                    qr[d] = ld(q, dtype_bits, row * (size_t)D + (size_t)d);
                double m = -INFINITY, l = 0.0;
                for (int64_t j = 0; j < Sk; j++) {
                    if (km && !km[j]) {
                        p[j] = -INFINITY;
                        continue;
                    }
                    double dot = 0.0;
                    for (int64_t d = 0; d < D; d++)
                        dot += qr[d] * ld(k, dtype_bits, (kbase + (size_t)j) * (size_t)D + (size_t)d);
                    p[j] = scale * dot;
                    if (p[j] > m)
                        m = p[j];
                }
                for (int64_t j = 0; j < Sk; j++) {
                    p[j] = p[j] == -INFINITY ? 0.0 : exp(p[j] - m);
                    l += p[j];
                }
                finish_row(dtype_bits, v, row, kbase, Sk, Dv, p, l, acc, out, weights);
            }
        }
    free(p);
    free(acc);
    return 0;
}

int attn_error_code(int dtype_bits, const void *q, const void *k, const void *v, const unsigned char *keep,
                    const int64_t shape[7], double scale, void *out, void *weights)
{
    if (dtype_bits != 32 && dtype_bits != 64)
        return 2;
    int rc = check_shape(shape);
    if (rc)
        return rc;
    /* BUG: a leftover "masks not implemented yet" guard: any call with a keep mask fails with code 7. */
    if (keep != NULL)
        return 7;
    SHAPE_VARS;
    ALLOC_ROW_BUFFERS
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Hq; h++) {
            const size_t kbase = (size_t)((b * Hkv + h / group) * Sk);
            for (int64_t i = 0; i < Sq; i++) {
                const size_t row = (size_t)((b * Hq + h) * Sq + i);
                double m = -INFINITY, l = 0.0;
                for (int64_t j = 0; j < Sk; j++) {
                    p[j] = scale * dot_qk(dtype_bits, q, k, row, kbase + (size_t)j, D);
                    if (p[j] > m)
                        m = p[j];
                }
                for (int64_t j = 0; j < Sk; j++) {
                    p[j] = exp(p[j] - m);
                    l += p[j];
                }
                finish_row(dtype_bits, v, row, kbase, Sk, Dv, p, l, acc, out, weights);
            }
        }
    free(p);
    free(acc);
    return 0;
}
