/*
 * simd_neon_f32.h - the AArch64 Advanced SIMD (NEON) vocabulary for float32
 * vectors (the contract is in simd_contract.h).  Only baseline ASIMD is
 * used: no FP16 arithmetic, no BF16, no SVE.
 *
 * A vector is 8 float32 lanes held in two 128-bit registers (lo: lanes
 * 0-3, hi: lanes 4-7), the width of an AVX2 vector.  The walks then keep
 * the same chains, unrolling and accumulation order as on AVX2, and every
 * operation here rounds lane by lane as AVX2 does (FMLA is a fused
 * multiply-add like VFMADD), so the float32 kernels give AVX2's bits: the
 * lane sums in double (VHSUM_D) add the lanes in the order of
 * simd_avx2_f32.h.  Eight independent 128-bit registers per 4-chain step
 * also keep NEON's FMA pipes busy, as AVX2's four 256-bit chains do.
 *
 * Row tails go through a small zero-filled buffer (NEON has no masked
 * loads): nothing past the row is read or written, and missing lanes load
 * as 0, as AVX2's vmaskmov gives.  VMIN/VMAX (FMIN/FMAX) return NaN when a
 * lane holds one, where vminps returns its second operand; they choose
 * row pivots only, and a row with a NaN gets NaN statistics either way.
 *
 * Streaming stores are plain stores (VSTREAM = VSTORE, VSFENCE empty):
 * A64 has only the non-temporal hint STNP, without x86's write-combining
 * semantics, and many Arm cores already switch to a write-streaming mode
 * for long runs of full-line stores.
 *
 * 16-bit elements: 8 a 128-bit register.  float16 widens and narrows with
 * the baseline FCVTL/FCVTN (vcvt_f32_f16 / vcvt_f16_f32, round to nearest
 * even in the default FPCR mode, which is what the kernels run in);
 * bfloat16 widens by a shift (USHLL) and narrows in integer arithmetic,
 * round to nearest even with NaN kept quiet: the same bits as the AVX2
 * and AVX-512 integer paths, never a truncation.
 *
 * Included by kernels_neon.c once per stamp: the helper functions are
 * guarded, the macros are #undef'd at the end of every stamp by
 * simd_vocab_undef.h.
 */
#ifndef FASTNORM_SIMD_NEON_F32_HELPERS
#define FASTNORM_SIMD_NEON_F32_HELPERS
#include <arm_neon.h>
#include <stdint.h>
#include <string.h>

#define FN_NEON_INLINE static inline __attribute__((always_inline))

/* 8 float32 lanes: lanes 0-3 in lo, 4-7 in hi */
typedef struct {
    float32x4_t lo, hi;
} fn_neon_f32x8;

FN_NEON_INLINE fn_neon_f32x8 fn_neon_f32x8_of(float32x4_t lo, float32x4_t hi)
{
    fn_neon_f32x8 r = {lo, hi};
    return r;
}

FN_NEON_INLINE fn_neon_f32x8 fn_neon_load_f32x8(const float *p)
{
    return fn_neon_f32x8_of(vld1q_f32(p), vld1q_f32(p + 4));
}

FN_NEON_INLINE void fn_neon_store_f32x8(float *p, fn_neon_f32x8 v)
{
    vst1q_f32(p, v.lo);
    vst1q_f32(p + 4, v.hi);
}

/* the first n lanes (0 < n < 8); the others load as 0 */
static inline fn_neon_f32x8 fn_neon_load_part_f32x8(const float *p, ptrdiff_t n)
{
    float buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(buf, p, (size_t)n * sizeof(float));
    return fn_neon_load_f32x8(buf);
}

static inline void fn_neon_store_part_f32x8(float *p, fn_neon_f32x8 v, ptrdiff_t n)
{
    float buf[8];
    fn_neon_store_f32x8(buf, v);
    memcpy(p, buf, (size_t)n * sizeof(float));
}

/* lanes >= n set to 0 */
static inline fn_neon_f32x8 fn_neon_zero_from_f32x8(fn_neon_f32x8 v, ptrdiff_t n)
{
    static const uint32_t on[16] = {~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, 0, 0, 0, 0, 0, 0, 0, 0};
    const uint32_t *m = on + 8 - n;
    return fn_neon_f32x8_of(
        vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(v.lo), vld1q_u32(m))),
        vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(v.hi), vld1q_u32(m + 4))));
}

FN_NEON_INLINE fn_neon_f32x8 fn_neon_set1_f32x8(float s)
{
    return fn_neon_f32x8_of(vdupq_n_f32(s), vdupq_n_f32(s));
}

FN_NEON_INLINE fn_neon_f32x8 fn_neon_add_f32x8(fn_neon_f32x8 a, fn_neon_f32x8 b)
{
    return fn_neon_f32x8_of(vaddq_f32(a.lo, b.lo), vaddq_f32(a.hi, b.hi));
}

FN_NEON_INLINE fn_neon_f32x8 fn_neon_sub_f32x8(fn_neon_f32x8 a, fn_neon_f32x8 b)
{
    return fn_neon_f32x8_of(vsubq_f32(a.lo, b.lo), vsubq_f32(a.hi, b.hi));
}

FN_NEON_INLINE fn_neon_f32x8 fn_neon_mul_f32x8(fn_neon_f32x8 a, fn_neon_f32x8 b)
{
    return fn_neon_f32x8_of(vmulq_f32(a.lo, b.lo), vmulq_f32(a.hi, b.hi));
}

/* a * b + c, fused (FMLA) */
FN_NEON_INLINE fn_neon_f32x8 fn_neon_fma_f32x8(fn_neon_f32x8 a, fn_neon_f32x8 b, fn_neon_f32x8 c)
{
    return fn_neon_f32x8_of(vfmaq_f32(c.lo, a.lo, b.lo), vfmaq_f32(c.hi, a.hi, b.hi));
}

FN_NEON_INLINE fn_neon_f32x8 fn_neon_min_f32x8(fn_neon_f32x8 a, fn_neon_f32x8 b)
{
    return fn_neon_f32x8_of(vminq_f32(a.lo, b.lo), vminq_f32(a.hi, b.hi));
}

FN_NEON_INLINE fn_neon_f32x8 fn_neon_max_f32x8(fn_neon_f32x8 a, fn_neon_f32x8 b)
{
    return fn_neon_f32x8_of(vmaxq_f32(a.lo, b.lo), vmaxq_f32(a.hi, b.hi));
}

/* The 8 lanes summed in double, in simd_avx2_f32.h's order: s_i = x_i +
 * x_(i+4), then (s_0 + s_2) + (s_1 + s_3). */
static inline double fn_neon_hsum_f32x8(fn_neon_f32x8 v)
{
    const float64x2_t s01 =
        vaddq_f64(vcvt_f64_f32(vget_low_f32(v.lo)), vcvt_f64_f32(vget_low_f32(v.hi)));
    const float64x2_t s23 = vaddq_f64(vcvt_high_f64_f32(v.lo), vcvt_high_f64_f32(v.hi));
    const float64x2_t a = vaddq_f64(s01, s23);
    return vgetq_lane_f64(a, 0) + vgetq_lane_f64(a, 1);
}

/* 8 double sums, in registers across a row (see VDACC in simd_contract.h) */
typedef struct {
    float64x2_t d[4]; /* lanes 0-1, 2-3, 4-5, 6-7 */
} fn_neon_dacc;

FN_NEON_INLINE fn_neon_dacc fn_neon_dacc_zero(void)
{
    fn_neon_dacc a;
    for (int j = 0; j < 4; j++) a.d[j] = vdupq_n_f64(0.0);
    return a;
}

FN_NEON_INLINE fn_neon_dacc fn_neon_dacc_add(fn_neon_dacc a, fn_neon_f32x8 v)
{
    a.d[0] = vaddq_f64(a.d[0], vcvt_f64_f32(vget_low_f32(v.lo)));
    a.d[1] = vaddq_f64(a.d[1], vcvt_high_f64_f32(v.lo));
    a.d[2] = vaddq_f64(a.d[2], vcvt_f64_f32(vget_low_f32(v.hi)));
    a.d[3] = vaddq_f64(a.d[3], vcvt_high_f64_f32(v.hi));
    return a;
}

FN_NEON_INLINE void fn_neon_dacc_store(double *p, fn_neon_dacc a)
{
    for (int j = 0; j < 4; j++) vst1q_f64(p + 2 * j, a.d[j]);
}

/* double p[0..8) += the lanes of v */
FN_NEON_INLINE void fn_neon_add_to_double_f32x8(double *p, fn_neon_f32x8 v)
{
    fn_neon_dacc a;
    for (int j = 0; j < 4; j++) a.d[j] = vld1q_f64(p + 2 * j);
    fn_neon_dacc_store(p, fn_neon_dacc_add(a, v));
}

/* 8 stored 16-bit elements: one 128-bit load or store; tails through a
 * zero-filled buffer, as for float32 */
static inline uint16x8_t fn_neon_load16_part(const uint16_t *p, ptrdiff_t n)
{
    uint16_t buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(buf, p, (size_t)n * sizeof(uint16_t));
    return vld1q_u16(buf);
}

static inline void fn_neon_store16_part(uint16_t *p, uint16x8_t h, ptrdiff_t n)
{
    uint16_t buf[8];
    vst1q_u16(buf, h);
    memcpy(p, buf, (size_t)n * sizeof(uint16_t));
}

/* float16 <-> float32: FCVTL/FCVTL2 and FCVTN/FCVTN2 */
FN_NEON_INLINE fn_neon_f32x8 fn_neon_widen_f16(uint16x8_t h)
{
    const float16x8_t f = vreinterpretq_f16_u16(h);
    return fn_neon_f32x8_of(vcvt_f32_f16(vget_low_f16(f)), vcvt_high_f32_f16(f));
}

FN_NEON_INLINE uint16x8_t fn_neon_narrow_f16(fn_neon_f32x8 v)
{
    return vreinterpretq_u16_f16(vcvt_high_f16_f32(vcvt_f16_f32(v.lo), v.hi));
}

/* bfloat16 is the upper half of a float32: widening is a shift */
FN_NEON_INLINE fn_neon_f32x8 fn_neon_widen_bf16(uint16x8_t h)
{
    return fn_neon_f32x8_of(vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16)),
                            vreinterpretq_f32_u32(vshll_high_n_u16(h, 16)));
}

/* float32 -> bfloat16 bits of 4 lanes, in the upper halves: adding 0x7fff
 * plus the lowest kept bit rounds to nearest even (a carry correctly bumps
 * the exponent); a NaN keeps its sign and payload and is made quiet */
FN_NEON_INLINE uint32x4_t fn_neon_round_bf16(float32x4_t v)
{
    const uint32x4_t u = vreinterpretq_u32_f32(v);
    const uint32x4_t lsb = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
    const uint32x4_t r = vaddq_u32(u, vaddq_u32(vdupq_n_u32(0x7fff), lsb));
    const uint32x4_t is_num = vceqq_f32(v, v);
    return vbslq_u32(is_num, r, vorrq_u32(u, vdupq_n_u32(0x400000)));
}

FN_NEON_INLINE uint16x8_t fn_neon_narrow_bf16(fn_neon_f32x8 v)
{
    return vshrn_high_n_u32(vshrn_n_u32(fn_neon_round_bf16(v.lo), 16), fn_neon_round_bf16(v.hi),
                            16);
}

/* The quantizer's codes of 8 values, as fn_avx512_store_i8/_e4m3 do for
 * 16 (simd_avx512_f32.h): FCVTNS rounds to nearest even, saturating
 * narrows (SQXTN) give the int8 codes. */
FN_NEON_INLINE uint32x4_t fn_neon_absmax_bits(uint32x4_t m, fn_neon_f32x8 v)
{
    const uint32x4_t mask = vdupq_n_u32(0x7FFFFFFF);
    const uint32x4_t lo = vandq_u32(vreinterpretq_u32_f32(v.lo), mask);
    const uint32x4_t hi = vandq_u32(vreinterpretq_u32_f32(v.hi), mask);
    return vmaxq_u32(m, vmaxq_u32(lo, hi));
}

FN_NEON_INLINE void fn_neon_store_i8(uint8_t *p, fn_neon_f32x8 v)
{
    const int16x8_t w =
        vcombine_s16(vqmovn_s32(vcvtnq_s32_f32(v.lo)), vqmovn_s32(vcvtnq_s32_f32(v.hi)));
    vst1_s8((int8_t *)p, vqmovn_s16(w));
}

FN_NEON_INLINE uint32x4_t fn_neon_e4m3_codes(float32x4_t v)
{
    const uint32x4_t bits = vreinterpretq_u32_f32(v);
    const uint32x4_t a = vandq_u32(bits, vdupq_n_u32(0x7FFFFFFF));
    const uint32x4_t odd = vandq_u32(vshrq_n_u32(a, 20), vdupq_n_u32(1));
    const uint32x4_t up = vaddq_u32(vaddq_u32(a, vdupq_n_u32(0x7FFFF)), odd);
    const uint32x4_t normal = vsubq_u32(vshrq_n_u32(up, 20), vdupq_n_u32(960));
    const uint32x4_t sub = vreinterpretq_u32_s32(vcvtnq_s32_f32(vmulq_n_f32(vabsq_f32(v), 512.0f)));
    const uint32x4_t is_normal = vcgeq_u32(a, vdupq_n_u32(0x3C800000));
    const uint32x4_t sign = vandq_u32(vshrq_n_u32(bits, 24), vdupq_n_u32(0x80));
    return vorrq_u32(vbslq_u32(is_normal, normal, sub), sign);
}

FN_NEON_INLINE void fn_neon_store_e4m3(uint8_t *p, fn_neon_f32x8 v)
{
    const uint16x8_t w =
        vcombine_u16(vmovn_u32(fn_neon_e4m3_codes(v.lo)), vmovn_u32(fn_neon_e4m3_codes(v.hi)));
    vst1_u8(p, vmovn_u16(w));
}
#endif

/* vectors of FN_T */
#define V fn_neon_f32x8
#define VL 8
#define VLOAD(p) fn_neon_load_f32x8(p)
#define VSTORE(p, v) fn_neon_store_f32x8((p), (v))
#define VLOAD_PART(p, n) fn_neon_load_part_f32x8((p), (n))
#define VSTORE_PART(p, v, n) fn_neon_store_part_f32x8((p), (v), (n))
#define VZERO_FROM(v, n) fn_neon_zero_from_f32x8((v), (n))
#define VSET1(s) fn_neon_set1_f32x8(s)
#define VZERO fn_neon_set1_f32x8(0.0f)
#define VADD fn_neon_add_f32x8
#define VSUB fn_neon_sub_f32x8
#define VMUL fn_neon_mul_f32x8
#define VFMA fn_neon_fma_f32x8
#define VMIN fn_neon_min_f32x8
#define VMAX fn_neon_max_f32x8
#define VSTREAM(p, v) fn_neon_store_f32x8((p), (v))
#define VSFENCE() ((void)0)
#define VHSUM_D fn_neon_hsum_f32x8
#define VADD_TO_DOUBLE fn_neon_add_to_double_f32x8
#define VDACC fn_neon_dacc
#define VDACC_ZERO fn_neon_dacc_zero()
#define VDACC_ADD fn_neon_dacc_add
#define VDACC_STORE(p, a) fn_neon_dacc_store((p), (a))

/* VL stored 16-bit elements: one 128-bit load or store, tails buffered */
#define FN_LOAD16(p) vld1q_u16(p)
#define FN_LOAD16_PART(p, n) fn_neon_load16_part((p), (n))
#define FN_STORE16(p, h) vst1q_u16((p), (h))
#define FN_STORE16_PART(p, h, n) fn_neon_store16_part((p), (h), (n))
#define FN_STREAM16(p, h) vst1q_u16((p), (h))
/* conversions: FCVTL / FCVTN for float16, integer bfloat16 */
#define VWIDEN_F16 fn_neon_widen_f16
#define VNARROW_F16 fn_neon_narrow_f16
/* quantized codes (quantize_rows.h) */
#define VQ_BITS uint32x4_t
#define VQ_BITS_ZERO vdupq_n_u32(0)
#define VQ_BITS_MAX vmaxq_u32
#define VQ_ABSMAX_BITS fn_neon_absmax_bits
#define VQ_HMAX_BITS vmaxvq_u32
#define VQ_STORE_I8 fn_neon_store_i8
#define VQ_STORE_E4M3 fn_neon_store_e4m3
#define VWIDEN_BF16 fn_neon_widen_bf16
#define VNARROW_BF16 fn_neon_narrow_bf16
