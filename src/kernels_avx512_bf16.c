/*
 * kernels_avx512_bf16.c - bfloat16 kernels for CPUs with AVX512_BF16.
 *
 * The same float32 AVX-512 kernels as kernels_avx512.c (norm_simd_body.h),
 * with one difference: each vector of 16 results is rounded to bfloat16 by
 * vcvtneps2bf16, one instruction, instead of the five-instruction integer
 * rounding.  Both round to nearest even and quiet NaNs; the instruction
 * flushes results below float32's normal range (|y| < 2^-126) to zero,
 * where the integer path keeps them subnormal.  Widening is a shift in both.
 * The fused residual sum h keeps the integer rounding, so that it equals
 * NumPy's x + residual bit for bit.
 *
 * The table this file exports is the AVX-512 table with its bfloat16
 * entries replaced; dispatch.c picks it only when cpuid reports AVX512_BF16.
 */
#include "fastnorm_kernels.h"

#if FN_HAVE_AVX512BF16
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma")
#include <immintrin.h>
#include "half_convert.h"

#define VSFENCE() _mm_sfence()
#define FN_ISA avx512bf16
#include "simd_avx512_f32.h"

static inline __m256i fn_avx512_narrow_bf16_hw(__m512 v)
{
    return (__m256i)_mm512_cvtneps_pbh(v);
}

#define FN_T float
#define FN_S uint16_t
#define FN_EXACT_MEAN 1
#define FN_SFX bf16
#define FN_LD(v) fn_bf16_to_f32(v)
#define FN_ST(t) fn_f32_to_bf16(t)
#define XLOAD(p) fn_avx512_widen_bf16(FN_LOAD16(p))
#define XLOAD_PART(p, n) fn_avx512_widen_bf16(FN_LOAD16_PART(p, n))
#define XSTORE(p, v) FN_STORE16(p, fn_avx512_narrow_bf16_hw(v))
#define XSTORE_PART(p, v, n) FN_STORE16_PART(p, fn_avx512_narrow_bf16_hw(v), n)
#define XSTREAM(p, v) FN_STREAM16(p, fn_avx512_narrow_bf16_hw(v))
/* h = x + residual must round exactly as NumPy does, subnormals included:
 * the sum is rounded (for the statistics) and stored with the integer
 * rounding; only y uses the instruction */
#define XROUND(v) fn_avx512_widen_bf16(fn_avx512_narrow_bf16(v))
#define XSTORE_H(p, v) FN_STORE16(p, fn_avx512_narrow_bf16(v))
#define XSTORE_PART_H(p, v, n) FN_STORE16_PART(p, fn_avx512_narrow_bf16(v), n)
#define XSTREAM_H(p, v) FN_STREAM16(p, fn_avx512_narrow_bf16(v))
#include "norm_simd_body.h"
#include "simd_vocab_undef.h"

#define FN_DECLARE_AVX512(sfx) \
    void layer_norm_rows_##sfx##_avx512(const fn_rows *block); \
    void rms_norm_rows_##sfx##_avx512(const fn_rows *block); \
    void layer_norm_backward_rows_##sfx##_avx512(const fn_rows_bwd *block); \
    void rms_norm_backward_rows_##sfx##_avx512(const fn_rows_bwd *block);
FN_DECLARE_AVX512(f32)
FN_DECLARE_AVX512(f64)
FN_DECLARE_AVX512(f16)

#define FN_AVX512_ROW(base) \
    {base##_f32_avx512, base##_f64_avx512, base##_f16_avx512, base##_bf16_avx512bf16}

const fn_kernel_table fn_kernels_avx512_bf16 = {
    "avx512_bf16",
    FN_AVX512_ROW(layer_norm_rows),
    FN_AVX512_ROW(rms_norm_rows),
    FN_AVX512_ROW(layer_norm_backward_rows),
    FN_AVX512_ROW(rms_norm_backward_rows),
};
#endif
