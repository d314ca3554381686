"""A W8A8 linear layer after a pre-norm residual block, with fastnorm's fused
add + RMS norm + int8 quantization, checked against the float32 block.

    python examples/w8a8_linear.py [--tokens 256] [--hidden 1024] [--out 1024]
                                   [--repeats 5] [--seed 0]

The block, per token (a row of x):

    h = x + residual                       # the residual stream, returned too
    a = rms_norm(h) * g                    # the activations, float32
    y = a @ W.T                            # the linear layer, (tokens, out)

and its W8A8 form:

    q, s, h = fastnorm.add_rms_norm_quant(x, residual, weight=g)    # int8 per token
    w_q, w_s = fastnorm.quantize(W)                                  # int8 per output channel
    acc = q @ w_q.T                                                  # int32 accumulators
    y8 = acc * s[:, None] * w_s[None, :]                            # dequantized, float32

Both quantizations are symmetric with one float32 scale per row
(``scale = amax / 127``; see `fastnorm.quantize`).  The int8 matmul runs in
NumPy with int32 accumulation and, when torch is installed, with
``torch._int_mm`` (on CPU it takes any shape; its CUDA kernel wants more
than 16 rows and sizes that are multiples of 8, which the defaults are).
The script prints the relative error of y8 against the float32 block and
the times of the int8 paths against the unfused float path
(``add_rms_norm`` then a float32 matmul).  Times are one machine's, for
reading, not for asserting: NumPy's integer matmul does not use BLAS, so
its int8 path is slower than float32 BLAS; ``torch._int_mm`` uses oneDNN.
"""

import argparse
import time

import numpy as np

import fastnorm


def make_block(tokens, hidden, out, seed=0):
    """Activations, residual stream, norm weight and a linear layer's weight,
    float32, with a few outlier channels as real activations have."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((tokens, hidden)).astype(np.float32)
    residual = (rng.standard_normal((tokens, hidden)) * 2).astype(np.float32)
    g = (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
    g[rng.choice(hidden, 4, replace=False)] = 8.0  # outlier channels
    w = (rng.standard_normal((out, hidden)) / np.sqrt(hidden)).astype(np.float32)
    return x, residual, g, w


def quantize_weight(w):
    """Per-output-channel symmetric int8 weights: (w_q, w_scale), one scale a row of w."""
    return fastnorm.quantize(w, np.int8, axis=-1)


def float_block(x, residual, g, w):
    """The unfused float path: (y, h) with y = rms_norm(x + residual) @ w.T in float32."""
    a, h = fastnorm.add_rms_norm(x, residual, weight=g)
    return a @ w.T, h


def int8_matmul_numpy(q, w_q):
    """q @ w_q.T with int32 accumulation (exact: |acc| <= 127 * 127 * hidden)."""
    return np.matmul(q.astype(np.int32), w_q.T.astype(np.int32))


def int8_matmul_torch(q, w_q):
    """The same accumulators from torch._int_mm (None without torch)."""
    try:
        import torch
    except ImportError:
        return None
    return torch._int_mm(torch.from_numpy(q), torch.from_numpy(w_q).t()).numpy()


def w8a8_block(x, residual, g, w_q, w_scale, matmul=int8_matmul_numpy):
    """The W8A8 path: (y8, h, acc)."""
    q, s, h = fastnorm.add_rms_norm_quant(x, residual, weight=g)
    acc = matmul(q, w_q)
    y8 = acc * s[:, None] * w_scale[None, :]
    return y8.astype(np.float32), h, acc


def relative_error(got, want):
    """The relative Frobenius error ||got - want|| / ||want||, in float64."""
    diff = got.astype(np.float64) - want.astype(np.float64)
    return float(np.linalg.norm(diff) / np.linalg.norm(want.astype(np.float64)))


def best_time(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--out", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    x, residual, g, w = make_block(args.tokens, args.hidden, args.out, args.seed)
    w_q, w_scale = quantize_weight(w)  # once, offline
    y, h = float_block(x, residual, g, w)
    y8, h8, acc = w8a8_block(x, residual, g, w_q, w_scale)
    assert np.array_equal(h8, h), "h differs from add_rms_norm's"
    print(f"block: {args.tokens} tokens, hidden {args.hidden} -> {args.out}")
    print(f"W8A8 (NumPy int32 accumulation) vs float32: relative error {relative_error(y8, y):.2e}")
    q = fastnorm.add_rms_norm_quant(x, residual, weight=g)[0]
    acc_torch = int8_matmul_torch(q, w_q)
    if acc_torch is not None:
        same = np.array_equal(acc_torch, acc)
        print(f"torch._int_mm accumulators equal NumPy's: {same}")

    times = {
        "float: add_rms_norm + float32 matmul": best_time(
            lambda: float_block(x, residual, g, w), args.repeats
        ),
        "W8A8: add_rms_norm_quant + NumPy int32 matmul": best_time(
            lambda: w8a8_block(x, residual, g, w_q, w_scale), args.repeats
        ),
    }
    if acc_torch is not None:
        times["W8A8: add_rms_norm_quant + torch._int_mm"] = best_time(
            lambda: w8a8_block(x, residual, g, w_q, w_scale, int8_matmul_torch), args.repeats
        )
    base = times["float: add_rms_norm + float32 matmul"]
    for name, t in times.items():
        print(f"  {name:<48} {t * 1e3:8.3f} ms  ({t / base:5.2f}x the float path)")
    return relative_error(y8, y)


if __name__ == "__main__":
    main()
