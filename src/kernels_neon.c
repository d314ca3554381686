/*
 * kernels_neon.c - the LayerNorm/RMSNorm kernel table for AArch64 Advanced
 * SIMD (NEON, "ASIMD"), which every AArch64 CPU has: baseline instructions
 * only, so the file needs no target flags, and this set runs anywhere an
 * aarch64 build runs (dispatch.c still asks the OS, as for every set).
 *
 * Algorithm: the same walks as the x86 sets, stamped from the same headers
 * (simd_stamp.h and the walk_*.h it includes, where the algorithm and its
 * numerics are described): pivot-shifted sums for LayerNorm (Welford in
 * the channels-first lanes), chunked sums of squares for RMSNorm, rows
 * finished in double, eps kept in double.
 *
 * Vectors are 256 bits made of two 128-bit registers (simd_neon_f32.h,
 * simd_neon_f64.h): 8 float32 or 4 float64 lanes, as on AVX2, so the walks
 * keep AVX2's chains, unrolling and order of accumulation, and the
 * results have AVX2's bits (the trade-off: tails go through a small
 * buffer, there being no masked loads).
 *
 * float16 and bfloat16 run the float32 kernels on 8 elements widened in
 * registers (FCVTL; a shift for bfloat16) and rounded once on store (FCVTN,
 * round to nearest even; integer round-to-nearest-even for bfloat16, the
 * same bits as the x86 integer path, never a truncation).  No FP16
 * arithmetic, BF16 or SVE instruction is used.
 *
 * Built only for aarch64 (setup.py's source plan); the x86 sets are not
 * built there.
 */
#include "fastnorm_kernels.h"

#if !FN_HAVE_NEON
#error "kernels_neon.c is built for little-endian AArch64 only (setup.py's source plan)"
#endif
#include <arm_neon.h>

#define FN_ISA neon

#include "dtype_f32.h"
#include "simd_neon_f32.h"
#include "simd_stamp.h"

#include "dtype_f16.h"
#include "simd_neon_f32.h"
#include "simd_half_f16.h"
#include "simd_stamp.h"

#include "dtype_bf16.h"
#include "simd_neon_f32.h"
#include "simd_half_bf16.h"
#include "simd_stamp.h"

/* float16 and bfloat16 inputs with float32 outputs (simd_wide_out.h) */
#include "dtype_f16.h"
#include "simd_neon_f32.h"
#include "simd_half_f16.h"
#define FN_WIDE_OUT_SFX f16_f32
#include "simd_wide_out.h"
#include "simd_stamp.h"

#include "dtype_bf16.h"
#include "simd_neon_f32.h"
#include "simd_half_bf16.h"
#define FN_WIDE_OUT_SFX bf16_f32
#include "simd_wide_out.h"
#include "simd_stamp.h"

#include "dtype_f64.h"
#include "simd_neon_f64.h"
#include "simd_stamp.h"

const fn_kernel_table fn_kernels_neon = {
    "neon",
    FN_TABLE_ROW(layer_norm_rows, neon),
    FN_TABLE_ROW(rms_norm_rows, neon),
    FN_TABLE_ROW(layer_norm_backward_rows, neon),
    FN_TABLE_ROW(rms_norm_backward_rows, neon),
    FN_TABLE_WIDE_ROW(layer_norm_rows, neon),
    FN_TABLE_WIDE_ROW(rms_norm_rows, neon),
    FN_TABLE_QUANT_ROW(neon),
    FN_TABLE_ROW(group_norm, neon),
    FN_TABLE_ROW(group_norm_backward, neon),
};
