"""layer_norm_backward and rms_norm_backward: the extended-precision
reference, finite differences, PyTorch autograd, determinism, errors."""

import numpy as np
import pytest
from _reference import OPS, assert_close, axes_of, reference_backward

import fastnorm

BACKWARD = {"layer_norm": fastnorm.layer_norm_backward, "rms_norm": fastnorm.rms_norm_backward}

CASES = [
    ((7, 33), {}),
    ((5, 4097), {"normalized_shape": 4097}),
    ((4, 3, 17), {"normalized_shape": (3, 17)}),
    ((4, 3, 17), {"axis": 1}),
    ((2, 6, 5, 7), {"axis": 1}),  # channels-first
    ((3, 5, 7), {"axis": (0, 2)}),
    ((1, 64), {}),
    ((0, 8), {}),
]
WEIGHTS = ["none", "full", "scalar", "last"]


def make_weight(kind, norm_shape, dtype, rng):
    if kind == "none":
        return None
    if kind == "full":
        return rng.normal(1, 0.5, norm_shape).astype(dtype)
    if kind == "scalar":
        return np.asarray(1.5, dtype)
    return rng.normal(1, 0.5, norm_shape[-1]).astype(dtype)


def sum_to(full, shape):
    lead = full.ndim - len(shape)
    full = full.sum(axis=tuple(range(lead))) if lead else full
    keep = tuple(i for i, s in enumerate(shape) if s == 1 and full.shape[i] != 1)
    return (full.sum(axis=keep, keepdims=True) if keep else full).reshape(shape)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("wkind", WEIGHTS)
@pytest.mark.parametrize("with_stats", [False, True])
def test_matches_reference(op, dtype, case, wkind, with_stats, rng):
    shape, kwargs = CASES[case]
    axes = axes_of(len(shape), kwargs.get("normalized_shape"), kwargs.get("axis"))
    norm_shape = tuple(shape[a] for a in axes)
    x = rng.normal(2, 3, shape).astype(dtype)
    dy = rng.normal(0, 1, shape).astype(dtype)
    w = make_weight(wkind, norm_shape, dtype, rng)
    x_before, dy_before = x.copy(), dy.copy()
    stats = {}
    if with_stats:
        res = getattr(fastnorm, op)(x, weight=w, return_stats=True, **kwargs)
        stats = {"mean": res[1], "rstd": res[2]} if op == "layer_norm" else {"rstd": res[1]}
    out = BACKWARD[op](dy, x, weight=w, **kwargs, **stats)
    dx_ref, dw_ref, db_ref = reference_backward(op, dy, x, axes, w)
    assert out[0].shape == x.shape and out[0].dtype == dtype
    # dx: within rounding (rstd from the float32 forward adds one rounding)
    assert_close(out[0], dx_ref, dtype)
    if w is None:
        assert out[1] is None
    else:
        assert out[1].shape == np.shape(w) and out[1].dtype == dtype
        assert_close(out[1], sum_to(dw_ref, np.shape(w)), dtype)
    if op == "layer_norm":
        assert out[2].shape == norm_shape and out[2].dtype == dtype
        assert_close(out[2], db_ref, dtype)
    else:
        assert len(out) == 2
    assert np.array_equal(x, x_before) and np.array_equal(dy, dy_before)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    "shape,kwargs,wshape",
    [
        ((3, 6), {}, (6,)),
        ((2, 4, 5), {"axis": 1}, (4,)),
        ((2, 3, 4), {"normalized_shape": (3, 4)}, (4,)),
        ((2, 3, 4), {"axis": (0, 2)}, ()),
    ],
)
def test_central_finite_differences(op, shape, kwargs, wshape, rng):
    """float64 gradients of sum(forward(x) * dy) by central differences."""
    x = rng.normal(0.5, 1.5, shape)
    dy = rng.normal(size=shape)
    w = rng.normal(1, 0.3, wshape)
    fwd = getattr(fastnorm, op)
    eps_kw = {"eps": 1e-3}

    def loss(xv, wv):
        return float(np.sum(fwd(xv, weight=wv, **kwargs, **eps_kw) * dy))

    res = BACKWARD[op](dy, x, weight=w, **kwargs, **eps_kw)
    h = 1e-6
    num_dx = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        num_dx[idx] = (loss(xp, w) - loss(xm, w)) / (2 * h)
    num_dw = np.zeros_like(w)
    for idx in np.ndindex(w.shape):
        wp, wm = w.copy(), w.copy()
        wp[idx] += h
        wm[idx] -= h
        num_dw[idx] = (loss(x, wp) - loss(x, wm)) / (2 * h)
    np.testing.assert_allclose(res[0], num_dx, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(res[1], num_dw, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("axis_case", ["last", "channels_first"])
def test_matches_torch_autograd(dtype, axis_case, rng):
    torch = pytest.importorskip("torch")
    shape = (4, 6, 9) if axis_case == "last" else (2, 6, 3, 4)
    x = rng.normal(1, 2, shape).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    n = 9 if axis_case == "last" else 6
    w = rng.normal(1, 0.3, n).astype(dtype)
    b = rng.normal(0, 0.3, n).astype(dtype)
    axis = -1 if axis_case == "last" else 1
    tol = 1e-5 if dtype == "float32" else 1e-12

    def to_last(a):
        return np.moveaxis(a, axis, -1)

    xt = torch.tensor(to_last(x).copy(), requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    torch.nn.functional.layer_norm(xt, (n,), wt, bt, 1e-5).backward(
        torch.tensor(to_last(dy).copy())
    )
    dx, dw, db = fastnorm.layer_norm_backward(dy, x, weight=w, axis=axis)
    np.testing.assert_allclose(to_last(dx), xt.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(db, bt.grad.numpy(), rtol=tol, atol=tol * 10)

    xt = torch.tensor(to_last(x).copy(), requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    torch.nn.functional.rms_norm(xt, (n,), wt, None).backward(torch.tensor(to_last(dy).copy()))
    dx, dw = fastnorm.rms_norm_backward(dy, x, weight=w, axis=axis)
    np.testing.assert_allclose(to_last(dx), xt.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("axis", [-1, 0])
def test_bitwise_identical_across_thread_counts(op, axis, rng):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x = rng.normal(size=(700, 300)).astype(np.float32)
    dy = rng.normal(size=(700, 300)).astype(np.float32)
    w = rng.normal(size=x.shape[axis]).astype(np.float32)
    results = []
    for n in (1, 2, 3):
        with threadpoolctl.threadpool_limits(limits=n, user_api="openmp"):
            results.append(BACKWARD[op](dy, x, weight=w, axis=axis))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape", [(8, 768), (600, 1000), (40, 20000)])
def test_normalized_shape_parameters_sum_as_the_general_rule(op, dtype, shape, rng):
    """Parameters of the normalized shape take the short path (their sums
    rounded straight into the compute dtype, one item or many); the same
    weight and bias with x's rank, 1 on the batch axes, take the general
    one (float64 sums reduced to the parameter's shape, then rounded).
    Both give the same bits, as new C-contiguous arrays."""
    x = rng.normal(size=shape).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    ctype = np.float64 if dtype == np.float64 else np.float32
    w = rng.normal(1, 0.5, shape[-1]).astype(ctype)
    extra = {"bias": np.zeros(shape[-1], ctype)} if op == "layer_norm" else {}
    short = BACKWARD[op](dy, x, weight=w, **extra)
    extra = {"bias": np.zeros((1, shape[-1]), ctype)} if op == "layer_norm" else {}
    general = BACKWARD[op](dy, x, weight=w.reshape(1, -1), **extra)
    assert np.array_equal(short[0], general[0])
    for a, b in zip(short[1:], general[1:]):
        assert a.dtype == ctype and a.shape == (shape[-1],) and a.flags.c_contiguous
        assert a.flags.owndata
        assert np.array_equal(a, b.reshape(-1))


@pytest.mark.any_isa
@pytest.mark.slow
def test_float32_parameter_sums_at_65536_rows():
    """dweight and dbias stay within 1e-4 relative of float64 at (65536, 1024)."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((65536, 1024), dtype=np.float32)
    dy = rng.standard_normal((65536, 1024), dtype=np.float32)
    w = np.ones(1024, np.float32)
    _, dw, db = fastnorm.layer_norm_backward(dy, x, weight=w)
    _, dw64, db64 = fastnorm.layer_norm_backward(
        dy.astype(np.float64), x.astype(np.float64), weight=w.astype(np.float64)
    )
    for got, want in ((dw, dw64), (db, db64)):
        rel = np.abs(got - want) / np.maximum(np.abs(want), 1e-3 * np.abs(want).max())
        assert rel.max() <= 1e-4, rel.max()


def test_large_mean_float32_dx_is_accurate():
    """dx stays accurate where |mean| >> std, even from float32 forward stats."""
    rng = np.random.default_rng(12)
    x = (1e4 + 0.1 * rng.standard_normal((6, 512))).astype(np.float32)
    dy = rng.standard_normal((6, 512)).astype(np.float32)
    _, mean, rstd = fastnorm.layer_norm(x, return_stats=True)
    dx_ref = reference_backward("layer_norm", dy, x, (1,))[0]
    for kw in ({}, {"mean": mean, "rstd": rstd}):
        dx = fastnorm.layer_norm_backward(dy, x, **kw)[0]
        err = np.abs(dx - dx_ref).max() / np.abs(dx_ref).max()
        assert err <= 1e-5, (kw.keys(), err)


@pytest.mark.parametrize("op", OPS)
def test_nan_row_stays_in_its_row(op):
    x = np.random.default_rng(1).normal(size=(4, 9))
    x[2, 3] = np.nan
    dx = BACKWARD[op](np.ones_like(x), x)[0]
    assert np.isnan(dx[2]).all() and np.isfinite(np.delete(dx, 2, axis=0)).all()


X = np.ones((4, 8), np.float32)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"dy": np.ones((4, 7))}, ValueError, r"dy has shape \(4, 7\) but x has shape \(4, 8\)"),
        ({"dy": np.ones((4, 8), complex)}, TypeError, "dy must be a real"),
        ({"rstd": np.ones((4,))}, ValueError, r"rstd has shape \(4,\) .*\(4, 1\)"),
        ({"weight": np.ones(3)}, ValueError, r"weight with shape \(3,\)"),
        ({"normalized_shape": 5}, ValueError, "normalized_shape"),
        ({"axis": 3}, np.exceptions.AxisError, "out of bounds"),
        ({"eps": -1.0}, ValueError, "eps"),
    ],
)
def test_errors(op, kwargs, exc, match):
    args = dict(kwargs)
    dy = args.pop("dy", X)
    with pytest.raises(exc, match=match):
        BACKWARD[op](dy, X, **args)


def test_bias_is_checked_before_x():
    """layer_norm_backward checks bias before x, as it did before the call
    specification: of a bad bias and a bad x, the bias is named."""
    with pytest.raises(TypeError, match="bias must be a real numeric array"):
        fastnorm.layer_norm_backward(X, np.ones((4, 8), np.longdouble), bias=np.ones(8, complex))


def test_mean_without_rstd_is_an_error():
    with pytest.raises(ValueError, match="mean was given without rstd"):
        fastnorm.layer_norm_backward(X, X, mean=np.ones((4, 1), np.float32))
    with pytest.raises(ValueError, match=r"mean has shape \(1, 8\)"):
        fastnorm.layer_norm_backward(X, X, mean=np.ones((1, 8)), rstd=np.ones((4, 1)))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("n", [5, 16, 100, 513, 1100])
def test_streaming_dx_stores(op, n, rng):
    """dx written with streaming stores (normally only for >= 16 MiB) is right
    for rows of any length and alignment."""
    previous = fastnorm._core.set_stream_min_bytes(0)
    try:
        x = rng.normal(1, 2, (11, n)).astype(np.float32)
        dy = rng.normal(size=(11, n)).astype(np.float32)
        w = rng.normal(1, 0.2, n).astype(np.float32)
        out = BACKWARD[op](dy, x, weight=w)
        x_view, dy_view = x[1:], dy[1:]  # rows at other alignments
        out_view = BACKWARD[op](dy_view, x_view, weight=w)
    finally:
        fastnorm._core.set_stream_min_bytes(previous)
    dx_ref, dw_ref, _ = reference_backward(op, dy, x, (1,), w)
    assert_close(out[0], dx_ref, np.float32)
    assert_close(out[1], dw_ref, np.float32)
    assert_close(out_view[0], reference_backward(op, dy_view, x_view, (1,), w)[0], np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_element_rms_rows_near_zero(dtype):
    """RMSNorm over one element: dx = g * eps * rstd^3 is what is left after
    g - xhat * mean(g * xhat) cancels; with |x| near sqrt(eps) the portable
    kernel's wide accumulation must resolve it (found by Hypothesis)."""
    x = np.array([[3.17, 0.434, -1.69e-5, 5.5e-2, -2.2]], dtype).T.copy()  # 5 rows of 1
    dy = np.cos(np.arange(5.0)).reshape(5, 1).astype(dtype)
    dx = fastnorm.rms_norm_backward(dy, x)[0]
    assert_close(dx, reference_backward("rms_norm", dy, x, (1,))[0], dtype)
