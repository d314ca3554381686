/* cython_buffers.h - a helper of the Cython orchestration (fastnorm/_core.pyx), not
 * of the kernels, which know nothing of threads or allocation.
 *
 * Output buffers for the Cython orchestration: page-aligned, and on Linux
 * advised into transparent huge pages, as NumPy does for large arrays, so
 * that first-touch page faults are few. */
#ifndef FASTNORM_BUFFERS_H
#define FASTNORM_BUFFERS_H
#include <stdlib.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

static void *fn_buffer_alloc(size_t nbytes)
{
    void *p = NULL;
    size_t align = nbytes >= ((size_t)4 << 20) ? ((size_t)2 << 20) : 4096;
    if (posix_memalign(&p, align, nbytes ? nbytes : 1) != 0) return NULL;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (nbytes >= ((size_t)4 << 20)) madvise(p, nbytes, MADV_HUGEPAGE);
#endif
    return p;
}

static void fn_buffer_free(void *p)
{
    free(p);
}
#endif
