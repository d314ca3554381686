/* cython_omp.h - a helper of the Cython orchestration (fastnorm/_core.pyx), not
 * of the kernels, which know nothing of threads or allocation.
 *
 * OpenMP shim for the Cython orchestration: the real runtime when the build
 * found OpenMP, serial stand-ins otherwise (so the module always builds). */
#ifndef FASTNORM_OMP_SHIM_H
#define FASTNORM_OMP_SHIM_H
#ifdef _OPENMP
#include <omp.h>
#define FN_HAVE_OPENMP 1
#else
static inline int omp_get_max_threads(void)
{
    return 1;
}
static inline int omp_get_num_threads(void)
{
    return 1;
}
static inline int omp_get_thread_num(void)
{
    return 0;
}
#define FN_HAVE_OPENMP 0
#endif
#ifndef FN_BUILD_FLAGS
#define FN_BUILD_FLAGS "unknown"
#endif
/* what fastnorm/_sources.py computed over the sources at build time */
#ifndef FN_SOURCE_FINGERPRINT
#define FN_SOURCE_FINGERPRINT ""
#endif
#endif
