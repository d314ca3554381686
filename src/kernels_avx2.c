/*
 * kernels_avx2.c - the LayerNorm/RMSNorm kernel table for AVX2 + FMA (and
 * F16C): 256-bit vectors, 8 float32 or 4 float64 lanes, vmaskmov loads and
 * stores for row tails, which do not fault on masked-out lanes.  The walks,
 * their algorithm and numerics are described in simd_stamp.h and the
 * walk_*.h it includes; this file only sets the target and stamps
 * vocabulary x walks once per dtype.
 *
 * float16 and bfloat16 run the float32 kernels on 8 elements widened in
 * registers (F16C vcvtph2ps; a shift for bfloat16) and rounded once on
 * store (vcvtps2ph; integer round-to-nearest-even for bfloat16).
 *
 * Only this file is compiled for AVX2: setup.py gives it -mavx2 -mfma -mf16c
 * (GCC and clang alike), and every other file stays baseline x86-64.
 * dispatch.c calls in here only when cpuid and XGETBV say the CPU and OS
 * support it.
 */
#include "fastnorm_kernels.h"

#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "kernels_avx2.c is built with -mavx2 -mfma -mf16c (setup.py's kernel sets)"
#endif
#include <immintrin.h>

#define FN_ISA avx2

#include "dtype_f32.h"
#include "simd_avx2_f32.h"
#include "simd_stamp.h"

#include "dtype_f16.h"
#include "simd_avx2_f32.h"
#include "simd_half_f16.h"
#include "simd_stamp.h"

#include "dtype_bf16.h"
#include "simd_avx2_f32.h"
#include "simd_half_bf16.h"
#include "simd_stamp.h"

/* float16 and bfloat16 inputs with float32 outputs (simd_wide_out.h) */
#include "dtype_f16.h"
#include "simd_avx2_f32.h"
#include "simd_half_f16.h"
#define FN_WIDE_OUT_SFX f16_f32
#include "simd_wide_out.h"
#include "simd_stamp.h"

#include "dtype_bf16.h"
#include "simd_avx2_f32.h"
#include "simd_half_bf16.h"
#define FN_WIDE_OUT_SFX bf16_f32
#include "simd_wide_out.h"
#include "simd_stamp.h"

#include "dtype_f64.h"
#include "simd_avx2_f64.h"
#include "simd_stamp.h"

const fn_kernel_table fn_kernels_avx2 = {
    "avx2",
    FN_TABLE_ROW(layer_norm_rows, avx2),
    FN_TABLE_ROW(rms_norm_rows, avx2),
    FN_TABLE_ROW(layer_norm_backward_rows, avx2),
    FN_TABLE_ROW(rms_norm_backward_rows, avx2),
    FN_TABLE_WIDE_ROW(layer_norm_rows, avx2),
    FN_TABLE_WIDE_ROW(rms_norm_rows, avx2),
    FN_TABLE_QUANT_ROW(avx2),
    FN_TABLE_ROW(group_norm, avx2),
    FN_TABLE_ROW(group_norm_backward, avx2),
};
