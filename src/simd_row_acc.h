/*
 * simd_row_acc.h - the statistics of one contiguous row in SIMD registers,
 * shared by the rows forward walk (walk_rows_forward.h) and the rows
 * backward walk (walk_rows_backward.h).  Part of a stamp: included by
 * simd_stamp.h after simd_contract.h, once per (ISA, dtype).
 *
 * LayerNorm: pivot-shifted sums.  Every element is shifted by the row's
 * pivot (median of first, middle, last element), and four chains of VL
 * lanes each sum d = x - pivot and d * d: one subtraction, one add and one
 * FMA an element.  The moments are then
 *     mean_d = sum(d) / n,   M2 = sum(d * d) - sum(d) * mean_d.
 * Because the pivot sits inside the row, d is of the order of the spread,
 * so float32 keeps rounding error near machine epsilon even when
 * |mean| >> std.  The subtraction in M2 loses mean_d^2 / var of the
 * precision of sum(d * d); a row whose pivot lies further than
 * FN_FAR_PIVOT standard deviations from its mean (it takes an outlier
 * among the first, middle and last element) is measured again about a
 * better pivot by the walks (fn_pivot_is_far in norm_row_common.h), so the
 * loss stays below a factor of 1 + FN_FAR_PIVOT^2.  Half-precision inputs
 * (FN_EXACT_MEAN) sum d in double instead, exactly: their center is the
 * correctly rounded mean, so an element equal to it normalizes to 0.
 *
 * RMSNorm: four FMA chains of x*x.
 *
 * Long rows: the chains hold at most FN_ACC_CHUNK steps (of 4*VL elements):
 * then they are folded into double totals (the squares with compensation)
 * and start again, so FN_T rounding never builds up over more than one
 * chunk, whatever the row length (a float32 sum of 2^20 squares alone would
 * be off by 1e-4).  The cut depends on the element index only, never on
 * alignment.
 *
 * The step functions take `rms` as a constant from the walks.
 */
#define FN_ACC_CHUNK 64

typedef struct {
    V s[4], q[4]; /* chains: sums of d (LayerNorm, not FN_EXACT_MEAN) and of d*d or x*x */
    int k;        /* steps in the current chunk */
    double t_cnt, t_sum; /* the folded chunks: elements, sum of d */
    double t_sq, t_comp; /* sum of squares, and its compensation (fn_add_compensated) */
#if FN_EXACT_MEAN
    VDACC dsum[2]; /* sums of d, exact */
#endif
} FN_NAME(rows_acc);

/* x, or x + r with a fused residual add (r not NULL): the value of h, as
 * it will be stored (rounded to the element type). */
FN_ALWAYS_INLINE V FN_NAME(rows_load_h)(const FN_S *x, const FN_S *r, ptrdiff_t i)
{
    return r ? XROUND(VADD(XLOAD(x + i), XLOAD(r + i))) : XLOAD(x + i);
}

FN_ALWAYS_INLINE V FN_NAME(rows_load_h_part)(const FN_S *x, const FN_S *r, ptrdiff_t i, ptrdiff_t n)
{
    return r ? XROUND(VADD(XLOAD_PART(x + i, n), XLOAD_PART(r + i, n))) : XLOAD_PART(x + i, n);
}

FN_ALWAYS_INLINE void FN_NAME(rows_acc_clear_chains)(FN_NAME(rows_acc) *acc)
{
    for (int c = 0; c < 4; c++) acc->s[c] = acc->q[c] = VZERO;
    acc->k = 0;
}

FN_ALWAYS_INLINE void FN_NAME(rows_acc_init)(FN_NAME(rows_acc) *acc)
{
    FN_NAME(rows_acc_clear_chains)(acc);
    acc->t_cnt = acc->t_sum = acc->t_sq = acc->t_comp = 0.0;
#if FN_EXACT_MEAN
    acc->dsum[0] = acc->dsum[1] = VDACC_ZERO;
#endif
}

/* Fold the chains into the double totals and clear them. */
FN_ALWAYS_INLINE void FN_NAME(rows_acc_flush)(FN_NAME(rows_acc) *acc, int rms)
{
    if (acc->k == 0) return;
    const V q = VADD(VADD(acc->q[0], acc->q[1]), VADD(acc->q[2], acc->q[3]));
    fn_add_compensated(&acc->t_sq, &acc->t_comp, VHSUM_D(q));
    if (!rms && !FN_EXACT_MEAN)
        acc->t_sum += VHSUM_D(VADD(VADD(acc->s[0], acc->s[1]), VADD(acc->s[2], acc->s[3])));
    acc->t_cnt += 4.0 * VL * (double)acc->k;
    FN_NAME(rows_acc_clear_chains)(acc);
}

/* Consume the 4*VL elements at x (of h = x + r when r is not NULL). */
FN_ALWAYS_INLINE void FN_NAME(rows_acc_step)(FN_NAME(rows_acc) *acc, const FN_S *x, const FN_S *r,
                                             V p, int rms)
{
    for (int c = 0; c < 4; c++) {
        V d = FN_NAME(rows_load_h)(x, r, c * VL);
        if (!rms) {
            d = VSUB(d, p);
#if FN_EXACT_MEAN
            acc->dsum[c >> 1] = VDACC_ADD(acc->dsum[c >> 1], d);
#else
            acc->s[c] = VADD(acc->s[c], d);
#endif
        }
        acc->q[c] = VFMA(d, d, acc->q[c]);
    }
    if (++acc->k == FN_ACC_CHUNK) FN_NAME(rows_acc_flush)(acc, rms);
}

/* The row so far, as sums: cnt, sum of d (LayerNorm) and sum of squares. */
FN_ALWAYS_INLINE void FN_NAME(rows_acc_reduce)(FN_NAME(rows_acc) *acc, int rms, fn_moments *m)
{
    FN_NAME(rows_acc_flush)(acc, rms);
    m->cnt = acc->t_cnt;
    m->sum = acc->t_sum;
    m->sq = acc->t_sq + acc->t_comp;
#if FN_EXACT_MEAN
    if (!rms) {
        double sums[2][VL];
        VDACC_STORE(sums[0], acc->dsum[0]);
        VDACC_STORE(sums[1], acc->dsum[1]);
        for (int j = 0; j < VL; j++) m->sum += sums[0][j] + sums[1][j];
    }
#endif
}

/* Fold in x[lo, hi) (fewer than 4*VL elements) and turn the sums into
 * mean and M2 (fn_moments_from_sums). */
static void FN_NAME(rows_acc_finish)(const FN_S *x, const FN_S *r, ptrdiff_t lo, ptrdiff_t hi, V p,
                                     int rms, fn_moments *m)
{
    V s = VZERO, q = VZERO;
    double ds[VL] = {0.0};
    for (ptrdiff_t j = lo; j < hi; j += VL) {
        const ptrdiff_t part = hi - j < VL ? hi - j : 0;
        V d = part ? FN_NAME(rows_load_h_part)(x, r, j, part) : FN_NAME(rows_load_h)(x, r, j);
        if (!rms) {
            d = VSUB(d, p);
            if (part) d = VZERO_FROM(d, part); /* masked lanes load as 0, not as the pivot */
            if (FN_EXACT_MEAN)
                VADD_TO_DOUBLE(ds, d);
            else
                s = VADD(s, d);
        }
        q = VFMA(d, d, q);
    }
    if (hi > lo) {
        m->cnt += (double)(hi - lo);
        m->sq += VHSUM_D(q);
        if (!rms && FN_EXACT_MEAN)
            for (int u = 0; u < VL; u++) m->sum += ds[u];
        else if (!rms)
            m->sum += VHSUM_D(s);
    }
    fn_moments_from_sums(m, rms);
}

/* Statistics of a whole row (of h = x + r when r is not NULL). */
static void FN_NAME(rows_stats)(const FN_S *x, const FN_S *r, ptrdiff_t n, FN_T pivot, int rms,
                                fn_moments *m)
{
    FN_NAME(rows_acc) acc;
    const V p = VSET1(pivot);
    ptrdiff_t i = 0;
    FN_NAME(rows_acc_init)(&acc);
    for (; i + 4 * VL <= n; i += 4 * VL)
        FN_NAME(rows_acc_step)(&acc, x + i, r ? r + i : NULL, p, rms);
    FN_NAME(rows_acc_reduce)(&acc, rms, m);
    FN_NAME(rows_acc_finish)(x, r, i, n, p, rms, m);
}
