/*
 * simd_vocab_undef.h - the one place that forgets a stamp's definitions (the
 * names simd_contract.h lists), so that the next stamp starts from nothing.
 * simd_stamp.h and walk_portable.h include it at their end; names a stamp
 * did not define are simply not there to forget.
 */
/* stamp identity and element type (dtype_*.h) */
#undef FN_T
#undef FN_S
#undef FN_SFX
#undef FN_LD
#undef FN_ST
#undef FN_EXACT_MEAN
#undef FN_WIDE
#undef FN_WIDE_SQRT
#undef FN_Y
#undef FN_STY
#undef FN_WIDE_OUT_SFX
#undef FN_FORWARD_ONLY
#undef FN_HALF_ELEMENTS
/* vector vocabulary (simd_<isa>_<f32|f64>.h) */
#undef V
#undef VL
#undef FN_MASK
#undef VLOAD
#undef VSTORE
#undef VLOAD_PART
#undef VSTORE_PART
#undef VZERO_FROM
#undef VSET1
#undef VZERO
#undef VADD
#undef VSUB
#undef VMUL
#undef VFMA
#undef VMIN
#undef VMAX
#undef VSTREAM
#undef VSFENCE
#undef VHSUM_D
#undef VADD_TO_DOUBLE
#undef VDACC
#undef VDACC_ZERO
#undef VDACC_ADD
#undef VDACC_STORE
/* 16-bit element moves and conversions (float32 vocabularies) */
#undef FN_LOAD16
#undef FN_LOAD16_PART
#undef FN_STORE16
#undef FN_STORE16_PART
#undef FN_STREAM16
#undef VWIDEN_F16
#undef VNARROW_F16
#undef VWIDEN_BF16
#undef VNARROW_BF16
#undef VNARROW_BF16_Y
/* quantized codes (float32 vocabularies) */
#undef VQ_BITS
#undef VQ_BITS_ZERO
#undef VQ_BITS_MAX
#undef VQ_ABSMAX_BITS
#undef VQ_HMAX_BITS
#undef VQ_STORE_I8
#undef VQ_STORE_E4M3
/* element storage (simd_half_*.h, or the defaults of simd_contract.h) */
#undef XLOAD
#undef XLOAD_PART
#undef XSTORE
#undef XSTORE_PART
#undef XSTREAM
#undef XROUND
#undef XSTORE_H
#undef XSTORE_PART_H
#undef XSTREAM_H
