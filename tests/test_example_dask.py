"""The out-of-core example (examples/dask_zarr.py) runs at a small size: it
writes a Zarr store, normalizes it on Dask into another, and its rows match
in-memory fastnorm bit for bit (the example asserts that itself)."""

import os
import runpy
import subprocess
import sys

import pytest

pytest.importorskip("dask.array")
pytest.importorskip("zarr")

pytestmark = [pytest.mark.any_isa, pytest.mark.slow]  # subprocesses, compiles
EXAMPLE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "dask_zarr.py"
)


def test_pipeline_checks_rows_and_keeps_memory_to_a_few_blocks(tmp_path):
    import dask

    module = runpy.run_path(EXAMPLE)
    with dask.config.set(scheduler="synchronous"):
        result = module["run"](gib=0.03, cols=256, chunk_rows=512, folder=str(tmp_path), quiet=True)
    assert result["rows_checked"] == 8
    assert result["shape"][0] % 512 == 0 and result["shape"][0] * 256 * 4 >= 0.02 * (1 << 30)
    assert (tmp_path / "y.zarr").exists()


def test_script_runs_with_a_size_argument(tmp_path):
    out = subprocess.run(
        [sys.executable, EXAMPLE, "--gib", "0.02", "--cols", "256", "--chunk-rows", "512",
         "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "checked bit for bit" in out.stdout and "peak RSS" in out.stdout
