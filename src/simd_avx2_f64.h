/*
 * simd_avx2_f64.h - the AVX2 + FMA vocabulary for float64 vectors (the
 * contract is in simd_contract.h): 4 lanes of __m256d, vmaskmov loads and
 * stores for row tails (fault free on masked lanes) with the lane masks read
 * from a small table.  float64 elements are stored as they are computed on,
 * so there are no 16-bit moves or conversions.
 *
 * Include inside an AVX2/FMA target region, once per stamp: the helper
 * functions are guarded, the macros are #undef'd at the end of every stamp
 * by simd_vocab_undef.h.
 */
#ifndef FASTNORM_SIMD_AVX2_F64_HELPERS
#define FASTNORM_SIMD_AVX2_F64_HELPERS
#include <stdint.h>

/* first n lanes on: load 4 entries starting at [4 - n] */
static const int64_t fn_avx2_mask64[8] = {-1, -1, -1, -1, 0, 0, 0, 0};

/* lane sums in double */
static inline double fn_avx2_hsum_pd(__m256d v)
{
    __m128d a = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(a, _mm_unpackhi_pd(a, a)));
}
#endif

/* vectors of FN_T */
#define V __m256d
#define VL 4
#define FN_MASK(n) _mm256_loadu_si256((const __m256i *)(fn_avx2_mask64 + 4 - (n)))
#define VLOAD(p) _mm256_loadu_pd(p)
#define VSTORE(p, v) _mm256_storeu_pd((p), (v))
#define VLOAD_PART(p, n) _mm256_maskload_pd((p), FN_MASK(n))
#define VSTORE_PART(p, v, n) _mm256_maskstore_pd((p), FN_MASK(n), (v))
#define VZERO_FROM(v, n) _mm256_and_pd((v), _mm256_castsi256_pd(FN_MASK(n)))
#define VSET1(s) _mm256_set1_pd(s)
#define VZERO _mm256_setzero_pd()
#define VADD _mm256_add_pd
#define VSUB _mm256_sub_pd
#define VMUL _mm256_mul_pd
#define VFMA _mm256_fmadd_pd
#define VMIN _mm256_min_pd
#define VMAX _mm256_max_pd
#define VSTREAM(p, v) _mm256_stream_pd((p), (v))
#define VSFENCE() _mm_sfence()
#define VHSUM_D fn_avx2_hsum_pd
#define VADD_TO_DOUBLE(p, v) _mm256_storeu_pd((p), _mm256_add_pd(_mm256_loadu_pd(p), (v)))
