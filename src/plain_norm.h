/*
 * plain_norm.h - the in-cache yardstick of the benchmarks (fastnorm._testing):
 * textbook two-pass LayerNorm and RMSNorm rows on AVX2, with none of the
 * library's accuracy machinery (no chunk folding into double, no
 * compensation, no rescans, the first element as the pivot).  They are NOT
 * accurate on long rows or large means; they say what the bare arithmetic
 * of a two-pass norm costs on this core, so that the kernels' own cost can
 * be compared with it in one process (benchmarks/targets.py --incache).
 *
 * x and y are rows * n elements, C order, n a multiple of 32; w (and b for
 * LayerNorm) n float32.  dtype: 0 float32, 1 bfloat16 (widened by a shift,
 * narrowed with integer round to nearest even, finite values only).
 * Returns 0, or -1 when there is no AVX2 loop to run (not x86-64, or a CPU
 * without AVX2 and FMA).
 */
#ifndef FASTNORM_PLAIN_NORM_H
#define FASTNORM_PLAIN_NORM_H

#include <stddef.h>

int fn_plain_layer_norm(const void *x, void *y, const float *w, const float *b, ptrdiff_t rows,
                        ptrdiff_t n, double eps, int dtype);
int fn_plain_rms_norm(const void *x, void *y, const float *w, ptrdiff_t rows, ptrdiff_t n,
                      double eps, int dtype);

/* the AVX2 loops (plain_norm_avx2.c, x86-64 builds only) */
void fn_plain_layer_norm_avx2(const void *x, void *y, const float *w, const float *b,
                              ptrdiff_t rows, ptrdiff_t n, double eps, int dtype);
void fn_plain_rms_norm_avx2(const void *x, void *y, const float *w, ptrdiff_t rows, ptrdiff_t n,
                            double eps, int dtype);

#endif
