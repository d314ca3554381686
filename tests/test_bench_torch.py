"""The fastnorm.torch comparison (``python -m fastnorm bench --torch``)
runs, prints every case, checks results and restores the process's state.
No timing is asserted here: speed is measured, never unit-tested.  The
project's torch targets, built on the same machinery, are tested in
test_targets.py."""

import io
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("threadpoolctl")

import fastnorm  # noqa: E402
from fastnorm.bench import cli as main_job  # noqa: E402
from fastnorm.bench import torch_cases  # noqa: E402

pytestmark = pytest.mark.any_isa

SMALL = torch_cases.TorchCase("layer_norm", "function", (8, 768), "float32", False, 1)
# a cheap case on 2 threads, to see the thread counts restored after it
SMALL_2_THREADS = torch_cases.TorchCase("layer_norm", "function", (8, 768), "float32", True, 2)


def table_lines(text):
    return [
        line
        for line in text.splitlines()
        if line.startswith(("layer_norm ", "rms_norm ", "LayerNorm ", "RMSNorm "))
    ]


@pytest.mark.slow
def test_cli_prints_every_case():
    args = ["--shapes", "8x768,4x300", "--threads", "1,2", "--repeats", "1"]
    out = subprocess.run(
        [sys.executable, "-m", "fastnorm", "bench", "--torch", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    cases = torch_cases.comparison_cases(
        ["layer_norm", "rms_norm"], [(8, 768), (4, 300)], "float32", [1, 2]
    )
    assert len(cases) == 16
    lines = table_lines(out.stdout)
    assert len(lines) == len(cases), out.stdout
    for case, line in zip(cases, lines):
        assert line.startswith(case.label), (case.label, line)
        assert int(line[46:50]) == case.threads, line
        assert "WRONG" not in line and "goal" not in out.stdout, line
    assert f"kernels {fastnorm.get_isa()}" in out.stdout
    assert "CPU: " in out.stdout and "lower is better" in out.stdout


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
def test_every_dtype_agrees_with_torch(dtype):
    """Each dtype --torch offers passes its check against torch (else the
    comparison would report WRONG RESULT for a harness tolerance)."""
    shapes = [(8, 768), (300, 4096)]
    cases = torch_cases.comparison_cases(["layer_norm", "rms_norm"], shapes, dtype, [1])
    if dtype == "float64":
        cases += torch_cases.comparison_cases(
            ["layer_norm", "rms_norm"], shapes, dtype, [1], backward=True
        )
    for case in cases:
        torch_cases.run_checked(case)


def test_comparison_cases_cover_both_forms_or_the_backward():
    forward = torch_cases.comparison_cases(["rms_norm"], [(2, 8)], "float32", [1, 2])
    assert [(c.form, c.grad, c.threads) for c in forward] == [
        ("function", False, 1),
        ("module", False, 1),
        ("function", False, 2),
        ("module", False, 2),
    ]
    backward = torch_cases.comparison_cases(["rms_norm"], [(2, 8)], "float32", [1], backward=True)
    assert [(c.form, c.grad) for c in backward] == [("function", True)]


def test_run_restores_threads_grad_mode_and_isa():
    threads, omp, isa = torch.get_num_threads(), fastnorm._core.max_threads(), fastnorm.get_isa()
    forced = fastnorm.available_isas()[-1]  # scalar: always there, and never the default
    buf = io.StringIO()
    result = torch_cases.run([SMALL, SMALL_2_THREADS], 1, isa=forced, file=buf)
    assert f"kernels {forced}" in buf.getvalue()
    assert [r.error for r in result.rows] == [None, None]
    assert torch.get_num_threads() == threads
    assert fastnorm._core.max_threads() == omp
    assert fastnorm.get_isa() == isa
    assert torch.is_grad_enabled()


def test_a_wrong_result_is_reported_not_timed(monkeypatch):
    """The comparison must be able to fail: break fastnorm.torch.layer_norm
    and its cases say WRONG RESULT while the others still run, and the CLI
    exits 1."""
    import fastnorm.torch as fnt
    from fastnorm.torch import _functions

    real = fnt.layer_norm
    for module in (fnt, _functions):  # the package's name, and the modules' one
        monkeypatch.setattr(module, "layer_norm", lambda *a, **k: real(*a, **k) * 1.001)
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buf)
    argv = ["bench", "--torch", "--shapes", "8x768", "--threads", "1", "--repeats", "1"]
    assert main_job.main(argv) == 1
    lines = table_lines(buf.getvalue())
    assert len(lines) == 4, lines
    # the LayerNorm module calls the broken function too; RMSNorm does not
    assert all("WRONG RESULT" in line for line in lines[:2]), lines
    assert not any("WRONG RESULT" in line for line in lines[2:]), lines


@pytest.mark.parametrize(
    "bad",
    [
        ["--isa", "sse9"],
        ["--layout", "channels_first"],
        ["--backward", "--dtype", "bfloat16"],
        ["--op", "batch_norm"],
    ],
)
@pytest.mark.slow
def test_cli_rejects_bad_arguments(bad):
    out = subprocess.run(
        [sys.executable, "-m", "fastnorm", "bench", "--torch", *bad],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "error" in out.stderr, (bad, out.stderr)
