import os

import numpy as np
import pytest

import fastnorm


def pytest_report_header(config):
    core = fastnorm._core
    return (
        f"fastnorm {fastnorm.__version__} from {os.path.dirname(fastnorm.__file__)}; "
        f"isa={core.isa()} openmp={core.openmp_enabled} threads={core.max_threads()}"
    )


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "any_isa: the test does not depend on the kernel set; run it once"
    )
    config.addinivalue_line(
        "markers",
        "slow: a subprocess, a compile, or 16M-element arrays; left out of a plain "
        "`pytest` run, run by `pytest -m slow` (CI runs both)",
    )
    config.addinivalue_line(
        "markers",
        "isas(*names): run only on these kernel sets (those this CPU has); "
        "for tests of bits that only some sets share",
    )


def pytest_generate_tests(metafunc):
    """Tests of the kernels' numerics run once per kernel set this CPU
    supports; tests marked any_isa run once, on the default set."""
    if "isa" in metafunc.fixturenames:
        isas = fastnorm.available_isas()
        if metafunc.definition.get_closest_marker("any_isa"):
            isas = isas[:1]
        only = metafunc.definition.get_closest_marker("isas")
        if only:
            isas = [i for i in isas if i in only.args]
        metafunc.parametrize("isa", isas, indirect=True)


@pytest.fixture(autouse=True)
def isa(request):
    """The kernel set the test runs with (pinned for its duration)."""
    previous = fastnorm.get_isa()
    fastnorm._core.set_isa(request.param)
    yield request.param
    fastnorm._core.set_isa(previous)
