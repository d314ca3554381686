/*
 * kernels_avx512_bf16.c - the bfloat16 kernels for CPUs with AVX512_BF16,
 * and their table.
 *
 * The same float32 AVX-512 walks as kernels_avx512.c (simd_stamp.h), with
 * one difference: each vector of 16 results is rounded to bfloat16 by
 * vcvtneps2bf16, one instruction, instead of the five-instruction integer
 * rounding.  Both round to nearest even and quiet NaNs; the instruction
 * flushes results below float32's normal range (|y| < 2^-126) to zero,
 * where the integer path keeps them subnormal.  Widening is a shift in both.
 * The fused residual sum h keeps the integer rounding, so that it equals
 * NumPy's x + residual bit for bit (simd_half_bf16.h).
 *
 * The table this file exports is the AVX-512 table with its bfloat16
 * entries replaced; dispatch.c picks it only when cpuid reports AVX512_BF16.
 * setup.py compiles this file with kernels_avx512.c's flags and
 * -mavx512bf16, and leaves it out (FN_HAVE_AVX512BF16=0) when the compiler
 * does not take that flag.
 */
#include "fastnorm_kernels.h"

#if !defined(__AVX512BF16__) || !defined(__AVX512F__) || !defined(__AVX512BW__) || \
    !defined(__AVX512VL__) || !defined(__AVX512DQ__) || !defined(__FMA__)
#error "kernels_avx512_bf16.c is built with the AVX-512 flags and -mavx512bf16 (setup.py)"
#endif
#include <immintrin.h>

#define FN_ISA avx512bf16

static inline __m256i fn_avx512bf16_narrow_bf16(__m512 v)
{
    return (__m256i)_mm512_cvtneps_pbh(v);
}

#include "dtype_bf16.h"
#include "simd_avx512_f32.h"
#define VNARROW_BF16_Y fn_avx512bf16_narrow_bf16
#include "simd_half_bf16.h"
#include "simd_stamp.h"

FN_DECLARE_KERNELS(f32, avx512)
FN_DECLARE_KERNELS(f64, avx512)
FN_DECLARE_KERNELS(f16, avx512)
FN_DECLARE_WIDE_KERNELS(f16_f32, avx512)
FN_DECLARE_WIDE_KERNELS(bf16_f32, avx512)
void quantize_rows_f32_avx512(const fn_quant *block);
void quantize_rows_f64_avx512(const fn_quant *block);
FN_DECLARE_GROUP_KERNELS(f32, avx512)
FN_DECLARE_GROUP_KERNELS(f64, avx512)
FN_DECLARE_GROUP_KERNELS(f16, avx512)

#define FN_AVX512_ROW(base) \
    {base##_f32_avx512, base##_f64_avx512, base##_f16_avx512, base##_bf16_avx512bf16}

const fn_kernel_table fn_kernels_avx512_bf16 = {
    "avx512_bf16",
    FN_AVX512_ROW(layer_norm_rows),
    FN_AVX512_ROW(rms_norm_rows),
    FN_AVX512_ROW(layer_norm_backward_rows),
    FN_AVX512_ROW(rms_norm_backward_rows),
    /* (a float32 y is not rounded: the AVX-512 kernels' own) */
    FN_TABLE_WIDE_ROW(layer_norm_rows, avx512),
    FN_TABLE_WIDE_ROW(rms_norm_rows, avx512),
    FN_TABLE_QUANT_ROW(avx512),
    FN_AVX512_ROW(group_norm),
    FN_AVX512_ROW(group_norm_backward),
};
