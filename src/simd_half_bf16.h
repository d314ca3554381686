/*
 * simd_half_bf16.h - bfloat16 element storage for a SIMD stamp (the
 * contract is in simd_contract.h), the same for every ISA: VL elements are
 * moved as 16-bit values by the float32 vocabulary's FN_LOAD16/FN_STORE16
 * family, widened on load (a shift) and rounded once on store.
 *
 * y is rounded by VNARROW_BF16_Y when the kernel file defines it (the
 * AVX512_BF16 instruction vcvtneps2bf16, which flushes subnormal results to
 * zero), else by the vocabulary's integer round-to-nearest-even
 * VNARROW_BF16.  h, the fused residual sum, always takes VNARROW_BF16, so
 * that it equals NumPy's x + residual bit for bit.
 *
 * Include after dtype_bf16.h and the ISA's float32 vocabulary, right before
 * simd_stamp.h.  No include guard: each stamp includes it again.
 */
#ifndef VNARROW_BF16_Y
#define VNARROW_BF16_Y VNARROW_BF16
#endif
#define XLOAD(p) VWIDEN_BF16(FN_LOAD16(p))
#define XLOAD_PART(p, n) VWIDEN_BF16(FN_LOAD16_PART(p, n))
#define XSTORE(p, v) FN_STORE16(p, VNARROW_BF16_Y(v))
#define XSTORE_PART(p, v, n) FN_STORE16_PART(p, VNARROW_BF16_Y(v), n)
#define XSTREAM(p, v) FN_STREAM16(p, VNARROW_BF16_Y(v))
#define XROUND(v) VWIDEN_BF16(VNARROW_BF16(v))
#define XSTORE_H(p, v) FN_STORE16(p, VNARROW_BF16(v))
#define XSTORE_PART_H(p, v, n) FN_STORE16_PART(p, VNARROW_BF16(v), n)
#define XSTREAM_H(p, v) FN_STREAM16(p, VNARROW_BF16(v))
