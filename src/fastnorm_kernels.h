/*
 * fastnorm_kernels.h - the contract between the Cython orchestration and the
 * C kernels.
 *
 * The kernels are plain C: no Python, no allocation, no threads.  Each one
 * normalizes a block of rows on the calling thread.  The caller (Cython) maps
 * any NumPy layout onto this block description, splits the rows between
 * threads and never hands one row to two threads, so results do not depend
 * on the thread count.
 *
 * A "row" is the set of elements that are normalized together (the
 * normalized axes merged into one).  Rows and elements are addressed with
 * strides counted in elements, not bytes, and strides may be negative or
 * zero for inputs.  Two layouts matter for speed and are recognised inside
 * every kernel:
 *   - elements contiguous (x_elem_stride == 1): the usual last-axis case;
 *   - rows contiguous (x_row_stride == 1): channels-first (axis=1 on NCHW)
 *     and Fortran-ordered inputs, where neighbouring rows sit side by side.
 * Anything else is walked with its strides.
 */
#ifndef FASTNORM_KERNELS_H
#define FASTNORM_KERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fn_rows {
    const void *x;          /* element 0 of row 0 */
    void *y;                /* output, same geometry as x (may alias x exactly) */
    const void *weight;     /* row_len contiguous values, or NULL */
    const void *bias;       /* row_len contiguous values, or NULL */
    /* Row r uses weight + r * w_row_stride (and bias + r * b_row_stride):
     * 0 when all rows share one weight, nonzero for per-sample modulation
     * (AdaLN), where each row has its own scale and shift. */
    ptrdiff_t w_row_stride, b_row_stride;
    void *mean;             /* one value per row, or NULL (LayerNorm only) */
    void *rstd;             /* one value per row, or NULL */
    ptrdiff_t rows;         /* rows in this block, >= 0 */
    ptrdiff_t row_len;      /* elements per row, >= 1 */
    ptrdiff_t x_row_stride, x_elem_stride;
    ptrdiff_t y_row_stride, y_elem_stride;
    ptrdiff_t stat_stride;  /* between consecutive rows' mean/rstd */
    double eps;             /* finite, >= 0 */
    int stream_stores;      /* hint: output is larger than the caches, write it
                               with non-temporal stores where the ISA can */
    /* Fused residual add (or NULL): the kernel normalizes h = x + residual,
     * rounded to the input type and stored in h, which may alias residual
     * exactly.  y is then bit for bit the norm of h as stored. */
    const void *residual;
    void *h;
    ptrdiff_t r_row_stride, r_elem_stride;
    ptrdiff_t h_row_stride, h_elem_stride;
} fn_rows;

typedef void (*fn_rows_kernel)(const fn_rows *block);

/* Backward of a block of rows: dx from dy, plus this block's contributions
 * to dweight and dbias, added into row_len partial sums in double that the
 * caller owns (one set per block, reduced in a fixed order, so the result
 * does not depend on which thread ran which block). */
typedef struct fn_rows_bwd {
    const void *x;
    const void *dy;
    void *dx;               /* may alias dy exactly */
    const void *weight;     /* row_len contiguous values, or NULL (= ones) */
    const void *rstd;       /* per-row rstd from the forward, or NULL: recomputed
                               from x with eps.  The mean is always recomputed
                               (from pivot-shifted sums, in the same pass): it
                               is exact to far below a float32 mean's rounding */
    double *dweight;        /* row_len partial sums of dy * xhat, or NULL */
    double *dbias;          /* row_len partial sums of dy, or NULL */
    ptrdiff_t rows, row_len;
    ptrdiff_t x_row_stride, x_elem_stride;
    ptrdiff_t dy_row_stride, dy_elem_stride;
    ptrdiff_t dx_row_stride, dx_elem_stride;
    ptrdiff_t stat_stride;
    double eps;
    int stream_stores;      /* hint: dx is larger than the caches */
} fn_rows_bwd;

typedef void (*fn_rows_bwd_kernel)(const fn_rows_bwd *block);

/* GroupNorm: groups [g0, g1) of `samples` samples (x_n_stride,
 * y_n_stride apart; their mean and rstd `groups` apart) on the calling
 * thread; the backward takes one sample.
 * The sample is C channels of S positions (the spatial axes merged), its
 * elements addressed with a channel stride and a position stride:
 * channels-first (N, C, *spatial) has c_stride S and s_stride 1, so each
 * group is a contiguous run of (C/G)*S elements; channels-last (N, *spatial,
 * C) has c_stride 1 and s_stride C.  Those two layouts take the SIMD walks;
 * any other strides the portable kernel.  weight and bias hold C values (or
 * NULL); mean and rstd G values a sample (or NULL).  The backward
 * writes (does not add) this sample's share of dweight and dbias for the
 * channels of groups [g0, g1): C doubles each, owned by the caller, which
 * sums the samples in a fixed order. */
typedef struct fn_group {
    const void *x;
    void *y; /* may alias x exactly */
    const void *weight, *bias;
    void *mean, *rstd;
    ptrdiff_t channels, groups, g0, g1, spatial; /* C, G, S >= 1 */
    ptrdiff_t x_c_stride, x_s_stride, y_c_stride, y_s_stride;
    double eps;
    int stream_stores;
    ptrdiff_t samples, x_n_stride, y_n_stride; /* samples >= 1 */
} fn_group;

typedef struct fn_group_bwd {
    const void *x, *dy;
    void *dx; /* may alias dy exactly */
    const void *weight;
    const void *rstd; /* G values from the forward, or NULL: recomputed */
    double *dweight, *dbias; /* C values, or NULL */
    ptrdiff_t channels, groups, g0, g1, spatial;
    ptrdiff_t x_c_stride, x_s_stride, dy_c_stride, dy_s_stride, dx_c_stride, dx_s_stride;
    double eps;
    int stream_stores;
} fn_group_bwd;

typedef void (*fn_group_kernel)(const fn_group *block);
typedef void (*fn_group_bwd_kernel)(const fn_group_bwd *block);

/* Element types, the index into each table row.  float16 and bfloat16
 * elements are computed on in float32: their weight, bias and statistics
 * are float32. */
enum { FN_F32 = 0, FN_F64 = 1, FN_F16 = 2, FN_BF16 = 3, FN_N_DTYPES = 4 };

/* Quantization of a block of rows (quantize_rows.h: the formula, and what
 * NaN and Inf give): values of FN_T, float32 or float64, to one-byte codes
 * with float32 scales, one per group of group_len consecutive elements
 * (group_len divides row_len).  Elements and groups are contiguous; rows
 * are strided. */
enum { FN_Q_INT8 = 0, FN_Q_E4M3 = 1 }; /* int8 (qmax 127), float8 e4m3fn (448) */

typedef struct fn_quant {
    const void *y;          /* the values, float32 or float64 */
    void *q;                /* their codes, one byte each */
    float *scale;           /* row_len / group_len scales a row */
    ptrdiff_t rows, row_len, group_len;
    ptrdiff_t y_row_stride, q_row_stride, scale_row_stride; /* in elements */
    int code;               /* FN_Q_INT8 or FN_Q_E4M3 */
    int static_scale;       /* 1: scale holds the scales to use; 0: computed and written */
} fn_quant;

typedef void (*fn_quant_kernel)(const fn_quant *block);

typedef struct fn_kernel_table {
    const char *isa;
    fn_rows_kernel layer_norm[FN_N_DTYPES];
    fn_rows_kernel rms_norm[FN_N_DTYPES];
    fn_rows_bwd_kernel layer_norm_backward[FN_N_DTYPES];
    fn_rows_bwd_kernel rms_norm_backward[FN_N_DTYPES];
    /* The forward of float16 and bfloat16 inputs with y in float32, the
     * compute precision (the "wide output" stamps, simd_wide_out.h). */
    fn_rows_kernel layer_norm_half_to_f32[2];
    fn_rows_kernel rms_norm_half_to_f32[2];
    fn_quant_kernel quantize[2]; /* float32, float64 values */
    fn_group_kernel group_norm[FN_N_DTYPES];            /* GroupNorm */
    fn_group_bwd_kernel group_norm_backward[FN_N_DTYPES];
} fn_kernel_table;

/* One table row: the kernel `base` of every dtype for one ISA. */
#define FN_TABLE_ROW(base, isa) \
    {base##_f32_##isa, base##_f64_##isa, base##_f16_##isa, base##_bf16_##isa}
/* The wide-output row (float16, bfloat16 inputs) and the quantizer row. */
#define FN_TABLE_WIDE_ROW(base, isa) {base##_f16_f32_##isa, base##_bf16_f32_##isa}
#define FN_TABLE_QUANT_ROW(isa) {quantize_rows_f32_##isa, quantize_rows_f64_##isa}

/* Which x86-64 kernel sets this build links in (kernels_<isa>.c, each
 * compiled with its own flags).  setup.py defines all three, 0 for a set
 * whose flags the compiler refuses (AVX512_BF16 needs GCC 10 or clang 9);
 * these defaults, every set, are for a build by hand.  Off x86-64 there are
 * none. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#ifndef FN_HAVE_AVX2
#define FN_HAVE_AVX2 1
#endif
#ifndef FN_HAVE_AVX512
#define FN_HAVE_AVX512 1
#endif
#ifndef FN_HAVE_AVX512BF16
#define FN_HAVE_AVX512BF16 1
#endif
#else
#undef FN_HAVE_AVX2
#undef FN_HAVE_AVX512
#undef FN_HAVE_AVX512BF16
#define FN_HAVE_AVX2 0
#define FN_HAVE_AVX512 0
#define FN_HAVE_AVX512BF16 0
#endif
#if FN_HAVE_AVX512BF16 && !FN_HAVE_AVX512
#error "the AVX512_BF16 table reuses the AVX-512 kernels: FN_HAVE_AVX512 must be 1"
#endif

/* The AArch64 set, NEON (kernels_neon.c): Advanced SIMD is baseline on
 * every AArch64 CPU, so every little-endian aarch64 build has it, with no
 * compiler flag and nothing for setup.py to probe.  Big-endian AArch64
 * and every other architecture get only the portable table. */
#if defined(__aarch64__) && defined(__ARM_NEON) && defined(__BYTE_ORDER__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && (defined(__GNUC__) || defined(__clang__))
#define FN_HAVE_NEON 1
#else
#define FN_HAVE_NEON 0
#endif

/* The portable kernels: any stride, any architecture. */
extern const fn_kernel_table fn_kernels_scalar;

/* The tables this build has and this CPU (and OS) can run, best first; the
 * portable table is always last.  Returns how many were written. */
int fn_usable_tables(const fn_kernel_table **tables, int max);

/* Row-at-a-time portable kernels; the SIMD kernels call these for the
 * layouts and leftovers they do not vectorize. */
#define FN_DECLARE_KERNELS(sfx, isa) \
    void layer_norm_rows_##sfx##_##isa(const fn_rows *block); \
    void rms_norm_rows_##sfx##_##isa(const fn_rows *block); \
    void layer_norm_backward_rows_##sfx##_##isa(const fn_rows_bwd *block); \
    void rms_norm_backward_rows_##sfx##_##isa(const fn_rows_bwd *block);
FN_DECLARE_KERNELS(f32, scalar)
FN_DECLARE_KERNELS(f64, scalar)
FN_DECLARE_KERNELS(f16, scalar)
FN_DECLARE_KERNELS(bf16, scalar)
#define FN_DECLARE_WIDE_KERNELS(sfx, isa) \
    void layer_norm_rows_##sfx##_##isa(const fn_rows *block); \
    void rms_norm_rows_##sfx##_##isa(const fn_rows *block);
FN_DECLARE_WIDE_KERNELS(f16_f32, scalar)
FN_DECLARE_WIDE_KERNELS(bf16_f32, scalar)
/* GroupNorm's portable kernels, which the SIMD ones call for rare groups */
#define FN_DECLARE_GROUP_KERNELS(sfx, isa) \
    void group_norm_##sfx##_##isa(const fn_group *block); \
    void group_norm_backward_##sfx##_##isa(const fn_group_bwd *block);
FN_DECLARE_GROUP_KERNELS(f32, scalar)
FN_DECLARE_GROUP_KERNELS(f64, scalar)
FN_DECLARE_GROUP_KERNELS(f16, scalar)
FN_DECLARE_GROUP_KERNELS(bf16, scalar)

#ifdef __cplusplus
}
#endif

#endif /* FASTNORM_KERNELS_H */
