/*
 * walk_group.h - GroupNorm's SIMD walks, forward and backward, for one
 * sample's groups (fn_group, fastnorm_kernels.h).  Part of a SIMD stamp
 * (simd_stamp.h includes it after the other walks, whose pieces it reuses;
 * it holds no walk of its own over rows).
 *
 * Channels-first (c_stride S, s_stride 1): a group is one contiguous row of
 * (C/G)*S elements, so its statistics are the rows walk's (rows_stats of
 * simd_row_acc.h, with the same re-measure about the mean when the pivot is
 * far); the per-channel affine folds into each channel's run of S elements,
 *     y = fma(x - p2, scale * w_c, c * w_c + b_c),
 * written by the rows walk's row writer (rows_write_any) run by run.
 *
 * Channels-last (c_stride 1, s_stride C): each channel is a row of the
 * lanes walk's layout (rows side by side, element stride C), so a tile of
 * whole groups' channels is measured by its pass 1 (lanes_tile_moments);
 * each group's channels' moments are merged in double (Chan), and the
 * normalize pass runs position by position over the tile's channels with
 * per-channel p2, scale and shift.
 *
 * Backward: the group's moments as above; then, per channel, the sums of dy
 * and dy * (x - pivot) (channels-first) or of dy and dy * xhat
 * (channels-last), which give this sample's dbias and dweight shares and
 * the group's mean(w * dy) and mean(w * dy * xhat); then
 *     dx = (xhat * -mean(w dy xhat) + (w_c * dy - mean(w dy))) * rstd.
 *
 * Rare groups (NaN/Inf, squares that overflow or underflow, a pivot still
 * far after the re-measure, a scale that does not fit FN_T; channels-first
 * backward groups shorter than 2*VL) go to the portable kernel
 * (group_portable.h) on their own, after the others: no group's result
 * depends on which groups share its block.
 */

static void FN_NAME(group_portable_one)(const fn_group *a, ptrdiff_t g)
{
    fn_group sub = *a;
    sub.g0 = g;
    sub.g1 = g + 1;
    FN_PORTABLE(group_norm)(&sub);
}

static void FN_NAME(group_bwd_portable_one)(const fn_group_bwd *a, ptrdiff_t g)
{
    fn_group_bwd sub = *a;
    sub.g0 = g;
    sub.g1 = g + 1;
    FN_PORTABLE(group_norm_backward)(&sub);
}

static inline void FN_NAME(group_store_stats)(const fn_group *a, ptrdiff_t g, double mean,
                                              double rstd)
{
    if (a->mean) ((FN_T *)a->mean)[g] = (FN_T)mean;
    if (a->rstd) ((FN_T *)a->rstd)[g] = (FN_T)rstd;
}

/* Add a run's raw sums (cnt, sum, sq about a shared pivot) to a group's. */
static inline void FN_NAME(group_add_run)(fn_moments *m, const fn_moments *run)
{
    m->cnt += run->cnt;
    m->sum += run->sum;
    m->sq += run->sq;
}

/* The moments of a channels-first group (cg runs of npos elements) about
 * pivot, run by run: the grouping of sums the normalize pass gives the next
 * group's statistics (rows_write's next row, which groups a run's elements
 * as rows_stats does), so a group gets the same bits whether it was
 * measured alone or while the group before it was written. */
static void FN_NAME(group_cf_measure)(const FN_S *x, ptrdiff_t cg, ptrdiff_t npos, FN_T pivot,
                                      fn_moments *m)
{
    fn_moments run;
    m->cnt = m->sum = m->sq = 0.0;
    for (ptrdiff_t c = 0; c < cg; c++) {
        FN_NAME(rows_stats)(x + c * npos, NULL, npos, pivot, 0, &run);
        FN_NAME(group_add_run)(m, &run);
    }
    fn_moments_from_sums(m, 0);
}

/* The group's moments finished: measured again about the mean found when
 * the pivot was far.  Returns 0 when the group needs the portable kernel. */
static int FN_NAME(group_cf_settle)(const FN_S *x, ptrdiff_t cg, ptrdiff_t npos, double eps,
                                    FN_T *pivot, fn_moments *m)
{
    if (fn_pivot_is_far(m)) {
        const FN_T better = (FN_T)((double)*pivot + m->mean);
        if (!isfinite(better)) return 0;
        *pivot = better;
        FN_NAME(group_cf_measure)(x, cg, npos, *pivot, m);
    }
    return !FN_NAME(fn_layer_needs_scan)(m, cg * npos, eps);
}

static int FN_NAME(group_cf_moments)(const FN_S *x, ptrdiff_t cg, ptrdiff_t npos, double eps,
                                     FN_T *pivot, fn_moments *m)
{
    *pivot = FN_NAME(fn_row_pivot)(x, cg * npos, 1);
    FN_NAME(group_cf_measure)(x, cg, npos, *pivot, m);
    return FN_NAME(group_cf_settle)(x, cg, npos, eps, pivot, m);
}

/* Channels-first: group g is written run by run while the same runs of
 * group g + 1 are measured (the rows walk's pipelining: this group's
 * writes overlap the next group's reads from memory). */
static void FN_NAME(group_cf_forward)(const fn_group *a)
{
    const ptrdiff_t npos = a->spatial, cg = a->channels / a->groups, n = cg * npos;
    const FN_T *w = (const FN_T *)a->weight, *b = (const FN_T *)a->bias;
    const FN_S *x0 = (const FN_S *)a->x;
    FN_T pivot = 0;
    fn_moments m = {0};
    if (a->g0 < a->g1) {
        pivot = FN_NAME(fn_row_pivot)(x0 + a->g0 * n, n, 1);
        FN_NAME(group_cf_measure)(x0 + a->g0 * n, cg, npos, pivot, &m);
    }
    for (ptrdiff_t g = a->g0; g < a->g1; g++) {
        const FN_S *x = x0 + g * n, *xn = x + n;
        FN_S *y = (FN_S *)a->y + g * n;
        const int more = g + 1 < a->g1, more2 = g + 2 < a->g1;
        const FN_T pivot_next = more ? FN_NAME(fn_row_pivot)(xn, n, 1) : (FN_T)0;
        fn_moments mn = {0};
        int measured_next = 0;
        fn_row_stats st = {0};
        int ok = FN_NAME(group_cf_settle)(x, cg, npos, a->eps, &pivot, &m);
        if (ok) {
            FN_NAME(fn_layer_finish)(x, n, 1, pivot, m.mean, m.m2, a->eps, &st);
            ok = !st.wide_normalize;
        }
        if (!ok) {
            FN_NAME(group_portable_one)(a, g);
        } else {
            const fn_norm_params np = FN_NAME(fn_norm_params)(pivot, &st);
            FN_NAME(group_store_stats)(a, g, (double)pivot + st.mean_d, st.rstd);
            for (ptrdiff_t c = 0; c < cg; c++) {
                const ptrdiff_t ch = g * cg + c;
                const double wc = w ? (double)w[ch] : 1.0, bc = b ? (double)b[ch] : 0.0;
                const FN_NAME(rows_cur) cur = {
                    x + c * npos,
                    NULL,
                    NULL,
                    y + c * npos,
                    NULL,
                    NULL,
                    {np.p2, (double)(FN_T)(np.scale * wc), (double)(FN_T)(np.c * wc + bc)}};
                const FN_NAME(rows_next) next = {more ? xn + c * npos : NULL, NULL, pivot_next,
                                                 more2 ? xn + n + c * npos : NULL, NULL};
                fn_moments run = {0};
                FN_NAME(rows_write_any)(&cur, &next, &run, npos, a->stream_stores != 0, 0);
                FN_NAME(group_add_run)(&mn, &run);
            }
            measured_next = more;
        }
        if (more && measured_next)
            fn_moments_from_sums(&mn, 0);
        else if (more)
            FN_NAME(group_cf_measure)(xn, cg, npos, pivot_next, &mn);
        pivot = pivot_next;
        m = mn;
    }
    if (a->stream_stores) VSFENCE();
}

/* A channels-last tile: the groups' normalize (or backward) parameters,
 * one per channel, and which groups take the portable kernel. */
typedef struct {
    FN_T p2[FN_LANES_MAX], scale[FN_LANES_MAX], shift[FN_LANES_MAX];
    FN_T rstd[FN_LANES_MAX], w[FN_LANES_MAX], neg_mean_g[FN_LANES_MAX], slope[FN_LANES_MAX];
    unsigned char portable[FN_LANES_MAX];
    FN_NAME(lanes_vec) state[FN_LANES_MAX / VL];
    FN_NAME(lanes_totals) tot;
} FN_NAME(group_tile);

/* Group k of a measured tile (its channels k*cg ... of the tile): the
 * channels' moments merged in double about the first channel's pivot.
 * Returns 0 when the group needs the portable kernel; else its pivot, mean
 * of x - pivot and M2. */
static int FN_NAME(group_cl_merge)(FN_NAME(group_tile) *t, ptrdiff_t k, ptrdiff_t cg,
                                   ptrdiff_t npos, double eps, FN_T *pivot, double *mean_d,
                                   double *m2)
{
    const ptrdiff_t j0 = k * cg;
    double sum = 0.0, sq = 0.0;
    *pivot = t->state[j0 / VL].acc.pivot[j0 % VL];
    for (ptrdiff_t j = j0; j < j0 + cg; j++) {
        double mj, qj;
        FN_NAME(lanes_row_moments)(&t->tot, j, npos, 0, &mj, &qj);
        sum += ((double)t->state[j / VL].acc.pivot[j % VL] - (double)*pivot) + mj;
        sq += qj;
    }
    *mean_d = sum / (double)cg; /* equal counts: the mean of the channels' means */
    for (ptrdiff_t j = j0; j < j0 + cg; j++) {
        double mj, qj;
        FN_NAME(lanes_row_moments)(&t->tot, j, npos, 0, &mj, &qj);
        const double dev =
            ((double)t->state[j / VL].acc.pivot[j % VL] - (double)*pivot) + mj - *mean_d;
        sq += (double)npos * dev * dev;
    }
    *m2 = sq;
    return !FN_NAME(fn_moments_need_rescan)(*mean_d, *m2, cg * npos, eps);
}

/* Measure a tile of whole groups (channels c0 ... c0 + rows of the sample). */
static void FN_NAME(group_cl_measure)(FN_NAME(group_tile) *t, const FN_S *x, ptrdiff_t channels,
                                      ptrdiff_t npos, ptrdiff_t c0, ptrdiff_t rows)
{
    const ptrdiff_t nv = (rows + VL - 1) / VL;
    const FN_NAME(lanes_geom) geom = {x + c0, channels, nv, rows - (nv - 1) * VL};
    FN_NAME(lanes_tile_moments)(geom, npos, rows, 0, t->state, &t->tot);
}

/* y = fma(x - p2, scale, shift) over channels [lo, hi) of one position:
 * full vectors (streamed when `stream`: lo line-aligned in y, whole lines),
 * then a masked part. */
FN_ALWAYS_INLINE void FN_NAME(group_cl_span)(const FN_S *xp, FN_S *yp, ptrdiff_t lo, ptrdiff_t hi,
                                             const FN_T *p2, const FN_T *scale, const FN_T *shift,
                                             int stream)
{
    ptrdiff_t i = lo;
    for (; i + VL <= hi; i += VL) {
        const V t = VFMA(VSUB(XLOAD(xp + i), VLOAD(p2 + i)), VLOAD(scale + i), VLOAD(shift + i));
        if (stream)
            XSTREAM(yp + i, t);
        else
            XSTORE(yp + i, t);
    }
    if (i < hi) {
        const ptrdiff_t part = hi - i;
        const V t = VFMA(VSUB(XLOAD_PART(xp + i, part), VLOAD_PART(p2 + i, part)),
                         VLOAD_PART(scale + i, part), VLOAD_PART(shift + i, part));
        XSTORE_PART(yp + i, t, part);
    }
}

/* Channels [0, len) of one position.  With streaming stores, the
 * position's whole 64-byte lines are streamed and the elements before and
 * after them stored as usual, so no line gets both kinds of store (see
 * rows_write). */
FN_ALWAYS_INLINE void FN_NAME(group_cl_write_pos)(const FN_S *xp, FN_S *yp, ptrdiff_t len,
                                                  const FN_T *p2, const FN_T *scale,
                                                  const FN_T *shift, int stream)
{
    const ptrdiff_t line = FN_LINE_BYTES / (ptrdiff_t)sizeof(FN_S);
    if (!stream) {
        FN_NAME(group_cl_span)(xp, yp, 0, len, p2, scale, shift, 0);
        return;
    }
    ptrdiff_t head = (ptrdiff_t)((FN_LINE_BYTES - (uintptr_t)yp % FN_LINE_BYTES) % FN_LINE_BYTES) /
                     (ptrdiff_t)sizeof(FN_S);
    if (head > len) head = len;
    const ptrdiff_t body_end = head + (len - head) / line * line;
    FN_NAME(group_cl_span)(xp, yp, 0, head, p2, scale, shift, 0);
    FN_NAME(group_cl_span)(xp, yp, head, body_end, p2, scale, shift, 1);
    FN_NAME(group_cl_span)(xp, yp, body_end, len, p2, scale, shift, 0);
}

/* Channels [0, len) from x and y at every position (stride `step`). */
static void FN_NAME(group_cl_write)(const FN_S *x, FN_S *y, ptrdiff_t step, ptrdiff_t npos,
                                    ptrdiff_t len, const FN_T *p2, const FN_T *scale,
                                    const FN_T *shift, int stream)
{
    for (ptrdiff_t p = 0; p < npos; p++)
        FN_NAME(group_cl_write_pos)(x + p * step, y + p * step, len, p2, scale, shift, stream);
}

/* The tiles of a channels-last block: as many whole groups as the lanes
 * walk's tile holds. */
#define FN_GROUP_TILE_GROUPS(cg) (FN_LANES_MAX / (cg))

/* Sample n of a block, as a block of its own. */
static inline fn_group FN_NAME(group_one_sample)(const fn_group *a, ptrdiff_t n)
{
    fn_group one = *a;
    one.samples = 1;
    one.x = (const FN_S *)a->x + n * a->x_n_stride;
    one.y = (FN_S *)a->y + n * a->y_n_stride;
    if (a->mean) one.mean = (FN_T *)a->mean + n * a->groups;
    if (a->rstd) one.rstd = (FN_T *)a->rstd + n * a->groups;
    return one;
}

/* The normalize parameters of a measured tile's groups [ga, gb) of sample
 * a (their stats stored), flagging the groups that need the portable
 * kernel.  Returns whether any does. */
static int FN_NAME(group_cl_params)(const fn_group *a, FN_NAME(group_tile) *t, ptrdiff_t ga,
                                    ptrdiff_t gb)
{
    const ptrdiff_t npos = a->spatial, cg = a->channels / a->groups, c0 = ga * cg;
    const FN_T *w = (const FN_T *)a->weight, *b = (const FN_T *)a->bias;
    int any = 0;
    for (ptrdiff_t k = 0; k < gb - ga; k++) {
        FN_T pivot;
        double mean_d, m2;
        fn_row_stats st = {0};
        t->portable[k] = !FN_NAME(group_cl_merge)(t, k, cg, npos, a->eps, &pivot, &mean_d, &m2);
        if (!t->portable[k]) {
            st.mean_d = mean_d;
            fn_finish_scale(fn_nonneg(m2) / (double)(cg * npos) + a->eps, 1.0, mean_d, &st);
            FN_NAME(fn_check_scale_fits)(&st);
            t->portable[k] = (unsigned char)st.wide_normalize;
        }
        if (t->portable[k]) {
            any = 1;
            continue;
        }
        const fn_norm_params np = FN_NAME(fn_norm_params)(pivot, &st);
        FN_NAME(group_store_stats)(a, ga + k, (double)pivot + st.mean_d, st.rstd);
        for (ptrdiff_t j = k * cg; j < (k + 1) * cg; j++) {
            const double wc = w ? (double)w[c0 + j] : 1.0, bc = b ? (double)b[c0 + j] : 0.0;
            t->p2[j] = (FN_T)np.p2;
            t->scale[j] = (FN_T)(np.scale * wc);
            t->shift[j] = (FN_T)(np.c * wc + bc);
        }
    }
    return any;
}

/* Write a measured tile of sample a: the runs of groups between the
 * portable ones, then each of those on the portable kernel. */
static void FN_NAME(group_cl_write_tile)(const fn_group *a, const FN_NAME(group_tile) *t,
                                         ptrdiff_t ga, ptrdiff_t gb)
{
    const ptrdiff_t npos = a->spatial, C = a->channels, cg = C / a->groups, c0 = ga * cg;
    const FN_S *x = (const FN_S *)a->x;
    FN_S *y = (FN_S *)a->y;
    for (ptrdiff_t k = 0; k < gb - ga;) {
        ptrdiff_t end = k;
        while (end < gb - ga && !t->portable[end]) end++;
        if (end > k) {
            const ptrdiff_t j0 = k * cg, len = (end - k) * cg;
            FN_NAME(group_cl_write)(x + c0 + j0, y + c0 + j0, C, npos, len, t->p2 + j0,
                                    t->scale + j0, t->shift + j0, a->stream_stores != 0);
        }
        if (end < gb - ga) FN_NAME(group_portable_one)(a, ga + end);
        k = end + 1;
    }
}

/* One sample, tile by tile. */
static void FN_NAME(group_cl_forward)(const fn_group *a, FN_NAME(group_tile) *t)
{
    const ptrdiff_t cg = a->channels / a->groups;
    for (ptrdiff_t ga = a->g0; ga < a->g1; ga += FN_GROUP_TILE_GROUPS(cg)) {
        const ptrdiff_t gb =
            a->g1 - ga < FN_GROUP_TILE_GROUPS(cg) ? a->g1 : ga + FN_GROUP_TILE_GROUPS(cg);
        FN_NAME(group_cl_measure)(t, (const FN_S *)a->x, a->channels, a->spatial, ga * cg,
                                  (gb - ga) * cg);
        FN_NAME(group_cl_params)(a, t, ga, gb);
        FN_NAME(group_cl_write_tile)(a, t, ga, gb);
    }
}

/* The block's samples when one tile holds its groups: sample n + 1 is
 * measured position by position (the lanes walk's pass 1, step by step,
 * the same bits as measured alone) in the loop that writes sample n, so
 * the reads of the next sample from memory overlap this sample's writes,
 * as the rows walk overlaps rows. */
static void FN_NAME(group_cl_forward_samples)(const fn_group *a, FN_NAME(group_tile) *t)
{
    const ptrdiff_t npos = a->spatial, C = a->channels, cg = C / a->groups;
    const ptrdiff_t c0 = a->g0 * cg, rows = (a->g1 - a->g0) * cg;
    const ptrdiff_t nv = (rows + VL - 1) / VL, last = rows - (nv - 1) * VL;
    const int stream = a->stream_stores != 0;
    FN_NAME(group_cl_measure)(t, (const FN_S *)a->x, C, npos, c0, rows);
    for (ptrdiff_t n = 0; n < a->samples; n++) {
        const fn_group one = FN_NAME(group_one_sample)(a, n);
        const int any_portable = FN_NAME(group_cl_params)(&one, t, a->g0, a->g1);
        const FN_S *xnext = (const FN_S *)a->x + (n + 1) * a->x_n_stride;
        if (n + 1 == a->samples || any_portable) {
            FN_NAME(group_cl_write_tile)(&one, t, a->g0, a->g1);
            if (n + 1 < a->samples) FN_NAME(group_cl_measure)(t, xnext, C, npos, c0, rows);
            continue;
        }
        const FN_NAME(lanes_geom) next = {xnext + c0, C, nv, last};
        const FN_S *x = (const FN_S *)one.x + c0;
        FN_S *y = (FN_S *)one.y + c0;
        FN_T k = 0;
        FN_NAME(lanes_moments_init)(next, npos, rows, 0, t->state, &t->tot);
        for (ptrdiff_t p = 0; p < npos; p++) {
            FN_NAME(lanes_moments_step)(next, npos, rows, 0, t->state, &t->tot, &k, p);
            FN_NAME(group_cl_write_pos)(x + p * C, y + p * C, rows, t->p2, t->scale, t->shift,
                                        stream);
        }
        FN_NAME(lanes_merge_chunk)(t->state, rows, &k, &t->tot, 0);
    }
    if (stream) VSFENCE();
}

/* Channels-first backward: per channel run, the sums of dy and of
 * dy * (x - pivot), in FN_T chains folded into double every chunk. */
static void FN_NAME(group_cf_run_sums)(const FN_S *x, const FN_S *dy, ptrdiff_t n, FN_T pivot,
                                       double *sum_dy, double *sum_dyd)
{
    const V p = VSET1(pivot);
    V s0 = VZERO, s1 = VZERO, q0 = VZERO, q1 = VZERO;
    double sdy = 0.0, sdyd = 0.0;
    ptrdiff_t i = 0;
    for (; i + 2 * VL <= n; i += 2 * VL) {
        if (i && i % (FN_ACC_CHUNK * 4 * VL) == 0) {
            sdy += VHSUM_D(VADD(s0, s1));
            sdyd += VHSUM_D(VADD(q0, q1));
            s0 = s1 = q0 = q1 = VZERO;
        }
        const V g0 = XLOAD(dy + i), g1 = XLOAD(dy + i + VL);
        s0 = VADD(s0, g0);
        s1 = VADD(s1, g1);
        q0 = VFMA(g0, VSUB(XLOAD(x + i), p), q0);
        q1 = VFMA(g1, VSUB(XLOAD(x + i + VL), p), q1);
    }
    for (; i < n; i += VL) { /* masked lanes load dy = 0: they add nothing */
        const ptrdiff_t part = n - i < VL ? n - i : VL;
        const V g = part < VL ? XLOAD_PART(dy + i, part) : XLOAD(dy + i);
        const V xv = part < VL ? XLOAD_PART(x + i, part) : XLOAD(x + i);
        s0 = VADD(s0, g);
        q0 = VFMA(g, VSUB(xv, p), q0);
    }
    *sum_dy = sdy + VHSUM_D(VADD(s0, s1));
    *sum_dyd = sdyd + VHSUM_D(VADD(q0, q1));
}

/* dx = (xhat * slope + (w * dy + neg_mean_g)) * rstd, xhat = fma(x - p2, rstd, c). */
FN_ALWAYS_INLINE V FN_NAME(group_dx_vec)(V xv, V dyv, V p2, V rs, V c, V wv, V nmg, V slope)
{
    const V xhat = VFMA(VSUB(xv, p2), rs, c);
    return VMUL(VFMA(xhat, slope, VFMA(dyv, wv, nmg)), rs);
}

static void FN_NAME(group_cf_run_dx)(const FN_S *x, const FN_S *dy, FN_S *dx, ptrdiff_t n,
                                     const FN_T *k, int stream)
{
    const V p2 = VSET1(k[0]), rs = VSET1(k[1]), c = VSET1(k[2]), wv = VSET1(k[3]);
    const V nmg = VSET1(k[4]), slope = VSET1(k[5]);
    ptrdiff_t i = 0;
    for (; i + VL <= n; i += VL) {
        const V t = FN_NAME(group_dx_vec)(XLOAD(x + i), XLOAD(dy + i), p2, rs, c, wv, nmg, slope);
        if (stream && (uintptr_t)(dx + i) % (VL * sizeof(FN_S)) == 0)
            XSTREAM(dx + i, t);
        else
            XSTORE(dx + i, t);
    }
    if (i < n) {
        const ptrdiff_t part = n - i;
        XSTORE_PART(dx + i,
                    FN_NAME(group_dx_vec)(XLOAD_PART(x + i, part), XLOAD_PART(dy + i, part), p2, rs,
                                          c, wv, nmg, slope),
                    part);
    }
}

/* The backward's rstd: the forward's when given (and finite), else from
 * the moments. */
static inline double FN_NAME(group_bwd_rstd)(const fn_group_bwd *a, ptrdiff_t g, double var_eps)
{
    if (a->rstd && isfinite((double)((const FN_T *)a->rstd)[g]))
        return (double)((const FN_T *)a->rstd)[g];
    return 1.0 / sqrt(var_eps);
}

static void FN_NAME(group_cf_backward)(const fn_group_bwd *a)
{
    const ptrdiff_t npos = a->spatial, cg = a->channels / a->groups, n = cg * npos;
    const FN_T *w = (const FN_T *)a->weight;
    for (ptrdiff_t g = a->g0; g < a->g1; g++) {
        const FN_S *x = (const FN_S *)a->x + g * n, *dy = (const FN_S *)a->dy + g * n;
        FN_S *dx = (FN_S *)a->dx + g * n;
        FN_T pivot;
        fn_moments m;
        if (n < 2 * VL || !FN_NAME(group_cf_moments)(x, cg, npos, a->eps, &pivot, &m)) {
            FN_NAME(group_bwd_portable_one)(a, g);
            continue;
        }
        const double rstd = FN_NAME(group_bwd_rstd)(a, g, fn_nonneg(m.m2) / (double)n + a->eps);
        if (!isnormal((FN_T)rstd)) {
            FN_NAME(group_bwd_portable_one)(a, g);
            continue;
        }
        double sum_g = 0.0, sum_gd = 0.0;
        for (ptrdiff_t c = 0; c < cg; c++) {
            const ptrdiff_t ch = g * cg + c;
            const double wc = w ? (double)w[ch] : 1.0;
            double sdy, sdyd;
            FN_NAME(group_cf_run_sums)(x + c * npos, dy + c * npos, npos, pivot, &sdy, &sdyd);
            sum_g += wc * sdy;
            sum_gd += wc * sdyd;
            if (a->dbias) a->dbias[ch] = sdy;
            if (a->dweight) a->dweight[ch] = rstd * (sdyd - m.mean * sdy);
        }
        const double mean_g = sum_g / (double)n;
        const double mean_gxhat = rstd * (sum_gd - m.mean * sum_g) / (double)n;
        fn_row_stats center = {.mean_d = m.mean, .rstd = rstd, .scale = rstd};
        const fn_norm_params np = FN_NAME(fn_norm_params)(pivot, &center);
        for (ptrdiff_t c = 0; c < cg; c++) {
            const FN_T k[6] = {(FN_T)np.p2,     (FN_T)rstd,
                               (FN_T)np.c,      w ? w[g * cg + c] : (FN_T)1,
                               (FN_T)(-mean_g), (FN_T)(-mean_gxhat)};
            FN_NAME(group_cf_run_dx)(x + c * npos, dy + c * npos, dx + c * npos, npos, k,
                                     a->stream_stores);
        }
    }
    if (a->stream_stores) VSFENCE();
}

/* Channels-last backward over the tile's channels [j0, j0 + len): the sums
 * of dy and dy * xhat per channel, in FN_T folded into double every
 * FN_LANES_CHUNK positions. */
static void FN_NAME(group_cl_bwd_sums)(const FN_NAME(group_tile) *t, const FN_S *x, const FN_S *dy,
                                       ptrdiff_t step, ptrdiff_t npos, ptrdiff_t j0, ptrdiff_t len,
                                       double *sdy, double *sdx)
{
    FN_T fdy[FN_LANES_MAX], fdx[FN_LANES_MAX];
    for (ptrdiff_t j = 0; j < len; j++) sdy[j] = sdx[j] = 0.0;
    for (ptrdiff_t p0 = 0; p0 < npos; p0 += FN_LANES_CHUNK) {
        const ptrdiff_t p1 = npos - p0 < FN_LANES_CHUNK ? npos : p0 + FN_LANES_CHUNK;
        for (ptrdiff_t j = 0; j < len; j++) fdy[j] = fdx[j] = 0;
        for (ptrdiff_t p = p0; p < p1; p++) {
            const FN_S *xp = x + p * step, *dp = dy + p * step;
            for (ptrdiff_t i = 0; i < len; i += VL) {
                const ptrdiff_t part = len - i < VL ? len - i : VL;
                const ptrdiff_t j = j0 + i;
                V xv, dv, xhat;
                if (part < VL) {
                    xv = XLOAD_PART(xp + i, part);
                    dv = XLOAD_PART(dp + i, part);
                    xhat = VFMA(VSUB(xv, VLOAD_PART(t->p2 + j, part)),
                                VLOAD_PART(t->rstd + j, part), VLOAD_PART(t->shift + j, part));
                    VSTORE_PART(fdy + i, VADD(VLOAD_PART(fdy + i, part), dv), part);
                    VSTORE_PART(fdx + i, VFMA(dv, xhat, VLOAD_PART(fdx + i, part)), part);
                } else {
                    xv = XLOAD(xp + i);
                    dv = XLOAD(dp + i);
                    xhat =
                        VFMA(VSUB(xv, VLOAD(t->p2 + j)), VLOAD(t->rstd + j), VLOAD(t->shift + j));
                    VSTORE(fdy + i, VADD(VLOAD(fdy + i), dv));
                    VSTORE(fdx + i, VFMA(dv, xhat, VLOAD(fdx + i)));
                }
            }
        }
        for (ptrdiff_t j = 0; j < len; j++) {
            sdy[j] += (double)fdy[j];
            sdx[j] += (double)fdx[j];
        }
    }
}

static void FN_NAME(group_cl_bwd_dx)(const FN_NAME(group_tile) *t, const FN_S *x, const FN_S *dy,
                                     FN_S *dx, ptrdiff_t step, ptrdiff_t npos, ptrdiff_t j0,
                                     ptrdiff_t len)
{
    for (ptrdiff_t p = 0; p < npos; p++) {
        const FN_S *xp = x + p * step, *dp = dy + p * step;
        FN_S *op = dx + p * step;
        for (ptrdiff_t i = 0; i < len; i += VL) {
            const ptrdiff_t part = len - i < VL ? len - i : VL, j = j0 + i;
            if (part < VL) {
                const V r = FN_NAME(group_dx_vec)(
                    XLOAD_PART(xp + i, part), XLOAD_PART(dp + i, part), VLOAD_PART(t->p2 + j, part),
                    VLOAD_PART(t->rstd + j, part), VLOAD_PART(t->shift + j, part),
                    VLOAD_PART(t->w + j, part), VLOAD_PART(t->neg_mean_g + j, part),
                    VLOAD_PART(t->slope + j, part));
                XSTORE_PART(op + i, r, part);
            } else {
                XSTORE(op + i, FN_NAME(group_dx_vec)(XLOAD(xp + i), XLOAD(dp + i), VLOAD(t->p2 + j),
                                                     VLOAD(t->rstd + j), VLOAD(t->shift + j),
                                                     VLOAD(t->w + j), VLOAD(t->neg_mean_g + j),
                                                     VLOAD(t->slope + j)));
            }
        }
    }
}

static void FN_NAME(group_cl_backward)(const fn_group_bwd *a, FN_NAME(group_tile) *t)
{
    const ptrdiff_t npos = a->spatial, C = a->channels, cg = C / a->groups;
    const FN_T *w = (const FN_T *)a->weight;
    const FN_S *x = (const FN_S *)a->x, *dy = (const FN_S *)a->dy;
    FN_S *dx = (FN_S *)a->dx;
    double sdy[FN_LANES_MAX], sdx[FN_LANES_MAX];
    for (ptrdiff_t ga = a->g0; ga < a->g1; ga += FN_GROUP_TILE_GROUPS(cg)) {
        const ptrdiff_t gb =
            a->g1 - ga < FN_GROUP_TILE_GROUPS(cg) ? a->g1 : ga + FN_GROUP_TILE_GROUPS(cg);
        const ptrdiff_t c0 = ga * cg;
        FN_NAME(group_cl_measure)(t, x, C, npos, c0, (gb - ga) * cg);
        for (ptrdiff_t k = 0; k < gb - ga; k++) {
            FN_T pivot;
            double mean_d, m2;
            t->portable[k] = !FN_NAME(group_cl_merge)(t, k, cg, npos, a->eps, &pivot, &mean_d, &m2);
            if (t->portable[k]) continue;
            const double rstd =
                FN_NAME(group_bwd_rstd)(a, ga + k, fn_nonneg(m2) / (double)(cg * npos) + a->eps);
            t->portable[k] = !isnormal((FN_T)rstd);
            if (t->portable[k]) continue;
            fn_row_stats center = {.mean_d = mean_d, .rstd = rstd, .scale = rstd};
            const fn_norm_params np = FN_NAME(fn_norm_params)(pivot, &center);
            for (ptrdiff_t j = k * cg; j < (k + 1) * cg; j++) {
                t->p2[j] = (FN_T)np.p2;
                t->rstd[j] = (FN_T)rstd;
                t->shift[j] = (FN_T)np.c;
                t->w[j] = w ? w[c0 + j] : (FN_T)1;
            }
        }
        for (ptrdiff_t k = 0; k < gb - ga;) {
            ptrdiff_t end = k;
            while (end < gb - ga && !t->portable[end]) end++;
            if (end > k) {
                const ptrdiff_t j0 = k * cg, len = (end - k) * cg;
                FN_NAME(group_cl_bwd_sums)(t, x + c0 + j0, dy + c0 + j0, C, npos, j0, len, sdy,
                                           sdx);
                for (ptrdiff_t q = k; q < end; q++) {
                    const double n = (double)(cg * npos);
                    double sum_g = 0.0, sum_gx = 0.0;
                    for (ptrdiff_t j = q * cg; j < (q + 1) * cg; j++) {
                        sum_g += (double)t->w[j] * sdy[j - j0];
                        sum_gx += (double)t->w[j] * sdx[j - j0];
                        if (a->dbias) a->dbias[c0 + j] = sdy[j - j0];
                        if (a->dweight) a->dweight[c0 + j] = sdx[j - j0];
                    }
                    for (ptrdiff_t j = q * cg; j < (q + 1) * cg; j++) {
                        t->neg_mean_g[j] = (FN_T)(-sum_g / n);
                        t->slope[j] = (FN_T)(-sum_gx / n);
                    }
                }
                FN_NAME(group_cl_bwd_dx)(t, x + c0 + j0, dy + c0 + j0, dx + c0 + j0, C, npos, j0,
                                         len);
            }
            if (end < gb - ga) FN_NAME(group_bwd_portable_one)(a, ga + end);
            k = end + 1;
        }
    }
}

void FN_NAME(group_norm)(const fn_group *a)
{
    const ptrdiff_t C = a->channels, S = a->spatial, cg = C / a->groups;
    if (a->x_s_stride == 1 && a->x_c_stride == S && a->y_s_stride == 1 && a->y_c_stride == S) {
        for (ptrdiff_t n = 0; n < a->samples; n++) {
            const fn_group one = FN_NAME(group_one_sample)(a, n);
            FN_NAME(group_cf_forward)(&one);
        }
    } else if (a->x_c_stride == 1 && a->x_s_stride == C && a->y_c_stride == 1 &&
               a->y_s_stride == C && cg <= FN_LANES_MAX) {
        FN_NAME(group_tile) t;
        if ((a->g1 - a->g0) * cg <= FN_LANES_MAX) {
            FN_NAME(group_cl_forward_samples)(a, &t);
        } else {
            for (ptrdiff_t n = 0; n < a->samples; n++) {
                const fn_group one = FN_NAME(group_one_sample)(a, n);
                FN_NAME(group_cl_forward)(&one, &t);
            }
            if (a->stream_stores) VSFENCE();
        }
    } else {
        FN_PORTABLE(group_norm)(a);
    }
}

void FN_NAME(group_norm_backward)(const fn_group_bwd *a)
{
    const ptrdiff_t C = a->channels, S = a->spatial, cg = C / a->groups;
    if (a->x_s_stride == 1 && a->x_c_stride == S && a->dy_s_stride == 1 && a->dy_c_stride == S &&
        a->dx_s_stride == 1 && a->dx_c_stride == S) {
        FN_NAME(group_cf_backward)(a);
    } else if (a->x_c_stride == 1 && a->x_s_stride == C && a->dy_c_stride == 1 &&
               a->dy_s_stride == C && a->dx_c_stride == 1 && a->dx_s_stride == C &&
               cg <= FN_LANES_MAX) {
        FN_NAME(group_tile) t;
        FN_NAME(group_cl_backward)(a, &t);
    } else {
        FN_PORTABLE(group_norm_backward)(a);
    }
}

#undef FN_GROUP_TILE_GROUPS
