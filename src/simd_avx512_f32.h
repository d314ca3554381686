/*
 * simd_avx512_f32.h - the AVX-512 vocabulary for float32 vectors (the
 * contract is in simd_contract.h): 16 lanes of __m512, masked loads and
 * stores for row tails (fault free on masked lanes, so nothing past a row is
 * touched), and the 16-bit element moves and conversions the float16 and
 * bfloat16 stamps build on (simd_half_f16.h, simd_half_bf16.h).
 *
 * Include inside an AVX-512 target region (F, BW, VL, DQ), once per stamp:
 * the helper functions are guarded, the macros are #undef'd at the end of
 * every stamp by simd_vocab_undef.h.
 */
#include <stdint.h>
#ifndef FASTNORM_SIMD_AVX512_F32_HELPERS
#define FASTNORM_SIMD_AVX512_F32_HELPERS
/* lane sums in double: float32 lanes are widened first */
static inline double fn_avx512_hsum_ps(__m512 v)
{
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    __m512d hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1));
    return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}

static inline __attribute__((always_inline)) void fn_avx512_add_to_double_ps(double *p, __m512 v)
{
    _mm512_storeu_pd(p,
                     _mm512_add_pd(_mm512_loadu_pd(p), _mm512_cvtps_pd(_mm512_castps512_ps256(v))));
    _mm512_storeu_pd(p + 8, _mm512_add_pd(_mm512_loadu_pd(p + 8),
                                          _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1))));
}

/* VL float32 lanes summed in double, held in registers across a row (the
 * half-precision stamps' exact centers): a sum kept in memory would make
 * every step wait for the store of the one before */
typedef struct {
    __m512d lo, hi;
} fn_avx512_dacc;

static inline __attribute__((always_inline)) fn_avx512_dacc fn_avx512_dacc_add(fn_avx512_dacc a,
                                                                               __m512 v)
{
    a.lo = _mm512_add_pd(a.lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    a.hi = _mm512_add_pd(a.hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
    return a;
}

/* float32 -> bfloat16 in integer arithmetic: round to nearest even (adding
 * 0x7fff plus the lowest kept bit), NaN kept quiet, subnormals kept */
static inline __attribute__((always_inline)) __m256i fn_avx512_narrow_bf16(__m512 v)
{
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, _mm512_set1_epi32(0x400000)));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}

/* bfloat16 is the upper half of a float32: widening is a shift */
static inline __attribute__((always_inline)) __m512 fn_avx512_widen_bf16(__m256i h)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
/* The quantizer's codes of 16 values (quantize_rows.h: the formulas, and
 * the scalar code these must equal bit for bit).  int8: v clamped to
 * +-127, rounded to nearest even (vcvtps2dq, in the default MXCSR mode) and
 * narrowed.  e4m3fn: v clamped to +-448, finite; the mantissa rounded to 3
 * bits by an integer add and shift, or below 2^-6 the subnormal code
 * |v| * 2^9 rounded to an integer. */
static inline __attribute__((always_inline)) void fn_avx512_store_i8(uint8_t *p, __m512 v)
{
    _mm_storeu_si128((__m128i *)p, _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v)));
}

static inline __attribute__((always_inline)) void fn_avx512_store_e4m3(uint8_t *p, __m512 v)
{
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i a = _mm512_and_si512(bits, _mm512_set1_epi32(0x7FFFFFFF));
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(a, 20), _mm512_set1_epi32(1));
    const __m512i up = _mm512_add_epi32(_mm512_add_epi32(a, _mm512_set1_epi32(0x7FFFF)), odd);
    const __m512i normal = _mm512_sub_epi32(_mm512_srli_epi32(up, 20), _mm512_set1_epi32(960));
    const __m512i sub =
        _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_castsi512_ps(a), _mm512_set1_ps(512.0f)));
    const __mmask16 is_normal = _mm512_cmpge_epu32_mask(a, _mm512_set1_epi32(0x3C800000));
    const __m512i sign = _mm512_and_si512(_mm512_srli_epi32(bits, 24), _mm512_set1_epi32(0x80));
    const __m512i code = _mm512_or_si512(_mm512_mask_blend_epi32(is_normal, sub, normal), sign);
    _mm_storeu_si128((__m128i *)p, _mm512_cvtepi32_epi8(code));
}
#endif

/* vectors of FN_T */
#define V __m512
#define VL 16
#define FN_MASK(n) ((__mmask16)((1u << (n)) - 1u))
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps((p), (v))
#define VLOAD_PART(p, n) _mm512_maskz_loadu_ps(FN_MASK(n), (p))
#define VSTORE_PART(p, v, n) _mm512_mask_storeu_ps((p), FN_MASK(n), (v))
#define VZERO_FROM(v, n) _mm512_maskz_mov_ps(FN_MASK(n), (v))
#define VSET1(s) _mm512_set1_ps(s)
#define VZERO _mm512_setzero_ps()
#define VADD _mm512_add_ps
#define VSUB _mm512_sub_ps
#define VMUL _mm512_mul_ps
#define VFMA _mm512_fmadd_ps
#define VMIN _mm512_min_ps
#define VMAX _mm512_max_ps
#define VSTREAM(p, v) _mm512_stream_ps((p), (v))
#define VSFENCE() _mm_sfence()
#define VHSUM_D fn_avx512_hsum_ps
#define VADD_TO_DOUBLE fn_avx512_add_to_double_ps
#define VDACC fn_avx512_dacc
#define VDACC_ZERO ((fn_avx512_dacc){_mm512_setzero_pd(), _mm512_setzero_pd()})
#define VDACC_ADD fn_avx512_dacc_add
#define VDACC_STORE(p, a) (_mm512_storeu_pd((p), (a).lo), _mm512_storeu_pd((p) + 8, (a).hi))

/* VL stored 16-bit elements: one 256-bit load or store, masked for tails */
#define FN_LOAD16(p) _mm256_loadu_si256((const __m256i *)(p))
#define FN_LOAD16_PART(p, n) _mm256_maskz_loadu_epi16(FN_MASK(n), (p))
#define FN_STORE16(p, h) _mm256_storeu_si256((__m256i *)(p), (h))
#define FN_STORE16_PART(p, h, n) _mm256_mask_storeu_epi16((p), FN_MASK(n), (h))
#define FN_STREAM16(p, h) _mm256_stream_si256((__m256i *)(p), (h))
/* conversions: vcvtph2ps / vcvtps2ph for float16, integer bfloat16 */
#define VWIDEN_F16(h) _mm512_cvtph_ps(h)
#define VNARROW_F16(v) _mm512_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define VWIDEN_BF16 fn_avx512_widen_bf16
#define VNARROW_BF16 fn_avx512_narrow_bf16
/* quantized codes (quantize_rows.h) */
#define VQ_BITS __m512i
#define VQ_BITS_ZERO _mm512_setzero_si512()
#define VQ_BITS_MAX _mm512_max_epu32
#define VQ_ABSMAX_BITS(m, v) \
    _mm512_max_epu32((m), _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7FFFFFFF)))
#define VQ_HMAX_BITS(m) ((uint32_t)_mm512_reduce_max_epu32(m))
#define VQ_STORE_I8 fn_avx512_store_i8
#define VQ_STORE_E4M3 fn_avx512_store_e4m3
