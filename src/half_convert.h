/*
 * half_convert.h - float16 and bfloat16 <-> float32, one value at a time, in
 * portable C.  The portable kernels use these for every element; the SIMD
 * kernels use hardware conversions (F16C, AVX-512, AVX-512 BF16) and call
 * these only on the rare per-row paths.
 *
 * Narrowing rounds to nearest, ties to even, like the hardware and like
 * NumPy's and ml_dtypes' casts: finite values too large for the format
 * become +-Inf, values below half the smallest subnormal become +-0, and a
 * NaN stays a (quiet) NaN with its sign.  Widening is exact.
 */
#ifndef FASTNORM_HALF_CONVERT_H
#define FASTNORM_HALF_CONVERT_H

#include <stdint.h>
#include <string.h>

static inline uint32_t fn_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float fn_f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* bfloat16 is the upper half of a float32 */
static inline float fn_bf16_to_f32(uint16_t h)
{
    return fn_f32_from_bits((uint32_t)h << 16);
}

static inline uint16_t fn_f32_to_bf16(float f)
{
    const uint32_t u = fn_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN */
    /* adding 0x7fff plus the lowest kept bit rounds to nearest, ties to
     * even; a carry out of the mantissa correctly bumps the exponent (and
     * turns the largest finite values into Inf) */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float fn_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return fn_f32_from_bits(sign | 0x7f800000u | (m << 13)); /* Inf, NaN */
    if (e == 0) { /* zero or subnormal: m * 2^-24, exact in float32 */
        const float v = (float)m * 5.9604644775390625e-08f;
        return sign ? -v : v;
    }
    return fn_f32_from_bits(sign | ((e + 112u) << 23) | (m << 13));
}

static inline uint16_t fn_f32_to_f16(float f)
{
    const uint32_t u = fn_f32_bits(f);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    const uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to Inf */
    if (a >= 0x38800000u) { /* normal: rebias the exponent, round 13 bits away */
        const uint32_t r = a - 0x38000000u;
        return (uint16_t)(sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13));
    }
    if (a <= 0x33000000u) return sign; /* at most 2^-25: ties to even give 0 */
    /* subnormal result: the 24-bit significand times 2^(e - 150), in units of
     * 2^-24, rounded to nearest even (a carry into 0x400 is the smallest
     * normal, which is the right encoding) */
    const uint32_t e = a >> 23, mant = (a & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e; /* 14..24 */
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (q & 1u))) q++;
    return (uint16_t)(sign | q);
}

#endif /* FASTNORM_HALF_CONVERT_H */
