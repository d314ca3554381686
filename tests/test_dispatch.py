"""Runtime ISA dispatch: what is available, pinning, FASTNORM_ISA."""

import io
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

import fastnorm


def test_fixture_pins_the_isa(isa):
    assert fastnorm.get_isa() == isa


def test_available_isas_best_first():
    isas = fastnorm.available_isas()
    assert isas[-1] == "scalar"
    order = ["avx512_bf16", "avx512", "avx2", "neon", "scalar"]
    assert isas == [i for i in order if i in isas]


def test_set_isa_rejects_unknown():
    with pytest.raises(ValueError, match="not available"):
        fastnorm._core.set_isa("sse9")


def _isa_in_subprocess(value):
    env = dict(os.environ, FASTNORM_ISA=value)
    code = "import warnings, fastnorm; print(fastnorm.get_isa())"
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.path.dirname(__file__),
    )


@pytest.mark.any_isa
@pytest.mark.parametrize("name", fastnorm.available_isas())
@pytest.mark.slow
def test_environment_forces_isa(name):
    out = _isa_in_subprocess(name)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == name


@pytest.mark.any_isa
@pytest.mark.parametrize("name", ["bogus", "avx1024"])
@pytest.mark.slow
def test_environment_unknown_isa_warns_and_falls_back(name):
    out = _isa_in_subprocess(name)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == fastnorm.available_isas()[0]
    assert "FASTNORM_ISA" in out.stderr and "not available" in out.stderr


def test_show_config_reports_isa_and_threads():
    buf = io.StringIO()
    fastnorm.show_config(file=buf)
    text = buf.getvalue()
    assert fastnorm.get_isa() in text and "OpenMP" in text and "max threads" in text


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_isas_agree(op, dtype):
    """Every ISA gives the same answer to within rounding, on every layout."""
    rng = np.random.default_rng(9)
    x = rng.normal(5, 2, (37, 67, 19)).astype(dtype)
    results = {}
    previous = fastnorm.get_isa()
    try:
        for name in fastnorm.available_isas():
            fastnorm._core.set_isa(name)
            results[name] = [getattr(fastnorm, op)(x, axis=a) for a in (-1, 1, 0)]
    finally:
        fastnorm._core.set_isa(previous)
    tol = 5e-6 if dtype == np.float32 else 1e-12
    for name, ys in results.items():
        for y, y_ref in zip(ys, results["scalar"]):
            assert np.max(np.abs(y - y_ref)) <= tol, name


def _linux_cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


@pytest.mark.any_isa
def test_every_kernel_set_the_cpu_has_is_built_and_offered():
    """A build that left a kernel set out (its flags refused by the
    compiler) or a dispatcher that misreads the CPU fails here: on Linux
    x86-64 the usable sets follow from the flags the kernel reports (it
    lists AVX and AVX-512 only where the OS saves their registers)."""
    flags = _linux_cpu_flags()
    if platform.machine().lower() not in ("x86_64", "amd64") or flags is None:
        pytest.skip("needs Linux on x86-64 (/proc/cpuinfo)")
    expected = []
    avx2 = {"avx", "avx2", "fma", "f16c"} <= flags
    avx512 = avx2 and {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags
    if avx512 and "avx512_bf16" in flags:
        expected.append("avx512_bf16")
    if avx512:
        expected.append("avx512")
    if avx2:
        expected.append("avx2")
    assert fastnorm.available_isas() == expected + ["scalar"]
