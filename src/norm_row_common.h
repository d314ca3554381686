/*
 * norm_row_common.h - per-row pieces shared by every kernel and ISA.
 *
 * Everything here runs once per row (choosing the pivot, turning the
 * accumulated moments into mean and rstd) or only on rare rows (NaN/Inf,
 * overflow of the squares), so it is written for clarity, in double.
 *
 * Template part: include after defining FN_T, the type the arithmetic is
 * done in (float or double), FN_SFX (f32, f64, f16, bf16; the dtype_*.h
 * headers define both) and FN_ISA (scalar, avx2, avx512, avx512bf16, neon).
 * Elements of the arrays (x, y, residual, h, dy, dx) are stored as FN_S,
 * read with FN_LD(v) and rounded back with FN_ST(t); without FN_S they are
 * FN_T itself; y is FN_Y (FN_S unless a stamp keeps it in FN_T, stored
 * with FN_STY).  weight, bias and the statistics are always FN_T.  The
 * non-template part is guarded and included once.
 *
 * Naming: every function a stamp defines, static helper or exported kernel,
 * is FN_NAME(base) = base_<sfx>_<isa> (e.g. rows_acc_step_f32_avx512), so
 * symbols in nm, perf and compiler messages say which stamp they are.
 */
#ifndef FASTNORM_ROW_COMMON_ONCE
#define FASTNORM_ROW_COMMON_ONCE

#include <math.h>
#include <stddef.h>
#include "fastnorm_kernels.h"

#define FN_CAT3_(a, b, c) a##_##b##_##c
#define FN_CAT3(a, b, c) FN_CAT3_(a, b, c)
#define FN_NAME(base) FN_CAT3(base, FN_SFX, FN_ISA)
/* the portable kernel of the same dtype (the SIMD walks fall back to it) */
#define FN_PORTABLE(base) FN_CAT3(base, FN_SFX, scalar)
/* for the per-layout and per-flag copies of a loop: an int flag passed as a
 * constant into such a function is folded away after inlining */
#define FN_ALWAYS_INLINE static inline __attribute__((always_inline))

/* The cache line: the unit that streaming stores must fill whole (the
 * walks write each line of an output with streaming stores alone or with
 * ordinary stores alone). */
#define FN_LINE_BYTES 64

/* Moments of a row: the SIMD walks gather count, sum of x - pivot and sum
 * of its squares (RMSNorm: of x*x), then fn_moments_from_sums gives the
 * mean of x - pivot and M2, the sum of squared deviations from that mean
 * (RMSNorm: M2 = sum of x*x). */
typedef struct fn_moments {
    double cnt, sum, sq;
    double mean, m2;
} fn_moments;

static inline void fn_moments_from_sums(fn_moments *m, int rms)
{
    m->mean = rms || m->cnt <= 0.0 ? 0.0 : m->sum / m->cnt;
    m->m2 = rms ? m->sq : m->sq - m->sum * m->mean;
}

/* A pivot further than FN_FAR_PIVOT standard deviations from the row's
 * mean: the shifted sums of squares lose up to 1 + FN_FAR_PIVOT^2 of their
 * precision to the subtraction in M2, so such a row is measured again about
 * a better pivot.  With the median of three elements as the pivot this
 * takes an outlier among them (for normal data, 1 row in 350). */
#define FN_FAR_PIVOT 2.0

static inline int fn_pivot_is_far(const fn_moments *m)
{
    /* NaN moments compare false: the rescan tests catch those rows */
    return m->mean * m->mean * m->cnt > FN_FAR_PIVOT * FN_FAR_PIVOT * m->m2;
}

/* What the normalize pass needs for one row. */
typedef struct fn_row_stats {
    double mean_d;  /* mean of (x - pivot) (LayerNorm) */
    double rstd;    /* 1/sqrt(var + eps), reported to the caller */
    double scale;   /* multiplier for the normalize pass: rstd, or 0 when
                       var + eps == 0 so that a constant row gives exactly
                       bias instead of 0 * inf = NaN */
    /* The same row in rescaled units, for rows whose scale does not fit the
     * compute type (spreads near the smallest subnormals): the row is
     * normalized as ((x - pivot) * s - mean_s) * inv_root, where s is a
     * power of two, inv_root = 1/sqrt(var * s^2 + eps * s^2), and
     * rstd = s * inv_root.  s = 1 on the usual path. */
    double s, mean_s, inv_root;
    int wide_normalize; /* scale does not fit FN_T: use fn_normalize_row_wide */
} fn_row_stats;

/* max(v, 0), NaN giving 0 as with fmax, but inline: libm's fmax is SSE
 * code, and a call into SSE code while the upper halves of the vector
 * registers are dirty cost about 430 cycles a row on a Sapphire Rapids Xeon
 * (GCC does not put a vzeroupper before every such call).  The per-row
 * paths call no libm function for that reason. */
static inline double fn_nonneg(double v)
{
    return v > 0.0 ? v : 0.0;
}

/* Chan et al.'s pairwise update: fold (nb, mb, m2b) into (na, ma, m2a). */
static inline void fn_chan_merge(double *na, double *ma, double *m2a, double nb, double mb,
                                 double m2b)
{
    if (nb <= 0.0) return;
    double n = *na + nb;
    double delta = mb - *ma;
    *ma += delta * (nb / n);
    *m2a += m2b + delta * delta * (*na * nb / n);
    *na = n;
}

/* *sum += v with Neumaier's compensation in *comp (the total is *sum +
 * *comp): sums of many nearly equal terms, such as the squares of a long
 * row with a large mean, then carry one rounding instead of one per term. */
static inline void fn_add_compensated(double *sum, double *comp, double v)
{
    const double t = *sum + v;
    *comp += fabs(*sum) >= fabs(v) ? (*sum - t) + v : (v - t) + *sum;
    *sum = t;
}

/* rstd = s / sqrt(denom): denom is var + eps of the row scaled by s, and
 * mean_s the shifted mean in the same units. */
static inline void fn_finish_scale(double denom, double s, double mean_s, fn_row_stats *st)
{
    st->s = s;
    st->mean_s = mean_s;
    st->inv_root = 1.0 / sqrt(denom);
    st->rstd = s * st->inv_root;
    st->scale = denom > 0.0 ? st->rstd : 0.0;
    st->wide_normalize = 0;
}

/* What the normalize pass computes with: y = (x - p2) * scale + c, where
 * p2 + (center - p2) is the row's center (pivot + shifted mean, or 0) split
 * into a value of the input type and a small remainder, so x - p2 is
 * correctly rounded (exact when |mean| >> std) and no precision is lost. */
typedef struct fn_norm_params {
    double p2, scale, c;
} fn_norm_params;

static inline void fn_row_stats_nan(fn_row_stats *st)
{
    st->mean_d = st->rstd = st->scale = st->mean_s = st->inv_root = NAN;
    st->s = 1.0;
    st->wide_normalize = 0;
}

#endif /* FASTNORM_ROW_COMMON_ONCE */

#if defined(FN_T) && defined(FN_SFX)

#ifndef FN_ISA
#error "norm_row_common.h: define FN_ISA (scalar, avx2, ...) before a stamp's FN_T/FN_SFX part"
#endif

#ifndef FN_S
#define FN_S FN_T
#define FN_LD(v) (v)
#define FN_ST(t) (t)
#endif

/* The output's element type (y only): FN_S, or FN_T in the stamps whose y
 * keeps the compute precision (simd_wide_out.h: float32 results from a
 * float16/bfloat16 input, the values that would otherwise be rounded). */
#ifndef FN_Y
#define FN_Y FN_S
#define FN_STY(t) FN_ST(t)
#endif

/* Below this var + eps the moments summed in FN_T may have lost their
 * precision to underflow (the squares of a row of 1e-25 are 0 in float32):
 * such rows are measured again, rescaled.  Squares of the elements that
 * matter are then far above the type's smallest normal (2^-126, 2^-1022). */
#define FN_TINY_DENOM (sizeof(FN_T) == 4 ? 0x1p-100 : 0x1p-1000)

/* Whether the row's moments need the row scanned again in memory:
 * NaN/Inf in the row, squares that overflowed, or var + eps so small that
 * its squares may have underflowed. */
static inline int FN_NAME(fn_moments_need_rescan)(double mean_d, double m2, ptrdiff_t n, double eps)
{
    if (!isfinite(mean_d) || !isfinite(m2)) return 1;
    return fn_nonneg(m2) / (double)n + eps < FN_TINY_DENOM;
}

/* Whether a LayerNorm row's moments need the row scanned again, in
 * double: those of fn_moments_need_rescan, and a pivot still far from the
 * mean (the walks measure such rows again about a better pivot first). */
static inline int FN_NAME(fn_layer_needs_scan)(const fn_moments *m, ptrdiff_t n, double eps)
{
    return FN_NAME(fn_moments_need_rescan)(m->mean, m->m2, n, eps) || fn_pivot_is_far(m);
}

/* h = x + r as stored: summed in FN_T, rounded once to the element type */
static inline FN_S FN_NAME(fn_sum_stored)(FN_S a, FN_S b)
{
    return FN_ST(FN_LD(a) + FN_LD(b));
}

/* The pivot is the median of the first, middle and last element.  A pivot
 * inside the bulk of the row keeps x - pivot small, which is what makes the
 * float32 accumulation accurate when the mean is large; the median of three
 * stays in the bulk even when one of the three is an outlier. */
static inline FN_T FN_NAME(fn_row_pivot)(const FN_S *x, ptrdiff_t n, ptrdiff_t xs)
{
    FN_T a = FN_LD(x[0]), b = FN_LD(x[((n - 1) / 2) * xs]), c = FN_LD(x[(n - 1) * xs]);
    FN_T lo = a < b ? a : b, hi = a < b ? b : a;
    return c < lo ? lo : (c > hi ? hi : c);
}

static inline int FN_NAME(fn_row_has_nonfinite)(const FN_S *x, ptrdiff_t n, ptrdiff_t xs)
{
    for (ptrdiff_t i = 0; i < n; i++)
        if (!isfinite(FN_LD(x[i * xs]))) return 1;
    return 0;
}

static inline fn_norm_params FN_NAME(fn_norm_params)(FN_T pivot, const fn_row_stats *st)
{
    fn_norm_params np;
    FN_T p2 = (FN_T)((double)pivot + st->mean_d);
    double remainder = ((double)pivot - (double)p2) + st->mean_d;
    np.p2 = (double)p2;
    np.scale = st->scale;
    np.c = -remainder * st->scale;
    if (st->scale == 0.0) np.c = 0.0; /* constant row with eps == 0: exactly bias */
    return np;
}

/* Row r's weight or bias (NULL stays NULL): see fn_rows.w_row_stride. */
static inline const FN_T *FN_NAME(fn_row_affine)(const void *p, ptrdiff_t row_stride, ptrdiff_t r)
{
    return p ? (const FN_T *)p + r * row_stride : NULL;
}

static inline void FN_NAME(fn_store_row_stats)(const fn_rows *a, ptrdiff_t r, double mean,
                                               double rstd)
{
    if (a->mean) ((FN_T *)a->mean)[r * a->stat_stride] = (FN_T)mean;
    if (a->rstd) ((FN_T *)a->rstd)[r * a->stat_stride] = (FN_T)rstd;
}

/* Power-of-two factor that brings max|x - pivot| near 1; exact to apply. */
static inline double FN_NAME(fn_row_rescale_factor)(const FN_S *x, ptrdiff_t n, ptrdiff_t xs,
                                                    double pivot)
{
    double amax = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        double a = fabs((double)FN_LD(x[i * xs]) - pivot);
        if (a > amax) amax = a;
    }
    int e = 0;
    frexp(amax, &e);
    /* 2^-e does not fit a double for float64 subnormals (e < -1023); 2^960
     * already lifts them to 2^-114, where their squares are normal */
    return ldexp(1.0, -e < 960 ? -e : 960);
}

/* A scale outside FN_T's normal range cannot go through the FN_T normalize
 * loops: rstd > FLT_MAX (a row whose spread is near the smallest
 * subnormals), or rstd subnormal in FN_T (a spread near the largest values),
 * where it would keep only a few bits. */
static inline void FN_NAME(fn_check_scale_fits)(fn_row_stats *st)
{
    st->wide_normalize = isfinite(st->inv_root) && st->scale != 0.0 && !isnormal((FN_T)st->scale);
}

/* Rare path: the squares overflowed or may have underflowed although the
 * row is finite (values near the type's limits, or eps = 0 on tiny rows).
 * Two passes in double over the row rescaled by a power
 * of two, so nothing overflows and nothing is rounded by the scaling. */
static void FN_NAME(fn_layer_stats_rescaled)(const FN_S *x, ptrdiff_t n, ptrdiff_t xs, double pivot,
                                             double eps, fn_row_stats *st)
{
    double s = FN_NAME(fn_row_rescale_factor)(x, n, xs, pivot);
    double sum = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) sum += ((double)FN_LD(x[i * xs]) - pivot) * s;
    double mean_s = sum / (double)n, m2 = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        double d = ((double)FN_LD(x[i * xs]) - pivot) * s - mean_s;
        m2 += d * d;
    }
    st->mean_d = mean_s / s;
    /* 1/sqrt(var + eps) with var = m2/n/s^2, written so nothing overflows */
    fn_finish_scale(m2 / (double)n + eps * s * s, s, mean_s, st);
    FN_NAME(fn_check_scale_fits)(st);
}

/* Turn the shifted moments of a row into mean and rstd.  A row holding NaN
 * or Inf gets NaN stats, and NaN scale makes the normalize pass write NaN. */
static inline void FN_NAME(fn_layer_finish)(const FN_S *x, ptrdiff_t n, ptrdiff_t xs, FN_T pivot,
                                            double mean_d, double m2, double eps, fn_row_stats *st)
{
    if (FN_NAME(fn_moments_need_rescan)(mean_d, m2, n, eps)) {
        if (FN_NAME(fn_row_has_nonfinite)(x, n, xs))
            fn_row_stats_nan(st);
        else
            FN_NAME(fn_layer_stats_rescaled)(x, n, xs, (double)pivot, eps, st);
        return;
    }
    st->mean_d = mean_d;
    fn_finish_scale(fn_nonneg(m2) / (double)n + eps, 1.0, mean_d, st);
}

/* fn_layer_finish for moments from shifted sums (the SIMD rows walks): a
 * pivot still far from the mean (fn_pivot_is_far) takes the two-pass scan
 * in double. */
static inline void FN_NAME(fn_layer_finish_sums)(const FN_S *x, ptrdiff_t n, ptrdiff_t xs,
                                                 FN_T pivot, const fn_moments *m, double eps,
                                                 fn_row_stats *st)
{
    if (fn_pivot_is_far(m) && !FN_NAME(fn_row_has_nonfinite)(x, n, xs))
        FN_NAME(fn_layer_stats_rescaled)(x, n, xs, (double)pivot, eps, st);
    else
        FN_NAME(fn_layer_finish)(x, n, xs, pivot, m->mean, m->m2, eps, st);
}

/* RMSNorm: sumsq is the sum of x*x over the row; NaN stats as above. */
static inline void FN_NAME(fn_rms_finish)(const FN_S *x, ptrdiff_t n, ptrdiff_t xs, double sumsq,
                                          double eps, fn_row_stats *st)
{
    st->mean_d = 0.0;
    if (FN_NAME(fn_moments_need_rescan)(0.0, sumsq, n, eps)) {
        if (FN_NAME(fn_row_has_nonfinite)(x, n, xs)) {
            fn_row_stats_nan(st);
            return;
        }
        double s = FN_NAME(fn_row_rescale_factor)(x, n, xs, 0.0), ss = 0.0;
        for (ptrdiff_t i = 0; i < n; i++) {
            double v = (double)FN_LD(x[i * xs]) * s;
            ss += v * v;
        }
        fn_finish_scale(ss / (double)n + eps * s * s, s, 0.0, st);
        FN_NAME(fn_check_scale_fits)(st);
        return;
    }
    fn_finish_scale(sumsq / (double)n + eps, 1.0, 0.0, st);
}

/* Normalize one row in double, in the rescaled units of the stats (see
 * fn_row_stats): for the rare rows whose scale does not fit FN_T.  Any
 * strides; reads x[i] before writing y[i], so y may alias x exactly. */
static void FN_NAME(fn_normalize_row_wide)(const FN_S *x, ptrdiff_t xs, FN_Y *y, ptrdiff_t ys,
                                           ptrdiff_t n, double pivot, const fn_row_stats *st,
                                           const FN_T *w, const FN_T *b)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        double t = (((double)FN_LD(x[i * xs]) - pivot) * st->s - st->mean_s) * st->inv_root;
        if (w) t *= (double)w[i];
        if (b) t += (double)b[i];
        y[i * ys] = FN_STY((FN_T)t);
    }
}

#endif /* FN_T && FN_SFX */
