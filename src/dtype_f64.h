/*
 * dtype_f64.h - the stamp parameters for float64 elements, shared by every
 * kernel file: stored and computed on as double (FN_S, FN_LD and FN_ST take
 * their defaults).  Include right before a stamp; simd_vocab_undef.h, at
 * the stamp's end, #undefs these.  No include guard: each stamp includes it
 * again.
 */
#define FN_T double
#define FN_SFX f64
