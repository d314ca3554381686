/*
 * stream_copy.h - the memory roof of the benchmarks: a copy of n bytes with
 * non-temporal (streaming) stores, which skip the read-for-ownership of the
 * destination, so it moves exactly the bytes read plus the bytes written.
 * No pass that reads and writes the same bytes can be faster; the
 * benchmarks divide by its time.  Not used by the library itself.
 */
#ifndef FASTNORM_STREAM_COPY_H
#define FASTNORM_STREAM_COPY_H
#include <stddef.h>

/* Copy n bytes from src to dst (not overlapping), any alignment: the head
 * up to dst's first 64-byte boundary and the tail are copied plainly, the
 * rest with streaming stores of whole vectors (AVX2 where the CPU has it,
 * else SSE2), followed by a store fence. */
void fn_stream_copy(void *dst, const void *src, size_t n);

/* The instruction set fn_stream_copy uses on this CPU ("avx2", "sse2" or
 * "portable" off x86-64). */
const char *fn_stream_copy_isa(void);

/* Internal to the two files of the copy: the AVX2 line loop of
 * stream_copy_avx2.c (n a multiple of 64, dst 64-byte aligned), which
 * stream_copy.c calls only on a CPU with AVX2. */
void fn_stream_lines_avx2(char *d, const char *s, size_t n);

#endif
