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
 *   VSTREAM(p,v)                      non-temporal store, p vector-aligned
 *   VSFENCE()                         orders streaming stores before return
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
 * same shifted Welford over its row, in two chains (even and odd elements)
 * merged with Chan's formula, coefficients shared by all lanes.  A masked
 * load covers the last group of rows.
 *
 * RMSNorm has no mean: four FMA chains of x*x, then y = x * rstd * w.
 *
 * Per-row work (finishing the stats, NaN/Inf rows, overflow of the squares)
 * is in norm_row_common.h and shared with the portable kernel.
 */
#include <stdint.h>
#include "norm_row_common.h"

#define FN_KERNEL(base) FN_CAT(FN_NAME(base), FN_ISA)

static inline double FN_NAME(simd_hsum)(V v)
{
    FN_T lanes[VL];
    double s = 0.0;
    VSTORE(lanes, v);
    for (int j = 0; j < VL; j++) s += (double)lanes[j];
    return s;
}

/* Mean and M2 of (x[i] - pivot) over a contiguous row. */
static void FN_NAME(simd_row_moments)(const FN_T *x, ptrdiff_t n, FN_T pivot,
                                      double *mean_out, double *m2_out)
{
    const V p = VSET1(pivot);
    double cnt = 0.0, mean = 0.0, m2 = 0.0;
    ptrdiff_t i = 0;
    if (n >= 4 * VL) {
        V m0 = VZERO, m1 = VZERO, m2v = VZERO, m3 = VZERO;
        V q0 = VZERO, q1 = VZERO, q2 = VZERO, q3 = VZERO;
        FN_T k = 0;
#define FN_WELFORD_STEP(m, q, off)                        \
        do {                                              \
            V d_ = VSUB(VLOAD(x + i + (off)), p);         \
            V delta_ = VSUB(d_, m);                       \
            m = VFMA(delta_, inv_k, m);                   \
            q = VFMA(delta_, VSUB(d_, m), q);             \
        } while (0)
        for (; i + 4 * VL <= n; i += 4 * VL) {
            k += 1;
            const V inv_k = VSET1((FN_T)1 / k);
            FN_WELFORD_STEP(m0, q0, 0);
            FN_WELFORD_STEP(m1, q1, VL);
            FN_WELFORD_STEP(m2v, q2, 2 * VL);
            FN_WELFORD_STEP(m3, q3, 3 * VL);
        }
#undef FN_WELFORD_STEP
        /* equal-count merge of the 4*VL partial (mean, M2) */
        mean = FN_NAME(simd_hsum)(VADD(VADD(m0, m1), VADD(m2v, m3))) / (4.0 * VL);
        const V g = VSET1((FN_T)mean);
        V e0 = VSUB(m0, g), e1 = VSUB(m1, g), e2 = VSUB(m2v, g), e3 = VSUB(m3, g);
        V spread = VFMA(e0, e0, VFMA(e1, e1, VFMA(e2, e2, VMUL(e3, e3))));
        m2 = FN_NAME(simd_hsum)(VADD(VADD(q0, q1), VADD(q2, q3))) +
             (double)k * FN_NAME(simd_hsum)(spread);
        cnt = 4.0 * VL * (double)k;
    }
    if (i < n) {
        /* the last < 4*VL elements: two masked passes, then Chan's merge */
        const double t = (double)(n - i);
        V s = VZERO;
        ptrdiff_t j = i;
        for (; j + VL <= n; j += VL) s = VADD(s, VSUB(VLOAD(x + j), p));
        if (j < n) s = VADD(s, VZERO_FROM(VSUB(VLOAD_PART(x + j, n - j), p), n - j));
        const double tmean = FN_NAME(simd_hsum)(s) / t;
        const V tm = VSET1((FN_T)tmean);
        V q = VZERO;
        for (j = i; j + VL <= n; j += VL) {
            V e = VSUB(VSUB(VLOAD(x + j), p), tm);
            q = VFMA(e, e, q);
        }
        if (j < n) {
            V e = VZERO_FROM(VSUB(VSUB(VLOAD_PART(x + j, n - j), p), tm), n - j);
            q = VFMA(e, e, q);
        }
        /* tm is tmean rounded to FN_T: remove that offset's contribution */
        const double off = tmean - (double)(FN_T)tmean;
        fn_chan_merge(&cnt, &mean, &m2, t, tmean, FN_NAME(simd_hsum)(q) - t * off * off);
    }
    *mean_out = mean;
    *m2_out = m2;
}

static double FN_NAME(simd_row_sum_squares)(const FN_T *x, ptrdiff_t n)
{
    V a0 = VZERO, a1 = VZERO, a2 = VZERO, a3 = VZERO;
    ptrdiff_t i = 0;
    for (; i + 4 * VL <= n; i += 4 * VL) {
        V v0 = VLOAD(x + i), v1 = VLOAD(x + i + VL);
        V v2 = VLOAD(x + i + 2 * VL), v3 = VLOAD(x + i + 3 * VL);
        a0 = VFMA(v0, v0, a0);
        a1 = VFMA(v1, v1, a1);
        a2 = VFMA(v2, v2, a2);
        a3 = VFMA(v3, v3, a3);
    }
    for (; i + VL <= n; i += VL) {
        V v = VLOAD(x + i);
        a0 = VFMA(v, v, a0);
    }
    if (i < n) {
        V v = VLOAD_PART(x + i, n - i);
        a1 = VFMA(v, v, a1);
    }
    return FN_NAME(simd_hsum)(VADD(VADD(a0, a1), VADD(a2, a3)));
}

/* One vector of ((x - pivot) - mu) * scale [* w] [+ b] at x[i]; `part`
 * lanes when 0 < part < VL, else a full vector. */
static inline V FN_NAME(simd_norm_vec)(const FN_T *x, ptrdiff_t i, ptrdiff_t part, V p, V m,
                                       V s, const FN_T *w, const FN_T *b)
{
#define FN_LOAD_AT(ptr) (part ? VLOAD_PART((ptr) + i, part) : VLOAD((ptr) + i))
    V t = VMUL(VSUB(VSUB(FN_LOAD_AT(x), p), m), s);
    if (w && b) return VFMA(t, FN_LOAD_AT(w), FN_LOAD_AT(b));
    if (w) return VMUL(t, FN_LOAD_AT(w));
    if (b) return VADD(t, FN_LOAD_AT(b));
    return t;
#undef FN_LOAD_AT
}

/* Second pass over a contiguous row, now in cache.
 * `next` is the following row (or NULL): it is prefetched while this row is
 * written, so reads from memory keep flowing during the write phase instead
 * of stalling at the start of the next row's statistics pass.
 * `stream`: write with non-temporal stores, which skip the read-for-ownership
 * of each output line (a third of the traffic) and do not evict the input;
 * worth it only when the output is larger than the caches.  Streaming stores
 * need aligned addresses, so the first elements up to the vector alignment
 * are written with a masked store. */
static void FN_NAME(simd_row_normalize)(const FN_T *x, FN_T *y, ptrdiff_t n, FN_T pivot,
                                        FN_T mu, FN_T scale, const FN_T *w, const FN_T *b,
                                        const FN_T *next, int stream)
{
    const V p = VSET1(pivot), m = VSET1(mu), s = VSET1(scale);
    ptrdiff_t i = 0;
    if (stream) {
        const size_t vbytes = VL * sizeof(FN_T);
        ptrdiff_t head = (ptrdiff_t)(((vbytes - ((uintptr_t)y % vbytes)) % vbytes) / sizeof(FN_T));
        if (head > n) head = n;
        if (head) VSTORE_PART(y, FN_NAME(simd_norm_vec)(x, 0, head, p, m, s, w, b), head);
        for (i = head; i + VL <= n; i += VL) {
            if (next) __builtin_prefetch(next + i, 0, 2);
            VSTREAM(y + i, FN_NAME(simd_norm_vec)(x, i, 0, p, m, s, w, b));
        }
    } else {
        for (; i + VL <= n; i += VL) {
            if (next) __builtin_prefetch(next + i, 0, 2);
            VSTORE(y + i, FN_NAME(simd_norm_vec)(x, i, 0, p, m, s, w, b));
        }
    }
    if (i < n) VSTORE_PART(y + i, FN_NAME(simd_norm_vec)(x, i, n - i, p, m, s, w, b), n - i);
}

static inline void FN_NAME(simd_store_stats)(const fn_rows *a, ptrdiff_t r, double mean,
                                             double rstd)
{
    if (a->mean) ((FN_T *)a->mean)[r * a->stat_stride] = (FN_T)mean;
    if (a->rstd) ((FN_T *)a->rstd)[r * a->stat_stride] = (FN_T)rstd;
}

/* ---- rows side by side: lanes are rows -------------------------------- */

#define FN_LANES_LOAD(ptr) (nr == VL ? VLOAD(ptr) : VLOAD_PART(ptr, nr))

/* VL (or nr < VL) rows starting at row r0; row stride 1 for x and y. */
static void FN_NAME(simd_lanes_block)(const fn_rows *a, ptrdiff_t r0, ptrdiff_t nr, int rms)
{
    const ptrdiff_t n = a->row_len, xs = a->x_elem_stride, ys = a->y_elem_stride;
    const FN_T *x = (const FN_T *)a->x + r0;
    FN_T *y = (FN_T *)a->y + r0;
    const FN_T *w = (const FN_T *)a->weight, *b = (const FN_T *)a->bias;
    FN_T pivots[VL], mus[VL], scales[VL], lane_a[VL], lane_b[VL];
    V p = VZERO;
    ptrdiff_t i;

    if (rms) {
        V s0 = VZERO, s1 = VZERO;
        for (i = 0; i + 1 < n; i += 2) {
            V v0 = FN_LANES_LOAD(x + i * xs), v1 = FN_LANES_LOAD(x + (i + 1) * xs);
            s0 = VFMA(v0, v0, s0);
            s1 = VFMA(v1, v1, s1);
        }
        if (i < n) {
            V v = FN_LANES_LOAD(x + i * xs);
            s0 = VFMA(v, v, s0);
        }
        VSTORE(lane_a, VADD(s0, s1));
    } else {
        V lo, hi, c = FN_LANES_LOAD(x + ((n - 1) / 2) * xs);
        V v0 = FN_LANES_LOAD(x), v1 = FN_LANES_LOAD(x + (n - 1) * xs);
        lo = VMIN(v0, v1);
        hi = VMAX(v0, v1);
        p = VMAX(lo, VMIN(c, hi)); /* median of three */
        /* two Welford chains (even / odd elements), counts shared by lanes */
        V ma = VZERO, qa = VZERO, mb = VZERO, qb = VZERO;
        FN_T k = 0;
        for (i = 0; i + 1 < n; i += 2) {
            k += 1;
            const V inv_k = VSET1((FN_T)1 / k);
            V da = VSUB(FN_LANES_LOAD(x + i * xs), p);
            V db = VSUB(FN_LANES_LOAD(x + (i + 1) * xs), p);
            V ea = VSUB(da, ma), eb = VSUB(db, mb);
            ma = VFMA(ea, inv_k, ma);
            mb = VFMA(eb, inv_k, mb);
            qa = VFMA(ea, VSUB(da, ma), qa);
            qb = VFMA(eb, VSUB(db, mb), qb);
        }
        double na = (double)k, nb = (double)k;
        if (i < n) { /* odd length: the last element joins chain a */
            const V inv_k = VSET1((FN_T)1 / (k + 1));
            V da = VSUB(FN_LANES_LOAD(x + i * xs), p);
            V ea = VSUB(da, ma);
            ma = VFMA(ea, inv_k, ma);
            qa = VFMA(ea, VSUB(da, ma), qa);
            na += 1.0;
        }
        /* Chan's merge of b into a, lane by lane, shared coefficients */
        V delta = VSUB(mb, ma);
        ma = VFMA(delta, VSET1((FN_T)(nb / (na + nb))), ma);
        qa = VADD(VADD(qa, qb), VMUL(VMUL(delta, delta), VSET1((FN_T)(na * nb / (na + nb)))));
        VSTORE(lane_a, ma);
        VSTORE(lane_b, qa);
        VSTORE(pivots, p);
    }

    for (ptrdiff_t j = 0; j < VL; j++) {
        fn_row_stats st = {0.0, 0.0, 0.0};
        if (j < nr) {
            if (rms)
                FN_NAME(fn_rms_finish)(x + j, n, xs, (double)lane_a[j], a->eps, &st);
            else
                FN_NAME(fn_layer_finish)(x + j, n, xs, pivots[j], (double)lane_a[j],
                                         (double)lane_b[j], a->eps, &st);
            FN_NAME(simd_store_stats)(a, r0 + j, rms ? 0.0 : (double)pivots[j] + st.mean_d,
                                      st.rstd);
        }
        mus[j] = (FN_T)st.mean_d;
        scales[j] = (FN_T)st.scale;
    }

    const V m = VLOAD(mus), s = VLOAD(scales);
    for (i = 0; i < n; i++) {
        V t = VMUL(VSUB(VSUB(FN_LANES_LOAD(x + i * xs), p), m), s);
        if (w) t = VMUL(t, VSET1(w[i]));
        if (b) t = VADD(t, VSET1(b[i]));
        if (nr == VL)
            VSTORE(y + i * ys, t);
        else
            VSTORE_PART(y + i * ys, t, nr);
    }
}

#undef FN_LANES_LOAD

static void FN_NAME(simd_lanes)(const fn_rows *a, int rms)
{
    for (ptrdiff_t r0 = 0; r0 < a->rows; r0 += VL)
        FN_NAME(simd_lanes_block)(a, r0, a->rows - r0 < VL ? a->rows - r0 : VL, rms);
}

static int FN_NAME(simd_rows_contiguous)(const fn_rows *a)
{
    return a->x_elem_stride == 1 && a->y_elem_stride == 1;
}

static int FN_NAME(simd_rows_side_by_side)(const fn_rows *a)
{
    return a->x_row_stride == 1 && a->y_row_stride == 1 && a->rows > 1;
}

void FN_KERNEL(layer_norm_rows)(const fn_rows *a)
{
    if (FN_NAME(simd_rows_contiguous)(a)) {
        const ptrdiff_t n = a->row_len;
        for (ptrdiff_t r = 0; r < a->rows; r++) {
            const FN_T *x = (const FN_T *)a->x + r * a->x_row_stride;
            FN_T *y = (FN_T *)a->y + r * a->y_row_stride;
            FN_T pivot = FN_NAME(fn_row_pivot)(x, n, 1);
            double mean_d, m2;
            fn_row_stats st;
            FN_NAME(simd_row_moments)(x, n, pivot, &mean_d, &m2);
            FN_NAME(fn_layer_finish)(x, n, 1, pivot, mean_d, m2, a->eps, &st);
            FN_NAME(simd_row_normalize)(x, y, n, pivot, (FN_T)st.mean_d, (FN_T)st.scale,
                                        (const FN_T *)a->weight, (const FN_T *)a->bias,
                                        r + 1 < a->rows ? x + a->x_row_stride : NULL,
                                        a->stream_stores);
            FN_NAME(simd_store_stats)(a, r, (double)pivot + st.mean_d, st.rstd);
        }
        if (a->stream_stores) VSFENCE();
    } else if (FN_NAME(simd_rows_side_by_side)(a)) {
        FN_NAME(simd_lanes)(a, 0);
    } else {
        FN_CAT(FN_NAME(layer_norm_rows), scalar)(a);
    }
}

void FN_KERNEL(rms_norm_rows)(const fn_rows *a)
{
    if (FN_NAME(simd_rows_contiguous)(a)) {
        const ptrdiff_t n = a->row_len;
        for (ptrdiff_t r = 0; r < a->rows; r++) {
            const FN_T *x = (const FN_T *)a->x + r * a->x_row_stride;
            FN_T *y = (FN_T *)a->y + r * a->y_row_stride;
            fn_row_stats st;
            FN_NAME(fn_rms_finish)(x, n, 1, FN_NAME(simd_row_sum_squares)(x, n), a->eps, &st);
            FN_NAME(simd_row_normalize)(x, y, n, (FN_T)0, (FN_T)0, (FN_T)st.scale,
                                        (const FN_T *)a->weight, NULL,
                                        r + 1 < a->rows ? x + a->x_row_stride : NULL,
                                        a->stream_stores);
            FN_NAME(simd_store_stats)(a, r, 0.0, st.rstd);
        }
        if (a->stream_stores) VSFENCE();
    } else if (FN_NAME(simd_rows_side_by_side)(a)) {
        FN_NAME(simd_lanes)(a, 1);
    } else {
        FN_CAT(FN_NAME(rms_norm_rows), scalar)(a);
    }
}

#undef FN_KERNEL
#undef V
#undef VL
#undef VLOAD
#undef VSTORE
#undef VLOAD_PART
#undef VSTORE_PART
#undef VZERO_FROM
#undef VSET1
#undef VZERO
#undef VADD
#undef VSUB
#undef VMUL
#undef VFMA
#undef VMIN
#undef VMAX
#undef VSTREAM
