/*
 * walk_rows_forward.h - the forward walk of rows whose elements are
 * contiguous (the last-axis case), LayerNorm and RMSNorm, optionally with a
 * fused residual add.  Part of a SIMD stamp (simd_stamp.h): SIMD along the
 * row, VL elements a vector.
 *
 * Algorithm: the row's statistics come from simd_row_acc.h (pivot-shifted
 * sums for LayerNorm, sums of squares for RMSNorm), finished in double by
 * norm_row_common.h; a row whose pivot turns out far from its mean is
 * measured again about the mean found (rows_walk).  The normalize pass
 * writes
 *     y = fma(h - p2, scale, c) [* w] [+ b]
 * with the row's center split into p2 (in FN_T) and a remainder folded into
 * c (fn_norm_params): one subtraction and one FMA, and no loss where
 * |mean| >> std.  RMSNorm has center 0 and no bias: y = h * scale [* w].
 *
 * Pipelining: the statistics of row r+1 are gathered in the same loop that
 * writes row r (rows_write).  Fusing the two keeps reads (of the next row,
 * from memory) and writes (of this row) flowing together and hides the
 * arithmetic of the statistics behind the memory traffic; row r was read by
 * the previous iteration and is still in L1/L2.
 *
 * Numerics: rows whose moments may have underflowed or overflowed, or hold
 * NaN/Inf, are measured again by norm_row_common.h; rows whose scale does
 * not fit FN_T are normalized there in double.  Results never depend on the
 * output's alignment: the statistics group elements from element 0.
 */

/* The row being written: y from x, or with a fused residual add (r not
 * NULL) from h = x + r, formed again from x and r (still in cache) and
 * written to h in the same loop as y, so h costs one write and no read. */
typedef struct {
    const FN_S *x, *r;
    FN_S *h;
    FN_Y *y;
    const FN_T *w, *b; /* this row's weight and bias, or NULL */
    fn_norm_params np;
} FN_NAME(rows_cur);

/* The next row, measured while the current one is written. */
typedef struct {
    const FN_S *x, *r;   /* x NULL: there is no next row */
    FN_T pivot;
    const FN_S *x2, *r2; /* the row after it, prefetched (NULL: none) */
} FN_NAME(rows_next);
/* Its moments come out in a separate fn_moments: as a field here, their
 * address, passed to the out-of-line statistics helpers, would let the
 * compiler assume that the pointers above change, and test them again in
 * the loops of every copy. */

FN_ALWAYS_INLINE V FN_NAME(rows_load_affine)(const FN_T *p, ptrdiff_t i, ptrdiff_t part)
{
    return part ? VLOAD_PART(p + i, part) : VLOAD(p + i);
}

/* One vector of fma(h - p2, s, c) [* w] [+ b] (RMSNorm: h * s [* w]) for
 * the values hv at element i; `part` lanes when 0 < part < VL, else a full
 * vector. */
FN_ALWAYS_INLINE V FN_NAME(rows_norm_vec)(V hv, const FN_T *w, const FN_T *b, ptrdiff_t i,
                                          ptrdiff_t part, V p2, V s, V c, int rms)
{
    V t = rms ? VMUL(hv, s) : VFMA(VSUB(hv, p2), s, c);
    if (w && b)
        return VFMA(t, FN_NAME(rows_load_affine)(w, i, part),
                    FN_NAME(rows_load_affine)(b, i, part));
    if (w) return VMUL(t, FN_NAME(rows_load_affine)(w, i, part));
    if (b) return VADD(t, FN_NAME(rows_load_affine)(b, i, part));
    return t;
}

/* The per-row fallbacks (NaN/Inf rows, overflowing squares) scan the row in
 * memory; with a fused residual add h is not stored yet at that point, so
 * store it first in exactly those cases (the normalize pass rewrites the
 * same values).  Returns 1 when h is stored: normalize from it (r may be h
 * itself). */
static int FN_NAME(rows_sum_if_needed)(const FN_S *x, const FN_S *r, FN_S *h, ptrdiff_t n,
                                       const fn_moments *m, double eps, int rms)
{
    if (!FN_NAME(fn_moments_need_rescan)(m->mean, m->m2, n, eps) && (rms || !fn_pivot_is_far(m)))
        return 0;
    for (ptrdiff_t i = 0; i < n; i++) h[i] = FN_NAME(fn_sum_stored)(x[i], r[i]);
    return 1;
}

/* The pivot of h = x + r before h is stored: fl(x + r) is what h will hold. */
static FN_T FN_NAME(rows_pivot_of_sum)(const FN_S *x, const FN_S *r, ptrdiff_t n)
{
    FN_S s[3];
    const ptrdiff_t at[3] = {0, (n - 1) / 2, n - 1};
    for (int j = 0; j < 3; j++) s[j] = FN_NAME(fn_sum_stored)(x[at[j]], r[at[j]]);
    return FN_NAME(fn_row_pivot)(s + 0, 3, 1);
}

static inline FN_T FN_NAME(rows_pivot)(const FN_S *x, const FN_S *r, ptrdiff_t n)
{
    return r ? FN_NAME(rows_pivot_of_sum)(x, r, n) : FN_NAME(fn_row_pivot)(x, n, 1);
}

/* One vector of h and y at element i (a full vector). */
FN_ALWAYS_INLINE void FN_NAME(rows_write_vec)(const FN_NAME(rows_cur) *cur, const FN_T *w,
                                              const FN_T *b, ptrdiff_t i, int stream, int stream_h,
                                              V p2, V s, V c, int rms)
{
    V hv = FN_NAME(rows_load_h)(cur->x, cur->r, i);
    V t = FN_NAME(rows_norm_vec)(hv, w, b, i, 0, p2, s, c, rms);
    if (cur->r) {
        if (stream_h)
            XSTREAM_H(cur->h + i, hv);
        else
            XSTORE_H(cur->h + i, hv);
    }
    if (stream)
        XSTREAM(cur->y + i, t);
    else
        XSTORE(cur->y + i, t);
}

/* The first or last `part` elements from element i (masked). */
FN_ALWAYS_INLINE void FN_NAME(rows_write_part)(const FN_NAME(rows_cur) *cur, const FN_T *w,
                                               const FN_T *b, ptrdiff_t i, ptrdiff_t part, V p2,
                                               V s, V c, int rms)
{
    V hv = FN_NAME(rows_load_h_part)(cur->x, cur->r, i, part);
    if (cur->r) XSTORE_PART_H(cur->h + i, hv, part);
    XSTORE_PART(cur->y + i, FN_NAME(rows_norm_vec)(hv, w, b, i, part, p2, s, c, rms), part);
}

/* Elements [lo, hi) of the row with ordinary stores: full vectors, then a
 * masked part. */
FN_ALWAYS_INLINE void FN_NAME(rows_write_span)(const FN_NAME(rows_cur) *cur, const FN_T *w,
                                               const FN_T *b, ptrdiff_t lo, ptrdiff_t hi, V p2, V s,
                                               V c, int rms)
{
    ptrdiff_t i = lo;
    for (; i + VL <= hi; i += VL) FN_NAME(rows_write_vec)(cur, w, b, i, 0, 0, p2, s, c, rms);
    if (i < hi) FN_NAME(rows_write_part)(cur, w, b, i, hi - i, p2, s, c, rms);
}

/* One step of the next row's statistics at element k, prefetching the row
 * after it. */
FN_ALWAYS_INLINE void FN_NAME(rows_next_step)(FN_NAME(rows_acc) *acc,
                                              const FN_NAME(rows_next) *next, ptrdiff_t k, V pn,
                                              int rms)
{
    FN_NAME(rows_acc_step)(acc, next->x + k, next->r ? next->r + k : NULL, pn, rms);
    if (next->x2)
        for (int line = 0; line < 4 * VL * (int)sizeof(FN_S); line += 64) {
            __builtin_prefetch((const char *)(next->x2 + k) + line, 0, 2);
            if (next->r2) __builtin_prefetch((const char *)(next->r2 + k) + line, 0, 2);
        }
}

/* Four vectors of h and y from element i. */
FN_ALWAYS_INLINE void FN_NAME(rows_write_block)(const FN_NAME(rows_cur) *cur, const FN_T *w,
                                                const FN_T *b, ptrdiff_t i, int stream,
                                                int stream_h, V p2, V s, V c, int rms)
{
    for (int u = 0; u < 4; u++)
        FN_NAME(rows_write_vec)(cur, w, b, i + u * VL, stream, stream_h, p2, s, c, rms);
}

/* Write the current row and, when next->x is set, gather the next row's
 * moments into *next_m in the same loop.  has_w, has_b, stream and rms are
 * constants at every call: one specialized copy of the loop per case.
 * `stream`: non-temporal stores, which skip the read-for-ownership of each
 * output line (a third of the traffic); worth it only when the output is
 * larger than the caches.  Every 64-byte line of y is written either by
 * streaming stores alone or by ordinary stores alone: a line that gets
 * both (a vector-aligned peel leaves the row's first and last partial
 * lines so) is flushed half-written from the write-combining buffer and
 * read back for the ordinary store, which made NumPy's 16-byte-aligned
 * outputs up to 1.5x slower than aligned ones on the AVX2 kernels.  So
 * the streamed body runs over the row's whole lines; the elements before
 * and after them are written with ordinary stores.  The normalize blocks
 * start at the first whole line, while the next row's statistics keep
 * their own blocks from element 0. */
FN_ALWAYS_INLINE void FN_NAME(rows_write)(const FN_NAME(rows_cur) *cur,
                                          const FN_NAME(rows_next) *next, fn_moments *next_m,
                                          ptrdiff_t n, int has_w, int has_b, int stream, int rms)
{
    const FN_T *w = has_w ? cur->w : NULL, *b = has_b ? cur->b : NULL;
    const V p2 = VSET1((FN_T)cur->np.p2), s = VSET1((FN_T)cur->np.scale);
    const V c = VSET1((FN_T)cur->np.c), pn = VSET1(next->pivot);
    const FN_S *xn = next->x, *rn = next->r;
    FN_NAME(rows_acc) acc;
    const ptrdiff_t line = FN_LINE_BYTES / (ptrdiff_t)sizeof(FN_Y); /* elements a line of y */
    ptrdiff_t head = 0, body_end = n, i;
    /* h streams too when its lines fall like y's (both fresh arrays of one
     * element type do) */
    const int stream_h = stream && cur->r && sizeof(FN_S) == sizeof(FN_Y) &&
                         (uintptr_t)cur->h % FN_LINE_BYTES == (uintptr_t)cur->y % FN_LINE_BYTES;
    if (stream) {
        head = (ptrdiff_t)((FN_LINE_BYTES - (uintptr_t)cur->y % FN_LINE_BYTES) % FN_LINE_BYTES) /
               (ptrdiff_t)sizeof(FN_Y);
        if (head > n) head = n;
        body_end = head + (n - head) / line * line;
        FN_NAME(rows_write_span)(cur, w, b, 0, head, p2, s, c, rms);
    }
    /* The next row's statistics always group its elements the same way
     * (blocks of 4*VL from 0, then the rest), whatever this row's store
     * alignment: results must not depend on where the output lies. */
    const ptrdiff_t stats_end = xn ? n / (4 * VL) * (4 * VL) : 0;
    const ptrdiff_t norm_end = head + (body_end - head) / (4 * VL) * (4 * VL);
    /* The writes lag the next row's reads by one block: a store followed
     * soon by a load from an address equal to it modulo 4 KiB waits for the
     * store (4K aliasing), and the peel above puts this row's stores just
     * ahead of the next row's loads when x and y fall alike in their pages
     * (NumPy's large arrays all start 16 bytes into a page).  So block k of
     * the next row is read with block k - 1 of this row written: the loops
     * below run the steps where both happen, then what is left of either. */
    const ptrdiff_t lag = 4 * VL, write_end = norm_end - head + lag; /* in units of k */
    const ptrdiff_t both_end = stats_end < write_end ? stats_end : write_end;
    ptrdiff_t k = 0;
    FN_NAME(rows_acc_init)(&acc);
    if (stats_end > 0) FN_NAME(rows_next_step)(&acc, next, 0, pn, rms);
    for (k = lag; k < both_end; k += 4 * VL) {
        FN_NAME(rows_next_step)(&acc, next, k, pn, rms);
        FN_NAME(rows_write_block)(cur, w, b, head + k - lag, stream, stream_h, p2, s, c, rms);
    }
    for (; k < stats_end; k += 4 * VL) FN_NAME(rows_next_step)(&acc, next, k, pn, rms);
    for (; k < write_end; k += 4 * VL)
        FN_NAME(rows_write_block)(cur, w, b, head + k - lag, stream, stream_h, p2, s, c, rms);
    for (i = norm_end; i + VL <= body_end; i += VL)
        FN_NAME(rows_write_vec)(cur, w, b, i, stream, stream_h, p2, s, c, rms);
    FN_NAME(rows_write_span)(cur, w, b, i, n, p2, s, c, rms);
    if (xn) {
        FN_NAME(rows_acc_reduce)(&acc, rms, next_m);
        FN_NAME(rows_acc_finish)(xn, rn, stats_end, n, pn, rms, next_m);
    }
}

/* One specialized copy of rows_write per (weight, bias, streaming) case:
 * each flag is a constant in its copy, so the loops test none of them. */
FN_ALWAYS_INLINE void FN_NAME(rows_write_b)(const FN_NAME(rows_cur) *cur,
                                            const FN_NAME(rows_next) *next, fn_moments *next_m,
                                            ptrdiff_t n, int has_w, int stream, int rms)
{
    if (cur->b)
        FN_NAME(rows_write)(cur, next, next_m, n, has_w, 1, stream, rms);
    else
        FN_NAME(rows_write)(cur, next, next_m, n, has_w, 0, stream, rms);
}

FN_ALWAYS_INLINE void FN_NAME(rows_write_any)(const FN_NAME(rows_cur) *cur,
                                              const FN_NAME(rows_next) *next, fn_moments *next_m,
                                              ptrdiff_t n, int stream, int rms)
{
    if (cur->w && stream)
        FN_NAME(rows_write_b)(cur, next, next_m, n, 1, 1, rms);
    else if (cur->w)
        FN_NAME(rows_write_b)(cur, next, next_m, n, 1, 0, rms);
    else if (stream)
        FN_NAME(rows_write_b)(cur, next, next_m, n, 0, 1, rms);
    else
        FN_NAME(rows_write_b)(cur, next, next_m, n, 0, 0, rms);
}

/* The walk over a block's rows; with_residual is a constant at each call,
 * so the plain loops carry no test for it. */
FN_ALWAYS_INLINE void FN_NAME(rows_walk)(const fn_rows *a, int rms, int with_residual)
{
    const ptrdiff_t n = a->row_len;
    const FN_T *w = (const FN_T *)a->weight, *b = rms ? NULL : (const FN_T *)a->bias;
    const FN_S *x = (const FN_S *)a->x;
    const FN_S *r = with_residual ? (const FN_S *)a->residual : NULL;
    fn_moments m;
    if (a->rows <= 0) return;
    FN_T pivot = rms ? (FN_T)0 : FN_NAME(rows_pivot)(x, r, n);
    FN_NAME(rows_stats)(x, r, n, pivot, rms, &m);
    for (ptrdiff_t row = 0; row < a->rows; row++) {
        const int more = row + 1 < a->rows, more2 = row + 2 < a->rows;
        FN_NAME(rows_next) next = {
            more ? x + a->x_row_stride : NULL, more && r ? r + a->r_row_stride : NULL, 0,
            more2 ? x + 2 * a->x_row_stride : NULL, more2 && r ? r + 2 * a->r_row_stride : NULL};
        fn_moments next_m = {0};
        if (next.x && !rms) next.pivot = FN_NAME(rows_pivot)(next.x, next.r, n);
        fn_row_stats st;
        if (!rms && fn_pivot_is_far(&m)) {
            /* measured again about the mean found (rarely far from it
             * then: that takes the double scan of fn_layer_finish_sums) */
            const FN_T better = (FN_T)((double)pivot + m.mean);
            if (isfinite(better)) {
                pivot = better;
                FN_NAME(rows_stats)(x, r, n, pivot, rms, &m);
            }
        }
        /* this row's h (with_residual: never NULL) */
        FN_S *h = with_residual ? (FN_S *)a->h + row * a->h_row_stride : NULL;
        const int h_stored = r && FN_NAME(rows_sum_if_needed)(x, r, h, n, &m, a->eps, rms);
        const FN_S *hx = r ? h : x; /* h as stored, for the rare per-row paths */
        if (rms)
            FN_NAME(fn_rms_finish)(hx, n, 1, m.m2, a->eps, &st);
        else
            FN_NAME(fn_layer_finish_sums)(hx, n, 1, pivot, &m, a->eps, &st);
        /* the normalize loop reads x (+ r, writing h), or h itself */
        const FN_NAME(rows_cur) cur = {h_stored ? h : x,
                                       h_stored ? NULL : r,
                                       h,
                                       (FN_Y *)a->y + row * a->y_row_stride,
                                       w ? w + row * a->w_row_stride : NULL,
                                       b ? b + row * a->b_row_stride : NULL,
                                       FN_NAME(fn_norm_params)(pivot, &st)};
        if (st.wide_normalize) {
            /* rare: the scale does not fit FN_T.  Such stats come from the
             * rescan path, so h is already stored (rows_sum_if_needed). */
            FN_NAME(fn_normalize_row_wide)(hx, 1, cur.y, 1, n, (double)pivot, &st, cur.w, cur.b);
            if (next.x) FN_NAME(rows_stats)(next.x, next.r, n, next.pivot, rms, &next_m);
        } else {
            FN_NAME(rows_write_any)(&cur, &next, &next_m, n, a->stream_stores != 0, rms);
        }
        FN_NAME(fn_store_row_stats)(a, row, rms ? 0.0 : (double)pivot + st.mean_d, st.rstd);
        x = next.x;
        r = next.r;
        pivot = next.pivot;
        m = next_m;
    }
    if (a->stream_stores) VSFENCE();
}

FN_ALWAYS_INLINE void FN_NAME(rows_forward)(const fn_rows *a, int rms)
{
    if (a->residual)
        FN_NAME(rows_walk)(a, rms, 1);
    else
        FN_NAME(rows_walk)(a, rms, 0);
}
