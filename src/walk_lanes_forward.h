/*
 * walk_lanes_forward.h - the forward walk of rows that sit side by side in
 * memory (row stride 1: channels-first `axis=1`, and Fortran order),
 * LayerNorm and RMSNorm.  Part of a SIMD stamp (simd_stamp.h): SIMD across
 * rows, VL rows a vector, each lane one row.
 *
 * Memory: a tile is up to FN_LANES_MAX neighbouring rows (4 KiB of each
 * element row).  Both passes walk the tile element row by element row, each
 * a long contiguous run, so the hardware prefetchers can follow even when
 * the element stride is large (axis=1 of NCHW puts every element row in a
 * page of its own); the next element rows are prefetched by hand.  The
 * per-row state lives in a small array on the stack (L1).
 *
 * Algorithm: each lane runs one shifted Welford chain over its row (the
 * pivot is the lane's median of first, middle, last element), in chunks of
 * FN_LANES_CHUNK elements whose (mean, M2) are merged into double per-row
 * totals with Chan's formula, so FN_T rounding never builds up over more
 * than one chunk; the cut depends on the element index only.  RMSNorm sums
 * x*x instead.  Half inputs (FN_EXACT_MEAN) sum d = x - pivot and d*d in
 * double instead: a float32 chain is off by a few float32 ulps of M2, more
 * than an ulp of a half output where a bias nearly cancels.  Each row is
 * finished in double by norm_row_common.h, like the other walks.  A row
 * whose scale does not fit FN_T goes to the portable kernel on its own:
 * every other row gets its lane's bits, whichever rows share its tile (a
 * Dask block must give a row the bits the whole array gives it).
 */
#define FN_LANES_MAX ((ptrdiff_t)(4096 / sizeof(FN_T)))
#define FN_LANES_AHEAD 2
#define FN_LANES_CHUNK 256

/* The state of one vector of rows: pass 1's pivots, Welford means and M2s
 * (RMSNorm: sums of squares), then, row by row as each is finished, pass 2's
 * normalize parameters.  The three arrays are interleaved per vector so they
 * never sit 4 KiB apart (a load 4 KiB after a recent store is falsely held
 * up behind it).  Row j of a tile is state[j / VL], lane j % VL. */
typedef union {
    struct {
        FN_T pivot[VL], mean[VL], m2[VL];
    } acc;
    struct {
        FN_T p2[VL], scale[VL], c[VL];
    } norm;
} FN_NAME(lanes_vec);

/* Where a tile's elements are: nv vectors of rows, the last with `last`
 * rows (masked when last < VL). */
typedef struct {
    const FN_S *x;
    ptrdiff_t xs, nv, last;
} FN_NAME(lanes_geom);

/* The double per-row totals of the chunks folded so far. */
typedef struct {
    double mean[FN_LANES_MAX], m2[FN_LANES_MAX], n;
    /* FN_EXACT_MEAN: sums of d = x - pivot and of d * d */
    double sum[FN_EXACT_MEAN ? FN_LANES_MAX : 1], sq[FN_EXACT_MEAN ? FN_LANES_MAX : 1];
} FN_NAME(lanes_totals);

/* Vector v of rows at element i. */
FN_ALWAYS_INLINE V FN_NAME(lanes_load)(FN_NAME(lanes_geom) g, ptrdiff_t v, ptrdiff_t i)
{
    const FN_S *p = g.x + v * VL + i * g.xs;
    return v < g.nv - 1 || g.last == VL ? XLOAD(p) : XLOAD_PART(p, g.last);
}

/* Fold the tile's current chunk (k elements per row) into the totals, and
 * start a new chunk. */
static void FN_NAME(lanes_merge_chunk)(FN_NAME(lanes_vec) *state, ptrdiff_t rows, FN_T *k,
                                       FN_NAME(lanes_totals) *tot, int rms)
{
    const double nb = (double)*k;
    if (nb <= 0.0) return;
    for (ptrdiff_t j = 0; j < rows; j++) {
        FN_T *m = &state[j / VL].acc.mean[j % VL], *q = &state[j / VL].acc.m2[j % VL];
        if (rms) {
            tot->m2[j] += (double)*q;
        } else {
            double na = tot->n;
            fn_chan_merge(&na, &tot->mean[j], &tot->m2[j], nb, (double)*m, (double)*q);
        }
        *m = *q = 0;
    }
    tot->n += nb;
    *k = 0;
}

/* Pass 1 at element i, one step per kind of row statistics. */
FN_ALWAYS_INLINE void FN_NAME(lanes_step_rms)(FN_NAME(lanes_geom) g, FN_NAME(lanes_vec) *state,
                                              ptrdiff_t i, const FN_S *ahead)
{
    for (ptrdiff_t v = 0; v < g.nv; v++) {
        if (ahead) __builtin_prefetch(ahead + v * VL, 0, 3);
        V e = FN_NAME(lanes_load)(g, v, i);
        VSTORE(state[v].acc.m2, VFMA(e, e, VLOAD(state[v].acc.m2)));
    }
}

/* FN_EXACT_MEAN: d is exact in float32, so d and d * d (with its FMA
 * residual) sum in double with no error to speak of. */
FN_ALWAYS_INLINE void FN_NAME(lanes_step_exact)(FN_NAME(lanes_geom) g, FN_NAME(lanes_vec) *state,
                                                FN_NAME(lanes_totals) *tot, ptrdiff_t i,
                                                const FN_S *ahead)
{
    for (ptrdiff_t v = 0; v < g.nv; v++) {
        if (ahead) __builtin_prefetch(ahead + v * VL, 0, 3);
        const V d = VSUB(FN_NAME(lanes_load)(g, v, i), VLOAD(state[v].acc.pivot));
        const V sq = VMUL(d, d);
        VADD_TO_DOUBLE(tot->sum + v * VL, d);
        VADD_TO_DOUBLE(tot->sq + v * VL, sq);
        VADD_TO_DOUBLE(tot->sq + v * VL, VFMA(d, d, VSUB(VZERO, sq)));
    }
}

/* Welford with k elements in the chunk (this one included). */
FN_ALWAYS_INLINE void FN_NAME(lanes_step_welford)(FN_NAME(lanes_geom) g, FN_NAME(lanes_vec) *state,
                                                  FN_T k, ptrdiff_t i, const FN_S *ahead)
{
    const V inv_k = VSET1((FN_T)1 / k), shrink = VSET1((k - 1) / k);
    for (ptrdiff_t v = 0; v < g.nv; v++) {
        if (ahead) __builtin_prefetch(ahead + v * VL, 0, 3);
        V m = VLOAD(state[v].acc.mean);
        V d = VSUB(FN_NAME(lanes_load)(g, v, i), VLOAD(state[v].acc.pivot));
        V delta = VSUB(d, m);
        VSTORE(state[v].acc.mean, VFMA(delta, inv_k, m));
        VSTORE(state[v].acc.m2, VFMA(VMUL(delta, shrink), delta, VLOAD(state[v].acc.m2)));
    }
}

/* Row j's moments from the totals: the mean of x - pivot and M2. */
static inline void FN_NAME(lanes_row_moments)(const FN_NAME(lanes_totals) *tot, ptrdiff_t j,
                                              ptrdiff_t n, int rms, double *mean, double *m2)
{
    *mean = tot->mean[j];
    *m2 = tot->m2[j];
    if (FN_EXACT_MEAN && !rms) {
        *mean = tot->sum[j] / (double)n;
        *m2 = tot->sq[j] - tot->sum[j] * *mean; /* no cancellation: the pivot is in the row */
        if (*m2 < 0.0) *m2 = 0.0;
    }
}

/* Finish row j of the tile at row r0: stats in double (eps stays a double:
 * 1e39 or 1e-50 do not fit float32), stored, and its normalize parameters
 * into the state.  Returns nonzero when the row's scale does not fit FN_T
 * (see fn_row_stats.wide_normalize). */
static int FN_NAME(lanes_finish_row)(const fn_rows *a, ptrdiff_t r0, ptrdiff_t j, int rms,
                                     const FN_NAME(lanes_totals) *tot, FN_NAME(lanes_vec) *state)
{
    const ptrdiff_t n = a->row_len, xs = a->x_elem_stride;
    const FN_S *x = (const FN_S *)a->x + r0 + j;
    FN_NAME(lanes_vec) *sv = &state[j / VL];
    const FN_T pivot = sv->acc.pivot[j % VL];
    double mean_j, m2_j;
    fn_row_stats st;
    FN_NAME(lanes_row_moments)(tot, j, n, rms, &mean_j, &m2_j);
    if (rms)
        FN_NAME(fn_rms_finish)(x, n, xs, m2_j, a->eps, &st);
    else
        FN_NAME(fn_layer_finish)(x, n, xs, pivot, mean_j, m2_j, a->eps, &st);
    const fn_norm_params np = FN_NAME(fn_norm_params)(pivot, &st);
    FN_NAME(fn_store_row_stats)(a, r0 + j, rms ? 0.0 : (double)pivot + st.mean_d, st.rstd);
    sv->norm.p2[j % VL] = (FN_T)np.p2;
    sv->norm.scale[j % VL] = (FN_T)np.scale;
    sv->norm.c[j % VL] = (FN_T)np.c;
    return st.wide_normalize;
}

/* Rows [r0, r0 + rows) on the portable kernel. */
static void FN_NAME(lanes_rows_portable)(const fn_rows *a, ptrdiff_t r0, ptrdiff_t rows, int rms)
{
    fn_rows sub = *a;
    sub.x = (const FN_S *)a->x + r0;
    sub.y = (FN_Y *)a->y + r0;
    sub.rows = rows;
    if (sub.mean) sub.mean = (FN_T *)a->mean + r0 * a->stat_stride;
    if (sub.rstd) sub.rstd = (FN_T *)a->rstd + r0 * a->stat_stride;
    if (rms)
        FN_PORTABLE(rms_norm_rows)(&sub);
    else
        FN_PORTABLE(layer_norm_rows)(&sub);
}

/* Pass 1 of a tile (g: nv vectors of rows, n elements each), in three
 * parts: each row's pivot into state and the totals cleared; one element
 * (k counts the chunk's elements); the last chunk folded.  The GroupNorm
 * walk (walk_group.h) gathers channels-last channels' moments with them,
 * element by element while it writes the previous sample. */
static void FN_NAME(lanes_moments_init)(FN_NAME(lanes_geom) g, ptrdiff_t n, ptrdiff_t rows, int rms,
                                        FN_NAME(lanes_vec) *state, FN_NAME(lanes_totals) *tot)
{
    for (ptrdiff_t v = 0; v < g.nv; v++) {
        V p = VZERO;
        if (!rms) { /* per-lane median of first, middle, last element */
            V e0 = FN_NAME(lanes_load)(g, v, 0), e1 = FN_NAME(lanes_load)(g, v, n - 1);
            V mid = FN_NAME(lanes_load)(g, v, (n - 1) / 2);
            p = VMAX(VMIN(e0, e1), VMIN(mid, VMAX(e0, e1)));
        }
        VSTORE(state[v].acc.pivot, p);
        VSTORE(state[v].acc.mean, VZERO);
        VSTORE(state[v].acc.m2, VZERO);
    }
    tot->n = 0.0;
    for (ptrdiff_t j = 0; j < rows; j++) tot->mean[j] = tot->m2[j] = 0.0;
    if (FN_EXACT_MEAN)
        for (ptrdiff_t j = 0; j < g.nv * VL; j++) tot->sum[j] = tot->sq[j] = 0.0;
}

FN_ALWAYS_INLINE void FN_NAME(lanes_moments_step)(FN_NAME(lanes_geom) g, ptrdiff_t n,
                                                  ptrdiff_t rows, int rms,
                                                  FN_NAME(lanes_vec) *state,
                                                  FN_NAME(lanes_totals) *tot, FN_T *k, ptrdiff_t i)
{
    const FN_S *ahead = i + FN_LANES_AHEAD < n ? g.x + (i + FN_LANES_AHEAD) * g.xs : NULL;
    if (i > 0 && i % FN_LANES_CHUNK == 0) FN_NAME(lanes_merge_chunk)(state, rows, k, tot, rms);
    *k += 1;
    if (rms)
        FN_NAME(lanes_step_rms)(g, state, i, ahead);
    else if (FN_EXACT_MEAN)
        FN_NAME(lanes_step_exact)(g, state, tot, i, ahead);
    else
        FN_NAME(lanes_step_welford)(g, state, *k, i, ahead);
}

static void FN_NAME(lanes_tile_moments)(FN_NAME(lanes_geom) g, ptrdiff_t n, ptrdiff_t rows, int rms,
                                        FN_NAME(lanes_vec) *state, FN_NAME(lanes_totals) *tot)
{
    FN_T k = 0;
    FN_NAME(lanes_moments_init)(g, n, rows, rms, state, tot);
    for (ptrdiff_t i = 0; i < n; i++) /* pass 1 */
        FN_NAME(lanes_moments_step)(g, n, rows, rms, state, tot, &k, i);
    FN_NAME(lanes_merge_chunk)(state, rows, &k, tot, rms);
}

/* Normalize the tile of `rows` rows at row r0 and return 0; or, when some
 * of them have a scale that does not fit FN_T, write nothing but the
 * statistics, flag those rows in wide[0, rows) and return 1. */
static int FN_NAME(lanes_tile)(const fn_rows *a, ptrdiff_t r0, ptrdiff_t rows, int rms, int stream,
                               unsigned char *wide)
{
    const ptrdiff_t n = a->row_len, xs = a->x_elem_stride, ys = a->y_elem_stride;
    const FN_S *x = (const FN_S *)a->x + r0;
    FN_Y *y = (FN_Y *)a->y + r0;
    const FN_T *w = (const FN_T *)a->weight, *b = rms ? NULL : (const FN_T *)a->bias;
    FN_NAME(lanes_vec) state[FN_LANES_MAX / VL];
    FN_NAME(lanes_totals) tot;
    const ptrdiff_t nv = (rows + VL - 1) / VL, last = rows - (nv - 1) * VL;
    const FN_NAME(lanes_geom) g = {x, xs, nv, last};
    ptrdiff_t i, v;

    FN_NAME(lanes_tile_moments)(g, n, rows, rms, state, &tot);
    /* Nothing but statistics has been written yet, so the caller can still
     * walk the tile otherwise when a row's scale does not fit FN_T (in
     * place too). */
    int any_wide = 0;
    for (ptrdiff_t j = 0; j < rows; j++) {
        wide[j] = (unsigned char)FN_NAME(lanes_finish_row)(a, r0, j, rms, &tot, state);
        any_wide |= wide[j];
    }
    if (any_wide) return 1;
    for (i = 0; i < n; i++) { /* pass 2 */
        const V wi = w ? VSET1(w[i]) : VZERO, bi = b ? VSET1(b[i]) : VZERO;
        const FN_S *ahead = i + FN_LANES_AHEAD < n ? x + (i + FN_LANES_AHEAD) * xs : NULL;
        for (v = 0; v < nv; v++) {
            if (ahead) __builtin_prefetch(ahead + v * VL, 0, 3);
            V t = VFMA(VSUB(FN_NAME(lanes_load)(g, v, i), VLOAD(state[v].norm.p2)),
                       VLOAD(state[v].norm.scale), VLOAD(state[v].norm.c));
            if (w && b)
                t = VFMA(t, wi, bi);
            else if (w)
                t = VMUL(t, wi);
            else if (b)
                t = VADD(t, bi);
            if (v < nv - 1 || last == VL) {
                if (stream)
                    XSTREAM(y + v * VL + i * ys, t);
                else
                    XSTORE(y + v * VL + i * ys, t);
            } else {
                XSTORE_PART(y + v * VL + i * ys, t, last);
            }
        }
    }
    if (stream) VSFENCE();
    return 0;
}

/* Tiles of up to FN_LANES_MAX rows.  With streaming stores, every full
 * vector must be aligned: the element stride has to keep alignment, and the
 * few rows before the first aligned one go as a small tile of their own.
 * A tile with rows whose scale does not fit FN_T (rare: spreads near the
 * type's limits) is walked again: each such row on the portable kernel,
 * each run of rows between them as a tile of its own (ordinary stores: it
 * may start anywhere), so the tile costs at most twice its pass 1. */
FN_ALWAYS_INLINE void FN_NAME(lanes_forward)(const fn_rows *a, int rms)
{
    const size_t vbytes = VL * sizeof(FN_Y);
    unsigned char wide[FN_LANES_MAX];
    const int stream = a->stream_stores && ((size_t)a->y_elem_stride * sizeof(FN_Y)) % vbytes == 0;
    ptrdiff_t r0 = 0;
    while (r0 < a->rows) {
        ptrdiff_t len = a->rows - r0 < FN_LANES_MAX ? a->rows - r0 : FN_LANES_MAX;
        const size_t mis = (uintptr_t)((FN_Y *)a->y + r0) % vbytes;
        if (stream && mis) {
            ptrdiff_t head = (ptrdiff_t)((vbytes - mis) / sizeof(FN_Y));
            len = head < len ? head : len;
        }
        if (FN_NAME(lanes_tile)(a, r0, len, rms, stream && !mis, wide)) {
            for (ptrdiff_t j = 0; j < len;) {
                ptrdiff_t end = j;
                while (end < len && !wide[end]) end++;
                /* a run without such rows: it finds none again */
                if (end > j) FN_NAME(lanes_tile)(a, r0 + j, end - j, rms, 0, wide + j);
                if (end < len) FN_NAME(lanes_rows_portable)(a, r0 + end, 1, rms);
                j = end + 1;
            }
        }
        r0 += len;
    }
}
