/*
 * simd_stamp.h - one SIMD stamp: the four exported kernels of one (ISA,
 * dtype) pair, and the dispatch from each kernel to the walk that fits the
 * block's layout.  kernels_<isa>.c includes it once per dtype, after the
 * stamp's definitions (simd_contract.h says which), and it #undefs them all
 * at its end (simd_vocab_undef.h).
 *
 * The walks, one header each:
 *   walk_rows_forward.h   contiguous rows, SIMD along the row (last axis);
 *                         also the fused residual add
 *   walk_lanes_forward.h  rows side by side (row stride 1: channels-first,
 *                         Fortran order), SIMD across rows
 *   walk_rows_backward.h  contiguous rows, backward
 *   walk_group.h          GroupNorm, channels-first and channels-last, from
 *                         the pieces of the three above
 * with simd_row_acc.h, the row statistics the two rows walks share, and
 * norm_row_common.h, the per-row pieces every kernel shares.  Any other
 * layout (e.g. strided rows of strided elements), and a residual add on
 * other layouts, takes the portable kernel (walk_portable.h), which the
 * walks also call for their rare rows.
 */
#include "simd_contract.h"
#include "simd_row_acc.h"
#include "walk_rows_forward.h"
#include "walk_lanes_forward.h"
#if !FN_FORWARD_ONLY
#include "walk_rows_backward.h"
#endif
#if !FN_HALF_ELEMENTS
#include "quantize_rows.h" /* (float32/float64 values only) */
#endif
#if !FN_FORWARD_ONLY
#include "walk_group.h" /* GroupNorm: the walks above, per group */
#endif

FN_ALWAYS_INLINE void FN_NAME(forward)(const fn_rows *a, int rms)
{
    if (a->x_elem_stride == 1 && a->y_elem_stride == 1 &&
        (!a->residual || (a->r_elem_stride == 1 && a->h_elem_stride == 1)))
        FN_NAME(rows_forward)(a, rms);
    else if (a->x_row_stride == 1 && a->y_row_stride == 1 && !a->residual && a->w_row_stride == 0 &&
             a->b_row_stride == 0)
        FN_NAME(lanes_forward)(a, rms); /* a tile's rows share weight and bias */
    else if (rms)
        FN_PORTABLE(rms_norm_rows)(a);
    else
        FN_PORTABLE(layer_norm_rows)(a);
}

#if !FN_FORWARD_ONLY
/* Short rows go to the portable kernel, which works in double: with a
 * handful of elements, g - xhat * mean(g * xhat) can cancel to a tiny
 * fraction of g (one element: xhat^2 = x^2 / (x^2 + eps)), which float32
 * arithmetic would not resolve; and vectors would be mostly empty. */
FN_ALWAYS_INLINE void FN_NAME(backward)(const fn_rows_bwd *a, int rms)
{
    if (a->x_elem_stride == 1 && a->dy_elem_stride == 1 && a->dx_elem_stride == 1 &&
        a->row_len >= 2 * VL)
        FN_NAME(rows_backward)(a, rms);
    else if (rms)
        FN_PORTABLE(rms_norm_backward_rows)(a);
    else
        FN_PORTABLE(layer_norm_backward_rows)(a);
}

#endif

void FN_NAME(layer_norm_rows)(const fn_rows *a)
{
    FN_NAME(forward)(a, 0);
}

void FN_NAME(rms_norm_rows)(const fn_rows *a)
{
    FN_NAME(forward)(a, 1);
}

#if !FN_FORWARD_ONLY
void FN_NAME(layer_norm_backward_rows)(const fn_rows_bwd *a)
{
    FN_NAME(backward)(a, 0);
}

void FN_NAME(rms_norm_backward_rows)(const fn_rows_bwd *a)
{
    FN_NAME(backward)(a, 1);
}
#endif

#include "simd_vocab_undef.h"
