"""OpenMP thread control: threadpoolctl and OMP_NUM_THREADS limit fastnorm's
threads, and the result does not depend on the thread count."""

import os
import subprocess
import sys

import numpy as np
import pytest

import fastnorm
from fastnorm import _core

threadpoolctl = pytest.importorskip("threadpoolctl")
needs_openmp = pytest.mark.skipif(
    not _core.openmp_enabled or (os.cpu_count() or 1) < 2,
    reason="needs an OpenMP build and 2+ cores",
)

BIG = np.random.default_rng(0).standard_normal((512, 1024), dtype=np.float32)


def test_threadpoolctl_sees_fastnorm_openmp():
    if not _core.openmp_enabled:
        pytest.skip("serial build")
    info = threadpoolctl.threadpool_info()
    assert any(i["user_api"] == "openmp" for i in info), info


@needs_openmp
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_threadpool_limits_caps_threads(op):
    fn = getattr(fastnorm, op)
    with threadpoolctl.threadpool_limits(limits=2, user_api="openmp"):
        fn(BIG)
        assert _core.last_num_threads() == 2
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert _core.max_threads() == 1
        fn(BIG)
        assert _core.last_num_threads() == 1


@needs_openmp
@pytest.mark.any_isa
@pytest.mark.slow
def test_omp_num_threads_env_caps_threads():
    code = (
        "import numpy as np, fastnorm; from fastnorm import _core; "
        "fastnorm.layer_norm(np.ones((512, 1024), np.float32)); "
        "print(_core.max_threads(), _core.last_num_threads())"
    )
    for n in ("1", "2"):
        env = dict(os.environ, OMP_NUM_THREADS=n)
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=os.path.dirname(__file__),
        )
        assert out.stdout.split() == [n, n], out.stdout + out.stderr


def test_small_calls_stay_on_one_thread():
    fastnorm.layer_norm(np.ones((8, 768), np.float32))
    assert _core.last_num_threads() == 1


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_bitwise_identical_across_thread_counts(op, axis):
    fn = getattr(fastnorm, op)
    results = []
    for n in (1, 2, 3):
        with threadpoolctl.threadpool_limits(limits=n, user_api="openmp"):
            results.append(fn(BIG, axis=axis, return_stats=True))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("nan", [False, True])
def test_channels_first_bitwise_across_thread_counts(op, nan, rng):
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
