/*
 * simd_half_f16.h - float16 element storage for a SIMD stamp (the contract
 * is in simd_contract.h), the same for every ISA: VL elements are moved as
 * 16-bit values by the float32 vocabulary's FN_LOAD16/FN_STORE16 family,
 * widened to float32 on load and rounded once, to nearest even, on store
 * (VWIDEN_F16 / VNARROW_F16: F16C or AVX-512 vcvtph2ps / vcvtps2ph).
 *
 * Include after dtype_f16.h and the ISA's float32 vocabulary, right before
 * simd_stamp.h.  No include guard: each stamp includes it again.
 */
#define XLOAD(p) VWIDEN_F16(FN_LOAD16(p))
#define XLOAD_PART(p, n) VWIDEN_F16(FN_LOAD16_PART(p, n))
#define XSTORE(p, v) FN_STORE16(p, VNARROW_F16(v))
#define XSTORE_PART(p, v, n) FN_STORE16_PART(p, VNARROW_F16(v), n)
#define XSTREAM(p, v) FN_STREAM16(p, VNARROW_F16(v))
#define XROUND(v) VWIDEN_F16(VNARROW_F16(v))
/* h, the fused residual sum, is stored like y (named apart for
 * simd_wide_out.h, which changes y's stores only) */
#define XSTORE_H(p, v) FN_STORE16(p, VNARROW_F16(v))
#define XSTORE_PART_H(p, v, n) FN_STORE16_PART(p, VNARROW_F16(v), n)
#define XSTREAM_H(p, v) FN_STREAM16(p, VNARROW_F16(v))
