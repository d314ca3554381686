"""Hypothesis: random shapes, axes, strides and dtypes against the reference."""

import numpy as np
import pytest
from _reference import BFLOAT16, OPS, assert_close, max_ulp_error, reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnorm


@st.composite
def arrays_and_axes(draw, dtypes=(np.float32, np.float64, np.int16)):
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim)))
    steps = tuple(draw(st.sampled_from([1, 2, -1, -2])) for _ in range(ndim))
    dtype = draw(st.sampled_from(dtypes))
    axes = draw(
        st.lists(
            st.integers(-ndim, ndim - 1), min_size=1, max_size=ndim, unique_by=lambda a: a % ndim
        )
    )
    seed = draw(st.integers(0, 2**32 - 1))
    transpose = draw(st.permutations(range(ndim)))
    big = np.random.default_rng(seed).normal(1, 2, tuple(abs(s) * n for s, n in zip(steps, shape)))
    if np.dtype(dtype).kind == "i":
        big = big * 100
    big = big.astype(dtype)
    x = big[tuple(slice(None, None, s) for s in steps)]
    x = (
        np.transpose(np.transpose(x, transpose).copy(), np.argsort(transpose))
        if draw(st.booleans())
        else x
    )
    return x, tuple(axes)


@pytest.mark.parametrize("op", OPS)
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=arrays_and_axes(), use_weight=st.booleans(), use_out=st.booleans())
def test_random_layouts_match_reference(op, case, use_weight, use_out):
    x, axes = case
    before = x.copy()
    norm_axes = tuple(sorted(a % x.ndim for a in axes))
    norm_shape = tuple(x.shape[a] for a in norm_axes)
    rdt = np.float64 if x.dtype.kind == "i" else x.dtype
    weight = (
        np.linspace(0.5, 2, int(np.prod(norm_shape))).reshape(norm_shape).astype(rdt)
        if use_weight
        else None
    )
    kwargs = {"axis": axes, "weight": weight}
    if use_out:
        out = np.empty(x.shape[::-1], rdt).T  # Fortran-ordered out
        kwargs["out"] = out
    y = getattr(fastnorm, op)(x, **kwargs)
    if use_out:
        assert y is out
    assert_close(y, reference(op, x, norm_axes, weight)[0], rdt)
    assert np.array_equal(x, before)


@pytest.mark.parametrize("op", OPS)
@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=arrays_and_axes(), use_weight=st.booleans())
def test_random_layouts_backward_match_reference(op, case, use_weight):
    from _reference import reference_backward

    x, axes = case
    norm_axes = tuple(sorted(a % x.ndim for a in axes))
    norm_shape = tuple(x.shape[a] for a in norm_axes)
    rdt = np.float64 if x.dtype.kind == "i" else x.dtype
    dy = np.cos(np.arange(x.size, dtype=np.float64)).reshape(x.shape).astype(rdt)[..., ::-1]
    weight = (
        np.linspace(0.5, 2, int(np.prod(norm_shape))).reshape(norm_shape).astype(rdt)
        if use_weight
        else None
    )
    fn = fastnorm.layer_norm_backward if op == "layer_norm" else fastnorm.rms_norm_backward
    out = fn(dy, x, weight=weight, axis=axes)
    dx_ref, dw_ref, db_ref = reference_backward(op, dy, x, norm_axes, weight)
    assert_close(out[0], dx_ref, rdt)
    if use_weight:
        assert_close(out[1], dw_ref, rdt)
    if op == "layer_norm":
        assert_close(out[2], db_ref, rdt)


@pytest.mark.parametrize("op", OPS)
@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    case=arrays_and_axes(dtypes=(np.float16, BFLOAT16)),
    per_sample=st.booleans(),
    use_out=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_half_layouts_within_one_ulp(op, case, per_sample, use_out, seed):
    """float16/bfloat16 on random layouts and axes, with a shared or a
    per-sample (random broadcast pattern) float32 weight: within 1 ulp."""
    x, axes = case
    before = x.copy()
    norm_axes = tuple(sorted(a % x.ndim for a in axes))
    rng = np.random.default_rng(seed)
    if per_sample:  # each axis: x's size, or 1 (broadcast)
        wshape = tuple(n if rng.random() < 0.6 else 1 for n in x.shape)
    else:
        wshape = tuple(x.shape[a] for a in norm_axes)
    weight = rng.normal(1, 0.5, wshape).astype(np.float32)
    kwargs = {"axis": axes, "weight": weight}
    if use_out:
        out = np.empty(x.shape[::-1], x.dtype).T
        kwargs["out"] = out
    y = getattr(fastnorm, op)(x, **kwargs)
    assert y.dtype == x.dtype and (not use_out or y is out)
    assert max_ulp_error(y, reference(op, x, norm_axes, weight)[0], x.dtype) <= 1.0
    assert np.array_equal(x.view(np.uint16), before.view(np.uint16))
