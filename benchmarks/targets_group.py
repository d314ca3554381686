"""GroupNorm's speed targets, for ``python benchmarks/targets.py
--group``: (16, 256, 64, 64) float32, 32 groups, weight and bias, on 1 and 2
threads.  Each thread count is one interleaved run (harness.time_interleaved)
of every competitor, medians compared:

    group_norm NCHW                  / torch F.group_norm
    group_norm channels-last         / torch F.group_norm on a channels_last tensor
    group_norm out= (either layout)  / the streaming copy of x (harness.roof_fn)
    group_norm_backward NCHW         / torch's native_group_norm_backward
    group_norm bfloat16 NCHW         / torch F.group_norm in bfloat16
"""

import functools

import ml_dtypes
import numpy as np

import fastnorm
from fastnorm.bench import harness
from fastnorm.bench.harness import limit_threads, time_interleaved

SHAPE, GROUPS = (16, 256, 64, 64), 32


def _competitors():
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE, dtype=np.float32)
    x_last = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    w = rng.normal(1, 0.5, SHAPE[1]).astype(np.float32)
    b = rng.normal(0, 0.5, SHAPE[1]).astype(np.float32)
    dy = rng.standard_normal(SHAPE, dtype=np.float32)
    out, out_last = np.empty_like(x), np.empty_like(x_last)
    xb = x.astype(ml_dtypes.bfloat16)
    _, mean, rstd = fastnorm.group_norm(x, GROUPS, w, b, return_stats=True)
    tx, tw, tb, tdy = (torch.from_numpy(a) for a in (x, w, b, dy))
    tx_last = tx.to(memory_format=torch.channels_last)
    txb, twb, tbb = tx.bfloat16(), tw.bfloat16(), tb.bfloat16()
    _, tmean, trstd = torch.ops.aten.native_group_norm(
        tx, tw, tb, *SHAPE[:2], 64 * 64, GROUPS, 1e-5
    )
    mask = [True, True, True]
    return {
        "nchw": lambda: fastnorm.group_norm(x, GROUPS, w, b),
        "torch nchw": lambda: F.group_norm(tx, GROUPS, tw, tb, 1e-5),
        "nhwc": lambda: fastnorm.group_norm(x_last, GROUPS, w, b, channel_axis=-1),
        "torch channels_last": lambda: F.group_norm(tx_last, GROUPS, tw, tb, 1e-5),
        "nchw out=": lambda: fastnorm.group_norm(x, GROUPS, w, b, out=out),
        "nhwc out=": lambda: fastnorm.group_norm(
            x_last, GROUPS, w, b, channel_axis=-1, out=out_last
        ),
        "roof": harness.roof_fn(x.nbytes, x.size),
        "backward": lambda: fastnorm.group_norm_backward(dy, x, GROUPS, w, mean=mean, rstd=rstd),
        "torch backward": lambda: torch.ops.aten.native_group_norm_backward(
            tdy, tx, tmean, trstd, tw, *SHAPE[:2], 64 * 64, GROUPS, mask
        ),
        "bf16": lambda: fastnorm.group_norm(xb, GROUPS, w, b),
        "torch bf16": lambda: F.group_norm(txb, GROUPS, twb, tbb, 1e-5),
    }


RATIOS = [
    ("group_norm f32 NCHW / torch F.group_norm", 0.3, "nchw", "torch nchw"),
    ("group_norm f32 channels-last / torch on channels_last", 0.3, "nhwc", "torch channels_last"),
    ("group_norm f32 NCHW out= / streaming-copy roof", 1.3, "nchw out=", "roof"),
    ("group_norm f32 channels-last out= / streaming-copy roof", 1.3, "nhwc out=", "roof"),
    (
        "group_norm_backward f32 / torch native_group_norm_backward",
        0.4,
        "backward",
        "torch backward",
    ),
    ("group_norm bf16 NCHW / torch bf16", 0.3, "bf16", "torch bf16"),
]


@functools.cache
def _times(threads, repeats):
    import torch

    with limit_threads(threads):
        torch.set_num_threads(threads)
        return time_interleaved(_competitors(), repeats, 2e-3)


def group_targets(Target, thread_label, thread_counts=(1, 2)):
    """targets.py's Target list for --group."""
    targets = []
    for n in thread_counts:
        for name, goal, num, den in RATIOS:

            def measure(repeats, n=n, num=num, den=den):
                t = _times(n, repeats)
                return t[num] / t[den]

            targets.append(Target(f"{name} {SHAPE} {thread_label(n)}", goal, (n,), measure))
    return targets
