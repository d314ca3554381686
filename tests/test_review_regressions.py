"""Regressions for defects found in review: aliasing, thread independence of
the channels-first path, and validation gaps."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnorm
from _reference import assert_close, reference


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
    y_ref = getattr(fastnorm, op)(h_ref)
    fused = fastnorm.add_layer_norm if op == "layer_norm" else fastnorm.add_rms_norm
    y, h = fused(x, r, residual_out=r)
    assert h is r
    assert np.array_equal(h, h_ref, equal_nan=True)
    assert np.array_equal(y, y_ref, equal_nan=True)


def test_weight_inside_out_is_read_before_it_is_overwritten(rng):
    x = rng.normal(size=(4, 16)).astype(np.float32)
    w = rng.normal(size=16).astype(np.float32)
    b = rng.normal(size=16).astype(np.float32)
    expected = reference("layer_norm", x, (1,), w, b)[0]
    o = np.empty_like(x)
    o[0], o[1] = w, b
    fastnorm.layer_norm(x, weight=o[0], bias=o[1], out=o)
    assert_close(o, expected, np.float32)
    xx = x.copy()
    xx[0], xx[1] = w, b
    expected2 = reference("layer_norm", xx, (1,), w, b)[0]
    fastnorm.layer_norm(xx, weight=xx[0], bias=xx[1], out=xx)
    assert_close(xx, expected2, np.float32)
    rr = rng.normal(size=(4, 16)).astype(np.float32)
    h_ref = x + rr
    y_ref = fastnorm.layer_norm(h_ref, weight=rr[0].copy())
    y, h = fastnorm.add_layer_norm(x, rr, weight=rr[0], residual_out=rr)
    assert np.array_equal(h, h_ref) and np.array_equal(y, y_ref)


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("nan", [False, True])
def test_channels_first_bitwise_across_thread_counts(op, nan, rng):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x = rng.normal(size=(512, 129)).astype(np.float32)
    if nan:
        x[5, 70] = np.nan
    results = []
    for n in (1, 2, 3):
        with threadpoolctl.threadpool_limits(limits=n, user_api="openmp"):
            results.append(getattr(fastnorm, op)(x, axis=0, return_stats=True))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b, equal_nan=True)
    assert np.isnan(results[0][0][:, 70]).all() == nan
    assert not np.isnan(results[0][0][:, 80]).any()


@pytest.mark.any_isa
def test_validation_gaps():
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="eps"):
        fastnorm.layer_norm(x, eps=10 ** 400)
    with pytest.raises(TypeError, match="masked arrays"):
        fastnorm.layer_norm(np.ma.masked_array(x, mask=np.eye(2, 4, dtype=bool)))
    buf = np.empty((2, 4), np.float32)
    with pytest.raises(ValueError, match="out and residual_out overlap"):
        fastnorm.add_layer_norm(x, x, out=buf, residual_out=buf)
    shared = np.lib.stride_tricks.as_strided(np.zeros(4, np.float32), (2, 4), (0, 4))
    with pytest.raises(ValueError, match="share memory"):
        fastnorm.layer_norm(x, out=shared)
    env = dict(os.environ, FASTNORM_BUFFER_CACHE_MB="99999999999999")
    out = subprocess.run([sys.executable, "-c", "import fastnorm; print('ok')"], env=env,
                         capture_output=True, text=True, cwd=os.path.dirname(__file__))
    assert out.stdout.strip() == "ok" and "FASTNORM_BUFFER_CACHE_MB" in out.stderr


# ---- second review: half precision and per-sample modulation ----------------

def test_dweight_keeps_its_rank_when_only_the_bias_is_per_sample(rng):
    x = rng.normal(0, 1, (4, 6, 40))
    dy = rng.normal(0, 1, x.shape)
    w = rng.normal(1, 0.3, (1, 1, 40))
    b = rng.normal(0, 0.3, (4, 1, 1))
    dx, dw, db = fastnorm.layer_norm_backward(dy, x, weight=w, bias=b)
    assert dw.shape == (1, 1, 40) and db.shape == (4, 1, 1)
    _, dw_shared, _ = fastnorm.layer_norm_backward(dy, x, weight=w.reshape(40))
    assert np.allclose(dw.reshape(40), dw_shared, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", ["add_layer_norm", "add_rms_norm"])
def test_fused_add_takes_per_sample_parameters(op, rng):
    x = rng.normal(0, 1, (4, 5, 48)).astype(np.float32)
    r = rng.normal(0, 1, x.shape).astype(np.float32)
    w = rng.normal(1, 0.3, (4, 1, 48)).astype(np.float32)
    extra = {"bias": rng.normal(0, 0.3, (4, 1, 48)).astype(np.float32)} \
        if op == "add_layer_norm" else {}
    y, h = getattr(fastnorm, op)(x, r, weight=w, **extra)
    y2 = getattr(fastnorm, op[4:])(np.add(x, r), weight=w, **extra)
    assert np.array_equal(h, x + r) and np.array_equal(y, y2)


def test_errors_name_the_shape_the_caller_passed():
    x = np.ones((4, 5, 6), np.float32)
    with pytest.raises(ValueError, match=r"weight with shape \(1, 1, 7\)"):
        fastnorm.layer_norm(x, weight=np.ones((1, 1, 7), np.float32))
    with pytest.raises(ValueError, match=r"weight with shape \(1, 1, 7\)"):
        fastnorm.layer_norm_backward(x, x, weight=np.ones((1, 1, 7), np.float32))


@pytest.mark.any_isa
def test_bfloat16_module_loads_a_torch_bfloat16_state_dict():
    torch = pytest.importorskip("torch")
    import ml_dtypes
    m = torch.nn.LayerNorm(8, dtype=torch.bfloat16)
    with torch.no_grad():
        m.weight.copy_(torch.linspace(0.5, 2, 8))
    f = fastnorm.LayerNorm(8, dtype=ml_dtypes.bfloat16)
    f.load_state_dict(m.state_dict())
    assert f.weight.dtype == ml_dtypes.bfloat16
    assert np.array_equal(f.weight.astype(np.float32), m.weight.float().detach().numpy())


def test_bfloat16_fused_sum_keeps_subnormals():
    """h must be x + residual as NumPy rounds it, subnormals included (the
    AVX512_BF16 instruction would flush them)."""
    import ml_dtypes
    x = np.full((2, 40), 3e-39, np.float32).astype(ml_dtypes.bfloat16)
    r = np.full((2, 40), 1e-39, np.float32).astype(ml_dtypes.bfloat16)
    x[1] = np.linspace(-1, 1, 40).astype(ml_dtypes.bfloat16)
    _, h = fastnorm.add_layer_norm(x, r)
    assert np.array_equal(h.view(np.uint16), np.add(x, r).view(np.uint16))


def test_half_center_is_exact_in_every_layout():
    """A row symmetric about its mean normalizes its middle element to
    exactly 0, contiguous or strided (portable kernel)."""
    import ml_dtypes
    row = np.array([-3.5, -1.25, 0.375, 2.0, 3.875], np.float32)
    x = (row[None, :] + np.arange(6, dtype=np.float32)[:, None] * 0.0).astype(ml_dtypes.bfloat16)
    x = np.concatenate([x, -x[:, ::-1]], axis=1)  # symmetric rows: mean exactly 0
    x = np.concatenate([x, np.zeros((6, 1), x.dtype)], axis=1)
    big = np.zeros((12, 22), x.dtype)
    big[::2, ::2] = x
    for view in (x, big[::2, ::2]):
        y = fastnorm.layer_norm(view)
        assert y[:, -1].astype(np.float32).tolist() == [0.0] * 6
