"""The quantized outputs' speed targets (python benchmarks/targets.py --quant).

(4096, 4096) float32 and bfloat16 inputs with a weight, int8 with per-row
scales unless the name says otherwise, on 1 and 2 threads, arrays as NumPy
allocates them.  Each figure is a ratio of medians measured side by side in
interleaved rounds (fastnorm.bench.harness.time_interleaved):

- the fused call against its two steps: the float norm into a preallocated
  float32 array (dtype=np.float32), then `quantize` of it;
- rms_norm_quant against the roof: a streaming copy of the bytes the pass
  must move (read x; write q and the scales), as half of the bytes moved;
- fastnorm.torch.rms_norm_quant against torch's F.rms_norm followed by
  per-token quantization (amax, divide, round, clamp, to(int8)), when
  torch is installed."""

import functools

import ml_dtypes
import numpy as np

import fastnorm
from fastnorm.bench import harness
from fastnorm.bench.harness import limit_threads, time_interleaved

BIG = (4096, 4096)
E4M3 = np.dtype(ml_dtypes.float8_e4m3fn)


def _inputs(dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(BIG, dtype=np.float32).astype(dtype)
    r = rng.standard_normal(BIG, dtype=np.float32).astype(dtype)
    w = rng.standard_normal(BIG[1]).astype(np.float32)
    return x, r, w


def _times(dtype, threads, qdtype, group_size, add, repeats):
    """Median seconds of the fused call, its two steps and the roof."""
    x, r, w = _inputs(dtype)
    q = np.empty(BIG, qdtype)
    n_scales = BIG[0] * (1 if group_size is None else BIG[1] // group_size)
    scales = np.empty(
        (BIG[0],) if group_size is None else (BIG[0], BIG[1] // group_size), np.float32
    )
    y = np.empty(BIG, np.float32)
    h = np.empty_like(x)
    kw = dict(dtype=qdtype, group_size=group_size, out=q, scale_out=scales)
    if add:
        fns = {
            "fused": lambda: fastnorm.add_rms_norm_quant(x, r, weight=w, residual_out=h, **kw),
            "two steps": lambda: fastnorm.quantize(
                fastnorm.add_rms_norm(x, r, weight=w, dtype=np.float32, out=y, residual_out=h)[0],
                **kw,
            ),
        }
    else:
        fns = {
            "fused": lambda: fastnorm.rms_norm_quant(x, weight=w, **kw),
            "two steps": lambda: fastnorm.quantize(
                fastnorm.rms_norm(x, weight=w, dtype=np.float32, out=y), **kw
            ),
        }
    # the bytes the fused pass moves: read x (and the residual, write h),
    # write q and the scales; the roof copies half of them
    moved = x.nbytes * (3 if add else 1) + q.nbytes + 4 * n_scales
    fns["roof"] = harness.roof_fn(moved // 2, x.size, threads=threads)
    with limit_threads(threads):
        return time_interleaved(fns, repeats, 2e-3)


def _torch_times(threads, repeats):
    torch = harness.torch_module()
    if torch is None:
        return None
    import fastnorm.torch as ft

    if not hasattr(ft, "rms_norm_quant"):
        return None
    x, _, w = _inputs(np.float32)
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    eps = float(np.finfo(np.float32).eps)

    def torch_steps():
        y = torch.nn.functional.rms_norm(xt, (BIG[1],), wt, eps)
        s = y.abs().amax(dim=-1, keepdim=True) / 127.0
        return torch.clamp(torch.round(y / s), -127, 127).to(torch.int8), s

    fns = {
        "fastnorm.torch": lambda: ft.rms_norm_quant(xt, (BIG[1],), wt, eps),
        "torch": torch_steps,
    }
    with limit_threads(threads):
        return time_interleaved(fns, repeats, 2e-3)


def quant_targets(Target, thread_label, threads_list=(1, 2)):
    """The --quant targets, as targets.py's Target rows."""
    targets = []
    for n in threads_list:
        on = thread_label(n)
        for dtype in ("float32", "bfloat16"):
            dt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(np.float32)
            short = "f32" if dtype == "float32" else "bf16"
            plain = _once(functools.partial(_times, dt, n, np.int8, None, False))
            targets.append(
                Target(
                    f"rms_norm_quant {short} int8 {on} / (rms_norm f32 + quantize)",
                    0.6, (n,), lambda repeats, t=plain: _ratio(t(repeats), "fused", "two steps"),
                )
            )  # fmt: skip
            targets.append(
                Target(
                    f"rms_norm_quant {short} int8 {on} / streaming-copy roof",
                    1.5, (n,), lambda repeats, t=plain: _ratio(t(repeats), "fused", "roof"),
                )
            )  # fmt: skip
            add = _once(functools.partial(_times, dt, n, np.int8, None, True))
            targets.append(
                Target(
                    f"add_rms_norm_quant {short} int8 {on} / (add_rms_norm + quantize)",
                    0.6, (n,), lambda repeats, t=add: _ratio(t(repeats), "fused", "two steps"),
                )
            )  # fmt: skip
            for label, qdtype, group in (("int8 group 128", np.int8, 128), ("e4m3fn", E4M3, None)):
                t = _once(functools.partial(_times, dt, n, qdtype, group, False))
                targets.append(
                    Target(
                        f"rms_norm_quant {short} {label} {on} / (rms_norm f32 + quantize)",
                        0.7, (n,), lambda repeats, t=t: _ratio(t(repeats), "fused", "two steps"),
                    )
                )  # fmt: skip
        torch_t = _once(functools.partial(_torch_times, n))
        targets.append(
            Target(
                f"fastnorm.torch.rms_norm_quant f32 int8 {on} / torch rms_norm + quantization",
                0.1, (n,),
                lambda repeats, t=torch_t: None if t(repeats) is None
                else _ratio(t(repeats), "fastnorm.torch", "torch"),
            )
        )  # fmt: skip
    return targets


def _ratio(times, num, den):
    return times[num] / times[den]


def _once(fn):
    cache = {}

    def get(repeats):
        if repeats not in cache:
            cache[repeats] = fn(repeats)
        return cache[repeats]

    return get
