/*
 * simd_avx2_f32.h - the AVX2 + FMA vocabulary for float32 vectors (the
 * contract is in simd_contract.h): 8 lanes of __m256, vmaskmov loads and
 * stores for row tails (fault free on masked lanes) with the lane masks read
 * from a small table, and the 16-bit element moves and conversions the
 * float16 (F16C) and bfloat16 stamps build on (simd_half_f16.h,
 * simd_half_bf16.h).
 *
 * Include inside an AVX2/FMA/F16C target region, once per stamp: the helper
 * functions are guarded, the macros are #undef'd at the end of every stamp
 * by simd_vocab_undef.h.
 */
#ifndef FASTNORM_SIMD_AVX2_F32_HELPERS
#define FASTNORM_SIMD_AVX2_F32_HELPERS
#include <stdint.h>
#include <string.h>

/* first n lanes on: load 8 entries starting at [8 - n] */
static const int32_t fn_avx2_mask32[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

/* lane sums in double: float32 lanes are widened first */
static inline double fn_avx2_hsum_ps(__m256 v)
{
    const __m256d s = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                                    _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    __m128d a = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
    return _mm_cvtsd_f64(_mm_add_sd(a, _mm_unpackhi_pd(a, a)));
}

static inline __attribute__((always_inline)) void fn_avx2_add_to_double_ps(double *p, __m256 v)
{
    _mm256_storeu_pd(p,
                     _mm256_add_pd(_mm256_loadu_pd(p), _mm256_cvtps_pd(_mm256_castps256_ps128(v))));
    _mm256_storeu_pd(
        p + 4, _mm256_add_pd(_mm256_loadu_pd(p + 4), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
}

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

/* VL float32 lanes summed in double, held in registers across a row (the
 * half-precision stamps' exact centers): a sum kept in memory would make
 * every step wait for the store of the one before */
typedef struct {
    __m256d lo, hi;
} fn_avx2_dacc;

static inline __attribute__((always_inline)) fn_avx2_dacc fn_avx2_dacc_add(fn_avx2_dacc a, __m256 v)
{
    a.lo = _mm256_add_pd(a.lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    a.hi = _mm256_add_pd(a.hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    return a;
}

/* float32 -> bfloat16, round to nearest even, NaN stays a quiet NaN */
static inline __attribute__((always_inline)) __m128i fn_avx2_narrow_bf16(__m256 v)
{
    const __m256i u = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb));
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, _mm256_or_si256(u, _mm256_set1_epi32(0x400000)), nan);
    r = _mm256_srli_epi32(r, 16); /* 0..0xffff: packus keeps them as they are */
    return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

/* bfloat16 is the upper half of a float32: widening is a shift */
static inline __attribute__((always_inline)) __m256 fn_avx2_widen_bf16(__m128i h)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
/* The quantizer's codes of 8 values, as fn_avx512_store_i8/_e4m3 do for
 * 16 (simd_avx512_f32.h); the codes are narrowed by saturating packs. */
/* the largest lane, unsigned */
static inline uint32_t fn_avx2_hmax_epu32(__m256i v)
{
    __m128i m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0x4E));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0xB1));
    return (uint32_t)_mm_cvtsi128_si32(m);
}

static inline __attribute__((always_inline)) void fn_avx2_store_i8(uint8_t *p, __m256 v)
{
    const __m256i i = _mm256_cvtps_epi32(v);
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    _mm_storel_epi64((__m128i *)p, _mm_packs_epi16(w, w));
}

static inline __attribute__((always_inline)) void fn_avx2_store_e4m3(uint8_t *p, __m256 v)
{
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i a = _mm256_and_si256(bits, _mm256_set1_epi32(0x7FFFFFFF));
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(a, 20), _mm256_set1_epi32(1));
    const __m256i up = _mm256_add_epi32(_mm256_add_epi32(a, _mm256_set1_epi32(0x7FFFF)), odd);
    const __m256i normal = _mm256_sub_epi32(_mm256_srli_epi32(up, 20), _mm256_set1_epi32(960));
    const __m256i sub =
        _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_castsi256_ps(a), _mm256_set1_ps(512.0f)));
    /* (a <= 0x7FFFFFFF: the signed compare is the unsigned one) */
    const __m256i is_normal = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x3C7FFFFF));
    const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(bits, 24), _mm256_set1_epi32(0x80));
    const __m256i code = _mm256_or_si256(_mm256_blendv_epi8(sub, normal, is_normal), sign);
    const __m128i w =
        _mm_packus_epi32(_mm256_castsi256_si128(code), _mm256_extracti128_si256(code, 1));
    _mm_storel_epi64((__m128i *)p, _mm_packus_epi16(w, w));
}
#endif

/* vectors of FN_T */
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
#define VSFENCE() _mm_sfence()
#define VHSUM_D fn_avx2_hsum_ps
#define VADD_TO_DOUBLE fn_avx2_add_to_double_ps
#define VDACC fn_avx2_dacc
#define VDACC_ZERO ((fn_avx2_dacc){_mm256_setzero_pd(), _mm256_setzero_pd()})
#define VDACC_ADD fn_avx2_dacc_add
#define VDACC_STORE(p, a) (_mm256_storeu_pd((p), (a).lo), _mm256_storeu_pd((p) + 4, (a).hi))

/* VL stored 16-bit elements: one 128-bit load or store, tails buffered */
#define FN_LOAD16(p) _mm_loadu_si128((const __m128i *)(p))
#define FN_LOAD16_PART(p, n) fn_avx2_load16_part((p), (n))
#define FN_STORE16(p, h) _mm_storeu_si128((__m128i *)(p), (h))
#define FN_STORE16_PART(p, h, n) fn_avx2_store16_part((p), (h), (n))
#define FN_STREAM16(p, h) _mm_stream_si128((__m128i *)(p), (h))
/* conversions: F16C vcvtph2ps / vcvtps2ph for float16, integer bfloat16 */
#define VWIDEN_F16(h) _mm256_cvtph_ps(h)
#define VNARROW_F16(v) _mm256_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define VWIDEN_BF16 fn_avx2_widen_bf16
#define VNARROW_BF16 fn_avx2_narrow_bf16
/* quantized codes (quantize_rows.h) */
#define VQ_BITS __m256i
#define VQ_BITS_ZERO _mm256_setzero_si256()
#define VQ_BITS_MAX _mm256_max_epu32
#define VQ_ABSMAX_BITS(m, v) \
    _mm256_max_epu32((m), _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x7FFFFFFF)))
#define VQ_HMAX_BITS fn_avx2_hmax_epu32
#define VQ_STORE_I8 fn_avx2_store_i8
#define VQ_STORE_E4M3 fn_avx2_store_e4m3
