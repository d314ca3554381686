/* cython_fork.h - a helper of the Cython orchestration (fastnorm/_core.pyx), not
 * of the kernels, which know nothing of threads or allocation.
 *
 * Fork safety.  GNU OpenMP keeps its thread team across parallel regions;
 * fork() copies only the calling thread, so in a child of a process that
 * has run a parallel region, the next GOMP_parallel waits forever for
 * threads that do not exist.  A pthread_atfork child handler (it sees every
 * fork: os.fork, multiprocessing, C code) marks the child, and the
 * orchestration then runs every plan on the calling thread without entering
 * OpenMP, as PyTorch does.  The mark is inherited by grandchildren. */
#ifndef FASTNORM_FORK_H
#define FASTNORM_FORK_H
#if defined(_WIN32)
/* no fork() on Windows */
static inline int fn_watch_forks(void)
{
    return 0;
}
static inline int fn_in_forked_child(void)
{
    return 0;
}
#else
#include <pthread.h>
static volatile int fn_forked_child_flag = 0;
static void fn_mark_forked_child(void)
{
    fn_forked_child_flag = 1;
}
static inline int fn_in_forked_child(void)
{
    return fn_forked_child_flag;
}
/* 0 on success, else an errno value (ENOMEM) */
static inline int fn_watch_forks(void)
{
    return pthread_atfork(NULL, NULL, fn_mark_forked_child);
}
#endif
#endif
