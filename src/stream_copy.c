/*
 * stream_copy.c - the benchmarks' streaming-copy roof (see stream_copy.h).
 *
 * ISA: x86-64 SSE2 (baseline: movntdq, 16-byte streaming stores) or AVX2
 * (vmovntdq, 32 bytes, in stream_copy_avx2.c: the one file of this hook
 * compiled with -mavx2), chosen at run time by cpuid; elsewhere memcpy.
 * Algorithm: a plain copy up to dst's first 64-byte boundary, then whole
 * cache lines (four loads, unaligned on src, and four streaming stores to
 * the aligned dst per 128 bytes for AVX2, 64 for SSE2), a plain copy of
 * the tail, and sfence so the streaming stores are ordered before return.
 * Numerics: none (bytes are copied).
 */
#include "stream_copy.h"

#include <string.h>
#include <stdint.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

static size_t head_to_line(const void *dst, size_t n)
{
    size_t head = (size_t)(-(uintptr_t)dst & 63u);
    return head < n ? head : n;
}

static void stream_lines_sse2(char *d, const char *s, size_t n)
{
    size_t i;
    for (i = 0; i + 64 <= n; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(s + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + i + 32));
        __m128i e = _mm_loadu_si128((const __m128i *)(s + i + 48));
        _mm_stream_si128((__m128i *)(d + i), a);
        _mm_stream_si128((__m128i *)(d + i + 16), b);
        _mm_stream_si128((__m128i *)(d + i + 32), c);
        _mm_stream_si128((__m128i *)(d + i + 48), e);
    }
}

static int have_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

void fn_stream_copy(void *dst, const void *src, size_t n)
{
    char *d = (char *)dst;
    const char *s = (const char *)src;
    size_t head = head_to_line(dst, n), body;
    memcpy(d, s, head);
    d += head;
    s += head;
    n -= head;
    body = n & ~(size_t)63;
    if (have_avx2())
        fn_stream_lines_avx2(d, s, body);
    else
        stream_lines_sse2(d, s, body);
    _mm_sfence();
    memcpy(d + body, s + body, n - body);
}

const char *fn_stream_copy_isa(void)
{
    return have_avx2() ? "avx2" : "sse2";
}

#else
void fn_stream_copy(void *dst, const void *src, size_t n)
{
    memcpy(dst, src, n);
}
const char *fn_stream_copy_isa(void)
{
    return "portable";
}
#endif
