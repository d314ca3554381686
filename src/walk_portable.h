/*
 * walk_portable.h - the portable kernels, forward and backward, included
 * once per dtype by kernels_scalar.c after a dtype_*.h (FN_ISA is scalar).
 *
 * ISA: none (plain C99), any strides.  This is the path for non-x86
 * machines, for layouts the SIMD kernels do not vectorize, and the
 * reference the SIMD kernels are tested against.
 *
 * Algorithm (LayerNorm): shifted Welford.  Each row is shifted by a pivot
 * taken from the row (median of first, middle, last), then four interleaved
 * Welford chains accumulate mean and M2 of x - pivot in double; chains and
 * the tail are merged with Chan's formula.  The shift keeps the running mean
 * small, so rounding relative to the spread stays near machine epsilon even
 * when |mean| >> std; four chains share one 1/k per step and give the CPU
 * independent work.  The output is ((x - pivot) - mean_shifted) * rstd, in
 * the input precision.
 *
 * RMSNorm: sum of squares in four double chains, then y = x * rstd, the same
 * normalize loop with pivot 0 and mean 0.
 */
#include "norm_row_common.h"

/* FN_EXACT_MEAN (the half-precision stamps): the center is the plain double
 * sum of x - pivot over n, exact for half inputs (see simd_contract.h), so
 * the portable and SIMD kernels agree next to zero; M2 stays Welford's. */
#ifndef FN_EXACT_MEAN
#define FN_EXACT_MEAN 0
#endif

static void FN_NAME(portable_layer_moments)(const FN_S *x, ptrdiff_t n, ptrdiff_t xs, FN_T pivot,
                                            double *mean_d, double *m2)
{
    double mean[4] = {0.0, 0.0, 0.0, 0.0}, m2c[4] = {0.0, 0.0, 0.0, 0.0};
    double k = 0.0, sum = 0.0;
    ptrdiff_t i = 0;
    for (; i + 4 <= n; i += 4) {
        k += 1.0;
        double inv_k = 1.0 / k;
        for (int c = 0; c < 4; c++) {
            double d = (double)(FN_LD(x[(i + c) * xs]) - pivot);
            if (FN_EXACT_MEAN) sum += d;
            double delta = d - mean[c];
            mean[c] += delta * inv_k;
            m2c[c] += delta * (d - mean[c]);
        }
    }
    double cnt = 0.0, mu = 0.0, M2 = 0.0;
    for (int c = 0; c < 4; c++) fn_chan_merge(&cnt, &mu, &M2, k, mean[c], m2c[c]);
    for (; i < n; i++) {
        double d = (double)(FN_LD(x[i * xs]) - pivot);
        if (FN_EXACT_MEAN) sum += d;
        cnt += 1.0;
        double delta = d - mu;
        mu += delta / cnt;
        M2 += delta * (d - mu);
    }
    *mean_d = FN_EXACT_MEAN ? sum / (double)n : mu;
    *m2 = M2;
}

/* Sum of squares in four chains over chunks of FN_SCALAR_CHUNK elements,
 * the chunks added with compensation: a float64 row of 1M values near 1e12
 * summed in plain chains was off by 2e-12. */
#define FN_SCALAR_CHUNK 1024

static double FN_NAME(portable_sum_squares)(const FN_S *x, ptrdiff_t n, ptrdiff_t xs)
{
    double total = 0.0, comp = 0.0;
    for (ptrdiff_t c0 = 0; c0 < n; c0 += FN_SCALAR_CHUNK) {
        const ptrdiff_t end = n - c0 < FN_SCALAR_CHUNK ? n : c0 + FN_SCALAR_CHUNK;
        double acc[4] = {0.0, 0.0, 0.0, 0.0};
        ptrdiff_t i = c0;
        for (; i + 4 <= end; i += 4)
            for (int c = 0; c < 4; c++) {
                double v = (double)FN_LD(x[(i + c) * xs]);
                acc[c] += v * v;
            }
        for (; i < end; i++) {
            double v = (double)FN_LD(x[i * xs]);
            acc[0] += v * v;
        }
        fn_add_compensated(&total, &comp, (acc[0] + acc[1]) + (acc[2] + acc[3]));
    }
    return total + comp;
}
#undef FN_SCALAR_CHUNK

/* y = (x - p2) * scale + c [* w] [+ b], the row's center split into p2 and
 * a remainder folded into c (fn_norm_params), as in the SIMD kernels: no
 * precision is lost when |mean| >> std, and x - p2 stays finite for rows of
 * opposite-signed values near the type's limit, where x - pivot would not. */
static void FN_NAME(portable_normalize)(const FN_S *x, ptrdiff_t xs, FN_Y *y, ptrdiff_t ys,
                                        ptrdiff_t n, double pivot, const fn_row_stats *st,
                                        const FN_T *w, const FN_T *b)
{
    if (st->wide_normalize) {
        FN_NAME(fn_normalize_row_wide)(x, xs, y, ys, n, pivot, st, w, b);
        return;
    }
    const fn_norm_params np = FN_NAME(fn_norm_params)((FN_T)pivot, st);
    const FN_T p2 = (FN_T)np.p2, scale = (FN_T)np.scale, c = (FN_T)np.c;
    for (ptrdiff_t i = 0; i < n; i++) {
        FN_T t = (FN_LD(x[i * xs]) - p2) * scale + c;
        if (w) t *= w[i];
        if (b) t += b[i];
        y[i * ys] = FN_STY(t);
    }
}

/* The row to normalize: x itself, or with a fused residual add, h = x +
 * residual computed and stored first (then read back, so y is exactly the
 * norm of h as stored).  *xs_out is that row's element stride. */
static const FN_S *FN_NAME(portable_source_row)(const fn_rows *a, ptrdiff_t r, ptrdiff_t *xs_out)
{
    const FN_S *x = (const FN_S *)a->x + r * a->x_row_stride;
    if (!a->residual) {
        *xs_out = a->x_elem_stride;
        return x;
    }
    const FN_S *res = (const FN_S *)a->residual + r * a->r_row_stride;
    FN_S *h = (FN_S *)a->h + r * a->h_row_stride;
    for (ptrdiff_t i = 0; i < a->row_len; i++)
        h[i * a->h_elem_stride] =
            FN_NAME(fn_sum_stored)(x[i * a->x_elem_stride], res[i * a->r_elem_stride]);
    *xs_out = a->h_elem_stride;
    return h;
}

/* One row of the forward: LayerNorm, or RMSNorm (rms: no center, no bias). */
FN_ALWAYS_INLINE void FN_NAME(portable_forward_row)(const fn_rows *a, ptrdiff_t r, int rms)
{
    const ptrdiff_t n = a->row_len, ys = a->y_elem_stride;
    ptrdiff_t xs;
    const FN_S *x = FN_NAME(portable_source_row)(a, r, &xs);
    FN_Y *y = (FN_Y *)a->y + r * a->y_row_stride;
    FN_T pivot = 0;
    fn_row_stats st;
    if (rms) {
        FN_NAME(fn_rms_finish)(x, n, xs, FN_NAME(portable_sum_squares)(x, n, xs), a->eps, &st);
    } else {
        double mean_d, m2;
        pivot = FN_NAME(fn_row_pivot)(x, n, xs);
        FN_NAME(portable_layer_moments)(x, n, xs, pivot, &mean_d, &m2);
        FN_NAME(fn_layer_finish)(x, n, xs, pivot, mean_d, m2, a->eps, &st);
    }
    FN_NAME(portable_normalize)(x, xs, y, ys, n, (double)pivot, &st,
                                FN_NAME(fn_row_affine)(a->weight, a->w_row_stride, r),
                                rms ? NULL : FN_NAME(fn_row_affine)(a->bias, a->b_row_stride, r));
    FN_NAME(fn_store_row_stats)(a, r, rms ? 0.0 : (double)pivot + st.mean_d, st.rstd);
}

void FN_NAME(layer_norm_rows)(const fn_rows *a)
{
    for (ptrdiff_t r = 0; r < a->rows; r++) FN_NAME(portable_forward_row)(a, r, 0);
}

void FN_NAME(rms_norm_rows)(const fn_rows *a)
{
    for (ptrdiff_t r = 0; r < a->rows; r++) FN_NAME(portable_forward_row)(a, r, 1);
}

/* ---- backward --------------------------------------------------------- */
/* (not in the wide-output stamps, whose y alone differs: FN_FORWARD_ONLY) */
#if !defined(FN_FORWARD_ONLY) || !FN_FORWARD_ONLY

/* The portable backward accumulates in a type wider than the input:
 * double, unless the includer chose another FN_WIDE (float64: long double). */
#ifndef FN_WIDE
#define FN_WIDE double
#define FN_WIDE_SQRT sqrt
#endif

/* Backward of one row, any strides, in double.
 * With d = x - pivot, g = dy * w and xhat = (d - mean_d) * rstd:
 *   LayerNorm: dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
 *   RMSNorm:   dx = rstd * (g - xhat * mean(g * xhat)),  xhat = x * rstd
 * Pass 1 gathers mean_d (and M2 when rstd must be recomputed), sum(g) and
 * sum(g * d); mean(g * xhat) = rstd * (sum(g*d) - mean_d * sum(g)) / n keeps
 * the large-mean case exact.  Pass 2, over the row now in cache, writes dx
 * and adds dy * xhat and dy into the block's partial sums. */
static void FN_NAME(portable_backward_row)(const fn_rows_bwd *a, ptrdiff_t r, int rms)
{
    typedef FN_WIDE wide;
    const ptrdiff_t n = a->row_len, xs = a->x_elem_stride, gs = a->dy_elem_stride;
    const ptrdiff_t ds = a->dx_elem_stride;
    const FN_S *x = (const FN_S *)a->x + r * a->x_row_stride;
    const FN_S *dy = (const FN_S *)a->dy + r * a->dy_row_stride;
    FN_S *dx = (FN_S *)a->dx + r * a->dx_row_stride;
    const FN_T *w = (const FN_T *)a->weight;
    const FN_T pivot = rms ? (FN_T)0 : FN_NAME(fn_row_pivot)(x, n, xs);
    wide cnt = 0, mean_d = 0, m2 = 0, sum_g = 0, sum_gd = 0, sum_d = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        const wide d = (wide)(FN_LD(x[i * xs]) - pivot);
        if (FN_EXACT_MEAN) sum_d += d;
        const wide g = (wide)FN_LD(dy[i * gs]) * (w ? (wide)w[i] : (wide)1);
        cnt += 1;
        const wide delta = d - mean_d;
        mean_d += delta / cnt;
        m2 += delta * (d - mean_d);
        sum_g += g;
        sum_gd += g * d;
    }
    if (FN_EXACT_MEAN) mean_d = sum_d / (wide)n;
    wide rstd;
    /* a saved rstd that overflowed its type (rows near the smallest
     * subnormals) says nothing: it is recomputed */
    if (a->rstd && isfinite((double)((const FN_T *)a->rstd)[r * a->stat_stride])) {
        rstd = (wide)((const FN_T *)a->rstd)[r * a->stat_stride];
    } else {
        /* the wide type keeps g - xhat * mean(g * xhat) resolvable where it
         * nearly cancels (a row of one element, or of one nonzero one) */
        const wide var = rms ? m2 / (wide)n + mean_d * mean_d : m2 / (wide)n;
        rstd = (wide)1 / FN_WIDE_SQRT(var + (wide)a->eps);
        if (!isfinite((double)rstd) || !isfinite((double)m2)) {
            fn_row_stats st; /* NaN/Inf rows, overflowing squares */
            if (rms)
                FN_NAME(fn_rms_finish)(x, n, xs, (double)(m2 + (wide)n * mean_d * mean_d), a->eps,
                                       &st);
            else
                FN_NAME(fn_layer_finish)(x, n, xs, pivot, (double)mean_d, (double)m2, a->eps, &st);
            rstd = (wide)st.rstd;
        }
    }
    if (rms) mean_d = 0; /* RMSNorm does not center */
    const wide inv_n = (wide)1 / (wide)n;
    const wide mean_g = rms ? 0 : sum_g * inv_n;
    const wide mean_gxhat = rstd * (sum_gd - mean_d * sum_g) * inv_n;
    for (ptrdiff_t i = 0; i < n; i++) {
        const wide xhat = ((wide)(FN_LD(x[i * xs]) - pivot) - mean_d) * rstd;
        const wide dyi = (wide)FN_LD(dy[i * gs]);
        const wide g = dyi * (w ? (wide)w[i] : (wide)1);
        dx[i * ds] = FN_ST((FN_T)(rstd * (g - mean_g - xhat * mean_gxhat)));
        if (a->dweight) a->dweight[i] += (double)(dyi * xhat);
        if (a->dbias) a->dbias[i] += (double)dyi;
    }
}

void FN_NAME(layer_norm_backward_rows)(const fn_rows_bwd *a)
{
    for (ptrdiff_t r = 0; r < a->rows; r++) FN_NAME(portable_backward_row)(a, r, 0);
}

void FN_NAME(rms_norm_backward_rows)(const fn_rows_bwd *a)
{
    for (ptrdiff_t r = 0; r < a->rows; r++) FN_NAME(portable_backward_row)(a, r, 1);
}

#include "group_portable.h" /* GroupNorm */
#endif

#include "simd_vocab_undef.h"
