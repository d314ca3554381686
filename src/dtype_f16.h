/*
 * dtype_f16.h - the stamp parameters for float16 elements, shared by every
 * kernel file: stored as uint16_t, computed on in float32, converted in
 * software on the per-row paths (half_convert.h), with the row's center
 * taken from an exact double sum (FN_EXACT_MEAN, see simd_contract.h).
 * Include right before a stamp; simd_vocab_undef.h, at the stamp's end,
 * #undefs these.  No include guard: each stamp includes it again.
 */
#include "half_convert.h"

#define FN_T float
#define FN_S uint16_t
#define FN_SFX f16
#define FN_LD(v) fn_f16_to_f32(v)
#define FN_ST(t) fn_f32_to_f16(t)
#define FN_EXACT_MEAN 1
