"""The kernel sets on 64-bit Arm: the neon set is offered where the OS
reports Advanced SIMD (getauxval(AT_HWCAP) on Linux; every arm64 Mac has
it) and chosen at import, and no other architecture has it.  CI runs these
on aarch64 under QEMU (.ci/aarch64) and on x86-64 natively."""

import ctypes
import os
import platform
import subprocess
import sys

import pytest

import fastnorm

pytestmark = pytest.mark.any_isa

AARCH64 = platform.machine().lower() in ("aarch64", "arm64")
AT_HWCAP = 16
HWCAP_FP, HWCAP_ASIMD = 1 << 0, 1 << 1


def _os_reports_asimd():
    if not sys.platform.startswith("linux"):
        return True  # macOS requires Advanced SIMD of every arm64 CPU
    getauxval = ctypes.CDLL(None).getauxval
    getauxval.restype = ctypes.c_ulong
    getauxval.argtypes = [ctypes.c_ulong]
    need = HWCAP_FP | HWCAP_ASIMD
    return getauxval(AT_HWCAP) & need == need


@pytest.mark.skipif(not AARCH64, reason="needs aarch64")
def test_neon_is_offered_where_the_os_reports_asimd():
    expected = ["neon", "scalar"] if _os_reports_asimd() else ["scalar"]
    assert fastnorm.available_isas() == expected


@pytest.mark.skipif(not AARCH64, reason="needs aarch64")
def test_neon_is_chosen_at_import():
    env = {k: v for k, v in os.environ.items() if k != "FASTNORM_ISA"}
    out = subprocess.run(
        [sys.executable, "-c", "import fastnorm; print(fastnorm.get_isa())"],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.path.dirname(__file__),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == fastnorm.available_isas()[0] == "neon"


@pytest.mark.skipif(AARCH64, reason="the neon set is aarch64's")
def test_no_neon_set_off_aarch64():
    assert "neon" not in fastnorm.available_isas()
    with pytest.raises(ValueError, match="not available"):
        fastnorm._core.set_isa("neon")
