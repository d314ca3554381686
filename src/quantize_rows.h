/*
 * quantize_rows.h - the quantizer of a block of rows: float32 or float64
 * values to one-byte codes (int8, or float8 e4m3fn) with float32 scales,
 * one per group of group_len consecutive elements of a row (fastnorm.quantize,
 * and the quantized norms, which run it on a tile of their float output
 * while it is still in cache).
 *
 * ISA: none.  Plain C, stamped once per element type in every kernel file
 * and compiled with that file's flags (FN_T, FN_SFX and FN_ISA name it, as
 * in norm_row_common.h).  The compilers vectorize the loops over fixed
 * blocks of FN_QBLOCK elements.  Every step is one correctly rounded IEEE
 * operation or exact (|y|, max, the product, rint in the default
 * round-to-nearest-even mode, comparisons, integer bit operations), so the
 * codes and scales are the same bits on every ISA and for any vector width,
 * and a few lines of NumPy reproduce them (tests/test_quantize.py):
 *
 *   dynamic scale:  scale = max(amax / qmax, 2^-126) in float32, amax the
 *                   largest |y| of the group (float64 values: amax / qmax
 *                   in double, then rounded to float32);
 *   codes:          v = y * inv, inv = 1 / scale (both in FN_T: one
 *                   correctly rounded reciprocal a group, then a product
 *                   per element, which is several times cheaper than a
 *                   division), clamped to [-qmax, qmax]; int8: rint(v);
 *                   e4m3fn: v rounded to the nearest e4m3fn value, ties
 *                   to even.  Scales are never below 2^-126, so inv is
 *                   finite.
 *
 * Non-finite values never reach a float-to-integer conversion (undefined
 * behaviour in C): a group holding NaN or +-Inf, or float64 values so large
 * that its scale overflows float32, gets a NaN scale and codes 0 (int8) or
 * NaN (e4m3fn, 0x7F); with a given (static) scale, NaN gives 0
 * or NaN with y's sign, and +-Inf saturates to +-qmax.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef FASTNORM_QUANTIZE_ONCE
#define FASTNORM_QUANTIZE_ONCE
#define FN_QBLOCK 32 /* elements per step of the vectorized loops */

/* e4m3fn's code of |v| (v clamped to +-448, or NaN; the sign is added by
 * the caller): the float's exponent rebiased (127 -> 7, 1023 -> 7) and its
 * mantissa rounded from 23 (float) or 52 (double) bits to 3, to nearest
 * even, by an integer add and shift; below 2^-6, the subnormal codes,
 * which are |v| * 2^9 rounded to an integer (0..8: 8 is 2^-6's own code).
 * Written as selects, no branches, so that the loops vectorize; the float
 * converted to an integer is the subnormal product (exact, at most 8) or
 * 0, never a NaN or a large value. */
static inline uint32_t fn_e4m3_magnitude_f32(float f)
{
    uint32_t a;
    memcpy(&a, &f, sizeof a);
    a &= 0x7FFFFFFFu;
    const uint32_t normal = ((a + 0x7FFFFu + ((a >> 20) & 1u)) >> 20) - ((127u - 7u) << 3);
    const float product = a < 0x3C800000u ? rintf(fabsf(f) * 512.0f) : 0.0f;
    const uint32_t code = a >= 0x3C800000u ? normal : (uint32_t)(int32_t)product;
    return a > 0x7F800000u ? 0x7Fu : code;
}

static inline uint32_t fn_e4m3_magnitude_f64(double d)
{
    uint64_t a;
    memcpy(&a, &d, sizeof a);
    a &= 0x7FFFFFFFFFFFFFFFull;
    const uint64_t normal =
        ((a + 0xFFFFFFFFFFFFull + ((a >> 49) & 1u)) >> 49) - ((uint64_t)(1023 - 7) << 3);
    const double product = a < 0x3F90000000000000ull ? rint(fabs(d) * 512.0) : 0.0;
    const uint32_t code =
        a >= 0x3F90000000000000ull ? (uint32_t)normal : (uint32_t)(int32_t)product;
    return a > 0x7FF0000000000000ull ? 0x7Fu : code;
}

#endif /* FASTNORM_QUANTIZE_ONCE */

static inline uint8_t FN_NAME(quant_code)(FN_T y, FN_T inv, FN_T qmax, int code)
{
    FN_T v = y * inv;
    v = v > qmax ? qmax : v; /* (NaN passes both: compared false) */
    v = v < -qmax ? -qmax : v;
    if (code == FN_Q_INT8) {
        v = v == v ? v : (FN_T)0;
        return (uint8_t)(int8_t)(int32_t)rint(v);
    }
    /* (y's sign: v's, and defined for a NaN too) */
    const uint32_t mag =
        sizeof(FN_T) == 8 ? fn_e4m3_magnitude_f64((double)v) : fn_e4m3_magnitude_f32((float)v);
    return (uint8_t)(mag | (signbit(y) ? 0x80u : 0u));
}

/* Codes of n values with scale s (a group's): the scalar loop, for every
 * element type and any value (NaN and Inf included). */
static void FN_NAME(quant_codes_scalar)(const FN_T *y, uint8_t *q, ptrdiff_t n, FN_T inv, FN_T qmax,
                                        int code)
{
    ptrdiff_t i = 0;
    if (code == FN_Q_INT8) {
        for (; i + FN_QBLOCK <= n; i += FN_QBLOCK)
            for (int j = 0; j < FN_QBLOCK; j++)
                q[i + j] = FN_NAME(quant_code)(y[i + j], inv, qmax, FN_Q_INT8);
    } else {
        for (; i + FN_QBLOCK <= n; i += FN_QBLOCK)
            for (int j = 0; j < FN_QBLOCK; j++)
                q[i + j] = FN_NAME(quant_code)(y[i + j], inv, qmax, FN_Q_E4M3);
    }
    for (; i < n; i++) q[i] = FN_NAME(quant_code)(y[i], inv, qmax, code);
}

#if defined(VQ_STORE_I8)
/* The float32 vocabularies' vectors: the same values as the scalar loops.
 * The largest |y| is taken on the bits: |y|'s bit patterns order as its
 * values do, and NaN and Inf are the patterns from 0x7F800000 up, so one
 * integer maximum gives both amax and whether the group is finite, the same
 * on every ISA (VMAX's NaN rules differ).  VQ_ABSMAX_BITS(m, v) folds |v|'s
 * bits into the lanes' maxima m, VQ_HMAX_BITS(m) is the largest of them;
 * VQ_STORE_I8 and VQ_STORE_E4M3 give the codes of a vector. */
static FN_T FN_NAME(quant_amax)(const FN_T *y, ptrdiff_t n, int *nonfinite)
{
    VQ_BITS m0 = VQ_BITS_ZERO, m1 = VQ_BITS_ZERO;
    ptrdiff_t i = 0;
    for (; i + 2 * VL <= n; i += 2 * VL) {
        m0 = VQ_ABSMAX_BITS(m0, VLOAD(y + i));
        m1 = VQ_ABSMAX_BITS(m1, VLOAD(y + i + VL));
    }
    uint32_t top = VQ_HMAX_BITS(VQ_BITS_MAX(m0, m1));
    for (; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &y[i], sizeof bits);
        bits &= 0x7FFFFFFFu;
        top = bits > top ? bits : top;
    }
    *nonfinite = top >= 0x7F800000u;
    FN_T amax;
    memcpy(&amax, &top, sizeof amax);
    return amax;
}

/* Codes of finite values (y * inv may still overflow to +-Inf: it is
 * clamped like any other value). */
static void FN_NAME(quant_codes)(const FN_T *y, uint8_t *q, ptrdiff_t n, FN_T inv, FN_T qmax,
                                 int code)
{
    const V vinv = VSET1(inv), hi = VSET1(qmax), lo = VSET1(-qmax);
    ptrdiff_t i = 0;
    if (code == FN_Q_INT8)
        for (; i + VL <= n; i += VL)
            VQ_STORE_I8(q + i, VMIN(VMAX(VMUL(VLOAD(y + i), vinv), lo), hi));
    else
        for (; i + VL <= n; i += VL)
            VQ_STORE_E4M3(q + i, VMIN(VMAX(VMUL(VLOAD(y + i), vinv), lo), hi));
    FN_NAME(quant_codes_scalar)(y + i, q + i, n - i, inv, qmax, code);
}
#else
/* The largest |y| of n values, and whether one of them is NaN or +-Inf
 * (the scalar loop). */
static FN_T FN_NAME(quant_amax)(const FN_T *y, ptrdiff_t n, int *nonfinite)
{
    FN_T m[FN_QBLOCK] = {0};
    int bad[FN_QBLOCK] = {0};
    ptrdiff_t i = 0;
    for (; i + FN_QBLOCK <= n; i += FN_QBLOCK)
        for (int j = 0; j < FN_QBLOCK; j++) {
            const FN_T a = fabs(y[i + j]);
            m[j] = a > m[j] ? a : m[j];
            bad[j] |= !(a < (FN_T)INFINITY); /* NaN compares false */
        }
    for (; i < n; i++) {
        const FN_T a = fabs(y[i]);
        m[0] = a > m[0] ? a : m[0];
        bad[0] |= !(a < (FN_T)INFINITY);
    }
    FN_T amax = 0;
    int any = 0;
    for (int j = 0; j < FN_QBLOCK; j++) {
        amax = m[j] > amax ? m[j] : amax;
        any |= bad[j];
    }
    *nonfinite = any;
    return amax;
}

static void FN_NAME(quant_codes)(const FN_T *y, uint8_t *q, ptrdiff_t n, FN_T inv, FN_T qmax,
                                 int code)
{
    FN_NAME(quant_codes_scalar)(y, q, n, inv, qmax, code);
}
#endif

/* The dynamic scale of a group whose values are finite. */
/* The dynamic scale of a group whose values are finite, or NaN when it
 * does not fit float32 (float64 values beyond qmax * FLT_MAX: such a group
 * is treated as a non-finite one; and the conversion stays defined). */
static inline float FN_NAME(quant_scale)(FN_T amax, FN_T qmax)
{
    const FN_T wide = amax / qmax;
    if (!(wide <= (FN_T)FLT_MAX)) return NAN;
    const float s = (float)wide;
    return s >= FLT_MIN ? s : FLT_MIN;
}

void FN_NAME(quantize_rows)(const fn_quant *a)
{
    const FN_T qmax = a->code == FN_Q_INT8 ? (FN_T)127 : (FN_T)448;
    const ptrdiff_t n = a->row_len, g = a->group_len, groups = n / g;
    for (ptrdiff_t r = 0; r < a->rows; r++) {
        const FN_T *y = (const FN_T *)a->y + r * a->y_row_stride;
        uint8_t *q = (uint8_t *)a->q + r * a->q_row_stride;
        float *scale = a->scale + r * a->scale_row_stride;
        for (ptrdiff_t k = 0; k < groups; k++) {
            const FN_T *yk = y + k * g;
            uint8_t *qk = q + k * g;
            int nonfinite;
            const FN_T amax = FN_NAME(quant_amax)(yk, g, &nonfinite);
            const float dynamic =
                nonfinite || a->static_scale ? 0.0f : FN_NAME(quant_scale)(amax, qmax);
            if (a->static_scale) {
                /* NaN and Inf take the scalar loop, which defines them */
                const FN_T inv = (FN_T)1 / (FN_T)scale[k];
                if (nonfinite)
                    FN_NAME(quant_codes_scalar)(yk, qk, g, inv, qmax, a->code);
                else
                    FN_NAME(quant_codes)(yk, qk, g, inv, qmax, a->code);
            } else if (nonfinite || isnan(dynamic)) {
                scale[k] = NAN;
                memset(qk, a->code == FN_Q_INT8 ? 0 : 0x7F, (size_t)g);
            } else {
                scale[k] = dynamic;
                FN_NAME(quant_codes)(yk, qk, g, (FN_T)1 / (FN_T)dynamic, qmax, a->code);
            }
        }
    }
}
