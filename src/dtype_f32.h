/*
 * dtype_f32.h - the stamp parameters for float32 elements, shared by every
 * kernel file: stored and computed on as float (FN_S, FN_LD and FN_ST take
 * their defaults).  Include right before a stamp; simd_vocab_undef.h, at
 * the stamp's end, #undefs these.  No include guard: each stamp includes it
 * again.
 */
#define FN_T float
#define FN_SFX f32
