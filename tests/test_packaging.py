"""How fastnorm is built and shipped: setup.py's choice of C files for each
architecture, and what an installed copy's metadata says (the version from
its one place, the license)."""

import importlib.metadata
import os
import runpy

import pytest

import fastnorm

pytestmark = pytest.mark.any_isa

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIST = "fastnorm-layernorm"
X86_ONLY = {
    "src/kernels_avx2.c",
    "src/kernels_avx512.c",
    "src/kernels_avx512_bf16.c",
    "src/stream_copy_avx2.c",
    "src/plain_norm_avx2.c",
}
AARCH64_ONLY = {"src/kernels_neon.c"}


@pytest.fixture(scope="module")
def setup_py():
    """setup.py's definitions, without building (setup() runs only as a
    script); needs a source tree (a checkout or the unpacked sdist)."""
    path = os.path.join(REPO, "setup.py")
    if not os.path.isfile(path):
        pytest.skip("no setup.py next to the tests: not a source tree")
    pytest.importorskip("setuptools")
    return runpy.run_path(path, run_name="fastnorm_setup_plan")


def _files(plan):
    return {src for files in plan.values() for src, _ in files}


@pytest.mark.parametrize("machine", ["aarch64", "arm64", "ppc64le", "s390x", "i686", "riscv64"])
def test_other_architectures_build_no_x86_file(setup_py, machine):
    plan = setup_py["compile_plan"](machine)
    files = _files(plan)
    assert not files & X86_ONLY, files
    aarch64 = machine in ("aarch64", "arm64")
    assert (files & AARCH64_ONLY == AARCH64_ONLY) if aarch64 else not files & AARCH64_ONLY, files
    # the portable kernels, the dispatcher and the benchmarks' hooks everywhere
    assert {"src/kernels_scalar.c", "src/dispatch.c"} <= {s for s, _ in plan["fastnorm._core"]}
    assert {s for s, _ in plan["fastnorm._testing"]} == {"src/stream_copy.c", "src/plain_norm.c"}
    assert all(flags == [] for files in plan.values() for _, flags in files)


@pytest.mark.parametrize("machine", ["x86_64", "AMD64"])
def test_x86_64_builds_every_c_file_each_kernel_set_with_its_flags(setup_py, machine):
    plan = setup_py["compile_plan"](machine)
    flags = {src: f for files in plan.values() for src, f in files}
    on_disk = {f"src/{n}" for n in os.listdir(os.path.join(REPO, "src")) if n.endswith(".c")}
    assert set(flags) == on_disk - AARCH64_ONLY  # no C file left out of the build
    assert {"-mavx2", "-mfma", "-mf16c"} <= set(flags["src/kernels_avx2.c"])
    assert not any("avx512" in f for f in flags["src/kernels_avx2.c"])
    assert {"-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq"} <= set(
        flags["src/kernels_avx512.c"]
    )
    assert "-mavx512bf16" not in flags["src/kernels_avx512.c"]
    assert "-mavx512bf16" in flags["src/kernels_avx512_bf16.c"]
    assert {"-mavx2", "-mfma"} <= set(flags["src/plain_norm_avx2.c"])
    for baseline in ("src/kernels_scalar.c", "src/dispatch.c", "src/stream_copy.c"):
        assert flags[baseline] == [], baseline


def test_a_macos_cross_build_follows_archflags(setup_py, monkeypatch):
    monkeypatch.setenv("ARCHFLAGS", "-arch arm64")
    assert setup_py["target_machine"]() == "arm64"
    monkeypatch.setenv("ARCHFLAGS", "-arch x86_64")
    assert setup_py["target_machine"]() == "x86_64"
    monkeypatch.setenv("ARCHFLAGS", "-arch arm64 -arch x86_64")
    with pytest.raises(RuntimeError, match="one architecture at a time"):
        setup_py["target_machine"]()


def _installed_distribution():
    """The installed distribution this fastnorm came from, or None (an
    in-place build, or a checkout deferring to another copy)."""
    try:
        dist = importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        return None
    init = os.path.realpath(str(dist.locate_file("fastnorm/__init__.py")))
    return dist if init == os.path.realpath(fastnorm.__file__) else None


def test_installed_metadata_has_the_one_version_and_the_license():
    dist = _installed_distribution()
    if dist is None:
        pytest.skip(f"fastnorm was not imported from an installed {DIST} distribution")
    assert dist.version == fastnorm.__version__
    assert dist.metadata["Name"] == DIST
    assert dist.metadata["License-Expression"] == "BSD-3-Clause"
    license_files = [f for f in dist.files or [] if f.name == "LICENSE"]
    assert license_files, "the wheel's metadata carries no LICENSE"
    text = license_files[0].read_text()
    assert "BSD 3-Clause License" in text and "the fastnorm developers" in text
