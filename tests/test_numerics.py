"""Accuracy targets of the core issue and the special-value rules."""

import numpy as np
import pytest
from _reference import OPS, max_error, reference, reference_backward

import fastnorm

N = 4096


def shifted_rows(dtype, base, spread, rows=8, outlier=None, rng=None):
    rng = rng or np.random.default_rng(7)
    x = base + spread * rng.standard_normal((rows, N))
    if outlier is not None:
        # one element per row far outside the spread: at the first element
        # (a pivot candidate) in even rows, somewhere inside in odd rows
        pos = np.where(np.arange(rows) % 2 == 0, 0, rng.integers(1, N - 1, rows))
        x[np.arange(rows), pos] = base + outlier * spread
    return x.astype(dtype)


@pytest.mark.parametrize("base", [0.0, 1e3, 1e4, 1e5, 1e6])
@pytest.mark.parametrize("spread", [1.0, 1e-1, 1e-2])
@pytest.mark.parametrize("outlier", [None, 1e3, -1e4])
def test_float32_large_mean_small_spread(base, spread, outlier):
    """float32 error <= 5e-6 against float64 for base + spread * noise."""
    x = shifted_rows(np.float32, base, spread, outlier=outlier)
    w = np.linspace(0.5, 1.5, N, dtype=np.float32)
    b = np.linspace(-1, 1, N, dtype=np.float32)
    for weight, bias in ((None, None), (w, b)):
        y, mean, rstd = fastnorm.layer_norm(x, weight=weight, bias=bias, return_stats=True)
        y_ref, mean_ref, rstd_ref = reference("layer_norm", x, (1,), weight, bias)
        assert max_error(y, y_ref) <= 5e-6
        assert max_error(rstd / rstd_ref, np.ones_like(rstd_ref)) <= 5e-6
        assert np.all(np.abs(mean - mean_ref) <= 5e-6 * np.maximum(1, np.abs(mean_ref)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fused", [False, True])
def test_pivot_far_from_the_mean_is_measured_again(dtype, fused):
    """The pivot is the median of the first, middle and last element: with
    the first and last both far outliers it lies far from the mean, where
    the shifted sums of squares would cancel (the walks measure such a row
    again about its mean).  Several row lengths, so the tail and the
    blocks of every kernel set take part."""
    rng = np.random.default_rng(11)
    for n in (67, 1000, 4096):
        x = 1e4 + rng.standard_normal((6, n))
        x[:, 0] = x[:, -1] = 1e4 + np.array([1e3, -1e3, 3e3, -5e2, 1e5, -1e5])
        x = x.astype(dtype)
        if fused:
            r = np.zeros_like(x)
            y, _, mean, rstd = fastnorm.add_layer_norm(x, r, return_stats=True)
        else:
            y, mean, rstd = fastnorm.layer_norm(x, return_stats=True)
        y_ref, mean_ref, rstd_ref = reference("layer_norm", x, (1,))
        tol = 5e-6 if dtype == np.float32 else 1e-12
        assert max_error(y, y_ref) <= tol, n
        assert max_error(rstd / rstd_ref, np.ones_like(rstd_ref)) <= tol, n
        dy = rng.standard_normal(x.shape).astype(dtype)
        dx = fastnorm.layer_norm_backward(dy, x)[0]
        dx_ref = reference_backward("layer_norm", dy, x, (1,))[0]
        assert max_error(dx, dx_ref) <= tol, n


@pytest.mark.parametrize("outlier", [None, 1e3])
def test_float64_base_1e12(outlier):
    """float64 error <= 1e-12 against (extended-precision) exact arithmetic."""
    x = shifted_rows(np.float64, 1e12, 1e-2, outlier=outlier)
    y = fastnorm.layer_norm(x)
    assert max_error(y, reference("layer_norm", x, (1,))[0]) <= 1e-12


def test_float32_shifted_channels_first():
    """The accuracy holds on the strided (channels-first) path too."""
    rng = np.random.default_rng(3)
    x = (1e5 + 1e-2 * rng.standard_normal((2, 512, 4, 5))).astype(np.float32)
    y = fastnorm.layer_norm(x, axis=1)
    assert max_error(y, reference("layer_norm", x, (1,))[0]) <= 5e-6


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("axis", [-1, 0])
def test_nonfinite_poisons_only_its_row(op, dtype, bad, axis):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 37)).astype(dtype)
    if axis == 0:
        x = np.ascontiguousarray(x.T)
        x[17, 2] = bad
    else:
        x[2, 17] = bad
    y = getattr(fastnorm, op)(x, axis=axis)
    row_nan = np.isnan(y).all(axis=axis)
    assert row_nan.tolist() == [False, False, True, False, False]
    good = np.delete(x, 2, axis=1 - (axis % 2))
    y_good = np.delete(y, 2, axis=1 - (axis % 2))
    assert max_error(y_good, reference(op, good, (axis % 2,))[0]) <= (
        5e-6 if dtype == np.float32 else 1e-12
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [0.0, 3.0, -1e6, 1e30])
@pytest.mark.parametrize("eps", [1e-5, 0.0])
def test_constant_row_gives_exactly_bias(dtype, value, eps):
    x = np.full((3, 100), value, dtype)
    bias = np.linspace(-2, 2, 100).astype(dtype)
    weight = np.linspace(0.5, 3, 100).astype(dtype)
    assert np.array_equal(
        fastnorm.layer_norm(x, weight=weight, bias=bias, eps=eps), np.broadcast_to(bias, x.shape)
    )
    y = fastnorm.layer_norm(x, eps=eps)
    assert np.array_equal(y, np.zeros_like(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_row_rms_norm_with_zero_eps(dtype):
    y = fastnorm.rms_norm(np.zeros((2, 8), dtype), weight=np.arange(8), eps=0.0)
    assert np.array_equal(y, np.zeros((2, 8), dtype))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("scale", [1e30, 3e37, -1e30])
def test_float32_near_limit_stays_finite(op, scale):
    rng = np.random.default_rng(5)
    x = (scale * rng.uniform(0.5, 1.5, (4, 257))).astype(np.float32)
    x[1] = np.float32(scale) * np.float32(0.999)  # constant row near the limit
    y = getattr(fastnorm, op)(x)
    assert np.isfinite(y).all()
    assert max_error(y, reference(op, x, (1,))[0]) <= 5e-6


def test_float64_huge_values():
    rng = np.random.default_rng(6)
    x = 1e300 * rng.uniform(-1, 1, (3, 65))
    for op in OPS:
        y = getattr(fastnorm, op)(x)
        assert np.isfinite(y).all()
        assert max_error(y, reference(op, x, (1,))[0]) <= 1e-12


@pytest.mark.parametrize("op", OPS)
def test_long_rows_side_by_side_stay_accurate(op):
    """Rows walked side by side (axis=0 here) run one Welford chain per lane;
    long rows are cut into chunks merged in double, so 100k elements stay at
    rounding level."""
    rng = np.random.default_rng(8)
    x = (1000 + rng.standard_normal((100_000, 16))).astype(np.float32)
    y = getattr(fastnorm, op)(x, axis=0, eps=0.0)
    assert max_error(y, reference(op, x, (0,), eps=0.0)[0]) <= 5e-6


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("layout", ["rows", "strided", "side_by_side"])
def test_float32_opposite_signs_near_limit_stay_finite(op, layout):
    """x - pivot would overflow for rows like [3e38, -3e38, ...]; every path
    stays finite as long as each value's distance from its row's mean fits in
    the type (beyond that, (x - mean) itself is not representable)."""
    base = np.array([1.6e38, -1.6e38, 0.5e38, -1e38, 1.6e38, 0.25e38], np.float32)
    x = np.stack(
        [
            base,
            base[::-1],
            np.linspace(-1.6e38, 1.6e38, 6).astype(np.float32),
            np.array([3e38, -3e38] * 3, np.float32),
        ]
    )
    if layout == "strided":
        x = np.repeat(x, 2, axis=1)[:, ::2]
    axis = 0 if layout == "side_by_side" else -1
    if layout == "side_by_side":
        x = np.ascontiguousarray(x.T)
    y = getattr(fastnorm, op)(x, axis=axis)
    assert np.isfinite(y).all()
    assert max_error(y, reference(op, x, (axis,) if axis >= 0 else (1,))[0]) <= 5e-6
