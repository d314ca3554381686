/*
 * norm_row_common.h - per-row pieces shared by every kernel and ISA.
 *
 * Everything here runs once per row (choosing the pivot, turning the
 * accumulated moments into mean and rstd) or only on rare rows (NaN/Inf,
 * overflow of the squares), so it is written for clarity, in double.
 *
 * Template part: include after defining FN_T, the type the arithmetic is
 * done in (float or double), and FN_SFX (f32, f64, f16, bf16).  Elements of
 * the arrays (x, y, residual, h, dy, dx) are stored as FN_S, read with
 * FN_LD(v) and rounded back with FN_ST(t); without FN_S they are FN_T
 * itself.  weight, bias and the statistics are always FN_T.  The
 * non-template part is guarded and included once.
 */
#ifndef FASTNORM_ROW_COMMON_ONCE
#define FASTNORM_ROW_COMMON_ONCE

#include <math.h>
#include <stddef.h>
#include "fastnorm_kernels.h"

#define FN_CAT_(a, b) a##_##b
#define FN_CAT(a, b) FN_CAT_(a, b)
#define FN_NAME(base) FN_CAT(base, FN_SFX)

/* What the normalize pass needs for one row. */
typedef struct fn_row_stats {
    double mean_d;  /* mean of (x - pivot) (LayerNorm) */
    double rstd;    /* 1/sqrt(var + eps), reported to the caller */
    double scale;   /* multiplier for the normalize pass: rstd, or 0 when
                       var + eps == 0 so that a constant row gives exactly
                       bias instead of 0 * inf = NaN */
} fn_row_stats;

/* Chan et al.'s pairwise update: fold (nb, mb, m2b) into (na, ma, m2a). */
static inline void fn_chan_merge(double *na, double *ma, double *m2a,
                                 double nb, double mb, double m2b)
{
    if (nb <= 0.0) return;
    double n = *na + nb;
    double delta = mb - *ma;
    *ma += delta * (nb / n);
    *m2a += m2b + delta * delta * (*na * nb / n);
    *na = n;
}

/* rstd = s / sqrt(denom): denom is var + eps of the row scaled by s. */
static inline void fn_finish_scale(double denom, double s, fn_row_stats *st)
{
    st->rstd = s / sqrt(denom);
    st->scale = denom > 0.0 ? st->rstd : 0.0;
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
    st->mean_d = st->rstd = st->scale = NAN;
}

#endif /* FASTNORM_ROW_COMMON_ONCE */

#if defined(FN_T) && defined(FN_SFX)

#ifndef FN_S
#define FN_S FN_T
#define FN_LD(v) (v)
#define FN_ST(t) (t)
#endif

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
static inline const FN_T *FN_NAME(fn_row_affine)(const void *p, ptrdiff_t row_stride,
                                                 ptrdiff_t r)
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
static inline double FN_NAME(fn_row_rescale_factor)(const FN_S *x, ptrdiff_t n,
                                                     ptrdiff_t xs, double pivot)
{
    double amax = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        double a = fabs((double)FN_LD(x[i * xs]) - pivot);
        if (a > amax) amax = a;
    }
    int e = 0;
    frexp(amax, &e);
    return ldexp(1.0, -e);
}

/* Rare path: the squares overflowed although the row is finite (values near
 * the type's limit).  Two passes in double over the row rescaled by a power
 * of two, so nothing overflows and nothing is rounded by the scaling. */
static void FN_NAME(fn_layer_stats_rescaled)(const FN_S *x, ptrdiff_t n, ptrdiff_t xs,
                                             double pivot, double eps, fn_row_stats *st)
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
    fn_finish_scale(m2 / (double)n + eps * s * s, s, st);
}

/* Turn the shifted moments of a row into mean and rstd.  A row holding NaN
 * or Inf gets NaN stats, and NaN scale makes the normalize pass write NaN. */
static inline void FN_NAME(fn_layer_finish)(const FN_S *x, ptrdiff_t n, ptrdiff_t xs,
                                           FN_T pivot, double mean_d, double m2,
                                           double eps, fn_row_stats *st)
{
    if (!isfinite(mean_d) || !isfinite(m2)) {
        if (FN_NAME(fn_row_has_nonfinite)(x, n, xs))
            fn_row_stats_nan(st);
        else
            FN_NAME(fn_layer_stats_rescaled)(x, n, xs, (double)pivot, eps, st);
        return;
    }
    st->mean_d = mean_d;
    fn_finish_scale(fmax(m2, 0.0) / (double)n + eps, 1.0, st);
}

/* RMSNorm: sumsq is the sum of x*x over the row; NaN stats as above. */
static inline void FN_NAME(fn_rms_finish)(const FN_S *x, ptrdiff_t n, ptrdiff_t xs,
                                         double sumsq, double eps, fn_row_stats *st)
{
    st->mean_d = 0.0;
    if (!isfinite(sumsq)) {
        if (FN_NAME(fn_row_has_nonfinite)(x, n, xs)) {
            fn_row_stats_nan(st);
            return;
        }
        double s = FN_NAME(fn_row_rescale_factor)(x, n, xs, 0.0), ss = 0.0;
        for (ptrdiff_t i = 0; i < n; i++) {
            double v = (double)FN_LD(x[i * xs]) * s;
            ss += v * v;
        }
        fn_finish_scale(ss / (double)n + eps * s * s, s, st);
        return;
    }
    fn_finish_scale(sumsq / (double)n + eps, 1.0, st);
}

#endif /* FN_T && FN_SFX */
