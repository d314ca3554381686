/*
 * kernels_avx2.c - LayerNorm/RMSNorm kernels for AVX2 + FMA.
 *
 * 256-bit vectors: 8 float32 or 4 float64 lanes.  Row tails use
 * vmaskmov loads and stores, which do not fault on masked-out lanes, with
 * the lane masks read from a small table.  The algorithm and its numerics
 * are described in norm_simd_body.h; this file only supplies the vector
 * vocabulary, and only it is compiled for AVX2 (target pragma).
 */
#include "fastnorm_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx2,fma")
#include <immintrin.h>
#include <stdint.h>

#define VSFENCE() _mm_sfence()
#define FN_ISA avx2

/* first n lanes on: load 8 (or 4) entries starting at [8 - n] ([4 - n]) */
static const int32_t fn_avx2_mask32[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                           0, 0, 0, 0, 0, 0, 0, 0};
static const int64_t fn_avx2_mask64[8] = {-1, -1, -1, -1, 0, 0, 0, 0};

/* lane sums in double: float32 lanes are widened first */
static inline double fn_avx2_hsum_pd(__m256d v)
{
    __m128d a = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(a, _mm_unpackhi_pd(a, a)));
}

static inline void fn_avx2_add_to_double_ps(double *p, __m256 v)
{
    _mm256_storeu_pd(p, _mm256_add_pd(_mm256_loadu_pd(p),
                                      _mm256_cvtps_pd(_mm256_castps256_ps128(v))));
    _mm256_storeu_pd(p + 4, _mm256_add_pd(_mm256_loadu_pd(p + 4),
                                          _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
}

static inline double fn_avx2_hsum_ps(__m256 v)
{
    return fn_avx2_hsum_pd(_mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                                         _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
}

#define FN_T float
#define FN_SFX f32
#define V __m256
#define VL 8
#define FN_MASK(n) _mm256_loadu_si256((const __m256i *)(fn_avx2_mask32 + 8 - (n)))
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps((p), (v))
#define VLOAD_PART(p, n) _mm256_maskload_ps((p), FN_MASK(n))
#define VSTORE_PART(p, v, n) _mm256_maskstore_ps((p), FN_MASK(n), (v))
#define VZERO_FROM(v, n) _mm256_and_ps((v), _mm256_castsi256_ps(FN_MASK(n)))
#define VSET1(s) _mm256_set1_ps(s)
#define VZERO _mm256_setzero_ps()
#define VADD _mm256_add_ps
#define VSUB _mm256_sub_ps
#define VMUL _mm256_mul_ps
#define VFMA _mm256_fmadd_ps
#define VMIN _mm256_min_ps
#define VMAX _mm256_max_ps
#define VSTREAM(p, v) _mm256_stream_ps((p), (v))
#define VDIV _mm256_div_ps
#define VHSUM_D fn_avx2_hsum_ps
#define VADD_TO_DOUBLE fn_avx2_add_to_double_ps
#define VSQRT _mm256_sqrt_ps
#define VANY_NONFINITE(v) _mm256_movemask_ps(_mm256_cmp_ps(_mm256_sub_ps((v), (v)), _mm256_setzero_ps(), _CMP_NEQ_UQ))
#define VZERO_UNLESS_POS(v, d) _mm256_and_ps((v), _mm256_cmp_ps((d), _mm256_setzero_ps(), _CMP_GT_OQ))
#include "norm_simd_body.h"
#undef FN_MASK
#undef FN_T
#undef FN_SFX

#define FN_T double
#define FN_SFX f64
#define V __m256d
#define VL 4
#define FN_MASK(n) _mm256_loadu_si256((const __m256i *)(fn_avx2_mask64 + 4 - (n)))
#define VLOAD(p) _mm256_loadu_pd(p)
#define VSTORE(p, v) _mm256_storeu_pd((p), (v))
#define VLOAD_PART(p, n) _mm256_maskload_pd((p), FN_MASK(n))
#define VSTORE_PART(p, v, n) _mm256_maskstore_pd((p), FN_MASK(n), (v))
#define VZERO_FROM(v, n) _mm256_and_pd((v), _mm256_castsi256_pd(FN_MASK(n)))
#define VSET1(s) _mm256_set1_pd(s)
#define VZERO _mm256_setzero_pd()
#define VADD _mm256_add_pd
#define VSUB _mm256_sub_pd
#define VMUL _mm256_mul_pd
#define VFMA _mm256_fmadd_pd
#define VMIN _mm256_min_pd
#define VMAX _mm256_max_pd
#define VSTREAM(p, v) _mm256_stream_pd((p), (v))
#define VDIV _mm256_div_pd
#define VHSUM_D fn_avx2_hsum_pd
#define VADD_TO_DOUBLE(p, v) _mm256_storeu_pd((p), _mm256_add_pd(_mm256_loadu_pd(p), (v)))
#define VSQRT _mm256_sqrt_pd
#define VANY_NONFINITE(v) _mm256_movemask_pd(_mm256_cmp_pd(_mm256_sub_pd((v), (v)), _mm256_setzero_pd(), _CMP_NEQ_UQ))
#define VZERO_UNLESS_POS(v, d) _mm256_and_pd((v), _mm256_cmp_pd((d), _mm256_setzero_pd(), _CMP_GT_OQ))
#include "norm_simd_body.h"
#undef FN_MASK
#undef FN_T
#undef FN_SFX

const fn_kernel_table fn_kernels_avx2 = {
    "avx2",
    {layer_norm_rows_f32_avx2, layer_norm_rows_f64_avx2},
    {rms_norm_rows_f32_avx2, rms_norm_rows_f64_avx2},
    {layer_norm_backward_rows_f32_avx2, layer_norm_backward_rows_f64_avx2},
    {rms_norm_backward_rows_f32_avx2, rms_norm_backward_rows_f64_avx2},
};
#endif
