"""The main job, ``python -m fastnorm``, runs and passes its self-check."""

import os
import subprocess
import sys

import numpy as np
import pytest

from fastnorm import _testing
from fastnorm.bench import cli as main_job
from fastnorm.bench import harness

pytestmark = pytest.mark.any_isa


@pytest.mark.slow
def test_python_m_fastnorm_runs():
    out = subprocess.run(
        [sys.executable, "-m", "fastnorm", "--repeats", "3"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "self-check: PASSED" in out.stdout
    assert "OpenMP" in out.stdout and "speed-up" in out.stdout


def test_self_check_detects_a_wrong_result(monkeypatch):
    """The self-check must be able to fail: break layer_norm and it does."""
    import fastnorm

    real = fastnorm.layer_norm
    monkeypatch.setattr(
        fastnorm, "layer_norm", lambda x, *a, **k: real(x, *a, **k) * np.float32(1.001)
    )
    results = main_job.self_check()
    assert any(err > tol for name, err, tol in results if name.startswith("layer_norm"))
    assert main_job.main(["--repeats", "1"]) == 1


def test_bench_roof_is_named_by_what_it_copies_with():
    """Streaming stores where src/stream_copy.c has a streaming loop
    (x86-64), a plain memcpy elsewhere: the bench's notes say which."""
    streaming = _testing.stream_copy_isa() != "portable"
    assert ("streaming" in harness.roof_kind()) == streaming
    assert ("memcpy" in harness.roof_kind()) != streaming


@pytest.mark.slow
def test_bench_cli_prints_table_and_plot(tmp_path):
    pytest.importorskip("threadpoolctl")
    args = [
        sys.executable,
        "-m",
        "fastnorm",
        "bench",
        "--shapes",
        "4x96,2x300",
        "--threads",
        "1",
        "--repeats",
        "2",
        "--op",
        "layer_norm,rms_norm",
    ]
    try:
        import matplotlib  # noqa: F401

        plot = tmp_path / "bench.png"
        args += ["--plot", str(plot)]
    except ImportError:
        plot = None
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [
        line for line in out.stdout.splitlines() if line.startswith(("layer_norm", "rms_norm"))
    ]
    assert len(lines) == 4, out.stdout
    assert "% roof" in out.stdout and "x numpy" in out.stdout
    assert f"% roof is the time of a {harness.roof_kind()}" in out.stdout
    assert "]" in out.stderr  # the progress bar
    if plot is not None:
        assert plot.stat().st_size > 1000


@pytest.mark.slow
def test_bench_cli_rejects_bad_arguments():
    for bad in (["--shapes", "8by768"], ["--op", "batch_norm"], ["--layout", "channels_first"]):
        out = subprocess.run(
            [sys.executable, "-m", "fastnorm", "bench", *bad],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2 and "error" in out.stderr, (bad, out.stderr)
