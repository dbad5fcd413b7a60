// A minimal correct attention kernel of refimpl's C ABI (refimpl_attention.h), in C++: a starting point.
// Build:  g++ -O2 -shared -fPIC -o libattn.so attn.cpp
// Check:  refimpl check --target c:./libattn.so:attn
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>
#include "refimpl_attention.h"

template <typename T>
static int kernel(const T *q, const T *k, const T *v, const unsigned char *keep, const int64_t *shape,
                  double scale, T *out, T *weights) {
    const int64_t B = shape[0], Hq = shape[1], Hkv = shape[2], Sq = shape[3], Sk = shape[4], D = shape[5],
                  Dv = shape[6];
    if (Hkv <= 0 || Hq % Hkv != 0) return 3;
    std::vector<double> p(static_cast<size_t>(Sk > 0 ? Sk : 1));
    for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < Hq; ++h) {
            const int64_t g = h / (Hq / Hkv);                       // the kv head of query head h
            const T *kh = k + (b * Hkv + g) * Sk * D, *vh = v + (b * Hkv + g) * Sk * Dv;
            for (int64_t i = 0; i < Sq; ++i) {
                const int64_t row = (b * Hq + h) * Sq + i;
                const T *qi = q + row * D;
                double m = -std::numeric_limits<double>::infinity(), z = 0.0;
                for (int64_t j = 0; j < Sk; ++j) {
                    double s = 0.0;
                    for (int64_t d = 0; d < D; ++d) s += double(qi[d]) * double(kh[j * D + d]);
                    p[j] = (keep && !keep[row * Sk + j]) ? -std::numeric_limits<double>::infinity() : s * scale;
                    m = std::max(m, p[j]);
                }
                for (int64_t j = 0; j < Sk; ++j) { p[j] = std::isinf(m) ? 0.0 : std::exp(p[j] - m); z += p[j]; }
                for (int64_t e = 0; e < Dv; ++e) {
                    double acc = 0.0;
                    for (int64_t j = 0; j < Sk; ++j) acc += p[j] * double(vh[j * Dv + e]);
                    out[row * Dv + e] = T(z > 0 ? acc / z : 0.0);   // a row with no key: zeros
                }
                if (weights)
                    for (int64_t j = 0; j < Sk; ++j) weights[row * Sk + j] = T(z > 0 ? p[j] / z : 0.0);
            }
        }
    return 0;
}

extern "C" int attn(int dtype_bits, const void *q, const void *k, const void *v, const unsigned char *keep,
                    const int64_t shape[7], double scale, void *out, void *weights) {
    if (dtype_bits == 64)
        return kernel(static_cast<const double *>(q), static_cast<const double *>(k), static_cast<const double *>(v),
                      keep, shape, scale, static_cast<double *>(out), static_cast<double *>(weights));
    if (dtype_bits == 32)
        return kernel(static_cast<const float *>(q), static_cast<const float *>(k), static_cast<const float *>(v),
                      keep, shape, scale, static_cast<float *>(out), static_cast<float *>(weights));
    return 2;                                                     // a dtype this kernel does not take
}
