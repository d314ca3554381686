/*
 * plain_norm.c - the yardstick's entry points (see plain_norm.h): the AVX2
 * loops of plain_norm_avx2.c where this is x86-64 and the CPU has AVX2 and
 * FMA, else -1.  Portable C; compiled into fastnorm._testing only.
 */
#include "plain_norm.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
static int plain_have_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

int fn_plain_layer_norm(const void *x, void *y, const float *w, const float *b, ptrdiff_t rows,
                        ptrdiff_t n, double eps, int dtype)
{
    if (!plain_have_avx2()) return -1;
    fn_plain_layer_norm_avx2(x, y, w, b, rows, n, eps, dtype);
    return 0;
}

int fn_plain_rms_norm(const void *x, void *y, const float *w, ptrdiff_t rows, ptrdiff_t n,
                      double eps, int dtype)
{
    if (!plain_have_avx2()) return -1;
    fn_plain_rms_norm_avx2(x, y, w, rows, n, eps, dtype);
    return 0;
}
#else
int fn_plain_layer_norm(const void *x, void *y, const float *w, const float *b, ptrdiff_t rows,
                        ptrdiff_t n, double eps, int dtype)
{
    (void)x, (void)y, (void)w, (void)b, (void)rows, (void)n, (void)eps, (void)dtype;
    return -1;
}

int fn_plain_rms_norm(const void *x, void *y, const float *w, ptrdiff_t rows, ptrdiff_t n,
                      double eps, int dtype)
{
    (void)x, (void)y, (void)w, (void)rows, (void)n, (void)eps, (void)dtype;
    return -1;
}
#endif
