"""fastnorm's typing is its own annotations (py.typed; stubs only for the
compiled modules): what mypy accepts and refuses in a user's code."""

import os
import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.any_isa, pytest.mark.slow]  # a mypy run: seconds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# each line marked "# error" must be refused, and only those
USER_CODE = """\
import numpy as np
import fastnorm

x = np.ones((4, 8), np.float32)
y: np.ndarray = fastnorm.layer_norm(x)
y, mean, rstd = fastnorm.layer_norm(x, 8, return_stats=True)
y, rstd = fastnorm.rms_norm(x, axis=-1, return_stats=True)
dx, dw = fastnorm.rms_norm_backward(x, x)
dx, dw, db = fastnorm.layer_norm_backward(x, x)
keys: list[str] = fastnorm.LayerNorm(8).load_state_dict({}).missing_keys
wrong: np.ndarray = fastnorm.layer_norm(x, return_stats=True)  # error
y, rstd, extra = fastnorm.rms_norm(x, return_stats=True)  # error
y, rstd = fastnorm.rms_norm(x, return_stats=True, out=x)
fastnorm.layer_norm(x, eps="1e-5")  # error
fastnorm.layer_norm(x, axis=1.5)  # error
fastnorm.RMSNorm(8)(x).shape
fastnorm.RMSNorm(8).weight.shape  # error
"""


def test_mypy_sees_the_return_stats_overloads_and_the_argument_types(tmp_path):
    pytest.importorskip("mypy")
    (tmp_path / "user.py").write_text(USER_CODE)
    run = subprocess.run(
        # the project's mypy settings, for this Python (NumPy's own stubs
        # are Any to mypy for versions NumPy no longer supports)
        [sys.executable, "-m", "mypy", "--no-incremental", "--config-file",
         os.path.join(ROOT, "pyproject.toml"), "--python-version",
         f"{sys.version_info[0]}.{sys.version_info[1]}", "user.py"],
        cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "MYPYPATH": ROOT},  # this checkout's fastnorm
    )  # fmt: skip
    refused = {int(n) for n in re.findall(r"^user\.py:(\d+): error:", run.stdout, re.M)}
    expected = {i for i, line in enumerate(USER_CODE.splitlines(), 1) if line.endswith("# error")}
    assert refused == expected, run.stdout + run.stderr
