"""The main job, ``python -m fastnorm``, runs and passes its self-check."""
import os
import subprocess
import sys

import numpy as np

from fastnorm import __main__ as main_job


def test_python_m_fastnorm_runs():
    out = subprocess.run([sys.executable, "-m", "fastnorm", "--repeats", "3"],
                         capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "self-check: PASSED" in out.stdout
    assert "OpenMP" in out.stdout and "speed-up" in out.stdout


def test_self_check_detects_a_wrong_result(monkeypatch):
    """The self-check must be able to fail: break layer_norm and it does."""
    import fastnorm
    real = fastnorm.layer_norm
    monkeypatch.setattr(fastnorm, "layer_norm", lambda x, *a, **k: real(x, *a, **k) * np.float32(1.001))
    results = main_job.self_check()
    assert any(err > tol for name, err, tol in results if name.startswith("layer_norm"))
    assert main_job.main(["--repeats", "1"]) == 1
