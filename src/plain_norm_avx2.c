/*
 * plain_norm_avx2.c - the yardstick's loops (see plain_norm.h), AVX2 + FMA,
 * compiled with -mavx2 -mfma into fastnorm._testing only (never the core).
 *
 * RMSNorm: one pass of x*x in four float32 FMA chains, then y = x * s * w.
 * LayerNorm: one pass of d = x - x[0] summed in two chains of d and two of
 * d*d, then y = fma(d, s, -mean * s) * w + b.  float32 throughout; the row
 * totals in double.  The bfloat16 variants differ only in load and store.
 */
#include "plain_norm.h"

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

static double plain_hsum(__m256 v)
{
    float lanes[8];
    double s = 0.0;
    _mm256_storeu_ps(lanes, v);
    for (int i = 0; i < 8; i++) s += lanes[i];
    return s;
}

static inline __m256 plain_load(const void *p, ptrdiff_t i, int bf16)
{
    if (!bf16) return _mm256_loadu_ps((const float *)p + i);
    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static inline void plain_store(void *p, ptrdiff_t i, __m256 v, int bf16)
{
    if (!bf16) {
        _mm256_storeu_ps((float *)p + i, v);
        return;
    }
    __m256i u = _mm256_castps_si256(v);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    u = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd));
    u = _mm256_srli_epi32(u, 16);
    const __m128i packed =
        _mm_packus_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
    _mm_storeu_si128((__m128i *)((uint16_t *)p + i), packed);
}

static inline float plain_first(const void *p, int bf16)
{
    if (!bf16) return *(const float *)p;
    uint32_t u = (uint32_t)(*(const uint16_t *)p) << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* one copy of each loop per dtype: bf16 is a constant after inlining */
static inline __attribute__((always_inline)) void plain_rms_rows(const void *x, void *y,
                                                                 const float *w, ptrdiff_t rows,
                                                                 ptrdiff_t n, double eps, int bf16)
{
    const size_t es = bf16 ? 2 : 4;
    for (ptrdiff_t r = 0; r < rows; r++) {
        const char *xr = (const char *)x + (size_t)(r * n) * es;
        char *yr = (char *)y + (size_t)(r * n) * es;
        __m256 q0 = _mm256_setzero_ps(), q1 = q0, q2 = q0, q3 = q0;
        for (ptrdiff_t i = 0; i < n; i += 32) {
            const __m256 a = plain_load(xr, i, bf16), b = plain_load(xr, i + 8, bf16);
            const __m256 c = plain_load(xr, i + 16, bf16), d = plain_load(xr, i + 24, bf16);
            q0 = _mm256_fmadd_ps(a, a, q0);
            q1 = _mm256_fmadd_ps(b, b, q1);
            q2 = _mm256_fmadd_ps(c, c, q2);
            q3 = _mm256_fmadd_ps(d, d, q3);
        }
        const double ss = plain_hsum(_mm256_add_ps(_mm256_add_ps(q0, q1), _mm256_add_ps(q2, q3)));
        const __m256 s = _mm256_set1_ps((float)(1.0 / sqrt(ss / (double)n + eps)));
        for (ptrdiff_t i = 0; i < n; i += 8)
            plain_store(
                yr, i,
                _mm256_mul_ps(_mm256_mul_ps(plain_load(xr, i, bf16), s), _mm256_loadu_ps(w + i)),
                bf16);
    }
}

static inline __attribute__((always_inline)) void plain_ln_rows(const void *x, void *y,
                                                                const float *w, const float *b,
                                                                ptrdiff_t rows, ptrdiff_t n,
                                                                double eps, int bf16)
{
    const size_t es = bf16 ? 2 : 4;
    for (ptrdiff_t r = 0; r < rows; r++) {
        const char *xr = (const char *)x + (size_t)(r * n) * es;
        char *yr = (char *)y + (size_t)(r * n) * es;
        const __m256 p = _mm256_set1_ps(plain_first(xr, bf16));
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, q0 = s0, q1 = s0;
        for (ptrdiff_t i = 0; i < n; i += 16) {
            const __m256 d0 = _mm256_sub_ps(plain_load(xr, i, bf16), p);
            const __m256 d1 = _mm256_sub_ps(plain_load(xr, i + 8, bf16), p);
            s0 = _mm256_add_ps(s0, d0);
            s1 = _mm256_add_ps(s1, d1);
            q0 = _mm256_fmadd_ps(d0, d0, q0);
            q1 = _mm256_fmadd_ps(d1, d1, q1);
        }
        const double sum = plain_hsum(_mm256_add_ps(s0, s1));
        const double sq = plain_hsum(_mm256_add_ps(q0, q1));
        const double mean = sum / (double)n;
        double var = sq / (double)n - mean * mean;
        if (var < 0.0) var = 0.0;
        const double rstd = 1.0 / sqrt(var + eps);
        const __m256 s = _mm256_set1_ps((float)rstd), c = _mm256_set1_ps((float)(-mean * rstd));
        for (ptrdiff_t i = 0; i < n; i += 8) {
            const __m256 t = _mm256_fmadd_ps(_mm256_sub_ps(plain_load(xr, i, bf16), p), s, c);
            plain_store(yr, i, _mm256_fmadd_ps(t, _mm256_loadu_ps(w + i), _mm256_loadu_ps(b + i)),
                        bf16);
        }
    }
}

void fn_plain_layer_norm_avx2(const void *x, void *y, const float *w, const float *b,
                              ptrdiff_t rows, ptrdiff_t n, double eps, int dtype)
{
    if (dtype)
        plain_ln_rows(x, y, w, b, rows, n, eps, 1);
    else
        plain_ln_rows(x, y, w, b, rows, n, eps, 0);
}

void fn_plain_rms_norm_avx2(const void *x, void *y, const float *w, ptrdiff_t rows, ptrdiff_t n,
                            double eps, int dtype)
{
    if (dtype)
        plain_rms_rows(x, y, w, rows, n, eps, 1);
    else
        plain_rms_rows(x, y, w, rows, n, eps, 0);
}
