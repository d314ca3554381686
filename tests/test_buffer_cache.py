"""The output buffer cache: large outputs fastnorm allocates are recycled
once their array dies, and never while it lives."""

import gc
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from _reference import assert_close, reference

import fastnorm
from fastnorm import _core

pytestmark = pytest.mark.any_isa
SHAPE = (1024, 1536)  # 6 MiB of float32: above the 4 MiB threshold


def data_ptr(a):
    return a.__array_interface__["data"][0]


@pytest.fixture
def fresh_cache():
    previous = _core.buffer_cache_info()[2]
    _core.set_buffer_cache(0)
    _core.set_buffer_cache(previous)
    yield
    _core.set_buffer_cache(0)
    _core.set_buffer_cache(previous)


def test_dead_output_is_reused(fresh_cache, rng):
    x = rng.normal(size=SHAPE).astype(np.float32)
    y1 = fastnorm.layer_norm(x)
    p1 = data_ptr(y1)
    del y1
    gc.collect()
    assert _core.buffer_cache_info()[:2] == (1, x.nbytes)
    y2 = fastnorm.rms_norm(x)
    assert data_ptr(y2) == p1
    assert _core.buffer_cache_info()[:2] == (0, 0)
    assert_close(y2, reference("rms_norm", x, (1,))[0], np.float32)


def test_live_output_is_never_shared(fresh_cache, rng):
    x = rng.normal(size=SHAPE).astype(np.float32)
    ys = [fastnorm.layer_norm(x) for _ in range(3)]
    assert len({data_ptr(y) for y in ys}) == 3
    expected = reference("layer_norm", x, (1,))[0]
    for y in ys:
        assert_close(y, expected, np.float32)
    view = ys[0][::2]
    del ys
    gc.collect()
    # the view keeps the first buffer alive: a new output must not reuse it
    y = fastnorm.layer_norm(x)
    lo, hi = data_ptr(view), data_ptr(view) + x.nbytes
    assert not lo <= data_ptr(y) < hi
    assert_close(view, expected[::2], np.float32)


def test_cache_cap_and_off(fresh_cache, rng):
    x = rng.normal(size=SHAPE).astype(np.float32)
    _core.set_buffer_cache(x.nbytes)  # room for one buffer
    a, b = fastnorm.layer_norm(x), fastnorm.layer_norm(x)
    del a, b
    gc.collect()
    assert _core.buffer_cache_info()[:2] == (1, x.nbytes)
    _core.set_buffer_cache(0)
    assert _core.buffer_cache_info()[:2] == (0, 0)
    y = fastnorm.layer_norm(x)
    assert y.flags.owndata  # plain NumPy allocation when the cache is off


@pytest.mark.slow
def test_environment_turns_cache_off():
    code = "from fastnorm import _core; print(_core.buffer_cache_info()[2])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=dict(os.environ, FASTNORM_BUFFER_CACHE_MB="0"),
        cwd=os.path.dirname(__file__),
    )
    assert out.stdout.strip() == "0", out.stderr


@pytest.mark.slow
def test_unusable_cache_size_in_environment_warns_and_import_succeeds():
    env = dict(os.environ, FASTNORM_BUFFER_CACHE_MB="99999999999999")
    out = subprocess.run(
        [sys.executable, "-c", "import fastnorm; print('ok')"],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.path.dirname(__file__),
    )
    assert out.stdout.strip() == "ok" and "FASTNORM_BUFFER_CACHE_MB" in out.stderr


def test_cached_output_behaves_like_an_array(fresh_cache, rng):
    x = rng.normal(size=SHAPE).astype(np.float32)
    y = fastnorm.layer_norm(x)
    assert y.flags.c_contiguous and y.flags.writeable and y.dtype == np.float32
    y += 1  # writable, ordinary arithmetic
    assert np.isfinite(y).all()
    z = np.ascontiguousarray(y.T).T
    assert np.array_equal(z, y)


def test_backward_partial_sums_keep_out_of_the_output_cache(fresh_cache, rng):
    """The backward's partial sums (here 12 items x 65536 doubles = 6 MiB
    each for dweight and dbias, above the cache's threshold) use a buffer of
    their own: after the call the cache holds only the dead dx, and the
    gradients stay right."""
    n = 65536
    x = rng.normal(size=(48, n)).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    w = rng.normal(size=n).astype(np.float32)
    dx, dw, db = fastnorm.layer_norm_backward(dy, x, n, w, bias=np.zeros(n, np.float32))
    del dx
    gc.collect()
    assert _core.buffer_cache_info()[:2] == (1, x.nbytes)
    # the second call reuses the (dirty) buffer of the first: same bits
    again = fastnorm.layer_norm_backward(dy, x, n, w, bias=np.zeros(n, np.float32))
    assert np.array_equal(again[1], dw) and np.array_equal(again[2], db)
    # and a concurrent-looking reentry (the buffer taken) allocates afresh
    with ThreadPoolExecutor(2) as pool:
        runs = list(
            pool.map(
                lambda _: fastnorm.layer_norm_backward(dy, x, n, w, bias=np.zeros(n, np.float32)),
                range(4),
            )
        )
    for run in runs:
        assert np.array_equal(run[1], dw) and np.array_equal(run[2], db)
