/*
 * walk_rows_backward.h - the backward walk of rows whose elements are
 * contiguous, LayerNorm and RMSNorm: dx, and the block's contributions to
 * dweight and dbias.  Part of a SIMD stamp (simd_stamp.h): SIMD along the
 * row, VL elements a vector.
 *
 * Algorithm (the algebra is in walk_portable.h): pass 1 gathers, per row,
 * the shifted moments of x (simd_row_acc.h; the mean always, M2 when
 * rstd is not given), sum(g) and sum(g * d) with g = dy * w and
 * d = x - pivot.  Pass 2 writes
 *     xhat = fma(x - p2, rstd, c),  dx = fma(xhat, slope, g - mean_g) * rstd
 * where g - mean_g is taken before scaling so that it cancels exactly where
 * it should (a one-element row).
 *
 * Memory: up to FN_BWD_ROWS rows at a time, pass 1 row by row, then pass 2
 * in column chunks of FN_BWD_CHUNK elements, each row's chunk in turn (a
 * contiguous run, read from L2), summing dy * xhat and dy over the block
 * into chunk accumulators that stay in L1.  The block's double partial sums
 * are then read and written once per block instead of once per row.
 *
 * Numerics: rows shorter than 2*VL go to the portable kernel, which works
 * in double (with a handful of elements g - xhat * mean(g * xhat) can cancel
 * to a tiny fraction of g, which float32 would not resolve), and so does a
 * row whose rstd does not fit FN_T (or is NaN), on its own: the other rows
 * of its block keep the SIMD bits, so a row's dx never depends on which
 * rows share its block (a Dask block must give a row the bits the whole
 * array gives it).
 */
#define FN_BWD_ROWS 8
#define FN_BWD_CHUNK 512

/* What pass 2 needs of a row (see the top of this file). */
typedef struct {
    FN_T p2, rstd, c, mean_g, slope;
    int wide; /* rstd does not fit FN_T (or is not finite): portable kernel */
} FN_NAME(bwd_params);

/* p[0..VL) += lanes of v in double (the first `part` lanes when part > 0). */
static inline void FN_NAME(bwd_add_to_double)(double *p, V v, ptrdiff_t part)
{
    if (!part) {
        VADD_TO_DOUBLE(p, v);
        return;
    }
    FN_T lanes[VL];
    VSTORE(lanes, v);
    for (ptrdiff_t j = 0; j < part; j++) p[j] += (double)lanes[j];
}

/* The row's rstd: the forward's, or recomputed from its moments.  A saved
 * rstd that overflowed its type (rows near the smallest subnormals) says
 * nothing: it is recomputed. */
static inline double FN_NAME(bwd_rstd)(const fn_rows_bwd *a, ptrdiff_t r, const FN_S *x, FN_T pivot,
                                       const fn_moments *m, int rms)
{
    if (a->rstd && isfinite((double)((const FN_T *)a->rstd)[r * a->stat_stride]))
        return (double)((const FN_T *)a->rstd)[r * a->stat_stride];
    fn_row_stats st;
    if (rms)
        FN_NAME(fn_rms_finish)(x, a->row_len, 1, m->m2, a->eps, &st);
    else
        FN_NAME(fn_layer_finish_sums)(x, a->row_len, 1, pivot, m, a->eps, &st);
    return st.rstd;
}

/* Pass 1 of one row. */
static FN_NAME(bwd_params) FN_NAME(bwd_row_params)(const fn_rows_bwd *a, ptrdiff_t r, int rms)
{
    const ptrdiff_t n = a->row_len;
    const FN_S *x = (const FN_S *)a->x + r * a->x_row_stride;
    const FN_S *dy = (const FN_S *)a->dy + r * a->dy_row_stride;
    const FN_T *w = (const FN_T *)a->weight;
    const FN_T pivot = rms ? (FN_T)0 : FN_NAME(fn_row_pivot)(x, n, 1);
    const V p = VSET1(pivot);
    FN_NAME(rows_acc) acc;
    V sg0 = VZERO, sg1 = VZERO, sgd0 = VZERO, sgd1 = VZERO;
    double sum_g = 0.0, sum_gd = 0.0; /* the sums above, folded per chunk */
    ptrdiff_t i = 0, fused_end;
    FN_NAME(rows_acc_init)(&acc);
    for (; i + 4 * VL <= n; i += 4 * VL) {
        if (i && i % (FN_ACC_CHUNK * 4 * VL) == 0) { /* as rows_acc's chunks */
            sum_g += VHSUM_D(VADD(sg0, sg1));
            sum_gd += VHSUM_D(VADD(sgd0, sgd1));
            sg0 = sg1 = sgd0 = sgd1 = VZERO;
        }
        FN_NAME(rows_acc_step)(&acc, x + i, NULL, p, rms);
        for (int u = 0; u < 4; u += 2) {
            V d0 = VSUB(XLOAD(x + i + u * VL), p), d1 = VSUB(XLOAD(x + i + (u + 1) * VL), p);
            V g0 = XLOAD(dy + i + u * VL), g1 = XLOAD(dy + i + (u + 1) * VL);
            if (w) {
                g0 = VMUL(g0, VLOAD(w + i + u * VL));
                g1 = VMUL(g1, VLOAD(w + i + (u + 1) * VL));
            }
            sg0 = VADD(sg0, g0);
            sg1 = VADD(sg1, g1);
            sgd0 = VFMA(g0, d0, sgd0);
            sgd1 = VFMA(g1, d1, sgd1);
        }
    }
    fused_end = i;
    for (; i < n; i += VL) { /* masked lanes load as 0: g = 0 adds nothing */
        const ptrdiff_t part = n - i < VL ? n - i : 0;
        V d = VSUB(part ? XLOAD_PART(x + i, part) : XLOAD(x + i), p);
        V g = part ? XLOAD_PART(dy + i, part) : XLOAD(dy + i);
        if (w) g = VMUL(g, part ? VLOAD_PART(w + i, part) : VLOAD(w + i));
        sg0 = VADD(sg0, g);
        sgd0 = VFMA(g, d, sgd0);
    }
    fn_moments m;
    FN_NAME(rows_acc_reduce)(&acc, rms, &m);
    FN_NAME(rows_acc_finish)(x, NULL, fused_end, n, p, rms, &m);
    sum_g += VHSUM_D(VADD(sg0, sg1));
    sum_gd += VHSUM_D(VADD(sgd0, sgd1));
    const double rstd = FN_NAME(bwd_rstd)(a, r, x, pivot, &m, rms);
    const double mean_d = rms ? 0.0 : m.mean; /* RMSNorm does not center */
    const double inv_n = 1.0 / (double)n;
    const double mean_g = rms ? 0.0 : sum_g * inv_n;
    const double mean_gxhat = rstd * (sum_gd - mean_d * sum_g) * inv_n;
    /* only the centering fields: fn_norm_params reads no others */
    fn_row_stats center = {.mean_d = mean_d, .rstd = rstd, .scale = rstd};
    const fn_norm_params np = FN_NAME(fn_norm_params)(pivot, &center);
    FN_NAME(bwd_params) bp = {(FN_T)np.p2,  (FN_T)rstd,          (FN_T)np.c,
                              (FN_T)mean_g, (FN_T)(-mean_gxhat), !isnormal((FN_T)rstd)};
    return bp;
}

/* Row r on the portable kernel, which works in a wider type (rare: NaN
 * rows, spreads near the type's limits). */
static void FN_NAME(bwd_row_portable)(const fn_rows_bwd *a, ptrdiff_t r, int rms)
{
    fn_rows_bwd sub = *a;
    sub.x = (const FN_S *)a->x + r * a->x_row_stride;
    sub.dy = (const FN_S *)a->dy + r * a->dy_row_stride;
    sub.dx = (FN_S *)a->dx + r * a->dx_row_stride;
    if (sub.rstd) sub.rstd = (const FN_T *)a->rstd + r * a->stat_stride;
    sub.rows = 1;
    if (rms)
        FN_PORTABLE(rms_norm_backward_rows)(&sub);
    else
        FN_PORTABLE(layer_norm_backward_rows)(&sub);
}

static void FN_NAME(bwd_block)(const fn_rows_bwd *a, ptrdiff_t r0, ptrdiff_t nr, int rms)
{
    const ptrdiff_t n = a->row_len;
    const FN_T *w = (const FN_T *)a->weight;
    double *dw = a->dweight, *db = a->dbias;
    FN_NAME(bwd_params) bp[FN_BWD_ROWS];
    FN_T dw_chunk[FN_BWD_CHUNK], db_chunk[FN_BWD_CHUNK];
    for (ptrdiff_t j = 0; j < nr; j++) {
        bp[j] = FN_NAME(bwd_row_params)(a, r0 + j, rms);
        if (bp[j].wide) FN_NAME(bwd_row_portable)(a, r0 + j, rms);
    }
    for (ptrdiff_t c0 = 0; c0 < n; c0 += FN_BWD_CHUNK) {
        const ptrdiff_t len = n - c0 < FN_BWD_CHUNK ? n - c0 : FN_BWD_CHUNK;
        for (ptrdiff_t i = 0; i < len; i += VL) {
            VSTORE(dw_chunk + i, VZERO);
            VSTORE(db_chunk + i, VZERO);
        }
        for (ptrdiff_t j = 0; j < nr; j++) {
            if (bp[j].wide) continue; /* done on its own */
            const ptrdiff_t r = r0 + j;
            const FN_S *x = (const FN_S *)a->x + r * a->x_row_stride + c0;
            const FN_S *dy = (const FN_S *)a->dy + r * a->dy_row_stride + c0;
            FN_S *dx = (FN_S *)a->dx + r * a->dx_row_stride + c0;
            const FN_T *wc = w ? w + c0 : NULL;
            const V rs = VSET1(bp[j].rstd), p2 = VSET1(bp[j].p2), c = VSET1(bp[j].c);
            const V mean_g = VSET1(bp[j].mean_g), slope = VSET1(bp[j].slope);
            for (ptrdiff_t i = 0; i < len; i += VL) {
                /* masked lanes load dy = 0, so they add nothing to the chunk sums */
                const ptrdiff_t part = len - i < VL ? len - i : 0;
                V xhat = VFMA(VSUB(part ? XLOAD_PART(x + i, part) : XLOAD(x + i), p2), rs, c);
                V dyv = part ? XLOAD_PART(dy + i, part) : XLOAD(dy + i);
                V g = wc ? VMUL(dyv, part ? VLOAD_PART(wc + i, part) : VLOAD(wc + i)) : dyv;
                V dxv = VMUL(VFMA(xhat, slope, VSUB(g, mean_g)), rs);
                if (part)
                    XSTORE_PART(dx + i, dxv, part);
                else if (a->stream_stores && (uintptr_t)(dx + i) % (VL * sizeof(FN_S)) == 0)
                    XSTREAM(dx + i, dxv); /* no read-for-ownership of dx */
                else
                    XSTORE(dx + i, dxv);
                if (dw) VSTORE(dw_chunk + i, VFMA(dyv, xhat, VLOAD(dw_chunk + i)));
                if (db) VSTORE(db_chunk + i, VADD(dyv, VLOAD(db_chunk + i)));
            }
        }
        for (ptrdiff_t i = 0; i < len; i += VL) {
            const ptrdiff_t part = len - i < VL ? len - i : 0;
            if (dw) FN_NAME(bwd_add_to_double)(dw + c0 + i, VLOAD(dw_chunk + i), part);
            if (db) FN_NAME(bwd_add_to_double)(db + c0 + i, VLOAD(db_chunk + i), part);
        }
    }
}

/* The walk over a block's rows (contiguous, at least 2*VL elements each:
 * simd_stamp.h checks). */
FN_ALWAYS_INLINE void FN_NAME(rows_backward)(const fn_rows_bwd *a, int rms)
{
    for (ptrdiff_t r0 = 0; r0 < a->rows; r0 += FN_BWD_ROWS)
        FN_NAME(bwd_block)(a, r0, a->rows - r0 < FN_BWD_ROWS ? a->rows - r0 : FN_BWD_ROWS, rms);
    if (a->stream_stores) VSFENCE();
}
