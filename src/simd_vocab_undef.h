/*
 * simd_vocab_undef.h - forget one vector type's vocabulary (see
 * norm_simd_body.h), so that a kernels_<isa>.c file can define the next.
 */
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
#undef VHSUM_D
#undef VADD_TO_DOUBLE
#undef FN_LOAD16
#undef FN_LOAD16_PART
#undef FN_STORE16
#undef FN_STORE16_PART
#undef FN_STREAM16
#undef FN_BF16_ROUND_Y
