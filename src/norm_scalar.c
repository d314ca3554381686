/*
 * norm_scalar.c - the portable kernel table (plain C99, any architecture).
 * The body lives in norm_scalar_body.h and is stamped out per dtype, so the
 * kernels cannot drift apart.  float16 and bfloat16 elements are widened to
 * float32 in software, computed on exactly like float32 input, and rounded
 * once (to nearest even) when stored.
 */
#include "fastnorm_kernels.h"
#include "half_convert.h"

#define FN_T float
#define FN_SFX f32
#define FN_IS_F64 0
#include "norm_scalar_body.h"
#undef FN_T
#undef FN_SFX
#undef FN_IS_F64

#define FN_T double
#define FN_SFX f64
#define FN_IS_F64 1
#include "norm_scalar_body.h"
#undef FN_T
#undef FN_SFX
#undef FN_IS_F64

#define FN_T float
#define FN_S uint16_t
#define FN_EXACT_MEAN 1
#define FN_LD(v) fn_f16_to_f32(v)
#define FN_ST(t) fn_f32_to_f16(t)
#define FN_SFX f16
#define FN_IS_F64 0
#include "norm_scalar_body.h"
#undef FN_T
#undef FN_SFX
#undef FN_IS_F64

#define FN_T float
#define FN_S uint16_t
#define FN_EXACT_MEAN 1
#define FN_LD(v) fn_bf16_to_f32(v)
#define FN_ST(t) fn_f32_to_bf16(t)
#define FN_SFX bf16
#define FN_IS_F64 0
#include "norm_scalar_body.h"
#undef FN_T
#undef FN_SFX
#undef FN_IS_F64

const fn_kernel_table fn_kernels_scalar = {
    "scalar",
    FN_TABLE_ROW(layer_norm_rows, scalar),
    FN_TABLE_ROW(rms_norm_rows, scalar),
    FN_TABLE_ROW(layer_norm_backward_rows, scalar),
    FN_TABLE_ROW(rms_norm_backward_rows, scalar),
};
