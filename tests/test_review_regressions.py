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
