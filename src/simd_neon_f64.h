/*
 * simd_neon_f64.h - the AArch64 Advanced SIMD (NEON) vocabulary for
 * float64 vectors (the contract is in simd_contract.h), baseline ASIMD
 * only.
 *
 * A vector is 4 float64 lanes held in two 128-bit registers (lo: lanes
 * 0-1, hi: lanes 2-3), the width of an AVX2 vector, so the walks keep
 * AVX2's chains, unrolling and accumulation order, and give its bits:
 * every operation rounds lane by lane (FMLA is fused, like VFMADD), and
 * VHSUM_D adds the lanes in simd_avx2_f64.h's order.  Row tails go through
 * a small zero-filled buffer, so nothing past a row is touched.  VMIN/VMAX
 * and the plain stores behind VSTREAM are as in simd_neon_f32.h.  float64
 * elements are stored as they are computed on: no 16-bit moves.
 *
 * Included by kernels_neon.c once per stamp: the helper functions are
 * guarded, the macros are #undef'd at the end of every stamp by
 * simd_vocab_undef.h.
 */
#ifndef FASTNORM_SIMD_NEON_F64_HELPERS
#define FASTNORM_SIMD_NEON_F64_HELPERS
#include <arm_neon.h>
#include <string.h>

#define FN_NEON_F64_INLINE static inline __attribute__((always_inline))

/* 4 float64 lanes: lanes 0-1 in lo, 2-3 in hi */
typedef struct {
    float64x2_t lo, hi;
} fn_neon_f64x4;

FN_NEON_F64_INLINE fn_neon_f64x4 fn_neon_f64x4_of(float64x2_t lo, float64x2_t hi)
{
    fn_neon_f64x4 r = {lo, hi};
    return r;
}

FN_NEON_F64_INLINE fn_neon_f64x4 fn_neon_load_f64x4(const double *p)
{
    return fn_neon_f64x4_of(vld1q_f64(p), vld1q_f64(p + 2));
}

FN_NEON_F64_INLINE void fn_neon_store_f64x4(double *p, fn_neon_f64x4 v)
{
    vst1q_f64(p, v.lo);
    vst1q_f64(p + 2, v.hi);
}

/* the first n lanes (0 < n < 4); the others load as 0 */
static inline fn_neon_f64x4 fn_neon_load_part_f64x4(const double *p, ptrdiff_t n)
{
    double buf[4] = {0, 0, 0, 0};
    memcpy(buf, p, (size_t)n * sizeof(double));
    return fn_neon_load_f64x4(buf);
}

static inline void fn_neon_store_part_f64x4(double *p, fn_neon_f64x4 v, ptrdiff_t n)
{
    double buf[4];
    fn_neon_store_f64x4(buf, v);
    memcpy(p, buf, (size_t)n * sizeof(double));
}

/* lanes >= n set to 0 */
static inline fn_neon_f64x4 fn_neon_zero_from_f64x4(fn_neon_f64x4 v, ptrdiff_t n)
{
    static const uint64_t on[8] = {~0ull, ~0ull, ~0ull, ~0ull, 0, 0, 0, 0};
    const uint64_t *m = on + 4 - n;
    return fn_neon_f64x4_of(
        vreinterpretq_f64_u64(vandq_u64(vreinterpretq_u64_f64(v.lo), vld1q_u64(m))),
        vreinterpretq_f64_u64(vandq_u64(vreinterpretq_u64_f64(v.hi), vld1q_u64(m + 2))));
}

FN_NEON_F64_INLINE fn_neon_f64x4 fn_neon_set1_f64x4(double s)
{
    return fn_neon_f64x4_of(vdupq_n_f64(s), vdupq_n_f64(s));
}

FN_NEON_F64_INLINE fn_neon_f64x4 fn_neon_add_f64x4(fn_neon_f64x4 a, fn_neon_f64x4 b)
{
    return fn_neon_f64x4_of(vaddq_f64(a.lo, b.lo), vaddq_f64(a.hi, b.hi));
}

FN_NEON_F64_INLINE fn_neon_f64x4 fn_neon_sub_f64x4(fn_neon_f64x4 a, fn_neon_f64x4 b)
{
    return fn_neon_f64x4_of(vsubq_f64(a.lo, b.lo), vsubq_f64(a.hi, b.hi));
}

FN_NEON_F64_INLINE fn_neon_f64x4 fn_neon_mul_f64x4(fn_neon_f64x4 a, fn_neon_f64x4 b)
{
    return fn_neon_f64x4_of(vmulq_f64(a.lo, b.lo), vmulq_f64(a.hi, b.hi));
}

/* a * b + c, fused (FMLA) */
FN_NEON_F64_INLINE fn_neon_f64x4 fn_neon_fma_f64x4(fn_neon_f64x4 a, fn_neon_f64x4 b,
                                                   fn_neon_f64x4 c)
{
    return fn_neon_f64x4_of(vfmaq_f64(c.lo, a.lo, b.lo), vfmaq_f64(c.hi, a.hi, b.hi));
}

FN_NEON_F64_INLINE fn_neon_f64x4 fn_neon_min_f64x4(fn_neon_f64x4 a, fn_neon_f64x4 b)
{
    return fn_neon_f64x4_of(vminq_f64(a.lo, b.lo), vminq_f64(a.hi, b.hi));
}

FN_NEON_F64_INLINE fn_neon_f64x4 fn_neon_max_f64x4(fn_neon_f64x4 a, fn_neon_f64x4 b)
{
    return fn_neon_f64x4_of(vmaxq_f64(a.lo, b.lo), vmaxq_f64(a.hi, b.hi));
}

/* the 4 lanes summed in simd_avx2_f64.h's order: (x_0 + x_2) + (x_1 + x_3) */
static inline double fn_neon_hsum_f64x4(fn_neon_f64x4 v)
{
    const float64x2_t a = vaddq_f64(v.lo, v.hi);
    return vgetq_lane_f64(a, 0) + vgetq_lane_f64(a, 1);
}

/* double p[0..4) += the lanes of v */
FN_NEON_F64_INLINE void fn_neon_add_to_double_f64x4(double *p, fn_neon_f64x4 v)
{
    fn_neon_store_f64x4(p, fn_neon_add_f64x4(fn_neon_load_f64x4(p), v));
}
#endif

/* vectors of FN_T */
#define V fn_neon_f64x4
#define VL 4
#define VLOAD(p) fn_neon_load_f64x4(p)
#define VSTORE(p, v) fn_neon_store_f64x4((p), (v))
#define VLOAD_PART(p, n) fn_neon_load_part_f64x4((p), (n))
#define VSTORE_PART(p, v, n) fn_neon_store_part_f64x4((p), (v), (n))
#define VZERO_FROM(v, n) fn_neon_zero_from_f64x4((v), (n))
#define VSET1(s) fn_neon_set1_f64x4(s)
#define VZERO fn_neon_set1_f64x4(0.0)
#define VADD fn_neon_add_f64x4
#define VSUB fn_neon_sub_f64x4
#define VMUL fn_neon_mul_f64x4
#define VFMA fn_neon_fma_f64x4
#define VMIN fn_neon_min_f64x4
#define VMAX fn_neon_max_f64x4
#define VSTREAM(p, v) fn_neon_store_f64x4((p), (v))
#define VSFENCE() ((void)0)
#define VHSUM_D fn_neon_hsum_f64x4
#define VADD_TO_DOUBLE fn_neon_add_to_double_f64x4
