/*
 * kernels_avx2.c - LayerNorm/RMSNorm kernels for AVX2 + FMA.
 *
 * 256-bit vectors: 8 float32 or 4 float64 lanes.  Row tails use
 * vmaskmov loads and stores, which do not fault on masked-out lanes, with
 * the lane masks read from a small table.  The algorithm and its numerics
 * are described in norm_simd_body.h; this file only supplies the vector
 * vocabulary, and only it is compiled for AVX2 (target pragma).
 *
 * float16 and bfloat16 run the float32 kernels on 8 elements widened in
 * registers (F16C vcvtph2ps; a shift for bfloat16) and rounded once on
 * store (vcvtps2ph; integer round-to-nearest-even for bfloat16).
 */
#include "fastnorm_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define VSFENCE() _mm_sfence()
#define FN_ISA avx2

/* first n lanes on: load 8 (or 4) entries starting at [8 - n] ([4 - n]) */
static const int32_t fn_avx2_mask32[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                           0, 0, 0, 0, 0, 0, 0, 0};
static const int64_t fn_avx2_mask64[8] = {-1, -1, -1, -1, 0, 0, 0, 0};

/* lane sums in double: float32 lanes are widened first */
static inline double fn_avx2_hsum_pd(__m256d v)
{
    __m128d a = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(a, _mm_unpackhi_pd(a, a)));
}

static inline void fn_avx2_add_to_double_ps(double *p, __m256 v)
{
    _mm256_storeu_pd(p, _mm256_add_pd(_mm256_loadu_pd(p),
                                      _mm256_cvtps_pd(_mm256_castps256_ps128(v))));
    _mm256_storeu_pd(p + 4, _mm256_add_pd(_mm256_loadu_pd(p + 4),
                                          _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
}

static inline double fn_avx2_hsum_ps(__m256 v)
{
    return fn_avx2_hsum_pd(_mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                                         _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
}

#define FN_T float
#define FN_SFX f32
#define V __m256
#define VL 8
#define FN_MASK(n) _mm256_loadu_si256((const __m256i *)(fn_avx2_mask32 + 8 - (n)))
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps((p), (v))
#define VLOAD_PART(p, n) _mm256_maskload_ps((p), FN_MASK(n))
#define VSTORE_PART(p, v, n) _mm256_maskstore_ps((p), FN_MASK(n), (v))
#define VZERO_FROM(v, n) _mm256_and_ps((v), _mm256_castsi256_ps(FN_MASK(n)))
#define VSET1(s) _mm256_set1_ps(s)
#define VZERO _mm256_setzero_ps()
#define VADD _mm256_add_ps
#define VSUB _mm256_sub_ps
#define VMUL _mm256_mul_ps
#define VFMA _mm256_fmadd_ps
#define VMIN _mm256_min_ps
#define VMAX _mm256_max_ps
#define VSTREAM(p, v) _mm256_stream_ps((p), (v))
#define VHSUM_D fn_avx2_hsum_ps
#define VADD_TO_DOUBLE fn_avx2_add_to_double_ps
#include "norm_simd_body.h"

/* 8 stored 16-bit elements: one 128-bit load or store.  AVX2 has no 16-bit
 * masked moves, so tails go through a small zero-filled buffer: nothing past
 * the row is read or written, and the missing lanes load as 0. */
static inline __m128i fn_avx2_load16_part(const uint16_t *p, ptrdiff_t n)
{
    uint16_t buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(buf, p, (size_t)n * sizeof(uint16_t));
    return _mm_loadu_si128((const __m128i *)buf);
}

static inline void fn_avx2_store16_part(uint16_t *p, __m128i h, ptrdiff_t n)
{
    uint16_t buf[8];
    _mm_storeu_si128((__m128i *)buf, h);
    memcpy(p, buf, (size_t)n * sizeof(uint16_t));
}

/* float32 -> bfloat16, round to nearest even, NaN stays a quiet NaN */
static inline __m128i fn_avx2_narrow_bf16(__m256 v)
{
    const __m256i u = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb));
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, _mm256_or_si256(u, _mm256_set1_epi32(0x400000)), nan);
    r = _mm256_srli_epi32(r, 16); /* 0..0xffff: packus keeps them as they are */
    return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

static inline __m256 fn_avx2_widen_bf16(__m128i h)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

#define FN_LOAD16(p) _mm_loadu_si128((const __m128i *)(p))
#define FN_STORE16(p, h) _mm_storeu_si128((__m128i *)(p), (h))
#define FN_STREAM16(p, h) _mm_stream_si128((__m128i *)(p), (h))
#define FN_F16_RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

/* float16: F16C conversions */
#include "dtype_f16.h"
#define XLOAD(p) _mm256_cvtph_ps(FN_LOAD16(p))
#define XLOAD_PART(p, n) _mm256_cvtph_ps(fn_avx2_load16_part((p), (n)))
#define XSTORE(p, v) FN_STORE16(p, _mm256_cvtps_ph((v), FN_F16_RNE))
#define XSTORE_PART(p, v, n) fn_avx2_store16_part((p), _mm256_cvtps_ph((v), FN_F16_RNE), (n))
#define XSTREAM(p, v) FN_STREAM16(p, _mm256_cvtps_ph((v), FN_F16_RNE))
#define XROUND(v) _mm256_cvtph_ps(_mm256_cvtps_ph((v), FN_F16_RNE))
#include "norm_simd_body.h"

/* bfloat16: a shift to widen, integer rounding to narrow */
#include "dtype_bf16.h"
#define XLOAD(p) fn_avx2_widen_bf16(FN_LOAD16(p))
#define XLOAD_PART(p, n) fn_avx2_widen_bf16(fn_avx2_load16_part((p), (n)))
#define XSTORE(p, v) FN_STORE16(p, fn_avx2_narrow_bf16(v))
#define XSTORE_PART(p, v, n) fn_avx2_store16_part((p), fn_avx2_narrow_bf16(v), (n))
#define XSTREAM(p, v) FN_STREAM16(p, fn_avx2_narrow_bf16(v))
#define XROUND(v) fn_avx2_widen_bf16(fn_avx2_narrow_bf16(v))
#include "norm_simd_body.h"
#include "simd_vocab_undef.h"

#define FN_T double
#define FN_SFX f64
#define V __m256d
#define VL 4
#define FN_MASK(n) _mm256_loadu_si256((const __m256i *)(fn_avx2_mask64 + 4 - (n)))
#define VLOAD(p) _mm256_loadu_pd(p)
#define VSTORE(p, v) _mm256_storeu_pd((p), (v))
#define VLOAD_PART(p, n) _mm256_maskload_pd((p), FN_MASK(n))
#define VSTORE_PART(p, v, n) _mm256_maskstore_pd((p), FN_MASK(n), (v))
#define VZERO_FROM(v, n) _mm256_and_pd((v), _mm256_castsi256_pd(FN_MASK(n)))
#define VSET1(s) _mm256_set1_pd(s)
#define VZERO _mm256_setzero_pd()
#define VADD _mm256_add_pd
#define VSUB _mm256_sub_pd
#define VMUL _mm256_mul_pd
#define VFMA _mm256_fmadd_pd
#define VMIN _mm256_min_pd
#define VMAX _mm256_max_pd
#define VSTREAM(p, v) _mm256_stream_pd((p), (v))
#define VHSUM_D fn_avx2_hsum_pd
#define VADD_TO_DOUBLE(p, v) _mm256_storeu_pd((p), _mm256_add_pd(_mm256_loadu_pd(p), (v)))
#include "norm_simd_body.h"
#include "simd_vocab_undef.h"

const fn_kernel_table fn_kernels_avx2 = {
    "avx2",
    FN_TABLE_ROW(layer_norm_rows, avx2),
    FN_TABLE_ROW(rms_norm_rows, avx2),
    FN_TABLE_ROW(layer_norm_backward_rows, avx2),
    FN_TABLE_ROW(rms_norm_backward_rows, avx2),
};
#endif
