/*
 * kernels_avx512.c - LayerNorm/RMSNorm kernels for AVX-512 (F, BW, VL, DQ).
 *
 * 512-bit vectors: 16 float32 or 8 float64 lanes.  Row tails use masked
 * loads and stores (fault-free on masked lanes), so no scalar tail loop and
 * no access past the row.  The algorithm and its numerics are described in
 * norm_simd_body.h; this file only supplies the vector vocabulary.
 *
 * Only this file is compiled for AVX-512 (through the target pragma); the
 * rest of the extension stays baseline x86-64 and dispatch.c calls in here
 * only when cpuid and XGETBV say the CPU and OS support it.
 */
#include "fastnorm_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
#include <immintrin.h>

#define VSFENCE() _mm_sfence()
#define FN_ISA avx512

/* lane sums in double: float32 lanes are widened first */
static inline double fn_avx512_hsum_ps(__m512 v)
{
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    __m512d hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1));
    return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}

static inline void fn_avx512_add_to_double_ps(double *p, __m512 v)
{
    _mm512_storeu_pd(p, _mm512_add_pd(_mm512_loadu_pd(p),
                                      _mm512_cvtps_pd(_mm512_castps512_ps256(v))));
    _mm512_storeu_pd(p + 8, _mm512_add_pd(_mm512_loadu_pd(p + 8),
                                          _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1))));
}

#define FN_T float
#define FN_SFX f32
#define V __m512
#define VL 16
#define FN_MASK(n) ((__mmask16)((1u << (n)) - 1u))
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps((p), (v))
#define VLOAD_PART(p, n) _mm512_maskz_loadu_ps(FN_MASK(n), (p))
#define VSTORE_PART(p, v, n) _mm512_mask_storeu_ps((p), FN_MASK(n), (v))
#define VZERO_FROM(v, n) _mm512_maskz_mov_ps(FN_MASK(n), (v))
#define VSET1(s) _mm512_set1_ps(s)
#define VZERO _mm512_setzero_ps()
#define VADD _mm512_add_ps
#define VSUB _mm512_sub_ps
#define VMUL _mm512_mul_ps
#define VFMA _mm512_fmadd_ps
#define VMIN _mm512_min_ps
#define VMAX _mm512_max_ps
#define VSTREAM(p, v) _mm512_stream_ps((p), (v))
#define VDIV _mm512_div_ps
#define VHSUM_D fn_avx512_hsum_ps
#define VADD_TO_DOUBLE fn_avx512_add_to_double_ps
#define VSQRT _mm512_sqrt_ps
#define VANY_NONFINITE(v) _mm512_cmp_ps_mask(_mm512_sub_ps((v), (v)), _mm512_setzero_ps(), _CMP_NEQ_UQ)
#define VZERO_UNLESS_POS(v, d) _mm512_maskz_mov_ps(_mm512_cmp_ps_mask((d), _mm512_setzero_ps(), _CMP_GT_OQ), (v))
#include "norm_simd_body.h"
#undef FN_MASK
#undef FN_T
#undef FN_SFX

#define FN_T double
#define FN_SFX f64
#define V __m512d
#define VL 8
#define FN_MASK(n) ((__mmask8)((1u << (n)) - 1u))
#define VLOAD(p) _mm512_loadu_pd(p)
#define VSTORE(p, v) _mm512_storeu_pd((p), (v))
#define VLOAD_PART(p, n) _mm512_maskz_loadu_pd(FN_MASK(n), (p))
#define VSTORE_PART(p, v, n) _mm512_mask_storeu_pd((p), FN_MASK(n), (v))
#define VZERO_FROM(v, n) _mm512_maskz_mov_pd(FN_MASK(n), (v))
#define VSET1(s) _mm512_set1_pd(s)
#define VZERO _mm512_setzero_pd()
#define VADD _mm512_add_pd
#define VSUB _mm512_sub_pd
#define VMUL _mm512_mul_pd
#define VFMA _mm512_fmadd_pd
#define VMIN _mm512_min_pd
#define VMAX _mm512_max_pd
#define VSTREAM(p, v) _mm512_stream_pd((p), (v))
#define VDIV _mm512_div_pd
#define VHSUM_D _mm512_reduce_add_pd
#define VADD_TO_DOUBLE(p, v) _mm512_storeu_pd((p), _mm512_add_pd(_mm512_loadu_pd(p), (v)))
#define VSQRT _mm512_sqrt_pd
#define VANY_NONFINITE(v) _mm512_cmp_pd_mask(_mm512_sub_pd((v), (v)), _mm512_setzero_pd(), _CMP_NEQ_UQ)
#define VZERO_UNLESS_POS(v, d) _mm512_maskz_mov_pd(_mm512_cmp_pd_mask((d), _mm512_setzero_pd(), _CMP_GT_OQ), (v))
#include "norm_simd_body.h"
#undef FN_MASK
#undef FN_T
#undef FN_SFX

const fn_kernel_table fn_kernels_avx512 = {
    "avx512",
    {layer_norm_rows_f32_avx512, layer_norm_rows_f64_avx512},
    {rms_norm_rows_f32_avx512, rms_norm_rows_f64_avx512},
    {layer_norm_backward_rows_f32_avx512, layer_norm_backward_rows_f64_avx512},
    {rms_norm_backward_rows_f32_avx512, rms_norm_backward_rows_f64_avx512},
};
#endif
