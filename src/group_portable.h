/*
 * group_portable.h - GroupNorm's portable kernels, forward and backward:
 * any strides, any architecture, in double.  Included by walk_portable.h
 * (once per dtype of kernels_scalar.c).  The portable set runs them for
 * every layout; the SIMD sets (walk_group.h) for layouts other than
 * channels-first and channels-last, and for their rare groups: NaN or Inf,
 * values whose squares would overflow or underflow, a scale that does not
 * fit FN_T.
 *
 * Algorithm, per group (C/G channels of S positions, L elements): a scan
 * for the largest |x| gives a power of two s that brings the group near 1
 * (exact, and nothing overflows or underflows in double afterwards); then
 * the mean of x * s, and M2 about it, with the sum of the deviations
 * subtracted again (the corrected two-pass algorithm).  The output is
 *     y = (x * s - mean_s) * (rstd / s) * w_c + b_c
 * in double, rounded once.  A group holding NaN or Inf gets NaN statistics
 * and output.  With eps = 0 a constant group normalizes to exactly its bias,
 * as the LayerNorm kernels do.
 *
 * Backward: dx = rstd * (w_c * dy - mean(w * dy) - xhat * mean(w * dy * xhat)),
 * with the per-channel sums of dy and dy * xhat (this sample's share of
 * dbias and dweight) in double.
 */

/* The group's statistics in the scaled units: x_s = x * s. */
typedef struct {
    double s, mean_s, factor; /* factor = rstd / s: multiplies x_s - mean_s */
    double mean, rstd;        /* as reported */
} FN_NAME(group_portable_stats);

/* Element (c, p) of a group whose first channel is at base. */
#define FN_GROUP_AT(base, cs, ss, c, p) ((base)[(c) * (cs) + (p) * (ss)])

static FN_NAME(group_portable_stats)
    FN_NAME(group_portable_measure)(const FN_S *x, ptrdiff_t cs, ptrdiff_t ss, ptrdiff_t cg,
                                    ptrdiff_t npos, double eps)
{
    FN_NAME(group_portable_stats) st;
    const double n = (double)(cg * npos);
    double amax = 0.0, sum = 0.0, m2 = 0.0, dev = 0.0;
    for (ptrdiff_t c = 0; c < cg; c++)
        for (ptrdiff_t p = 0; p < npos; p++) {
            const double v = fabs((double)FN_LD(FN_GROUP_AT(x, cs, ss, c, p)));
            amax = v > amax || v != v ? v : amax;
        }
    if (!isfinite(amax)) {
        st.s = 1.0;
        st.mean_s = st.factor = st.mean = st.rstd = NAN;
        return st;
    }
    st.s = amax > 0.0 ? ldexp(1.0, -ilogb(amax)) : 1.0;
    for (ptrdiff_t c = 0; c < cg; c++)
        for (ptrdiff_t p = 0; p < npos; p++)
            sum += (double)FN_LD(FN_GROUP_AT(x, cs, ss, c, p)) * st.s;
    st.mean_s = sum / n;
    for (ptrdiff_t c = 0; c < cg; c++)
        for (ptrdiff_t p = 0; p < npos; p++) {
            const double d = (double)FN_LD(FN_GROUP_AT(x, cs, ss, c, p)) * st.s - st.mean_s;
            dev += d;
            m2 += d * d;
        }
    m2 = fn_nonneg(m2 - dev * dev / n);
    st.mean_s += dev / n;
    /* var + eps = (m2 / n) / s^2 + eps, written so that nothing overflows */
    const double var = m2 / n / st.s / st.s;
    st.rstd = 1.0 / sqrt(var + eps);
    st.factor = var + eps > 0.0 ? st.rstd / st.s : 0.0;
    st.mean = st.mean_s / st.s;
    return st;
}

static void FN_NAME(group_portable_forward_one)(const fn_group *a, ptrdiff_t g)
{
    const ptrdiff_t cg = a->channels / a->groups, c0 = g * cg;
    const FN_S *x = (const FN_S *)a->x + c0 * a->x_c_stride;
    FN_S *y = (FN_S *)a->y + c0 * a->y_c_stride;
    const FN_T *w = (const FN_T *)a->weight, *b = (const FN_T *)a->bias;
    const FN_NAME(group_portable_stats) st =
        FN_NAME(group_portable_measure)(x, a->x_c_stride, a->x_s_stride, cg, a->spatial, a->eps);
    if (a->mean) ((FN_T *)a->mean)[g] = (FN_T)st.mean;
    if (a->rstd) ((FN_T *)a->rstd)[g] = (FN_T)st.rstd;
    for (ptrdiff_t c = 0; c < cg; c++) {
        const double wc = w ? (double)w[c0 + c] : 1.0, bc = b ? (double)b[c0 + c] : 0.0;
        for (ptrdiff_t p = 0; p < a->spatial; p++) {
            const double v = (double)FN_LD(FN_GROUP_AT(x, a->x_c_stride, a->x_s_stride, c, p));
            const double t = (v * st.s - st.mean_s) * st.factor * wc + bc;
            FN_GROUP_AT(y, a->y_c_stride, a->y_s_stride, c, p) = FN_ST((FN_T)t);
        }
    }
}

static void FN_NAME(group_portable_backward_one)(const fn_group_bwd *a, ptrdiff_t g)
{
    const ptrdiff_t cg = a->channels / a->groups, c0 = g * cg, npos = a->spatial;
    const FN_S *x = (const FN_S *)a->x + c0 * a->x_c_stride;
    const FN_S *dy = (const FN_S *)a->dy + c0 * a->dy_c_stride;
    FN_S *dx = (FN_S *)a->dx + c0 * a->dx_c_stride;
    const FN_T *w = (const FN_T *)a->weight;
    FN_NAME(group_portable_stats)
    st = FN_NAME(group_portable_measure)(x, a->x_c_stride, a->x_s_stride, cg, npos, a->eps);
    if (a->rstd && isfinite((double)((const FN_T *)a->rstd)[g])) {
        st.rstd = (double)((const FN_T *)a->rstd)[g];
        st.factor = st.rstd / st.s;
    }
    const double n = (double)(cg * npos);
    double sum_g = 0.0, sum_gx = 0.0;
    for (ptrdiff_t c = 0; c < cg; c++) {
        const double wc = w ? (double)w[c0 + c] : 1.0;
        double sdy = 0.0, sdx = 0.0;
        for (ptrdiff_t p = 0; p < npos; p++) {
            const double v = (double)FN_LD(FN_GROUP_AT(x, a->x_c_stride, a->x_s_stride, c, p));
            const double d = (double)FN_LD(FN_GROUP_AT(dy, a->dy_c_stride, a->dy_s_stride, c, p));
            sdy += d;
            sdx += d * ((v * st.s - st.mean_s) * st.factor);
        }
        sum_g += wc * sdy;
        sum_gx += wc * sdx;
        if (a->dweight) a->dweight[c0 + c] = sdx;
        if (a->dbias) a->dbias[c0 + c] = sdy;
    }
    const double mean_g = sum_g / n, mean_gx = sum_gx / n;
    for (ptrdiff_t c = 0; c < cg; c++) {
        const double wc = w ? (double)w[c0 + c] : 1.0;
        for (ptrdiff_t p = 0; p < npos; p++) {
            const double v = (double)FN_LD(FN_GROUP_AT(x, a->x_c_stride, a->x_s_stride, c, p));
            const double d = (double)FN_LD(FN_GROUP_AT(dy, a->dy_c_stride, a->dy_s_stride, c, p));
            const double xhat = (v * st.s - st.mean_s) * st.factor;
            const double t = st.rstd * (wc * d - mean_g - xhat * mean_gx);
            FN_GROUP_AT(dx, a->dx_c_stride, a->dx_s_stride, c, p) = FN_ST((FN_T)t);
        }
    }
}

#undef FN_GROUP_AT

/* Sample n of a block, as a block of its own. */
static inline fn_group FN_NAME(group_sample)(const fn_group *a, ptrdiff_t n)
{
    fn_group one = *a;
    one.samples = 1;
    one.x = (const FN_S *)a->x + n * a->x_n_stride;
    one.y = (FN_S *)a->y + n * a->y_n_stride;
    if (a->mean) one.mean = (FN_T *)a->mean + n * a->groups;
    if (a->rstd) one.rstd = (FN_T *)a->rstd + n * a->groups;
    return one;
}

void FN_NAME(group_norm)(const fn_group *a)
{
    for (ptrdiff_t n = 0; n < a->samples; n++) {
        const fn_group one = FN_NAME(group_sample)(a, n);
        for (ptrdiff_t g = a->g0; g < a->g1; g++) FN_NAME(group_portable_forward_one)(&one, g);
    }
}

void FN_NAME(group_norm_backward)(const fn_group_bwd *a)
{
    for (ptrdiff_t g = a->g0; g < a->g1; g++) FN_NAME(group_portable_backward_one)(a, g);
}
