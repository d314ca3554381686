"""A process forked after a multi-threaded call runs fastnorm on its one
thread: GNU OpenMP's team did not survive the fork, and entering a parallel
region in the child would wait forever for it."""

import io
import multiprocessing
import os
import sys

import numpy as np
import pytest

import fastnorm
from fastnorm import _core

pytestmark = [
    pytest.mark.any_isa,
    pytest.mark.skipif(
        not hasattr(os, "fork") or sys.platform == "darwin", reason="needs fork() (Linux/BSD)"
    ),
]

CHILD_TIMEOUT_S = 60
X = np.random.default_rng(5).standard_normal((4096, 1024), dtype=np.float32)
DY = np.random.default_rng(6).standard_normal((4096, 1024), dtype=np.float32)
W = np.random.default_rng(7).normal(1, 0.5, 1024).astype(np.float32)


def _large_calls():
    """Calls big enough to be split between threads in the parent."""
    return {
        "layer_norm": fastnorm.layer_norm(X, weight=W, bias=W),
        "rms_norm": fastnorm.rms_norm(X, weight=W),
        "channels_first": fastnorm.layer_norm(X, axis=0),
        "add_layer_norm": fastnorm.add_layer_norm(X, DY, weight=W)[0],
        "layer_norm_backward": fastnorm.layer_norm_backward(DY, X, weight=W),
        "rms_norm_backward": fastnorm.rms_norm_backward(DY, X, weight=W),
    }


def _in_child():
    results = _large_calls()
    config = io.StringIO()
    fastnorm.show_config(file=config)
    return (
        results,
        _core.max_threads(),
        _core.last_num_threads(),
        _core.in_forked_child(),
        config.getvalue(),
    )


def _run_in_forked_child():
    """_in_child() in a forked worker; fails (never hangs) if the worker
    does not answer within the timeout."""
    pool = multiprocessing.get_context("fork").Pool(1)
    try:
        result = pool.apply_async(_in_child)
        try:
            return result.get(timeout=CHILD_TIMEOUT_S)
        except multiprocessing.TimeoutError:
            pytest.fail(
                f"a forked child did not finish its fastnorm calls within "
                f"{CHILD_TIMEOUT_S} s (hung in OpenMP?)"
            )
    finally:
        pool.terminate()
        pool.join()


def _assert_bitwise_equal(a, b, name):
    if isinstance(a, tuple):
        assert len(a) == len(b), name
        for i, (u, v) in enumerate(zip(a, b)):
            _assert_bitwise_equal(u, v, f"{name}[{i}]")
        return
    if a is None:
        assert b is None, name
        return
    assert a.dtype == b.dtype and a.shape == b.shape, name
    assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), name


@pytest.mark.skipif(
    not _core.openmp_enabled or _core.max_threads() < 2,
    reason="needs an OpenMP build with 2+ threads",
)
def test_forked_child_after_threaded_call_runs_single_threaded_and_matches_parent():
    parent = _large_calls()
    assert _core.last_num_threads() >= 2  # the parent's OpenMP team exists
    assert not _core.in_forked_child()
    child, max_threads, last_threads, forked, config = _run_in_forked_child()
    assert forked and max_threads == 1 and last_threads == 1
    assert "forked child: single-threaded" in config
    for name in parent:
        _assert_bitwise_equal(parent[name], child[name], name)
    # the parent itself keeps its threads
    fastnorm.layer_norm(X)
    assert _core.last_num_threads() >= 2
