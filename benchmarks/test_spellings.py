"""pytest-benchmark suite: every spelling of one small call, side by side.

One (8, 768) layer_norm (and rms_norm) call written each way a NumPy or
PyTorch user writes it: an int or tuple normalized_shape, axis=-1 or (-1,),
a NumPy integer, a float or NumPy eps, float32 or half-precision weights.
Each spelling runs the same argument rules (fastnorm/_calls.pxi), so each
should cost about what the int form costs; the project's goal (at most 1.2x
the int form) is measured in benchmarks/targets.py.

    pytest benchmarks/test_spellings.py
"""

import functools

import ml_dtypes
import numpy as np
import pytest

import fastnorm

N = 768


def spellings(op, dtype):
    """{name: call} for one (8, 768) call of op on x of dtype; the first is the
    int form the others are compared with."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, N)).astype(dtype)
    w = rng.normal(1, 0.3, N).astype(np.float32)
    b = rng.normal(0, 0.3, N).astype(np.float32)
    fn = getattr(fastnorm, op)
    extra = {"bias": b} if op == "layer_norm" else {}
    half = {"bias": b.astype(dtype)} if op == "layer_norm" else {}
    fn = functools.partial(fn, eps=1e-5)  # the eps spelling passes the same value
    calls = {
        "int": lambda: fn(x, N, weight=w, **extra),
        "tuple": lambda: fn(x, (N,), weight=w, **extra),
        "axis=-1": lambda: fn(x, weight=w, axis=-1, **extra),
        "axis=(-1,)": lambda: fn(x, weight=w, axis=(-1,), **extra),
        "np.int64": lambda: fn(x, np.int64(N), weight=w, **extra),
        "eps=np.float64": lambda: fn(x, N, weight=w, **extra, eps=np.float64(1e-5)),
    }
    if np.dtype(dtype).itemsize == 2:
        wh = w.astype(dtype)
        calls["half weight"] = lambda: fn(x, N, weight=wh, **half)
        calls["tuple, half weight"] = lambda: fn(x, (N,), weight=wh, **half)
    return calls


CASES = [
    (op, dt)
    for op in ("layer_norm", "rms_norm")
    for dt in (np.float32, np.float16, ml_dtypes.bfloat16)
]
IDS = [f"{op}-{np.dtype(dt).name}" for op, dt in CASES]


@pytest.mark.parametrize("op,dtype", CASES, ids=IDS)
@pytest.mark.parametrize("spelling", list(spellings("layer_norm", np.float16)))
def test_spelling(benchmark, op, dtype, spelling):
    calls = spellings(op, dtype)
    if spelling not in calls:
        pytest.skip("half-precision weights apply to half-precision inputs")
    # each spelling gives its int form's bits (half weights: the int form
    # with the same half weights)
    want = calls["half weight" if "half weight" in spelling else "int"]()
    assert np.array_equal(
        np.asarray(calls[spelling]()).view(np.uint8), np.asarray(want).view(np.uint8)
    )
    benchmark.group = f"{op} {np.dtype(dtype).name} (8, {N}) spellings"
    benchmark(calls[spelling])
