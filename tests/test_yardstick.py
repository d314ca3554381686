"""The benchmarks' in-cache yardstick (fastnorm._testing.plain_norm): a
textbook two-pass AVX2 kernel that benchmarks/targets.py --incache times
the kernels against.  It must compute the norm it claims to (a yardstick
that skipped work would flatter nobody but would mislead), and refuse
inputs its loops cannot take."""

import ml_dtypes
import numpy as np
import pytest
from _reference import reference

from fastnorm import _testing

pytestmark = pytest.mark.any_isa


def _plain_or_skip(*args):
    try:
        _testing.plain_norm(*args)
    except RuntimeError as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16], ids=["float32", "bfloat16"])
def test_plain_kernel_computes_the_norm(op, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 256), dtype=np.float32).astype(dtype)
    w = rng.standard_normal(256, dtype=np.float32)
    b = rng.standard_normal(256, dtype=np.float32) if op == "layer_norm" else None
    y = np.full_like(x, np.nan)
    eps = 1e-5
    _plain_or_skip(op, x, y, w, b, eps)
    want = reference(
        op,
        x.astype(np.float64),
        (1,),
        w.astype(np.float64),
        None if b is None else b.astype(np.float64),
        eps,
    )[0]
    tol = 1e-4 if dtype == np.float32 else 2.0**-7
    assert np.allclose(y.astype(np.float64), want, rtol=tol, atol=tol * 4)


@pytest.mark.parametrize(
    "x_shape,y_dtype,bias,match",
    [
        ((4, 33), np.float32, True, "multiple of 32"),
        ((4, 64), np.float64, True, "float32 or bfloat16"),
        ((4, 64), np.float32, False, "needs a bias"),
    ],
)
def test_plain_kernel_refuses_what_its_loops_cannot_take(x_shape, y_dtype, bias, match):
    x = np.ones(x_shape, np.float32)
    y = np.empty(x_shape, y_dtype)
    w = np.ones(x_shape[1], np.float32)
    with pytest.raises(ValueError, match=match):
        _testing.plain_norm("layer_norm", x, y, w, w if bias else None)
