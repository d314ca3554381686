import os

import numpy as np
import pytest

import fastnorm


def pytest_report_header(config):
    core = fastnorm._core
    return (f"fastnorm {fastnorm.__version__} from {os.path.dirname(fastnorm.__file__)}; "
            f"isa={core.isa()} openmp={core.openmp_enabled} threads={core.max_threads()}")


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)


@pytest.fixture(autouse=True, params=fastnorm.available_isas())
def isa(request):
    """Every test runs once per kernel set this CPU supports."""
    previous = fastnorm.get_isa()
    fastnorm._core.set_isa(request.param)
    yield request.param
    fastnorm._core.set_isa(previous)
