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


@pytest.fixture(autouse=True, params=fastnorm.available_isas())
def isa(request):
    """Every test runs once per kernel set this CPU supports."""
    if request.node.get_closest_marker("any_isa") and request.param != fastnorm.available_isas()[0]:
        pytest.skip("kernel-independent test: run with the default kernels only")
    previous = fastnorm.get_isa()
    fastnorm._core.set_isa(request.param)
    yield request.param
    fastnorm._core.set_isa(previous)
