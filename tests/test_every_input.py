"""The accuracy promise on inputs at the edges: rows of up to 16M elements on
every kernel set and walk, rows of tiny and subnormal values with eps=0, and
eps values that only a double holds.

Long rows are few (one or a handful), and each reference is computed once
per module and shared by every kernel set, so the file stays fast."""

import functools

import numpy as np
import pytest
from _reference import (
    BFLOAT16,
    OPS,
    TOLERANCE,
    max_error,
    max_ulp_error,
    reference,
    reference_backward,
)

import fastnorm

LONG = (1 << 20, 1 << 24)  # 1M and 16M elements per row


@functools.cache
def long_row(kind, n, dtype_name):
    """One row of n elements (two for float64, to keep a batch axis)."""
    rng = np.random.default_rng(n % 1000 + len(kind))
    dtype = np.dtype(dtype_name) if dtype_name != "bfloat16" else BFLOAT16
    if kind == "constant":  # rms_norm of it is exactly 1
        x = np.full((1, n), 1.1)
    elif kind == "large_mean_small_spread":
        x = 1e4 + 0.01 * rng.standard_normal((1, n))
    elif kind == "large_mean":
        x = (
            1e12 + 0.01 * rng.standard_normal((1, n))
            if dtype == np.float64
            else 1e4 + rng.standard_normal((1, n))
        )
    else:  # "unit": half precision keeps every bit
        x = 3 + rng.standard_normal((1, n))
    return x.astype(dtype)


@functools.cache
def long_reference(op, kind, n, dtype_name, residual=False, backward=False):
    x = long_row(kind, n, dtype_name)
    if residual:
        x = x + long_row("unit", n, dtype_name)  # h as stored, in x's dtype
    if backward:
        return reference_backward(op, long_row("unit", n, dtype_name), x, (1,), eps=0.0)[0]
    return reference(op, x, (1,), eps=0.0)[0]


def _assert_accurate(y, y_ref, dtype):
    if np.dtype(dtype) in (np.float32, np.float64):
        assert max_error(y, y_ref) <= TOLERANCE[np.dtype(dtype)]
    else:
        assert max_ulp_error(y, y_ref, dtype) <= 1.0


ROW_CASES = [
    ("rms_norm", "constant"),
    ("rms_norm", "large_mean_small_spread"),
    ("layer_norm", "large_mean"),
]


@pytest.mark.parametrize("n", LONG)
@pytest.mark.parametrize("op,kind", ROW_CASES)
@pytest.mark.slow
def test_long_rows_keep_float32_accuracy(op, kind, n):
    """Row sums fold into double every few thousand elements: a float32 sum
    of 1M squares alone was off by 2e-4 (rms_norm of 1.1 gave 0.999787)."""
    x = long_row(kind, n, "float32")
    y = getattr(fastnorm, op)(x, eps=0.0)
    _assert_accurate(y, long_reference(op, kind, n, "float32"), np.float32)


@pytest.mark.parametrize("op", OPS)
def test_long_rows_keep_float64_accuracy(op):
    n = LONG[0]
    x = long_row("large_mean", n, "float64")
    _assert_accurate(
        getattr(fastnorm, op)(x, eps=0.0),
        long_reference(op, "large_mean", n, "float64"),
        np.float64,
    )


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
@pytest.mark.parametrize("op", OPS)
def test_long_half_rows_stay_within_one_ulp(op, dtype_name):
    n = LONG[0]
    x = long_row("unit", n, dtype_name)
    y = getattr(fastnorm, op)(x, eps=0.0)
    _assert_accurate(y, long_reference(op, "unit", n, dtype_name), x.dtype)


@pytest.mark.parametrize("n", LONG)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.slow
def test_long_rows_fused_add(op, n):
    kind = "large_mean" if op == "layer_norm" else "large_mean_small_spread"
    x, r = long_row(kind, n, "float32"), long_row("unit", n, "float32")
    y, h = getattr(fastnorm, "add_" + op)(x, r, eps=0.0)
    assert np.array_equal(h, x + r)
    _assert_accurate(y, long_reference(op, kind, n, "float32", residual=True), np.float32)


@pytest.mark.parametrize(
    "n,dtype_name", [(LONG[0], "float32"), (LONG[1], "float32"), (LONG[0], "float64")]
)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.slow
def test_long_rows_backward(op, n, dtype_name):
    kind = (
        "large_mean" if op == "layer_norm" or dtype_name == "float64" else "large_mean_small_spread"
    )
    x, dy = long_row(kind, n, dtype_name), long_row("unit", n, dtype_name)
    dx = getattr(fastnorm, op + "_backward")(dy, x, eps=0.0)[0]
    _assert_accurate(dx, long_reference(op, kind, n, dtype_name, backward=True), x.dtype)


@pytest.mark.parametrize("dtype,base", [(np.float32, 1e4), (np.float64, 1e12)])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.slow
def test_long_rows_side_by_side(op, dtype, base):
    """Channels-first lanes: 8 rows of 1M elements each, walked side by side."""
    x = _side_by_side_rows(dtype, base)
    y = getattr(fastnorm, op)(x, axis=0, eps=0.0)
    _assert_accurate(y, _side_by_side_reference(op, dtype, base), dtype)


@functools.cache
def _side_by_side_rows(dtype, base):
    rng = np.random.default_rng(11)
    spread = 1.0 if dtype == np.float32 else 0.01
    return (base + spread * rng.standard_normal((LONG[0], 8))).astype(dtype)


@functools.cache
def _side_by_side_reference(op, dtype, base):
    return reference(op, _side_by_side_rows(dtype, base), (0,), eps=0.0)[0]


# ---- tiny values, eps = 0 ---------------------------------------------------

TINY = [
    (np.float32, 1e-25),
    (np.float32, 1e-40),
    (np.float64, 1e-170),
    (np.float64, 1e-310),
    (BFLOAT16, 1e-25),
    (BFLOAT16, 1e-39),
]
LAYOUTS = ["rows", "channels_first", "strided"]


def _tiny_input(dtype, scale, layout, rng):
    """x of the given scale in one of the three walks: rows, channels-first
    lanes, and strided elements (the portable kernel)."""
    if layout == "channels_first":
        return (scale * rng.standard_normal((2, 40, 3, 5))).astype(dtype), (1,)
    x = (scale * rng.standard_normal((5, 2 * 67))).astype(dtype)
    return (x[:, ::2] if layout == "strided" else x[:, :67].copy()), (1,)


def _stat_ref(rstd_ref, dtype):
    """rstd as the compute type holds it: inf only where it does not fit."""
    cdt = np.float64 if np.dtype(dtype) == np.float64 else np.float32
    with np.errstate(over="ignore"):
        return rstd_ref.astype(np.float64).astype(cdt)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype,scale", TINY)
@pytest.mark.parametrize("op", OPS)
def test_tiny_rows_with_zero_eps_are_normalized(op, dtype, scale, layout, rng):
    """Rows of 1e-25 came back all zeros (squares underflow) and subnormal
    rows gave inf; y is of unit scale and must be right."""
    x, axes = _tiny_input(dtype, scale, layout, rng)
    y, *stats = getattr(fastnorm, op)(x, axis=axes, eps=0.0, return_stats=True)
    y_ref, _, rstd_ref = reference(op, x, axes, eps=0.0)
    _assert_accurate(y, y_ref, dtype)
    rstd_want = _stat_ref(rstd_ref, dtype)
    rstd = stats[-1]
    finite = np.isfinite(rstd_want)
    assert np.array_equal(np.isfinite(rstd), finite)
    assert max_error(rstd[finite] / rstd_want[finite], np.ones(finite.sum())) <= 5e-6


@pytest.mark.parametrize(
    "dtype,scale",
    [(np.float32, 1e-25), (np.float32, 1e-40), (np.float64, 1e-300), (np.float64, 1e-310)],
)
@pytest.mark.parametrize("op", OPS)
def test_tiny_rows_fused_add(op, dtype, scale, rng):
    x = (scale * rng.standard_normal((4, 300))).astype(dtype)
    r = (scale * rng.standard_normal((4, 300))).astype(dtype)
    y, h = getattr(fastnorm, "add_" + op)(x, r, eps=0.0)
    assert np.array_equal(h, x + r)
    _assert_accurate(y, reference(op, h, (1,), eps=0.0)[0], dtype)


@pytest.mark.parametrize("dtype,scale", [(np.float32, 1e-25), (np.float64, 1e-300)])
@pytest.mark.parametrize("op", OPS)
def test_tiny_rows_backward(op, dtype, scale, rng):
    """dx is of the scale rstd * dy (1e25 here; for subnormal rows it does
    not fit the dtype at all)."""
    x = (scale * rng.standard_normal((4, 300))).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    w = np.linspace(0.5, 1.5, 300).astype(dtype)
    dx, dw = getattr(fastnorm, op + "_backward")(dy, x, weight=w, eps=0.0)[:2]
    dx_ref, dw_ref, _ = reference_backward(op, dy, x, (1,), weight=w, eps=0.0)
    row_scale = np.abs(dx_ref).max(axis=1, keepdims=True)
    assert max_error(dx / row_scale, dx_ref / row_scale) <= TOLERANCE[np.dtype(dtype)]
    assert max_error(dw, dw_ref) <= TOLERANCE[np.dtype(dtype)]


@pytest.mark.parametrize("op", OPS)
def test_backward_recomputes_a_saved_rstd_that_overflowed(op, rng):
    """Rows of float32 subnormals have rstd > FLT_MAX: the forward reports
    inf, and the backward given that inf recomputes it rather than return
    NaN.  (dx is then of the scale 1e40 * dy and overflows too: dy here is
    small enough for dx to fit.)"""
    x = (1e-40 * rng.standard_normal((3, 64))).astype(np.float32)
    out = getattr(fastnorm, op)(x, eps=0.0, return_stats=True)
    assert np.isinf(out[-1]).all()
    dy = (1e-10 * rng.standard_normal(x.shape)).astype(np.float32)
    kw = {"mean": out[1]} if op == "layer_norm" else {}
    dx = getattr(fastnorm, op + "_backward")(dy, x, rstd=out[-1], eps=0.0, **kw)[0]
    dx_ref = reference_backward(op, dy, x, (1,), eps=0.0)[0]
    row_scale = np.abs(dx_ref).max(axis=1, keepdims=True)
    assert max_error(dx / row_scale, dx_ref / row_scale) <= 5e-6


# ---- eps stays a double -----------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("eps", [1e39, 1e-50])
@pytest.mark.parametrize("op", OPS)
def test_eps_beyond_float32_is_kept_in_double(op, eps, layout, rng):
    """eps=1e39 gave zeros and rstd 0 on the channels-first path, eps=1e-50
    on constant rows rstd inf instead of 1e25."""
    x, axes = _tiny_input(np.float32, 1.0, layout, rng)
    if eps < 1:
        x = np.ones_like(x) if layout != "strided" else np.ones((5, 134), np.float32)[:, ::2]
        if op == "rms_norm":
            x = x * np.float32(1e-20)  # rstd = 1/sqrt(1e-40 + 1e-50) = 1e20
    y, *stats = getattr(fastnorm, op)(x, axis=axes, eps=eps, return_stats=True)
    y_ref, _, rstd_ref = reference(op, x, axes, eps=eps)
    _assert_accurate(y, y_ref, np.float32)
    rstd_want = _stat_ref(rstd_ref, np.float32)
    assert np.all(np.isfinite(stats[-1])) and np.all(stats[-1] > 0)
    assert max_error(stats[-1] / rstd_want, np.ones_like(rstd_want)) <= 5e-6
