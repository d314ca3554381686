/*
 * simd_wide_out.h - turns a float16/bfloat16 stamp into its "wide output"
 * stamp: x, residual and h stay 16-bit, y is stored in float32, the compute
 * precision, unrounded (layer_norm(x, dtype=np.float32) on a half input,
 * and the quantized norms, which quantize exactly these values).  Every
 * other step is the half stamp's own, so rounding this y to the input's
 * dtype gives the half stamp's y.
 *
 * Include after simd_half_<dtype>.h, with FN_WIDE_OUT_SFX set to the
 * stamp's name part (f16_f32, bf16_f32), right before simd_stamp.h.  Only
 * the forward kernels are stamped (FN_FORWARD_ONLY): a backward has no
 * output dtype to choose.
 */
#if !defined(FN_S) || !defined(XSTORE_H) || !defined(FN_WIDE_OUT_SFX)
#error "simd_wide_out.h follows a half stamp's storage (simd_half_*.h) and FN_WIDE_OUT_SFX"
#endif
#undef FN_SFX
#define FN_SFX FN_WIDE_OUT_SFX
#define FN_Y FN_T
#define FN_STY(t) (t)
#undef XSTORE
#undef XSTORE_PART
#undef XSTREAM
#define XSTORE VSTORE
#define XSTORE_PART VSTORE_PART
#define XSTREAM VSTREAM
#define FN_FORWARD_ONLY 1
