"""add_layer_norm / add_rms_norm: bit for bit the two-step pipeline
(h = x + residual; y = norm(h)), for every layout, in place, with stats."""

import numpy as np
import pytest

import fastnorm

FUSED = {"layer_norm": fastnorm.add_layer_norm, "rms_norm": fastnorm.add_rms_norm}
PLAIN = {"layer_norm": fastnorm.layer_norm, "rms_norm": fastnorm.rms_norm}

CASES = [
    ((8, 300), {}),
    ((5, 64), {}),
    ((3, 7), {}),
    ((4, 4097), {"normalized_shape": 4097}),
    ((2, 6, 5, 7), {"axis": 1}),
    ((3, 4, 9), {"normalized_shape": (4, 9)}),
    ((6, 33), {"axis": 0}),
]


def layout(a, kind):
    if kind == "C":
        return a.copy()
    if kind == "F":
        return np.asfortranarray(a)
    big = np.zeros(tuple(2 * s for s in a.shape), a.dtype)
    view = big[tuple(slice(None, None, 2) for _ in a.shape)]
    view[...] = a
    return view


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("kind", ["C", "F", "strided"])
@pytest.mark.parametrize("mode", ["alloc", "out", "in_place_residual"])
@pytest.mark.parametrize("stream", [False, True])
def test_fused_equals_two_steps(op, dtype, case, kind, mode, stream, rng):
    shape, kwargs = CASES[case]
    x = layout(rng.normal(3, 2, shape).astype(dtype), kind)
    r = layout(rng.normal(-1, 1, shape).astype(dtype), kind)
    n = shape[kwargs["axis"]] if "axis" in kwargs else shape[-1]
    w = rng.normal(1, 0.2, n).astype(dtype)
    extra = {"bias": rng.normal(0, 0.2, n).astype(dtype)} if op == "layer_norm" else {}
    if "axis" in kwargs or "normalized_shape" in kwargs:
        w, extra = None, {}
    # the two-step pipeline, on arrays of the same layouts as the fused call's
    x_before, r_before = x.copy(), r.copy()
    call = dict(kwargs, weight=w, return_stats=True, **extra)
    if mode == "alloc":
        h_ref = x + r
        y_ref, *stats_ref = PLAIN[op](h_ref, weight=w, **kwargs, **extra, return_stats=True)
    else:
        h_ref = layout(np.empty(shape, dtype), kind)
        np.add(x, r, out=h_ref)
        y_kw = {}
        if mode == "out":
            call["out"] = np.empty(shape, dtype)
            call["residual_out"] = layout(np.empty(shape, dtype), kind)
            y_kw["out"] = np.empty(shape, dtype)
        else:
            call["residual_out"] = r
        y_ref, *stats_ref = PLAIN[op](h_ref, weight=w, **kwargs, **extra, **y_kw, return_stats=True)
    previous = fastnorm._core.set_stream_min_bytes(0 if stream else 1 << 40)
    try:
        y, h, *stats = FUSED[op](x, r, **call)
    finally:
        fastnorm._core.set_stream_min_bytes(previous)
    if mode == "out":
        assert y is call["out"] and h is call["residual_out"]
    if mode == "in_place_residual":
        assert h is r
    else:
        assert np.array_equal(r, r_before)
    assert np.array_equal(x, x_before)
    assert np.array_equal(h, h_ref)
    assert np.array_equal(y, y_ref)
    for a, b in zip(stats, stats_ref):
        assert np.array_equal(a, b)


def test_fused_float32_large_mean_is_accurate(rng):
    from _reference import assert_close, reference

    x = (1e5 + 1e-2 * rng.standard_normal((4, 4096))).astype(np.float32)
    r = (1e-2 * rng.standard_normal((4, 4096))).astype(np.float32)
    y, h = fastnorm.add_layer_norm(x, r)
    assert_close(y, reference("layer_norm", h, (1,))[0], np.float32)


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_ints_and_lists(op):
    y, h = FUSED[op]([[1, 2, 3]], [[1, 0, 1]])
    assert h.dtype == np.float64 and np.array_equal(h, [[2.0, 2.0, 4.0]])
    assert np.array_equal(y, PLAIN[op](np.array([[2.0, 2.0, 4.0]])))


X = np.ones((4, 8), np.float32)


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (
            {"residual": np.ones((4, 7))},
            ValueError,
            r"residual has shape \(4, 7\) but x has shape \(4, 8\)",
        ),
        ({"residual": np.ones((4, 8), complex)}, TypeError, "residual must be a real"),
        ({"residual_out": np.ones((4, 8))}, TypeError, "residual_out has dtype float64"),
        (
            {"residual_out": np.ones((8, 4), np.float32)},
            ValueError,
            r"residual_out has shape \(8, 4\)",
        ),
        ({"residual_out": [0.0] * 8}, TypeError, "residual_out must be a numpy.ndarray"),
        ({"out": np.ones((4, 8))}, TypeError, "out has dtype"),
        ({"axis": 5}, np.exceptions.AxisError, "out of bounds"),
    ],
)
def test_errors(op, kwargs, exc, match):
    args = dict(kwargs)
    r = args.pop("residual", X)
    with pytest.raises(exc, match=match):
        FUSED[op](X, r, **args)


@pytest.mark.any_isa
@pytest.mark.parametrize("out", [[[0.0] * 8] * 4, (0.0,) * 8, 3.0, "out"], ids=type)
def test_out_not_an_array_with_residual_out_is_a_type_error(out):
    """out is refused as not an ndarray also when residual_out is given: the
    overlap test of the two must not read a non-array as an array (it did,
    and crashed)."""
    h = np.empty_like(X)
    with pytest.raises(TypeError, match="out must be a numpy.ndarray"):
        fastnorm.add_layer_norm(X, X, out=out, residual_out=h)
    with pytest.raises(TypeError, match="out must be a numpy.ndarray"):
        fastnorm.add_rms_norm(X, X, out=out, residual_out=h)


@pytest.mark.any_isa
def test_out_and_residual_out_that_overlap_are_refused():
    x = np.ones((2, 4), np.float32)
    buf = np.empty((2, 4), np.float32)
    with pytest.raises(ValueError, match="out and residual_out overlap"):
        fastnorm.add_layer_norm(x, x, out=buf, residual_out=buf)


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("special", ["nan", "inf", "huge"])
def test_special_rows_match_two_steps(op, special, rng):
    """Rows that take the per-row fallbacks (NaN/Inf, squares that overflow)
    still equal the two-step pipeline, and h is stored right."""
    x = rng.normal(size=(6, 200)).astype(np.float32)
    r = rng.normal(size=(6, 200)).astype(np.float32)
    if special == "nan":
        x[2, 50] = np.nan
    elif special == "inf":
        r[3, 7] = np.inf
    else:
        x[4] = (3e37 * rng.uniform(0.5, 1.0, 200)).astype(np.float32)
    h_ref = x + r
    y_ref = PLAIN[op](h_ref)
    y, h = FUSED[op](x, r)
    assert np.array_equal(h, h_ref, equal_nan=True)
    assert np.array_equal(y, y_ref, equal_nan=True)


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("special", ["nan", "huge"])
def test_fused_in_place_residual_with_special_rows(op, special):
    x = np.array([[1, 2, 3, 4] * 10, [1, 2, 3, 4] * 10], np.float32)
    r = np.array([[10, 20, 30, 40] * 10, [10, 20, 30, 40] * 10], np.float32)
    if special == "nan":
        x[0, 2] = np.nan
    else:
        x[0] = np.float32(1e20) * np.arange(40, dtype=np.float32)
        r[0] = np.float32(1e20)
    h_ref = x + r
    y_ref = PLAIN[op](h_ref)
    y, h = FUSED[op](x, r, residual_out=r)
    assert h is r
    assert np.array_equal(h, h_ref, equal_nan=True)
    assert np.array_equal(y, y_ref, equal_nan=True)
