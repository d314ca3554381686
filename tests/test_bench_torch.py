"""The fastnorm.torch benchmark harness (``python -m fastnorm bench --torch``)
runs, prints every case, checks results and restores the process's state.
No timing is asserted here: speed is measured, never unit-tested."""
import io
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("threadpoolctl")

import fastnorm  # noqa: E402
from fastnorm import __main__ as main_job  # noqa: E402
from fastnorm import _bench_torch  # noqa: E402

pytestmark = pytest.mark.any_isa

# a cheap case on 2 threads, to see the thread counts restored after it
SMALL_2_THREADS = _bench_torch.TorchCase("t", "layer_norm", "function", (8, 768), "float32",
                                         True, 2, 1.0)


def _table_lines(text):
    return [line for line in text.splitlines()
            if line.startswith(("layer_norm ", "rms_norm ", "LayerNorm ", "RMSNorm "))]


def test_cli_prints_every_case():
    out = subprocess.run([sys.executable, "-m", "fastnorm", "bench", "--torch", "--repeats", "1"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = _table_lines(out.stdout)
    assert len(lines) == len(_bench_torch.CASES), out.stdout
    for case, line in zip(_bench_torch.CASES, lines):
        assert line.startswith(case.label), (case.label, line)
        assert f"<= {case.goal}" in line and line.rstrip().endswith(("yes", "NO")), line
    assert f"kernels {fastnorm.get_isa()}" in out.stdout
    assert "CPU: " in out.stdout and "targets met" in out.stdout


def test_cases_are_the_torch_speed_targets():
    """The eight targets of issue 10, the bf16 one in both forms."""
    keys = {(c.op, c.form, c.shape, c.dtype, c.grad, c.threads, c.goal)
            for c in _bench_torch.CASES}
    assert keys == {
        ("layer_norm", "function", (8, 768), "float32", False, 1, 0.6),
        ("layer_norm", "module", (8, 768), "float32", False, 1, 0.5),
        ("rms_norm", "function", (8, 768), "float32", False, 1, 0.2),
        ("layer_norm", "function", (8, 768), "float32", True, 1, 1.0),
        ("layer_norm", "function", (4096, 4096), "float32", False, 2, 0.3),
        ("layer_norm", "function", (4096, 4096), "float32", True, 2, 0.5),
        ("rms_norm", "function", (4096, 4096), "float32", True, 2, 0.1),
        ("layer_norm", "function", (8, 4096), "bfloat16", False, 1, 0.7),
        ("layer_norm", "module", (8, 4096), "bfloat16", False, 1, 0.7),
    }


def test_run_restores_threads_grad_mode_and_isa():
    threads, omp, isa = torch.get_num_threads(), fastnorm._core.max_threads(), fastnorm.get_isa()
    forced = fastnorm.available_isas()[-1]  # scalar: always there, and never the default
    buf = io.StringIO()
    rows = _bench_torch.run(1, isa=forced, cases=[_bench_torch.CASES[0], SMALL_2_THREADS],
                            file=buf)
    assert f"kernels {forced}" in buf.getvalue()
    assert [r.error for r in rows] == [None, None]
    assert torch.get_num_threads() == threads
    assert fastnorm._core.max_threads() == omp
    assert fastnorm.get_isa() == isa
    assert torch.is_grad_enabled()


def test_a_wrong_result_is_reported_not_timed(monkeypatch):
    """The harness must be able to fail: break fastnorm.torch.layer_norm and
    its cases say WRONG RESULT while the others still run, and the CLI exits 1."""
    import fastnorm.torch as fnt
    real = fnt.layer_norm
    monkeypatch.setattr(fnt, "layer_norm", lambda *a, **k: real(*a, **k) * 1.001)
    cases = [_bench_torch.CASES_BY_KEY["ln_fn_small"], _bench_torch.CASES_BY_KEY["rms_fn_small"]]
    monkeypatch.setattr(_bench_torch, "CASES", cases)
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buf)
    assert main_job.main(["bench", "--torch", "--repeats", "1"]) == 1
    lines = _table_lines(buf.getvalue())
    assert "WRONG RESULT" in lines[0] and "WRONG RESULT" not in lines[1], lines


def test_cli_rejects_an_unknown_isa():
    out = subprocess.run([sys.executable, "-m", "fastnorm", "bench", "--torch", "--isa", "sse9"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--isa" in out.stderr, out.stderr
