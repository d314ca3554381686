/*
 * simd_contract.h - what a SIMD stamp must define before simd_stamp.h, the
 * defaults for what it may leave out, and a check that names the stamp when
 * something is missing.  Included by simd_stamp.h, once per stamp.
 *
 * A stamp is one (ISA, dtype) pair: kernels_<isa>.c (compiled with its
 * set's flags, see setup.py) sets FN_ISA, then for each dtype includes
 * dtype_<dtype>.h, the ISA's vector vocabulary simd_<isa>_<f32|f64>.h, for
 * float16/bfloat16 the element storage simd_half_<dtype>.h, and
 * simd_stamp.h.  simd_vocab_undef.h, at the end of simd_stamp.h, #undefs
 * every name below, so the next stamp starts from nothing.
 *
 * Stamp identity (dtype_*.h and the kernel file):
 *   FN_ISA   avx2, avx512, avx512bf16, neon: the last part of every symbol name
 *   FN_SFX   f32, f64, f16, bf16
 *   FN_T     float or double: the type of weight, bias, statistics and all
 *            arithmetic; FN_S the stored element type (default FN_T) with
 *            FN_LD / FN_ST to widen and round one element
 *   FN_EXACT_MEAN  1 for float16/bfloat16 (default 0), see below
 *
 * Vector vocabulary (simd_<isa>_<f32|f64>.h; V holds VL lanes of FN_T):
 *   VLOAD(p) VSTORE(p,v)              unaligned full-vector load/store
 *   VLOAD_PART(p,n) VSTORE_PART(p,v,n) the first n lanes (0 < n < VL); masked,
 *                                     so nothing past p[n-1] is touched
 *   VZERO_FROM(v,n)                   lanes >= n set to 0
 *   VSET1 VZERO VADD VSUB VMUL VFMA(a,b,c)=a*b+c VMIN VMAX
 *   VHSUM_D(v)                        sum of the lanes, in double
 *   VADD_TO_DOUBLE(p, v)              double p[0..VL) += lanes of v
 *   VDACC VDACC_ZERO VDACC_ADD(a, v)  (float32 vocabularies) VL double sums
 *   VDACC_STORE(p, a)                 in registers, a = a + lanes of v, and
 *                                     stored to double p[0..VL)
 *   VSTREAM(p,v)                      non-temporal store, p vector-aligned
 *   VSFENCE()                         orders streaming stores before return
 *   FN_MASK(n)                        the vocabulary's own lane mask
 * The float32 vocabularies also give the 16-bit element moves and
 * conversions that simd_half_*.h build on: FN_LOAD16(p) FN_LOAD16_PART(p,n)
 * FN_STORE16(p,h) FN_STORE16_PART(p,h,n) FN_STREAM16(p,h), VWIDEN_F16
 * VNARROW_F16 VWIDEN_BF16 VNARROW_BF16 (round to nearest even, NaN quiet).
 *
 * Element storage (simd_half_*.h; x, y, residual, h, dy and dx hold FN_S):
 *   XLOAD(p) XLOAD_PART(p,n)          VL elements (the first n) widened to V
 *   XSTORE(p,v) XSTORE_PART(p,v,n)    rounded to FN_S and stored
 *   XSTREAM(p,v)                      the same, non-temporal, p aligned to
 *                                     VL * sizeof(FN_S)
 *   XROUND(v)                         v rounded to FN_S and widened again
 *   XSTORE_H XSTORE_PART_H XSTREAM_H  the stores of h (default: as y's)
 * Without them the element type is FN_T and these are the V operations.
 *
 * FN_EXACT_MEAN: also sum the shifted values x - pivot in double, and take
 * the row's center from that sum rather than from float32 sums or Welford
 * means.  The half-precision stamps set it: their outputs must be within an
 * ulp even next to zero, where an ulp of float16 (2^-24) or bfloat16 (far
 * less) is below a float32 mean's rounding (~2^-24 of the spread).  x -
 * pivot is exact in float32 for half inputs of similar magnitude, so the
 * double sum is exact to double rounding.  float32/float64 inputs keep the
 * cheaper sums in their own type, whose error is far inside their tolerance.
 */
#include <stdint.h>

/* the stamp in a compiler message */
#define FN_STR_(x) #x
#define FN_STR(x) FN_STR_(x)

#if !defined(FN_ISA) || !defined(FN_SFX) || !defined(FN_T)
#error "simd_contract.h: a stamp needs FN_ISA (kernel file), FN_T and FN_SFX (dtype_*.h)"
#endif

#if !defined(V) || !defined(VL) || !defined(VLOAD) || !defined(VSTORE) || !defined(VLOAD_PART) || \
    !defined(VSTORE_PART) || !defined(VZERO_FROM) || !defined(VSET1) || !defined(VZERO) || \
    !defined(VADD) || !defined(VSUB) || !defined(VMUL) || !defined(VFMA) || !defined(VMIN) || \
    !defined(VMAX) || !defined(VSTREAM) || !defined(VSFENCE) || !defined(VHSUM_D) || \
    !defined(VADD_TO_DOUBLE)
#pragma message("fastnorm stamp " FN_STR(FN_ISA) " x " FN_STR(FN_SFX) ": see below")
#error "the vector vocabulary included before this stamp misses a name of simd_contract.h"
#endif

#if defined(FN_S) && !(defined(XLOAD) && defined(XLOAD_PART) && defined(XSTORE) && \
                       defined(XSTORE_PART) && defined(XSTREAM) && defined(XROUND))
#pragma message("fastnorm stamp " FN_STR(FN_ISA) " x " FN_STR(FN_SFX) ": see below")
#error "FN_S is set but the element storage (simd_half_*.h) misses an X operation"
#endif

#ifndef FN_EXACT_MEAN
#define FN_EXACT_MEAN 0
#endif
/* simd_wide_out.h: forward kernels only */
#ifndef FN_FORWARD_ONLY
#define FN_FORWARD_ONLY 0
#endif
/* whether the elements are 16-bit (FN_S set by dtype_f16.h/dtype_bf16.h) */
#ifdef FN_S
#define FN_HALF_ELEMENTS 1
#else
#define FN_HALF_ELEMENTS 0
#endif

#ifndef XLOAD
#define XLOAD VLOAD
#define XLOAD_PART VLOAD_PART
#define XSTORE VSTORE
#define XSTORE_PART VSTORE_PART
#define XSTREAM VSTREAM
#define XROUND(v) (v)
#endif
/* how h (the fused residual sum) is stored: like y unless the file says */
#ifndef XSTORE_H
#define XSTORE_H XSTORE
#define XSTORE_PART_H XSTORE_PART
#define XSTREAM_H XSTREAM
#endif

/* FN_NAME, FN_ALWAYS_INLINE, fn_moments and the per-row pieces */
#include "norm_row_common.h"
