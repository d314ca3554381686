/*
 * kernels_scalar.c - the portable kernel table (plain C99, any architecture,
 * any strides).  The body lives in walk_portable.h and is stamped out per
 * dtype, so the kernels cannot drift apart.  float16 and bfloat16 elements are widened to
 * float32 in software, computed on exactly like float32 input, and rounded
 * once (to nearest even) when stored.
 */
#include "fastnorm_kernels.h"

#define FN_ISA scalar

#include "dtype_f32.h"
#include "walk_portable.h"

/* float64's backward accumulates in long double (80-bit on x86-64) */
#include "dtype_f64.h"
#define FN_WIDE long double
#define FN_WIDE_SQRT sqrtl
#include "walk_portable.h"

#include "dtype_f16.h"
#include "walk_portable.h"

#include "dtype_bf16.h"
#include "walk_portable.h"

/* float16 and bfloat16 inputs with float32 outputs: the forward only (as
 * simd_wide_out.h makes the SIMD stamps) */
#include "dtype_f16.h"
#undef FN_SFX
#define FN_SFX f16_f32
#define FN_Y float
#define FN_STY(t) (t)
#define FN_FORWARD_ONLY 1
#include "walk_portable.h"

#include "dtype_bf16.h"
#undef FN_SFX
#define FN_SFX bf16_f32
#define FN_Y float
#define FN_STY(t) (t)
#define FN_FORWARD_ONLY 1
#include "walk_portable.h"

/* the quantizer (plain C already) */
#include "dtype_f32.h"
#include "quantize_rows.h"
#include "simd_vocab_undef.h"
#include "dtype_f64.h"
#include "quantize_rows.h"
#include "simd_vocab_undef.h"

const fn_kernel_table fn_kernels_scalar = {
    "scalar",
    FN_TABLE_ROW(layer_norm_rows, scalar),
    FN_TABLE_ROW(rms_norm_rows, scalar),
    FN_TABLE_ROW(layer_norm_backward_rows, scalar),
    FN_TABLE_ROW(rms_norm_backward_rows, scalar),
    FN_TABLE_WIDE_ROW(layer_norm_rows, scalar),
    FN_TABLE_WIDE_ROW(rms_norm_rows, scalar),
    FN_TABLE_QUANT_ROW(scalar),
    FN_TABLE_ROW(group_norm, scalar),
    FN_TABLE_ROW(group_norm_backward, scalar),
};
