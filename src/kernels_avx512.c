/*
 * kernels_avx512.c - the LayerNorm/RMSNorm kernel table for AVX-512 (F, BW,
 * VL, DQ): 512-bit vectors, 16 float32 or 8 float64 lanes, masked loads and
 * stores for row tails (fault free on masked lanes, so no scalar tail loop
 * and no access past the row).  The walks, their algorithm and numerics are
 * described in simd_stamp.h and the walk_*.h it includes; this file only
 * sets the target and stamps vocabulary x walks once per dtype.
 *
 * float16 and bfloat16 run the float32 kernels on 16 elements widened in
 * registers (vcvtph2ps; a shift for bfloat16) and rounded once on store
 * (vcvtps2ph; integer round-to-nearest-even for bfloat16 here, the
 * AVX512_BF16 instruction in kernels_avx512_bf16.c).
 *
 * Only this file (and kernels_avx512_bf16.c) is compiled for AVX-512:
 * setup.py gives it -mavx512f -mavx512bw -mavx512vl -mavx512dq (with AVX2,
 * FMA and F16C), the rest of the extension stays baseline x86-64, and
 * dispatch.c calls in here only when cpuid and XGETBV say the CPU and OS
 * support it.
 */
#include "fastnorm_kernels.h"

#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || \
    !defined(__AVX512DQ__) || !defined(__FMA__)
#error "kernels_avx512.c is built with -mavx512f -mavx512bw -mavx512vl -mavx512dq (setup.py)"
#endif
#include <immintrin.h>

#define FN_ISA avx512

#include "dtype_f32.h"
#include "simd_avx512_f32.h"
#include "simd_stamp.h"

#include "dtype_f16.h"
#include "simd_avx512_f32.h"
#include "simd_half_f16.h"
#include "simd_stamp.h"

#include "dtype_bf16.h"
#include "simd_avx512_f32.h"
#include "simd_half_bf16.h"
#include "simd_stamp.h"

/* float16 and bfloat16 inputs with float32 outputs (simd_wide_out.h) */
#include "dtype_f16.h"
#include "simd_avx512_f32.h"
#include "simd_half_f16.h"
#define FN_WIDE_OUT_SFX f16_f32
#include "simd_wide_out.h"
#include "simd_stamp.h"

#include "dtype_bf16.h"
#include "simd_avx512_f32.h"
#include "simd_half_bf16.h"
#define FN_WIDE_OUT_SFX bf16_f32
#include "simd_wide_out.h"
#include "simd_stamp.h"

#include "dtype_f64.h"
#include "simd_avx512_f64.h"
#include "simd_stamp.h"

const fn_kernel_table fn_kernels_avx512 = {
    "avx512",
    FN_TABLE_ROW(layer_norm_rows, avx512),
    FN_TABLE_ROW(rms_norm_rows, avx512),
    FN_TABLE_ROW(layer_norm_backward_rows, avx512),
    FN_TABLE_ROW(rms_norm_backward_rows, avx512),
    FN_TABLE_WIDE_ROW(layer_norm_rows, avx512),
    FN_TABLE_WIDE_ROW(rms_norm_rows, avx512),
    FN_TABLE_QUANT_ROW(avx512),
    FN_TABLE_ROW(group_norm, avx512),
    FN_TABLE_ROW(group_norm_backward, avx512),
};
