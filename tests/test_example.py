"""The NumPy training example trains: its loss goes down."""

import os
import runpy
import subprocess
import sys

import numpy as np
import pytest

pytestmark = [pytest.mark.any_isa, pytest.mark.slow]  # subprocesses, compiles
EXAMPLE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "train_mlp.py"
)


def test_loss_goes_down():
    module = runpy.run_path(EXAMPLE)
    losses = module["train"](steps=200, quiet=True)
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


def test_script_runs():
    out = subprocess.run(
        [sys.executable, EXAMPLE, "--steps", "150"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "final loss" in out.stdout
