/*
 * simd_avx512_f64.h - the AVX-512 vocabulary for float64 vectors (the
 * contract is in simd_contract.h): 8 lanes of __m512d, masked loads and
 * stores for row tails (fault free on masked lanes, so nothing past a row is
 * touched).  float64 elements are stored as they are computed on, so there
 * are no 16-bit moves or conversions.
 *
 * Include inside an AVX-512 target region (F, BW, VL, DQ), once per stamp:
 * the macros are #undef'd at the end of every stamp by simd_vocab_undef.h.
 */

/* vectors of FN_T */
#define V __m512d
#define VL 8
#define FN_MASK(n) ((__mmask8)((1u << (n)) - 1u))
#define VLOAD(p) _mm512_loadu_pd(p)
#define VSTORE(p, v) _mm512_storeu_pd((p), (v))
#define VLOAD_PART(p, n) _mm512_maskz_loadu_pd(FN_MASK(n), (p))
#define VSTORE_PART(p, v, n) _mm512_mask_storeu_pd((p), FN_MASK(n), (v))
#define VZERO_FROM(v, n) _mm512_maskz_mov_pd(FN_MASK(n), (v))
#define VSET1(s) _mm512_set1_pd(s)
#define VZERO _mm512_setzero_pd()
#define VADD _mm512_add_pd
#define VSUB _mm512_sub_pd
#define VMUL _mm512_mul_pd
#define VFMA _mm512_fmadd_pd
#define VMIN _mm512_min_pd
#define VMAX _mm512_max_pd
#define VSTREAM(p, v) _mm512_stream_pd((p), (v))
#define VSFENCE() _mm_sfence()
#define VHSUM_D _mm512_reduce_add_pd
#define VADD_TO_DOUBLE(p, v) _mm512_storeu_pd((p), _mm512_add_pd(_mm512_loadu_pd(p), (v)))
