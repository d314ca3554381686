/*
 * kernels_avx512.c - LayerNorm/RMSNorm kernels for AVX-512 (F, BW, VL, DQ).
 *
 * 512-bit vectors: 16 float32 or 8 float64 lanes.  Row tails use masked
 * loads and stores (fault-free on masked lanes), so no scalar tail loop and
 * no access past the row.  The algorithm and its numerics are described in
 * norm_simd_body.h; this file only supplies the vector vocabulary.
 *
 * float16 and bfloat16 run the float32 kernels on 16 elements widened in
 * registers (vcvtph2ps; a shift for bfloat16) and rounded once on store
 * (vcvtps2ph; integer round-to-nearest-even for bfloat16 here, the
 * AVX512_BF16 instruction in kernels_avx512_bf16.c).
 *
 * Only this file is compiled for AVX-512 (through the target pragma); the
 * rest of the extension stays baseline x86-64 and dispatch.c calls in here
 * only when cpuid and XGETBV say the CPU and OS support it.
 */
#include "fastnorm_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
#include <immintrin.h>

#define VSFENCE() _mm_sfence()
#define FN_ISA avx512

#include "simd_avx512_f32.h"
#define FN_T float
#define FN_SFX f32
#include "norm_simd_body.h"

/* float16: F16C-style conversions, which AVX-512F has for 16 lanes */
#define FN_F16_RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#include "dtype_f16.h"
#define XLOAD(p) _mm512_cvtph_ps(FN_LOAD16(p))
#define XLOAD_PART(p, n) _mm512_cvtph_ps(FN_LOAD16_PART(p, n))
#define XSTORE(p, v) FN_STORE16(p, _mm512_cvtps_ph((v), FN_F16_RNE))
#define XSTORE_PART(p, v, n) FN_STORE16_PART(p, _mm512_cvtps_ph((v), FN_F16_RNE), n)
#define XSTREAM(p, v) FN_STREAM16(p, _mm512_cvtps_ph((v), FN_F16_RNE))
#define XROUND(v) _mm512_cvtph_ps(_mm512_cvtps_ph((v), FN_F16_RNE))
#include "norm_simd_body.h"

/* bfloat16 without the AVX512_BF16 instructions: integer rounding */
#define FN_BF16_ROUND_Y fn_avx512_narrow_bf16
#include "simd_avx512_bf16.h"
#include "norm_simd_body.h"
#include "simd_vocab_undef.h"

#define FN_T double
#define FN_SFX f64
#define V __m512d
#define VL 8
#define FN_MASK(n) ((__mmask8)((1u << (n)) - 1u))
#define VLOAD(p) _mm512_loadu_pd(p)
#define VSTORE(p, v) _mm512_storeu_pd((p), (v))
#define VLOAD_PART(p, n) _mm512_maskz_loadu_pd(FN_MASK(n), (p))
#define VSTORE_PART(p, v, n) _mm512_mask_storeu_pd((p), FN_MASK(n), (v))
#define VZERO_FROM(v, n) _mm512_maskz_mov_pd(FN_MASK(n), (v))
#define VSET1(s) _mm512_set1_pd(s)
#define VZERO _mm512_setzero_pd()
#define VADD _mm512_add_pd
#define VSUB _mm512_sub_pd
#define VMUL _mm512_mul_pd
#define VFMA _mm512_fmadd_pd
#define VMIN _mm512_min_pd
#define VMAX _mm512_max_pd
#define VSTREAM(p, v) _mm512_stream_pd((p), (v))
#define VHSUM_D _mm512_reduce_add_pd
#define VADD_TO_DOUBLE(p, v) _mm512_storeu_pd((p), _mm512_add_pd(_mm512_loadu_pd(p), (v)))
#include "norm_simd_body.h"
#include "simd_vocab_undef.h"

const fn_kernel_table fn_kernels_avx512 = {
    "avx512",
    FN_TABLE_ROW(layer_norm_rows, avx512),
    FN_TABLE_ROW(rms_norm_rows, avx512),
    FN_TABLE_ROW(layer_norm_backward_rows, avx512),
    FN_TABLE_ROW(rms_norm_backward_rows, avx512),
};
#endif
