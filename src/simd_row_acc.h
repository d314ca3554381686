/*
 * simd_row_acc.h - the statistics of one contiguous row in SIMD registers,
 * shared by the rows forward walk (walk_rows_forward.h) and the rows
 * backward walk (walk_rows_backward.h).  Part of a stamp: included by
 * simd_stamp.h after simd_contract.h, once per (ISA, dtype).
 *
 * LayerNorm: shifted Welford.  Every element is shifted by the row's pivot
 * (median of first, middle, last element), then four chains of VL lanes each
 * run Welford's update with one shared 1/k per step.  All 4*VL partial
 * results have the same count, so they are merged exactly by
 *     mean = average of the partial means,
 *     M2   = sum of partial M2 + k * sum of (partial mean - mean)^2,
 * in vector registers and then in double, with no division per lane.  The
 * last < 4*VL elements form one more block, done in two masked passes, and
 * are merged with Chan's formula.  Because the pivot sits inside the row,
 * the shifted values are of the order of the spread, so float32 keeps
 * rounding error near machine epsilon even when |mean| >> std.
 *
 * RMSNorm: four FMA chains of x*x; chunks and the rest are summed in double
 * with compensation.
 *
 * Long rows: the chains hold at most FN_ACC_CHUNK steps (of 4*VL elements):
 * then they are folded into the double totals and start again, so FN_T
 * rounding never builds up over more than one chunk, whatever the row length
 * (a float32 sum of 2^20 squares alone would be off by 1e-4).  The cut
 * depends on the element index only, never on alignment.
 *
 * Each step has a LayerNorm and an RMSNorm function; the *_step, *_flush and
 * *_rest selectors take `rms` as a constant from the walks.
 */
#define FN_ACC_CHUNK 128

typedef struct {
    V m[4], q[4];               /* chains: Welford means and M2 (RMSNorm: q only) */
    FN_T k;                     /* steps in the current chunk */
    double t_cnt, t_mean, t_m2; /* the folded chunks (t_m2: sum of squares for RMSNorm) */
    double t_comp;              /* RMSNorm: compensation of t_m2 (fn_add_compensated) */
#if FN_EXACT_MEAN
    VDACC dsum[2]; /* sums of x - pivot */
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
    for (int c = 0; c < 4; c++) acc->m[c] = acc->q[c] = VZERO;
    acc->k = 0;
}

FN_ALWAYS_INLINE void FN_NAME(rows_acc_init)(FN_NAME(rows_acc) *acc)
{
    FN_NAME(rows_acc_clear_chains)(acc);
    acc->t_cnt = acc->t_mean = acc->t_m2 = acc->t_comp = 0.0;
#if FN_EXACT_MEAN
    acc->dsum[0] = acc->dsum[1] = VDACC_ZERO;
#endif
}

/* Fold the chains into the totals and clear them: the 4*VL partials merge
 * exactly (see the top of this file), the chunk joins the totals by Chan. */
FN_ALWAYS_INLINE void FN_NAME(rows_acc_flush_layer)(FN_NAME(rows_acc) *acc)
{
    if (acc->k == 0) return;
    const V q = VADD(VADD(acc->q[0], acc->q[1]), VADD(acc->q[2], acc->q[3]));
    double m2 = VHSUM_D(q);
    const V msum = VADD(VADD(acc->m[0], acc->m[1]), VADD(acc->m[2], acc->m[3]));
    const double mean = VHSUM_D(msum) / (4.0 * VL);
    const V g = VSET1((FN_T)mean);
    V spread = VZERO;
    for (int c = 0; c < 4; c++) {
        V e = VSUB(acc->m[c], g);
        spread = VFMA(e, e, spread);
    }
    /* g is mean rounded to FN_T: the spread about it is off by (mean - g)^2
     * per lane, second order and dropped */
    m2 += (double)acc->k * VHSUM_D(spread);
    fn_chan_merge(&acc->t_cnt, &acc->t_mean, &acc->t_m2, 4.0 * VL * (double)acc->k, mean, m2);
    FN_NAME(rows_acc_clear_chains)(acc);
}

FN_ALWAYS_INLINE void FN_NAME(rows_acc_flush_rms)(FN_NAME(rows_acc) *acc)
{
    if (acc->k == 0) return;
    const V q = VADD(VADD(acc->q[0], acc->q[1]), VADD(acc->q[2], acc->q[3]));
    fn_add_compensated(&acc->t_m2, &acc->t_comp, VHSUM_D(q));
    FN_NAME(rows_acc_clear_chains)(acc);
}

FN_ALWAYS_INLINE void FN_NAME(rows_acc_flush)(FN_NAME(rows_acc) *acc, int rms)
{
    if (rms)
        FN_NAME(rows_acc_flush_rms)(acc);
    else
        FN_NAME(rows_acc_flush_layer)(acc);
}

/* Consume the 4*VL elements at x (of h = x + r when r is not NULL).
 * Welford: m += delta/k; M2 += delta * (d - m_new).  This form uses two FP
 * adds and two FMAs; with the normalize pass's one add and two FMAs (fused
 * into the same loop) the add and FMA ports stay balanced. */
FN_ALWAYS_INLINE void FN_NAME(rows_acc_step_layer)(FN_NAME(rows_acc) *acc, const FN_S *x,
                                                   const FN_S *r, V p)
{
    acc->k += 1;
    const V inv_k = VSET1((FN_T)1 / acc->k);
    for (int c = 0; c < 4; c++) {
        V d = VSUB(FN_NAME(rows_load_h)(x, r, c * VL), p);
        V delta = VSUB(d, acc->m[c]);
        acc->m[c] = VFMA(delta, inv_k, acc->m[c]);
        acc->q[c] = VFMA(delta, VSUB(d, acc->m[c]), acc->q[c]);
#if FN_EXACT_MEAN
        acc->dsum[c >> 1] = VDACC_ADD(acc->dsum[c >> 1], d);
#endif
    }
    if (acc->k == FN_ACC_CHUNK) FN_NAME(rows_acc_flush_layer)(acc);
}

FN_ALWAYS_INLINE void FN_NAME(rows_acc_step_rms)(FN_NAME(rows_acc) *acc, const FN_S *x,
                                                 const FN_S *r)
{
    for (int c = 0; c < 4; c++) {
        V v = FN_NAME(rows_load_h)(x, r, c * VL);
        acc->q[c] = VFMA(v, v, acc->q[c]);
    }
    if (++acc->k == FN_ACC_CHUNK) FN_NAME(rows_acc_flush_rms)(acc);
}

FN_ALWAYS_INLINE void FN_NAME(rows_acc_step)(FN_NAME(rows_acc) *acc, const FN_S *x, const FN_S *r,
                                             V p, int rms)
{
    if (rms)
        FN_NAME(rows_acc_step_rms)(acc, x, r);
    else
        FN_NAME(rows_acc_step_layer)(acc, x, r, p);
}

/* The row so far: (cnt, mean, m2) of the shifted values, or m2 = sum of
 * squares for RMSNorm. */
FN_ALWAYS_INLINE void FN_NAME(rows_acc_reduce)(FN_NAME(rows_acc) *acc, int rms, fn_moments *m)
{
    FN_NAME(rows_acc_flush)(acc, rms);
    m->cnt = acc->t_cnt;
    m->mean = acc->t_mean;
    m->m2 = acc->t_m2 + acc->t_comp;
    m->sum = 0.0;
#if FN_EXACT_MEAN
    if (!rms && m->cnt > 0) {
        /* M2 above is about the Welford mean: the shift is second order;
         * the center comes from the sums */
        double sums[2][VL];
        VDACC_STORE(sums[0], acc->dsum[0]);
        VDACC_STORE(sums[1], acc->dsum[1]);
        for (int j = 0; j < VL; j++) m->sum += sums[0][j] + sums[1][j];
        m->mean = m->sum / m->cnt;
    }
#endif
}

/* Fold in x[lo, hi), a few vectors at most, as a two-pass (masked) block
 * merged with Chan's formula. */
static void FN_NAME(rows_acc_rest_layer)(const FN_S *x, const FN_S *r, ptrdiff_t lo, ptrdiff_t hi,
                                         V p, fn_moments *m)
{
    ptrdiff_t j;
    if (hi <= lo) return;
    const double t = (double)(hi - lo);
    V s = VZERO;
    double ds[VL] = {0.0};
    for (j = lo; j + VL <= hi; j += VL) {
        const V d = VSUB(FN_NAME(rows_load_h)(x, r, j), p);
        if (FN_EXACT_MEAN)
            VADD_TO_DOUBLE(ds, d);
        else
            s = VADD(s, d);
    }
    if (j < hi) {
        const V d = VZERO_FROM(VSUB(FN_NAME(rows_load_h_part)(x, r, j, hi - j), p), hi - j);
        if (FN_EXACT_MEAN)
            VADD_TO_DOUBLE(ds, d);
        else
            s = VADD(s, d);
    }
    double tsum = 0.0;
    if (FN_EXACT_MEAN)
        for (int u = 0; u < VL; u++) tsum += ds[u];
    else
        tsum = VHSUM_D(s);
    const double tmean = tsum / t;
    const V tm = VSET1((FN_T)tmean);
    V q = VZERO;
    for (j = lo; j + VL <= hi; j += VL) {
        V e = VSUB(VSUB(FN_NAME(rows_load_h)(x, r, j), p), tm);
        q = VFMA(e, e, q);
    }
    if (j < hi) {
        V e = VZERO_FROM(VSUB(VSUB(FN_NAME(rows_load_h_part)(x, r, j, hi - j), p), tm), hi - j);
        q = VFMA(e, e, q);
    }
    /* tm is tmean rounded to FN_T: remove that offset's contribution */
    const double off = tmean - (double)(FN_T)tmean;
    fn_chan_merge(&m->cnt, &m->mean, &m->m2, t, tmean, VHSUM_D(q) - t * off * off);
    /* half inputs: the center is the exact sum over the count, rounded once
     * (Chan's merge of the two means rounds twice: a row whose mean is the
     * pivot exactly came out 1e-17 off, and its zeros as 1e-17 in bfloat16) */
    if (FN_EXACT_MEAN) {
        m->sum += tsum;
        m->mean = m->sum / m->cnt;
    }
}

/* Fold in the sum of squares of x[lo, hi). */
static void FN_NAME(rows_acc_rest_rms)(const FN_S *x, const FN_S *r, ptrdiff_t lo, ptrdiff_t hi,
                                       fn_moments *m)
{
    ptrdiff_t j;
    if (hi <= lo) return;
    V ss = VZERO;
    for (j = lo; j + VL <= hi; j += VL) {
        V v = FN_NAME(rows_load_h)(x, r, j);
        ss = VFMA(v, v, ss);
    }
    if (j < hi) {
        V v = FN_NAME(rows_load_h_part)(x, r, j, hi - j);
        ss = VFMA(v, v, ss);
    }
    m->m2 += VHSUM_D(ss);
}

FN_ALWAYS_INLINE void FN_NAME(rows_acc_rest)(const FN_S *x, const FN_S *r, ptrdiff_t lo,
                                             ptrdiff_t hi, V p, int rms, fn_moments *m)
{
    if (rms)
        FN_NAME(rows_acc_rest_rms)(x, r, lo, hi, m);
    else
        FN_NAME(rows_acc_rest_layer)(x, r, lo, hi, p, m);
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
    FN_NAME(rows_acc_rest)(x, r, i, n, p, rms, m);
}
