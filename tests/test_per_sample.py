"""Per-sample modulation (AdaLN): weight and bias with x's number of
dimensions broadcast against x itself, fused into the same pass; the
backward sums dweight and dbias to their own shapes."""

import numpy as np
import pytest
from _reference import (
    BFLOAT16,
    assert_close,
    max_error,
    max_ulp_error,
    reference,
    reference_backward,
    sum_over_broadcast,
)

import fastnorm

# (x shape, axes, weight shape, bias shape)
CASES = [
    ((3, 5, 64), (2,), (3, 1, 64), (3, 1, 64)),  # DiT: per-sample scale and shift
    ((3, 5, 70), (2,), (3, 5, 70), (1, 5, 70)),  # per row, and per position
    ((3, 5, 16), (2,), (3, 1, 1), (3, 1, 16)),  # a scalar scale per sample
    ((3, 5, 16), (2,), (3, 1, 16), (16,)),  # mixed: bias by the normalized rule
    ((2, 24, 3, 5), (1,), (2, 24, 1, 1), (2, 24, 1, 1)),  # channels-first
    ((2, 3, 4, 33), (2, 3), (2, 1, 4, 33), (2, 1, 1, 33)),  # two normalized axes
    ((4, 6), (1,), (4, 6), None),  # weight as big as x
]


def _params(case, dtype, rng):
    shape, axes, wshape, bshape = case
    w = rng.normal(1, 0.5, wshape).astype(dtype)
    b = None if bshape is None else rng.normal(0, 0.5, bshape).astype(dtype)
    return shape, axes, w, b


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("layout", ["C", "F"])
def test_forward_matches_reference(op, dtype, case, layout, rng):
    shape, axes, w, b = _params(CASES[case], dtype, rng)
    if op == "rms_norm":
        b = None
    x = rng.normal(1, 2, shape).astype(dtype)
    if layout == "F":
        x = np.asfortranarray(x)
    extra = {"bias": b} if op == "layer_norm" else {}
    y = getattr(fastnorm, op)(x, weight=w, axis=axes, **extra)
    assert y.shape == x.shape and y.dtype == dtype
    assert_close(y, reference(op, x, axes, w, b)[0], dtype)


@pytest.mark.parametrize("dtype", [np.float16, BFLOAT16], ids=["float16", "bfloat16"])
def test_half_forward_within_one_ulp(dtype, rng):
    shape, axes, w, b = _params(CASES[0], np.float32, rng)
    x = rng.normal(1, 2, shape).astype(dtype)
    y = fastnorm.layer_norm(x, weight=w, axis=axes)  # no bias: strict 1 ulp
    assert max_ulp_error(y, reference("layer_norm", x, axes, w)[0], dtype) <= 1.0


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_equals_normalize_then_modulate(op, rng):
    """The fused pass equals normalizing without affine and then applying
    the per-sample scale and shift, up to float32 rounding."""
    x = rng.normal(0, 1, (4, 9, 48)).astype(np.float32)
    w = rng.normal(1, 0.3, (4, 1, 48)).astype(np.float32)
    b = rng.normal(0, 0.3, (4, 1, 48)).astype(np.float32)
    extra = {"bias": b} if op == "layer_norm" else {}
    y = getattr(fastnorm, op)(x, weight=w, **extra)
    two_step = getattr(fastnorm, op)(x) * w + (b if op == "layer_norm" else 0)
    assert np.allclose(y, two_step, rtol=1e-6, atol=1e-6)
    # one sample at a time, with its own 1-D weight, gives the same result
    for s in range(4):
        one = getattr(fastnorm, op)(
            x[s], weight=w[s, 0], **({"bias": b[s, 0]} if op == "layer_norm" else {})
        )
        assert max_error(y[s], one) <= 1e-6


@pytest.mark.parametrize("op", ["add_layer_norm", "add_rms_norm"])
def test_fused_add_takes_per_sample_parameters(op, rng):
    x = rng.normal(0, 1, (4, 5, 48)).astype(np.float32)
    r = rng.normal(0, 1, x.shape).astype(np.float32)
    w = rng.normal(1, 0.3, (4, 1, 48)).astype(np.float32)
    extra = (
        {"bias": rng.normal(0, 0.3, (4, 1, 48)).astype(np.float32)}
        if op == "add_layer_norm"
        else {}
    )
    y, h = getattr(fastnorm, op)(x, r, weight=w, **extra)
    y2 = getattr(fastnorm, op[4:])(np.add(x, r), weight=w, **extra)
    assert np.array_equal(h, x + r) and np.array_equal(y, y2)


def test_batch_ones_is_the_shared_rule(rng):
    x = rng.normal(0, 1, (4, 9, 48)).astype(np.float32)
    w = rng.normal(1, 0.3, 48).astype(np.float32)
    a = fastnorm.layer_norm(x, weight=w.reshape(1, 1, 48), bias=w.reshape(1, 1, 48))
    b = fastnorm.layer_norm(x, weight=w, bias=w)
    assert np.array_equal(a, b)


def test_stats_out_and_threads(rng):
    from threadpoolctl import threadpool_limits

    x = rng.normal(0, 1, (8, 300, 64)).astype(np.float32)
    w = rng.normal(1, 0.3, (8, 1, 64)).astype(np.float32)
    b = rng.normal(0, 0.3, (8, 1, 64)).astype(np.float32)
    results = []
    for n in (1, 2):
        with threadpool_limits(n):
            out = np.empty_like(x)
            y, mean, rstd = fastnorm.layer_norm(x, weight=w, bias=b, out=out, return_stats=True)
            assert y is out
            results.append((y.copy(), mean, rstd))
    _, mean_ref, rstd_ref = reference("layer_norm", x, (2,))
    assert_close(results[0][1], mean_ref, np.float32)
    assert_close(results[0][2], rstd_ref, np.float32)
    for a, b_ in zip(results[0], results[1]):
        assert np.array_equal(a, b_)


@pytest.mark.parametrize(
    "wshape,bshape",
    [
        ((3, 2, 64), None),  # x's ndim but 2 does not broadcast against 5
        ((5, 64), None),  # more dims than the normalized shape, fewer than x
        ((1, 3, 5, 64), None),  # more dims than x
        (None, (3, 5, 63)),
    ],
)
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm", "layer_norm_backward"])
def test_shapes_that_fit_neither_rule(wshape, bshape, op, rng):
    if op == "rms_norm" and bshape is not None:
        return
    x = rng.normal(0, 1, (3, 5, 64)).astype(np.float32)
    w = None if wshape is None else np.ones(wshape, np.float32)
    b = None if bshape is None else np.ones(bshape, np.float32)
    shown = wshape if wshape is not None else bshape
    with pytest.raises(
        ValueError,
        match=r"cannot be broadcast to the normalized shape \(64,\)"
        r".*against x with shape \(3, 5, 64\)",
    ) as info:
        if op == "layer_norm":
            fastnorm.layer_norm(x, weight=w, bias=b)
        elif op == "rms_norm":
            fastnorm.rms_norm(x, weight=w)
        else:
            fastnorm.layer_norm_backward(x, x, weight=w, bias=b)
    assert str(tuple(shown)) in str(info.value)


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("with_stats", [False, True])
def test_backward_sums_to_own_shapes(op, dtype, case, with_stats, rng):
    shape, axes, w, b = _params(CASES[case], dtype, rng)
    x = rng.normal(1, 2, shape).astype(dtype)
    dy = rng.normal(0, 1, shape).astype(dtype)
    stats = {}
    if with_stats:
        res = getattr(fastnorm, op)(
            x, weight=w, axis=axes, return_stats=True, **({"bias": b} if op == "layer_norm" else {})
        )
        stats = {"mean": res[1], "rstd": res[2]} if op == "layer_norm" else {"rstd": res[1]}
    if op == "layer_norm":
        dx, dw, db = fastnorm.layer_norm_backward(dy, x, weight=w, bias=b, axis=axes, **stats)
    else:
        dx, dw = fastnorm.rms_norm_backward(dy, x, weight=w, axis=axes, **stats)
    dx_ref, dw_full, db_full = reference_backward(op, dy, x, axes, w, full=True)
    assert dx.dtype == dtype and dw.dtype == dtype and dw.shape == w.shape
    assert_close(dx, dx_ref, dtype)
    dw_ref = sum_over_broadcast(dw_full, w.shape, shape, axes)
    assert max_error(dw, dw_ref) <= (1e-5 if dtype == np.float32 else 1e-12) * max(
        1.0, float(np.abs(dw_ref).max())
    )
    if op == "layer_norm":
        bshape = tuple(shape[a] for a in axes) if b is None else b.shape
        db_ref = sum_over_broadcast(db_full, bshape, shape, axes)
        assert db.shape == bshape
        assert max_error(db, db_ref) <= (1e-5 if dtype == np.float32 else 1e-12) * max(
            1.0, float(np.abs(db_ref).max())
        )


def test_dweight_keeps_its_rank_when_only_the_bias_is_per_sample(rng):
    x = rng.normal(0, 1, (4, 6, 40))
    dy = rng.normal(0, 1, x.shape)
    w = rng.normal(1, 0.3, (1, 1, 40))
    b = rng.normal(0, 0.3, (4, 1, 1))
    dx, dw, db = fastnorm.layer_norm_backward(dy, x, weight=w, bias=b)
    assert dw.shape == (1, 1, 40) and db.shape == (4, 1, 1)
    _, dw_shared, _ = fastnorm.layer_norm_backward(dy, x, weight=w.reshape(40))
    assert np.allclose(dw.reshape(40), dw_shared, rtol=1e-12, atol=1e-12)


def test_backward_matches_torch_autograd(rng):
    torch = pytest.importorskip("torch")
    x = rng.normal(0, 1, (3, 7, 32))
    w = rng.normal(1, 0.3, (3, 1, 32))
    b = rng.normal(0, 0.3, (3, 1, 32))
    dy = rng.normal(0, 1, x.shape)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.layer_norm(tx, (32,), eps=1e-5) * tw + tb
    ty.backward(torch.tensor(dy))
    dx, dw, db = fastnorm.layer_norm_backward(dy, x, weight=w, bias=b)
    y = fastnorm.layer_norm(x, weight=w, bias=b)
    assert np.allclose(y, ty.detach().numpy(), atol=1e-12)
    for ours, theirs in ((dx, tx.grad), (dw, tw.grad), (db, tb.grad)):
        assert np.allclose(ours, theirs.numpy(), atol=1e-10)


def test_view_whose_normalized_axes_need_a_work_copy(rng):
    """Normalized axes that are not one strided run go through a work copy;
    per-sample parameters follow x there."""
    big = rng.normal(0, 1, (3, 4, 10, 12)).astype(np.float32)
    x = big[:, :, ::2, ::3]
    w = rng.normal(1, 0.3, (3, 1, 5, 4)).astype(np.float32)
    b = rng.normal(0, 0.3, (3, 4, 1, 4)).astype(np.float32)
    y = fastnorm.layer_norm(x, weight=w, bias=b, axis=(2, 3))
    assert_close(y, reference("layer_norm", x, (2, 3), w, b)[0], np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_per_sample_backward_of_short_rows_forms_g_in_double(dtype):
    """Found by the guard-page fuzzer (layer_norm_backward, axis=1 of length
    2, per-sample weight): in a two-element row dx = rstd * g' * eps / (var
    + eps) cancels, and g = dy * w rounded to float32 first put 7e-6 into dx.
    Short rows form g in double, as the kernels do for shared weights."""
    rng = np.random.default_rng(3)
    x = (5 + 0.01 * rng.standard_normal((256, 2, 4))).astype(dtype)
    dy = (3 * rng.standard_normal(x.shape)).astype(dtype)
    w = rng.normal(1, 0.5, (256, 1, 4)).astype(dtype)
    dx = fastnorm.layer_norm_backward(dy, x, axis=1, weight=w)[0]
    assert dx.dtype == dtype
    assert_close(dx, reference_backward("layer_norm", dy, x, (1,), w)[0], dtype)
