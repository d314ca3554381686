/*
 * stream_copy_avx2.c - the AVX2 loop of the streaming-copy roof
 * (stream_copy.c): whole 64-byte lines with 32-byte streaming stores.
 *
 * The only file of the benchmarks' hook compiled with -mavx2 (setup.py);
 * stream_copy.c stays baseline x86-64 and calls in here only after cpuid
 * reports AVX2.  Not compiled off x86-64.
 */
#include "stream_copy.h"

#ifndef __AVX2__
#error "stream_copy_avx2.c is built with -mavx2 (setup.py)"
#endif
#include <immintrin.h>

void fn_stream_lines_avx2(char *d, const char *s, size_t n)
{
    size_t i;
    for (i = 0; i + 128 <= n; i += 128) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(s + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(s + i + 32));
        __m256i c = _mm256_loadu_si256((const __m256i *)(s + i + 64));
        __m256i e = _mm256_loadu_si256((const __m256i *)(s + i + 96));
        _mm256_stream_si256((__m256i *)(d + i), a);
        _mm256_stream_si256((__m256i *)(d + i + 32), b);
        _mm256_stream_si256((__m256i *)(d + i + 64), c);
        _mm256_stream_si256((__m256i *)(d + i + 96), e);
    }
    for (; i + 64 <= n; i += 64) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(s + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(s + i + 32));
        _mm256_stream_si256((__m256i *)(d + i), a);
        _mm256_stream_si256((__m256i *)(d + i + 32), b);
    }
}
