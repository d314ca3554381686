/*
 * norm_scalar.c - the portable kernel table (plain C99, any architecture).
 * The body lives in norm_scalar_body.h and is stamped out per dtype, so the
 * float32 and float64 kernels cannot drift apart.
 */
#include "fastnorm_kernels.h"

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

const fn_kernel_table fn_kernels_scalar = {
    "scalar",
    {layer_norm_rows_f32_scalar, layer_norm_rows_f64_scalar},
    {rms_norm_rows_f32_scalar, rms_norm_rows_f64_scalar},
    {layer_norm_backward_rows_f32_scalar, layer_norm_backward_rows_f64_scalar},
    {rms_norm_backward_rows_f32_scalar, rms_norm_backward_rows_f64_scalar},
};
