"""examples/torch_patch.py: the patched model agrees with torch's own norms."""

import os
import runpy
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytestmark = [pytest.mark.any_isa, pytest.mark.slow]  # subprocesses, compiles
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "torch_patch.py")


def test_patched_model_agrees():
    module = runpy.run_path(EXAMPLE)
    logit_diff, grad_diff, timings = module["run"](steps=2, quiet=True)
    assert logit_diff < 1e-4 and grad_diff < 1e-4
    assert set(timings) == {"fastnorm", "torch"}


def test_script_runs():
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        ),
    )
    out = subprocess.run(
        [sys.executable, EXAMPLE, "--steps", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "outputs agree" in out.stdout and "no-grad forward" in out.stdout
