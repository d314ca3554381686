/*
 * simd_avx512_bf16.h - bfloat16 element storage for the AVX-512 kernels
 * (see norm_simd_body.h), for one stamp.  Widening is a shift.  y is
 * rounded by FN_BF16_ROUND_Y, which the including file defines: the integer
 * round-to-nearest-even, or vcvtneps2bf16 where AVX512_BF16 is present.  h,
 * the fused residual sum, always takes the integer rounding, so that it
 * equals NumPy's x + residual bit for bit (the instruction flushes
 * subnormals).  No include guard: each stamp includes it again.
 */
#include "dtype_bf16.h"

#define XLOAD(p) fn_avx512_widen_bf16(FN_LOAD16(p))
#define XLOAD_PART(p, n) fn_avx512_widen_bf16(FN_LOAD16_PART(p, n))
#define XSTORE(p, v) FN_STORE16(p, FN_BF16_ROUND_Y(v))
#define XSTORE_PART(p, v, n) FN_STORE16_PART(p, FN_BF16_ROUND_Y(v), n)
#define XSTREAM(p, v) FN_STREAM16(p, FN_BF16_ROUND_Y(v))
#define XROUND(v) fn_avx512_widen_bf16(fn_avx512_narrow_bf16(v))
#define XSTORE_H(p, v) FN_STORE16(p, fn_avx512_narrow_bf16(v))
#define XSTORE_PART_H(p, v, n) FN_STORE16_PART(p, fn_avx512_narrow_bf16(v), n)
#define XSTREAM_H(p, v) FN_STREAM16(p, fn_avx512_narrow_bf16(v))
