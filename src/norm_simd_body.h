/*
 * norm_simd_body.h - body of the SIMD kernels, stamped out once per ISA and
 * dtype by kernels_<isa>.c, which define FN_T, FN_SFX, FN_ISA and the vector
 * interface below before including it.  The file #undefs that interface at
 * its end so it can be included again for the next dtype.
 *
 * Vector interface (V holds VL lanes of FN_T):
 *   VLOAD(p) VSTORE(p,v)              unaligned full-vector load/store
 *   VLOAD_PART(p,n) VSTORE_PART(p,v,n) the first n lanes (0 < n < VL); masked,
 *                                     so nothing past p[n-1] is touched
 *   VZERO_FROM(v,n)                   lanes >= n set to 0
 *   VSET1 VZERO VADD VSUB VMUL VFMA(a,b,c)=a*b+c VMIN VMAX
 *   VHSUM_D(v)                        sum of the lanes, in double
 *   VADD_TO_DOUBLE(p, v)              double p[0..VL) += lanes of v
 *   VSTREAM(p,v)                      non-temporal store, p vector-aligned
 *   VSFENCE()                         orders streaming stores before return
 *
 * Element storage.  x, y, residual, h, dy and dx hold FN_S (FN_T unless the
 * file defines otherwise); weight, bias, statistics and all arithmetic are
 * FN_T.  float16 and bfloat16 are stored as uint16_t and computed on in
 * float32: widened on load, rounded once (to nearest even) on store.
 *   XLOAD(p) XLOAD_PART(p,n)          VL elements (the first n) widened to V
 *   XSTORE(p,v) XSTORE_PART(p,v,n)    rounded to FN_S and stored
 *   XSTREAM(p,v)                      the same, non-temporal, p aligned to
 *                                     VL * sizeof(FN_S)
 *   XROUND(v)                         v rounded to FN_S and widened again
 *   XSTORE_H XSTORE_PART_H XSTREAM_H  the stores of h (default: as y's)
 * Without them the element type is FN_T and these are the V operations.
 *
 * Two layouts are vectorized; the portable kernel takes everything else:
 *
 * Rows whose elements are contiguous (the last-axis case): SIMD along the
 * row.  Shifted Welford: every element is shifted by the row's pivot
 * (median of first, middle, last element), then four chains of VL lanes each
 * run Welford's update with one shared 1/k per step.  All 4*VL partial
 * results have the same count, so they are merged exactly by
 *     mean = average of the partial means,
 *     M2   = sum of partial M2 + k * sum of (partial mean - mean)^2,
 * in vector registers and then in double, with no division per lane.  The
 * last < 4*VL elements form one more block, done in two masked passes, and
 * are merged with Chan's formula.  Because the pivot sits inside the row,
 * the shifted values are of the order of the spread, so float32 keeps
 * rounding error near machine epsilon even when |mean| >> std.  A second
 * pass, over the row now in L1/L2, writes ((x - pivot) - mean) * rstd.
 *
 * Rows side by side in memory (row stride 1: channels-first `axis=1`, and
 * Fortran order): SIMD across rows, VL rows per vector.  Each lane runs the
 * same shifted Welford over its row, in chunks merged in double with Chan's
 * formula, coefficients shared by all lanes.  A masked load covers the last
 * group of rows.  Each row is finished in double, like the other walks.
 *
 * Long rows: no FN_T sum runs over more than a chunk (FN_ACC_CHUNK steps
 * along a row, FN_LANES_CHUNK elements across rows); chunks are merged in
 * double, so accuracy does not degrade with the row length.  Rows whose
 * moments may have underflowed or overflowed are measured again, rescaled,
 * by norm_row_common.h, and rows whose scale does not fit FN_T are
 * normalized there in double.
 *
 * RMSNorm has no mean: four FMA chains of x*x, then y = x * rstd * w.
 *
 * Per-row work (finishing the stats, NaN/Inf rows, overflow of the squares)
 * is in norm_row_common.h and shared with the portable kernel.
 */
#include <stdint.h>
#include "norm_row_common.h"

/* FN_EXACT_MEAN: also sum the shifted values x - pivot in double, and take
 * the row's center from that sum rather than from the float32 Welford
 * means.  The half-precision stamps set it: their outputs must be within an
 * ulp even next to zero, where an ulp of float16 (2^-24) or bfloat16 (far
 * less) is below a float32 mean's rounding (~2^-24 of the spread).  x -
 * pivot is exact in float32 for half inputs of similar magnitude, so the
 * double sum is exact to double rounding.  float32/float64 inputs keep the
 * cheaper Welford means, whose error is far inside their tolerance. */
#ifndef FN_EXACT_MEAN
#define FN_EXACT_MEAN 0
#endif

#ifndef XLOAD
#define XLOAD VLOAD
#define XLOAD_PART VLOAD_PART
#define XSTORE VSTORE
#define XSTORE_PART VSTORE_PART
#define XSTREAM VSTREAM
#define XROUND(v) (v)
#endif
/* how h (the fused residual sum) is stored: like y unless the file says */
#ifndef XSTORE_H
#define XSTORE_H XSTORE
#define XSTORE_PART_H XSTORE_PART
#define XSTREAM_H XSTREAM
#endif

#define FN_KERNEL(base) FN_CAT(FN_NAME(base), FN_ISA)
#define FN_ALWAYS_INLINE static inline __attribute__((always_inline))

static inline double FN_NAME(simd_hsum)(V v)
{
    return VHSUM_D(v);
}

/* p[0..VL) += lanes of v in double (the first `part` lanes when part > 0). */
static inline void FN_NAME(simd_add_to_double)(double *p, V v, ptrdiff_t part)
{
    if (!part) {
        VADD_TO_DOUBLE(p, v);
        return;
    }
    FN_T lanes[VL];
    VSTORE(lanes, v);
    for (ptrdiff_t j = 0; j < part; j++) p[j] += (double)lanes[j];
}

/* ---- rows with contiguous elements ------------------------------------ */

/* Running statistics of one row in four chains of VL lanes: shifted Welford
 * in (m, q) for LayerNorm, sums of squares in q for RMSNorm.  The chains
 * hold at most FN_ACC_CHUNK steps (of 4*VL elements): then they are folded
 * into the double totals and start again, so FN_T rounding never builds up
 * over more than one chunk, whatever the row length (a float32 sum of 2^20
 * squares alone would be off by 1e-4).  The cut depends on the element
 * index only, never on alignment. */
#define FN_ACC_CHUNK 128

typedef struct {
    V m[4], q[4];
    FN_T k;                       /* steps in the current chunk */
    double t_cnt, t_mean, t_m2;   /* the folded chunks (t_m2: sum of squares for RMSNorm) */
    double t_comp;                /* RMSNorm: compensation of t_m2 (fn_add_compensated) */
    double dsum[2][VL]; /* sums of x - pivot (FN_EXACT_MEAN) */
} FN_NAME(simd_acc);

static inline void FN_NAME(simd_acc_init)(FN_NAME(simd_acc) *acc)
{
    for (int c = 0; c < 4; c++) acc->m[c] = acc->q[c] = VZERO;
    acc->k = 0;
    acc->t_cnt = acc->t_mean = acc->t_m2 = acc->t_comp = 0.0;
    if (FN_EXACT_MEAN)
        for (int j = 0; j < VL; j++) acc->dsum[0][j] = acc->dsum[1][j] = 0.0;
}

/* Fold the chains into the totals and clear them.  All 4*VL Welford
 * partials have the same count k, so they merge exactly as
 * mean = average of partial means and
 * M2 = sum of partial M2 + k * sum of (partial mean - mean)^2,
 * and the chunk joins the totals by Chan's formula. */
FN_ALWAYS_INLINE void FN_NAME(simd_acc_flush)(FN_NAME(simd_acc) *acc, int rms)
{
    if (acc->k == 0) return;
    const V q = VADD(VADD(acc->q[0], acc->q[1]), VADD(acc->q[2], acc->q[3]));
    double m2 = FN_NAME(simd_hsum)(q);
    if (rms) {
        fn_add_compensated(&acc->t_m2, &acc->t_comp, m2);
    } else {
        const V msum = VADD(VADD(acc->m[0], acc->m[1]), VADD(acc->m[2], acc->m[3]));
        const double mean = FN_NAME(simd_hsum)(msum) / (4.0 * VL);
        const V g = VSET1((FN_T)mean);
        V spread = VZERO;
        for (int c = 0; c < 4; c++) {
            V e = VSUB(acc->m[c], g);
            spread = VFMA(e, e, spread);
        }
        /* g is mean rounded to FN_T: the spread about it is off by
         * (mean - g)^2 per lane, second order and dropped */
        m2 += (double)acc->k * FN_NAME(simd_hsum)(spread);
        fn_chan_merge(&acc->t_cnt, &acc->t_mean, &acc->t_m2, 4.0 * VL * (double)acc->k, mean, m2);
    }
    for (int c = 0; c < 4; c++) acc->m[c] = acc->q[c] = VZERO;
    acc->k = 0;
}

/* x, or x + r with a fused residual add (r not NULL): the value of h, as
 * it will be stored (rounded to the element type). */
#define FN_LOAD_H(x, r, i) \
    ((r) ? XROUND(VADD(XLOAD((x) + (i)), XLOAD((r) + (i)))) : XLOAD((x) + (i)))
#define FN_LOAD_H_PART(x, r, i, n) \
    ((r) ? XROUND(VADD(XLOAD_PART((x) + (i), n), XLOAD_PART((r) + (i), n))) \
         : XLOAD_PART((x) + (i), n))

/* Consume the 4*VL elements at x (of h = x + r when r is not NULL). */
static inline void FN_NAME(simd_acc_step)(FN_NAME(simd_acc) *acc, const FN_S *x, const FN_S *r,
                                          V p, int rms)
{
    if (rms) {
        for (int c = 0; c < 4; c++) {
            V v = FN_LOAD_H(x, r, c * VL);
            acc->q[c] = VFMA(v, v, acc->q[c]);
        }
        if (++acc->k == FN_ACC_CHUNK) FN_NAME(simd_acc_flush)(acc, rms);
        return;
    }
    /* Welford: m += delta/k; M2 += delta * (d - m_new).  This form uses two
     * FP adds and two FMAs; with the normalize pass's one add and two FMAs
     * (fused into the same loop) the add and FMA ports stay balanced. */
    acc->k += 1;
    const V inv_k = VSET1((FN_T)1 / acc->k);
    for (int c = 0; c < 4; c++) {
        V d = VSUB(FN_LOAD_H(x, r, c * VL), p);
        V delta = VSUB(d, acc->m[c]);
        acc->m[c] = VFMA(delta, inv_k, acc->m[c]);
        acc->q[c] = VFMA(delta, VSUB(d, acc->m[c]), acc->q[c]);
        if (FN_EXACT_MEAN) VADD_TO_DOUBLE(acc->dsum[c >> 1], d);
    }
    if (acc->k == FN_ACC_CHUNK) FN_NAME(simd_acc_flush)(acc, rms);
}

/* The row so far: (cnt, mean, m2) of the shifted values, or m2 = sum of
 * squares for RMSNorm. */
static inline void FN_NAME(simd_acc_reduce)(FN_NAME(simd_acc) *acc, int rms,
                                            double *cnt, double *mean, double *m2)
{
    FN_NAME(simd_acc_flush)(acc, rms);
    *cnt = acc->t_cnt;
    *mean = acc->t_mean;
    *m2 = acc->t_m2 + acc->t_comp;
    if (FN_EXACT_MEAN && !rms && *cnt > 0) { /* M2 above is about the Welford
                            mean: the shift is second order; the center
                            comes from the sums */
        double total = 0.0;
        for (int j = 0; j < VL; j++) total += acc->dsum[0][j] + acc->dsum[1][j];
        *mean = total / *cnt;
    }
}

/* Fold in x[lo, hi), a few vectors at most: sum of squares for RMSNorm, or
 * for LayerNorm a two-pass (masked) block merged with Chan's formula. */
static void FN_NAME(simd_acc_rest)(const FN_S *x, const FN_S *r, ptrdiff_t lo, ptrdiff_t hi, V p,
                                   int rms,
                                   double *cnt, double *mean, double *m2)
{
    ptrdiff_t j;
    if (hi <= lo) return;
    if (rms) {
        V ss = VZERO;
        for (j = lo; j + VL <= hi; j += VL) {
            V v = FN_LOAD_H(x, r, j);
            ss = VFMA(v, v, ss);
        }
        if (j < hi) {
            V v = FN_LOAD_H_PART(x, r, j, hi - j);
            ss = VFMA(v, v, ss);
        }
        *m2 += FN_NAME(simd_hsum)(ss);
        return;
    }
    const double t = (double)(hi - lo);
    V s = VZERO;
    double ds[VL] = {0.0};
    for (j = lo; j + VL <= hi; j += VL) {
        const V d = VSUB(FN_LOAD_H(x, r, j), p);
        if (FN_EXACT_MEAN)
            VADD_TO_DOUBLE(ds, d);
        else
            s = VADD(s, d);
    }
    if (j < hi) {
        const V d = VZERO_FROM(VSUB(FN_LOAD_H_PART(x, r, j, hi - j), p), hi - j);
        if (FN_EXACT_MEAN)
            VADD_TO_DOUBLE(ds, d);
        else
            s = VADD(s, d);
    }
    double tsum = 0.0;
    if (FN_EXACT_MEAN)
        for (int u = 0; u < VL; u++) tsum += ds[u];
    else
        tsum = FN_NAME(simd_hsum)(s);
    const double tmean = tsum / t;
    const V tm = VSET1((FN_T)tmean);
    V q = VZERO;
    for (j = lo; j + VL <= hi; j += VL) {
        V e = VSUB(VSUB(FN_LOAD_H(x, r, j), p), tm);
        q = VFMA(e, e, q);
    }
    if (j < hi) {
        V e = VZERO_FROM(VSUB(VSUB(FN_LOAD_H_PART(x, r, j, hi - j), p), tm), hi - j);
        q = VFMA(e, e, q);
    }
    /* tm is tmean rounded to FN_T: remove that offset's contribution */
    const double off = tmean - (double)(FN_T)tmean;
    fn_chan_merge(cnt, mean, m2, t, tmean, FN_NAME(simd_hsum)(q) - t * off * off);
}

/* Statistics of a whole row (the first row of a block). */
static void FN_NAME(simd_row_stats)(const FN_S *x, const FN_S *r, ptrdiff_t n, FN_T pivot,
                                    int rms, double *mean, double *m2)
{
    FN_NAME(simd_acc) acc;
    const V p = VSET1(pivot);
    double cnt;
    ptrdiff_t i = 0;
    FN_NAME(simd_acc_init)(&acc);
    for (; i + 4 * VL <= n; i += 4 * VL)
        FN_NAME(simd_acc_step)(&acc, x + i, r ? r + i : NULL, p, rms);
    FN_NAME(simd_acc_reduce)(&acc, rms, &cnt, mean, m2);
    FN_NAME(simd_acc_rest)(x, r, i, n, p, rms, &cnt, mean, m2);
}

/* One vector of (h - center) * scale [* w] [+ b] for the values hv at
 * element i, computed as fma(h - p2, scale, c) with the row's center split
 * into p2 (in FN_T) and c = -(center - p2) * scale (see fn_norm_params): one
 * subtraction and one FMA, and no loss where |mean| >> std.  `part` lanes
 * when 0 < part < VL, else a full vector. */
static inline V FN_NAME(simd_norm_vec)(V hv, const FN_T *w, const FN_T *b, ptrdiff_t i,
                                       ptrdiff_t part, V p2, V s, V c)
{
#define FN_LOAD_AT(ptr) (part ? VLOAD_PART((ptr) + i, part) : VLOAD((ptr) + i))
    V t = VFMA(VSUB(hv, p2), s, c);
    if (w && b) return VFMA(t, FN_LOAD_AT(w), FN_LOAD_AT(b));
    if (w) return VMUL(t, FN_LOAD_AT(w));
    if (b) return VADD(t, FN_LOAD_AT(b));
    return t;
#undef FN_LOAD_AT
}

/* Write row x -> y and, when xn is not NULL, gather the statistics of the
 * next row xn in the same loop.  Fusing the two keeps reads (of the next
 * row, from memory) and writes (of this row) flowing together, and hides
 * the arithmetic of the statistics behind the memory traffic; this row was
 * read by the previous iteration and is still in L1/L2.
 * `stream`: write with non-temporal stores, which skip the
 * read-for-ownership of each output line (a third of the traffic); worth it
 * only when the output is larger than the caches.  They need aligned
 * addresses, so the elements before the first aligned one are written with a
 * masked store; the normalize blocks then start there, while the next row's
 * statistics keep their own blocks from element 0. */
/* The per-row fallbacks (NaN/Inf rows, overflowing squares) scan the row in
 * memory; with a fused residual add h is not stored yet at that point, so
 * store it first in exactly those cases (the normalize pass rewrites the same
 * values). */
static int FN_NAME(simd_sum_if_needed)(const FN_S *x, const FN_S *r, FN_S *h, ptrdiff_t n,
                                       double mean_d, double m2, double eps)
{
    if (!FN_NAME(fn_moments_need_rescan)(mean_d, m2, n, eps)) return 0;
    for (ptrdiff_t i = 0; i < n; i++) h[i] = FN_NAME(fn_sum_stored)(x[i], r[i]);
    return 1; /* h is stored: normalize from it (r may be h itself) */
}

/* The pivot of h = x + r before h is stored: fl(x + r) is what h will hold. */
static FN_T FN_NAME(simd_pivot_of_sum)(const FN_S *x, const FN_S *r, ptrdiff_t n)
{
    FN_S s[3];
    const ptrdiff_t at[3] = {0, (n - 1) / 2, n - 1};
    for (int j = 0; j < 3; j++) s[j] = FN_NAME(fn_sum_stored)(x[at[j]], r[at[j]]);
    return FN_NAME(fn_row_pivot)(s + 0, 3, 1);
}

FN_ALWAYS_INLINE void
FN_NAME(simd_row_normalize)(const FN_S *x, const FN_S *r, FN_S *h, FN_S *y, ptrdiff_t n,
                            fn_norm_params rp, const FN_T *w, const FN_T *b, int stream, int rms,
                            const FN_S *xn, const FN_S *rn, FN_T pivot_n, double *mean_n,
                            double *m2_n, const FN_S *xnn, const FN_S *rnn)
{
    /* With a fused residual add (r not NULL) the row is h = x + r: it is
     * formed again from x and r (still in cache) and written to h in the
     * same loop as y, so h costs one write and no read. */
    const V p2 = VSET1((FN_T)rp.p2), s = VSET1((FN_T)rp.scale), c = VSET1((FN_T)rp.c);
    const V pn = VSET1(pivot_n);
    const size_t vbytes = VL * sizeof(FN_S);
    FN_NAME(simd_acc) acc;
    ptrdiff_t head = 0, i;
    /* h streams too when it shares y's alignment (both fresh arrays do) */
    const int stream_h = stream && r && (uintptr_t)h % vbytes == (uintptr_t)y % vbytes;
    if (stream) {
        head = (ptrdiff_t)(((vbytes - ((uintptr_t)y % vbytes)) % vbytes) / sizeof(FN_S));
        if (head > n) head = n;
        if (head) {
            V hv = FN_LOAD_H_PART(x, r, 0, head);
            if (r) XSTORE_PART_H(h, hv, head);
            XSTORE_PART(y, FN_NAME(simd_norm_vec)(hv, w, b, 0, head, p2, s, c), head);
        }
    }
    /* The next row's statistics always group its elements the same way
     * (blocks of 4*VL from 0, then the rest), whatever this row's store
     * alignment: results must not depend on where the output lies. */
    const ptrdiff_t stats_end = n / (4 * VL) * (4 * VL);
    const ptrdiff_t norm_end = head + (n - head) / (4 * VL) * (4 * VL);
    FN_NAME(simd_acc_init)(&acc);
    for (ptrdiff_t k = 0; k < stats_end || head + k < norm_end; k += 4 * VL) {
        if (xn && k < stats_end) {
            FN_NAME(simd_acc_step)(&acc, xn + k, rn ? rn + k : NULL, pn, rms);
            if (xnn)
                for (int line = 0; line < 4 * VL * (int)sizeof(FN_S); line += 64) {
                    __builtin_prefetch((const char *)(xnn + k) + line, 0, 2);
                    if (rnn) __builtin_prefetch((const char *)(rnn + k) + line, 0, 2);
                }
        }
        if (head + k < norm_end) {
            i = head + k;
            for (int u = 0; u < 4; u++) {
                V hv = FN_LOAD_H(x, r, i + u * VL);
                V t = FN_NAME(simd_norm_vec)(hv, w, b, i + u * VL, 0, p2, s, c);
                if (r) {
                    if (stream_h)
                        XSTREAM_H(h + i + u * VL, hv);
                    else
                        XSTORE_H(h + i + u * VL, hv);
                }
                if (stream)
                    XSTREAM(y + i + u * VL, t);
                else
                    XSTORE(y + i + u * VL, t);
            }
        }
    }
    for (i = norm_end; i + VL <= n; i += VL) {
        V hv = FN_LOAD_H(x, r, i);
        V t = FN_NAME(simd_norm_vec)(hv, w, b, i, 0, p2, s, c);
        if (r) {
            if (stream_h)
                XSTREAM_H(h + i, hv);
            else
                XSTORE_H(h + i, hv);
        }
        if (stream)
            XSTREAM(y + i, t);
        else
            XSTORE(y + i, t);
    }
    if (i < n) {
        V hv = FN_LOAD_H_PART(x, r, i, n - i);
        if (r) XSTORE_PART_H(h + i, hv, n - i);
        XSTORE_PART(y + i, FN_NAME(simd_norm_vec)(hv, w, b, i, n - i, p2, s, c), n - i);
    }
    if (xn) {
        double cnt;
        FN_NAME(simd_acc_reduce)(&acc, rms, &cnt, mean_n, m2_n);
        FN_NAME(simd_acc_rest)(xn, rn, stats_end, n, pn, rms, &cnt, mean_n, m2_n);
    }
}

/* Rows with contiguous elements: statistics of row r+1 are gathered while
 * row r is written (see simd_row_normalize). */
FN_ALWAYS_INLINE void
FN_NAME(simd_rows_impl)(const fn_rows *a, int rms, int with_residual)
{
    const ptrdiff_t n = a->row_len;
    const FN_T *w = (const FN_T *)a->weight, *b = rms ? NULL : (const FN_T *)a->bias;
    /* with a fused residual add, each row is h = x + r; with_residual is a
     * constant at each call, so the plain loops carry no test for it */
    const FN_S *x = (const FN_S *)a->x;
    const FN_S *r = with_residual ? (const FN_S *)a->residual : NULL;
    FN_S *h = with_residual ? (FN_S *)a->h : NULL;
    double mean_d, m2;
    if (a->rows <= 0) return;
    FN_T pivot = 0;
    if (!rms) pivot = r ? FN_NAME(simd_pivot_of_sum)(x, r, n) : FN_NAME(fn_row_pivot)(x, n, 1);
    FN_NAME(simd_row_stats)(x, r, n, pivot, rms, &mean_d, &m2);
    for (ptrdiff_t row = 0; row < a->rows; row++) {
        FN_S *y = (FN_S *)a->y + row * a->y_row_stride;
        const int more = row + 1 < a->rows;
        const FN_S *xn = more ? x + a->x_row_stride : NULL;
        const FN_S *rn = more && r ? r + a->r_row_stride : NULL;
        const FN_S *xnn = row + 2 < a->rows ? x + 2 * a->x_row_stride : NULL;
        const FN_S *rnn = row + 2 < a->rows && r ? r + 2 * a->r_row_stride : NULL;
        FN_T pivot_n = 0;
        if (xn && !rms)
            pivot_n = rn ? FN_NAME(simd_pivot_of_sum)(xn, rn, n) : FN_NAME(fn_row_pivot)(xn, n, 1);
        double mean_n = 0.0, m2_n = 0.0;
        fn_row_stats st;
        const int h_stored = r && FN_NAME(simd_sum_if_needed)(x, r, h, n, mean_d, m2, a->eps);
        const FN_S *hx = r ? h : x; /* h as stored, for the rare per-row paths */
        /* what the normalize loop reads: x (+ r, writing h), or h itself */
        const FN_S *nx = h_stored ? h : x, *nr = h_stored ? NULL : r;
        if (rms)
            FN_NAME(fn_rms_finish)(hx, n, 1, m2, a->eps, &st);
        else
            FN_NAME(fn_layer_finish)(hx, n, 1, pivot, mean_d, m2, a->eps, &st);
        fn_norm_params rp = FN_NAME(fn_norm_params)(pivot, &st);
        const FN_T *wr = w ? w + row * a->w_row_stride : NULL;
        const FN_T *br = b ? b + row * a->b_row_stride : NULL;
        /* one specialized copy of the loop per (weight, bias, streaming) case */
#define FN_NORMALIZE(W, B, STREAM) \
        FN_NAME(simd_row_normalize)(nx, nr, h, y, n, rp, W, B, STREAM, rms, xn, rn, pivot_n, \
                                    &mean_n, &m2_n, xnn, rnn)
        if (st.wide_normalize) {
            /* rare: the scale does not fit FN_T.  Such stats come from the
             * rescan path, so h is already stored (simd_sum_if_needed). */
            FN_NAME(fn_normalize_row_wide)(hx, 1, y, 1, n, (double)pivot, &st, wr, br);
            if (xn) FN_NAME(simd_row_stats)(xn, rn, n, pivot_n, rms, &mean_n, &m2_n);
        } else switch ((w != NULL) | (b != NULL) << 1 | (a->stream_stores != 0) << 2) {
        case 0: FN_NORMALIZE(NULL, NULL, 0); break;
        case 1: FN_NORMALIZE(wr, NULL, 0); break;
        case 2: FN_NORMALIZE(NULL, br, 0); break;
        case 3: FN_NORMALIZE(wr, br, 0); break;
        case 4: FN_NORMALIZE(NULL, NULL, 1); break;
        case 5: FN_NORMALIZE(wr, NULL, 1); break;
        case 6: FN_NORMALIZE(NULL, br, 1); break;
        default: FN_NORMALIZE(wr, br, 1); break;
        }
#undef FN_NORMALIZE
        FN_NAME(fn_store_row_stats)(a, row, rms ? 0.0 : (double)pivot + st.mean_d, st.rstd);
        x = xn;
        r = rn;
        h = more && h ? h + a->h_row_stride : NULL;
        pivot = pivot_n;
        mean_d = mean_n;
        m2 = m2_n;
    }
    if (a->stream_stores) VSFENCE();
}

FN_ALWAYS_INLINE void FN_NAME(simd_rows)(const fn_rows *a, int rms)
{
    if (a->residual)
        FN_NAME(simd_rows_impl)(a, rms, 1);
    else
        FN_NAME(simd_rows_impl)(a, rms, 0);
}

/* ---- rows side by side: lanes are rows -------------------------------- */

/* A tile is up to FN_LANES_MAX neighbouring rows (4 KiB of each element
 * row).  Both passes walk the tile element row by element row, each a long
 * contiguous run, so the hardware prefetchers can follow even when the
 * element stride is large (axis=1 of NCHW puts every element row in a page
 * of its own).  The per-row Welford state lives in small arrays on the stack
 * (L1), one vector of rows at a time. */
#define FN_LANES_MAX ((ptrdiff_t)(4096 / sizeof(FN_T)))
#define FN_LANES_AHEAD 2

#define FN_LANES_CHUNK 256

/* Fold the tile's current chunk (k elements per row: Welford mean and M2 in
 * the state, or sums of squares for RMSNorm) into the double totals, and
 * start a new chunk. */
static void FN_NAME(simd_lanes_merge_chunk)(FN_T *state, ptrdiff_t rows, FN_T *k,
                                            double *tot_mean, double *tot_m2, double *tot_n,
                                            int rms)
{
    const double nb = (double)*k;
    if (nb <= 0.0) return;
    for (ptrdiff_t j = 0; j < rows; j++) {
        FN_T *m = &state[(j / VL) * 3 * VL + VL + j % VL];
        FN_T *q = &state[(j / VL) * 3 * VL + 2 * VL + j % VL];
        if (rms) {
            tot_m2[j] += (double)*q;
        } else {
            double na = *tot_n;
            fn_chan_merge(&na, &tot_mean[j], &tot_m2[j], nb, (double)*m, (double)*q);
        }
        *m = *q = 0;
    }
    *tot_n += nb;
    *k = 0;
}

/* Finish row j of a tile: stats, and its normalize parameters into the
 * tile state.  Returns nonzero when the row's scale does not fit FN_T (see
 * fn_row_stats.wide_normalize). */
static int FN_NAME(simd_lanes_finish_row)(const fn_rows *a, const FN_S *x, ptrdiff_t r0,
                                           ptrdiff_t j, int rms, FN_T pivot, double mean_d,
                                           double m2, FN_T *state)
{
    const ptrdiff_t n = a->row_len, xs = a->x_elem_stride;
    fn_row_stats st;
    if (rms)
        FN_NAME(fn_rms_finish)(x + j, n, xs, m2, a->eps, &st);
    else
        FN_NAME(fn_layer_finish)(x + j, n, xs, pivot, mean_d, m2, a->eps, &st);
    const fn_norm_params np = FN_NAME(fn_norm_params)(pivot, &st);
    FN_NAME(fn_store_row_stats)(a, r0 + j, rms ? 0.0 : (double)pivot + st.mean_d, st.rstd);
    state[(j / VL) * 3 * VL + j % VL] = (FN_T)np.p2;
    state[(j / VL) * 3 * VL + VL + j % VL] = (FN_T)np.scale;
    state[(j / VL) * 3 * VL + 2 * VL + j % VL] = (FN_T)np.c;
    return st.wide_normalize;
}

static void FN_NAME(simd_lanes_tile)(const fn_rows *a, ptrdiff_t r0, ptrdiff_t rows, int rms,
                                     int stream)
{
    const ptrdiff_t n = a->row_len, xs = a->x_elem_stride, ys = a->y_elem_stride;
    const FN_S *x = (const FN_S *)a->x + r0;
    FN_S *y = (FN_S *)a->y + r0;
    const FN_T *w = (const FN_T *)a->weight, *b = rms ? NULL : (const FN_T *)a->bias;
    /* per vector of rows: pivots, Welford means, M2s (then p2, scale, c),
     * interleaved so the three never sit 4 KiB apart (a load 4 KiB after a
     * recent store is falsely held up behind it) */
    FN_T state[3 * FN_LANES_MAX];
    const ptrdiff_t nv = (rows + VL - 1) / VL, last = rows - (nv - 1) * VL;
    ptrdiff_t i, v;
#define FN_TILE_LOAD(v, i) \
    ((v) < nv - 1 || last == VL ? XLOAD(x + (v) * VL + (i) * xs) \
                                : XLOAD_PART(x + (v) * VL + (i) * xs, last))
#define ST_P(v) (state + (v) * 3 * VL)
#define ST_M(v) (state + (v) * 3 * VL + VL)
#define ST_Q(v) (state + (v) * 3 * VL + 2 * VL)
#define ST_ROW(j, field) state[((j) / VL) * 3 * VL + (field) * VL + (j) % VL]

    for (v = 0; v < nv; v++) {
        V p = VZERO;
        if (!rms) { /* per-lane median of first, middle, last element */
            V e0 = FN_TILE_LOAD(v, 0), e1 = FN_TILE_LOAD(v, n - 1);
            V mid = FN_TILE_LOAD(v, (n - 1) / 2);
            p = VMAX(VMIN(e0, e1), VMIN(mid, VMAX(e0, e1)));
        }
        VSTORE(ST_P(v), p);
        VSTORE(ST_M(v), VZERO);
        VSTORE(ST_Q(v), VZERO);
    }
    /* Each lane runs a single Welford chain, so long rows are cut into
     * chunks of FN_LANES_CHUNK elements whose (mean, M2) are merged into
     * double per-row totals (Chan): FN_T rounding never builds up over more
     * than one chunk.  The cut depends on the element index only. */
    double tot_mean[FN_LANES_MAX], tot_m2[FN_LANES_MAX], tot_n = 0.0;
    /* FN_EXACT_MEAN: sums of d = x - pivot and of d * d, exact in double */
    double tot_sum[FN_EXACT_MEAN ? FN_LANES_MAX : 1], tot_sq[FN_EXACT_MEAN ? FN_LANES_MAX : 1];
    for (ptrdiff_t j = 0; j < rows; j++) tot_mean[j] = tot_m2[j] = 0.0;
    if (FN_EXACT_MEAN)
        for (ptrdiff_t j = 0; j < nv * VL; j++) tot_sum[j] = tot_sq[j] = 0.0;
    FN_T k = 0;
    for (i = 0; i < n; i++) {
        /* the next element rows are in other pages, where the hardware
         * prefetchers do not follow: fetch them by hand */
        const FN_S *ahead = i + FN_LANES_AHEAD < n ? x + (i + FN_LANES_AHEAD) * xs : NULL;
        if (i > 0 && i % FN_LANES_CHUNK == 0)
            FN_NAME(simd_lanes_merge_chunk)(state, rows, &k, tot_mean, tot_m2, &tot_n, rms);
        if (rms) {
            for (v = 0; v < nv; v++) {
                if (ahead) __builtin_prefetch(ahead + v * VL, 0, 3);
                V e = FN_TILE_LOAD(v, i);
                VSTORE(ST_Q(v), VFMA(e, e, VLOAD(ST_Q(v))));
            }
            k += 1;
            continue;
        }
        k += 1;
        if (FN_EXACT_MEAN) {
            /* Half inputs: a lane's float32 Welford chain of up to a chunk
             * is off by a few float32 ulps of M2, more than an ulp of a
             * half output where a bias nearly cancels.  d is exact in
             * float32, so d and d * d (with its FMA residual) sum in
             * double with no error to speak of. */
            for (v = 0; v < nv; v++) {
                if (ahead) __builtin_prefetch(ahead + v * VL, 0, 3);
                const V d = VSUB(FN_TILE_LOAD(v, i), VLOAD(ST_P(v))), sq = VMUL(d, d);
                VADD_TO_DOUBLE(tot_sum + v * VL, d);
                VADD_TO_DOUBLE(tot_sq + v * VL, sq);
                VADD_TO_DOUBLE(tot_sq + v * VL, VFMA(d, d, VSUB(VZERO, sq)));
            }
            continue;
        }
        const V inv_k = VSET1((FN_T)1 / k), shrink = VSET1((k - 1) / k);
        for (v = 0; v < nv; v++) {
            if (ahead) __builtin_prefetch(ahead + v * VL, 0, 3);
            V m = VLOAD(ST_M(v));
            V d = VSUB(FN_TILE_LOAD(v, i), VLOAD(ST_P(v)));
            V delta = VSUB(d, m);
            VSTORE(ST_M(v), VFMA(delta, inv_k, m));
            VSTORE(ST_Q(v), VFMA(VMUL(delta, shrink), delta, VLOAD(ST_Q(v))));
        }
    }
    FN_NAME(simd_lanes_merge_chunk)(state, rows, &k, tot_mean, tot_m2, &tot_n, rms);
    /* Finish each row in double, as the other walks do (eps stays a double:
     * 1e39 or 1e-50 do not fit float32).  A row whose scale does not fit
     * FN_T sends the whole tile to the portable kernel, which normalizes
     * it in double; nothing of the tile has been written yet, so this is
     * safe in place too. */
    int wide = 0;
    for (ptrdiff_t j = 0; j < rows; j++) {
        double mean_j = tot_mean[j], m2_j = tot_m2[j];
        if (FN_EXACT_MEAN && !rms) {
            mean_j = tot_sum[j] / (double)n;
            m2_j = tot_sq[j] - tot_sum[j] * mean_j; /* no cancellation: the pivot is in the row */
            if (m2_j < 0.0) m2_j = 0.0;
        }
        wide |= FN_NAME(simd_lanes_finish_row)(a, x, r0, j, rms, ST_ROW(j, 0), mean_j, m2_j,
                                               state);
    }
    if (wide) {
        fn_rows sub = *a;
        sub.x = x;
        sub.y = y;
        sub.rows = rows;
        if (sub.mean) sub.mean = (FN_T *)a->mean + r0 * a->stat_stride;
        if (sub.rstd) sub.rstd = (FN_T *)a->rstd + r0 * a->stat_stride;
        if (rms)
            FN_CAT(FN_NAME(rms_norm_rows), scalar)(&sub);
        else
            FN_CAT(FN_NAME(layer_norm_rows), scalar)(&sub);
        return;
    }
    for (i = 0; i < n; i++) {
        const V wi = w ? VSET1(w[i]) : VZERO, bi = b ? VSET1(b[i]) : VZERO;
        const FN_S *ahead = i + FN_LANES_AHEAD < n ? x + (i + FN_LANES_AHEAD) * xs : NULL;
        for (v = 0; v < nv; v++) {
            if (ahead) __builtin_prefetch(ahead + v * VL, 0, 3);
            V t = VFMA(VSUB(FN_TILE_LOAD(v, i), VLOAD(ST_P(v))), VLOAD(ST_M(v)),
                       VLOAD(ST_Q(v)));
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
#undef FN_TILE_LOAD
#undef ST_P
#undef ST_M
#undef ST_Q
#undef ST_ROW
}

/* Tiles of up to FN_LANES_MAX rows.  With streaming stores, every full
 * vector must be aligned: the element stride has to keep alignment, and the
 * few rows before the first aligned one go as a small tile of their own. */
FN_ALWAYS_INLINE void FN_NAME(simd_lanes)(const fn_rows *a, int rms)
{
    const size_t vbytes = VL * sizeof(FN_S);
    const int stream = a->stream_stores &&
                       ((size_t)a->y_elem_stride * sizeof(FN_S)) % vbytes == 0;
    ptrdiff_t r0 = 0;
    while (r0 < a->rows) {
        ptrdiff_t len = a->rows - r0 < FN_LANES_MAX ? a->rows - r0 : FN_LANES_MAX;
        const size_t mis = (uintptr_t)((FN_S *)a->y + r0) % vbytes;
        if (stream && mis) {
            ptrdiff_t head = (ptrdiff_t)((vbytes - mis) / sizeof(FN_S));
            len = head < len ? head : len;
        }
        FN_NAME(simd_lanes_tile)(a, r0, len, rms, stream && !mis);
        r0 += len;
    }
}

/* ---- backward, rows with contiguous elements -------------------------- */

/* What pass 2 needs of a row: xhat = fma(x - p2, rstd, c) and
 * dx = (fma(xhat, slope, g - mean_g)) * rstd.  g - mean_g is taken before
 * scaling so that it cancels exactly where it should (a one-element row). */
typedef struct {
    FN_T p2, rstd, c, mean_g, slope;
    int wide; /* rstd does not fit FN_T (or is not finite): portable kernel */
} FN_NAME(simd_bwd_params);

/* Pass 1 of the backward of one contiguous row (see norm_scalar_body.h for
 * the algebra): shifted Welford of x (the mean, and M2 when rstd is not
 * given), sum(g) and sum(g * d) with g = dy * w and d = x - pivot. */
static FN_NAME(simd_bwd_params) FN_NAME(simd_bwd_row_params)(const fn_rows_bwd *a, ptrdiff_t r,
                                                            int rms)
{
    const ptrdiff_t n = a->row_len;
    const FN_S *x = (const FN_S *)a->x + r * a->x_row_stride;
    const FN_S *dy = (const FN_S *)a->dy + r * a->dy_row_stride;
    const FN_T *w = (const FN_T *)a->weight;
    const FN_T pivot = rms ? (FN_T)0 : FN_NAME(fn_row_pivot)(x, n, 1);
    const V p = VSET1(pivot);
    FN_NAME(simd_acc) acc;
    V sg0 = VZERO, sg1 = VZERO, sgd0 = VZERO, sgd1 = VZERO;
    double sum_g = 0.0, sum_gd = 0.0; /* the sums above, folded per chunk */
    ptrdiff_t i = 0, fused_end;
    FN_NAME(simd_acc_init)(&acc);
    for (; i + 4 * VL <= n; i += 4 * VL) {
        if (i && i % (FN_ACC_CHUNK * 4 * VL) == 0) { /* as simd_acc's chunks */
            sum_g += FN_NAME(simd_hsum)(VADD(sg0, sg1));
            sum_gd += FN_NAME(simd_hsum)(VADD(sgd0, sgd1));
            sg0 = sg1 = sgd0 = sgd1 = VZERO;
        }
        FN_NAME(simd_acc_step)(&acc, x + i, NULL, p, rms);
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
    double cnt, mean_d, m2, rstd;
    FN_NAME(simd_acc_reduce)(&acc, rms, &cnt, &mean_d, &m2);
    FN_NAME(simd_acc_rest)(x, NULL, fused_end, n, p, rms, &cnt, &mean_d, &m2);
    sum_g += FN_NAME(simd_hsum)(VADD(sg0, sg1));
    sum_gd += FN_NAME(simd_hsum)(VADD(sgd0, sgd1));
    /* a saved rstd that overflowed its type (rows near the smallest
     * subnormals) says nothing: it is recomputed */
    if (a->rstd && isfinite((double)((const FN_T *)a->rstd)[r * a->stat_stride])) {
        rstd = (double)((const FN_T *)a->rstd)[r * a->stat_stride];
    } else {
        fn_row_stats st;
        if (rms)
            FN_NAME(fn_rms_finish)(x, n, 1, m2, a->eps, &st);
        else
            FN_NAME(fn_layer_finish)(x, n, 1, pivot, mean_d, m2, a->eps, &st);
        rstd = st.rstd;
    }
    if (rms) mean_d = 0.0;
    const double inv_n = 1.0 / (double)n;
    const double mean_g = rms ? 0.0 : sum_g * inv_n;
    const double mean_gxhat = rstd * (sum_gd - mean_d * sum_g) * inv_n;
    fn_row_stats center = {mean_d, rstd, rstd};
    const fn_norm_params np = FN_NAME(fn_norm_params)(pivot, &center);
    FN_NAME(simd_bwd_params) bp = {(FN_T)np.p2, (FN_T)rstd, (FN_T)np.c, (FN_T)mean_g,
                                   (FN_T)(-mean_gxhat), !isnormal((FN_T)rstd)};
    return bp;
}

/* Up to FN_BWD_ROWS rows at a time: pass 1 row by row, then pass 2 in
 * column chunks of FN_BWD_CHUNK elements, each row's chunk in turn (a
 * contiguous run, read from L2), summing dy * xhat and dy over the block into
 * chunk accumulators that stay in L1.  The block's double partial sums are
 * then read and written once per block instead of once per row. */
#define FN_BWD_ROWS 8
#define FN_BWD_CHUNK 512

static void FN_NAME(simd_bwd_block)(const fn_rows_bwd *a, ptrdiff_t r0, ptrdiff_t nr, int rms)
{
    const ptrdiff_t n = a->row_len;
    const FN_T *w = (const FN_T *)a->weight;
    double *dw = a->dweight, *db = a->dbias;
    FN_NAME(simd_bwd_params) bp[FN_BWD_ROWS];
    FN_T dw_chunk[FN_BWD_CHUNK], db_chunk[FN_BWD_CHUNK];
    int wide = 0;
    for (ptrdiff_t j = 0; j < nr; j++) {
        bp[j] = FN_NAME(simd_bwd_row_params)(a, r0 + j, rms);
        wide |= bp[j].wide;
    }
    if (wide) { /* rare (NaN rows, spreads near the type's limits): the
                   portable kernel works in a wider type */
        fn_rows_bwd sub = *a;
        sub.x = (const FN_S *)a->x + r0 * a->x_row_stride;
        sub.dy = (const FN_S *)a->dy + r0 * a->dy_row_stride;
        sub.dx = (FN_S *)a->dx + r0 * a->dx_row_stride;
        if (sub.rstd) sub.rstd = (const FN_T *)a->rstd + r0 * a->stat_stride;
        sub.rows = nr;
        if (rms)
            FN_CAT(FN_NAME(rms_norm_backward_rows), scalar)(&sub);
        else
            FN_CAT(FN_NAME(layer_norm_backward_rows), scalar)(&sub);
        return;
    }
    for (ptrdiff_t c0 = 0; c0 < n; c0 += FN_BWD_CHUNK) {
        const ptrdiff_t len = n - c0 < FN_BWD_CHUNK ? n - c0 : FN_BWD_CHUNK;
        for (ptrdiff_t i = 0; i < len; i += VL) {
            VSTORE(dw_chunk + i, VZERO);
            VSTORE(db_chunk + i, VZERO);
        }
        for (ptrdiff_t j = 0; j < nr; j++) {
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
            if (dw) FN_NAME(simd_add_to_double)(dw + c0 + i, VLOAD(dw_chunk + i), part);
            if (db) FN_NAME(simd_add_to_double)(db + c0 + i, VLOAD(db_chunk + i), part);
        }
    }
}

FN_ALWAYS_INLINE void FN_NAME(simd_bwd_dispatch)(const fn_rows_bwd *a, int rms,
                                                 fn_rows_bwd_kernel portable)
{
    /* Short rows go to the portable kernel, which works in double: with a
     * handful of elements, g - xhat * mean(g * xhat) can cancel to a tiny
     * fraction of g (one element: xhat^2 = x^2 / (x^2 + eps)), which float32
     * arithmetic would not resolve; and vectors would be mostly empty. */
    if (a->x_elem_stride == 1 && a->dy_elem_stride == 1 && a->dx_elem_stride == 1 &&
        a->row_len >= 2 * VL) {
        for (ptrdiff_t r0 = 0; r0 < a->rows; r0 += FN_BWD_ROWS)
            FN_NAME(simd_bwd_block)(a, r0, a->rows - r0 < FN_BWD_ROWS ? a->rows - r0 : FN_BWD_ROWS,
                                    rms);
        if (a->stream_stores) VSFENCE();
    } else {
        portable(a);
    }
}

void FN_KERNEL(layer_norm_backward_rows)(const fn_rows_bwd *a)
{
    FN_NAME(simd_bwd_dispatch)(a, 0, FN_CAT(FN_NAME(layer_norm_backward_rows), scalar));
}

void FN_KERNEL(rms_norm_backward_rows)(const fn_rows_bwd *a)
{
    FN_NAME(simd_bwd_dispatch)(a, 1, FN_CAT(FN_NAME(rms_norm_backward_rows), scalar));
}

/* Pick the vectorized walk for the block's layout; layouts neither walk
 * covers (e.g. strided rows of strided elements) take the portable kernel. */
FN_ALWAYS_INLINE void
FN_NAME(simd_dispatch)(const fn_rows *a, int rms, fn_rows_kernel portable)
{
    if (a->x_elem_stride == 1 && a->y_elem_stride == 1 &&
        (!a->residual || (a->r_elem_stride == 1 && a->h_elem_stride == 1)))
        FN_NAME(simd_rows)(a, rms);
    else if (a->x_row_stride == 1 && a->y_row_stride == 1 && !a->residual &&
             a->w_row_stride == 0 && a->b_row_stride == 0)
        FN_NAME(simd_lanes)(a, rms); /* a tile's rows share weight and bias */
    else
        portable(a); /* including a residual add on other layouts */
}

void FN_KERNEL(layer_norm_rows)(const fn_rows *a)
{
    FN_NAME(simd_dispatch)(a, 0, FN_CAT(FN_NAME(layer_norm_rows), scalar));
}

void FN_KERNEL(rms_norm_rows)(const fn_rows *a)
{
    FN_NAME(simd_dispatch)(a, 1, FN_CAT(FN_NAME(rms_norm_rows), scalar));
}

#undef FN_KERNEL
#undef FN_LOAD_H
#undef FN_LOAD_H_PART
#undef FN_ALWAYS_INLINE
#undef FN_LANES_MAX
#undef FN_LANES_AHEAD
#undef FN_LANES_CHUNK
#undef FN_BWD_ROWS
#undef FN_BWD_CHUNK
/* the element storage is per stamp; the V vocabulary stays for the next
 * stamp of the same vector type (simd_vocab_undef.h removes it) */
#undef XLOAD
#undef XLOAD_PART
#undef XSTORE
#undef XSTORE_PART
#undef XSTREAM
#undef XROUND
#undef XSTORE_H
#undef XSTORE_PART_H
#undef XSTREAM_H
#undef FN_S
#undef FN_LD
#undef FN_ST
#undef FN_T
#undef FN_SFX
#undef FN_EXACT_MEAN
