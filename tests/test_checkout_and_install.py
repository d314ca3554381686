"""A source checkout never joins its Python to another build's compiled core:
unbuilt, it defers wholly to the installed copy; built from other sources,
its core refuses to load."""

import os
import shutil
import subprocess
import sys

import pytest

import fastnorm

pytestmark = [pytest.mark.any_isa, pytest.mark.slow]  # subprocesses, compiles

# the package as imported (in CI, the installed copy) and this repository
PACKAGE = os.path.dirname(os.path.abspath(fastnorm._core.__file__))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code, cwd, pythonpath=None, args=None):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    cmd = [sys.executable] + (args if args else ["-c", code])
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _copy_vendored_libraries(dest_parent):
    """A repaired wheel's compiled core finds the shared libraries it
    carries (OpenMP) by a path relative to itself: auditwheel's
    <dist>.libs/ beside the package, delocate's .dylibs/ inside it.  A copy
    of the package needs them at the same place."""
    site = os.path.dirname(PACKAGE)
    for name in os.listdir(site):
        if name.endswith(".libs") and os.path.isdir(os.path.join(site, name)):
            shutil.copytree(os.path.join(site, name), os.path.join(dest_parent, name))
    dylibs = os.path.join(PACKAGE, ".dylibs")
    if os.path.isdir(dylibs):
        shutil.copytree(dylibs, os.path.join(dest_parent, "fastnorm", ".dylibs"))


def _checkout(tmp_path, name, with_core):
    """A copy of this repository's layout: setup.py, src/, fastnorm/, with the
    compiled core fastnorm runs on only when with_core."""
    root = tmp_path / name
    shutil.copytree(os.path.join(REPO, "src"), root / "src")
    shutil.copy(os.path.join(REPO, "setup.py"), root / "setup.py")
    shutil.copytree(
        os.path.join(REPO, "fastnorm"),
        root / "fastnorm",
        ignore=shutil.ignore_patterns("_core.*.so", "_core.*.pyd", "_core.c"),
    )
    if with_core:
        shutil.copy(fastnorm._core.__file__, root / "fastnorm")
        _copy_vendored_libraries(root)
    return root


def test_unbuilt_checkout_defers_wholly_to_the_installed_copy(tmp_path):
    checkout = _checkout(tmp_path, "checkout", with_core=False)
    site = tmp_path / "site"
    shutil.copytree(PACKAGE, site / "fastnorm")  # the "installed" copy: no setup.py, no src/
    _copy_vendored_libraries(site)
    probe = (
        "import fastnorm, fastnorm._api as a, fastnorm._core as c; "
        "print(fastnorm.__file__); print(a.__file__); print(c.__file__); "
        "print(fastnorm._deferred_from); print(fastnorm.layer_norm([[1.0, 3.0]]))"
    )
    out = _run(probe, checkout, pythonpath=str(site))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for path in lines[:3]:  # Python and C both from the installed copy
        assert path.startswith(str(site / "fastnorm")), lines
    assert lines[3] == str(checkout / "fastnorm")
    main = _run("", checkout, pythonpath=str(site), args=["-m", "fastnorm", "-v", "--repeats", "1"])
    assert main.returncode == 0, main.stderr
    assert f"fastnorm package: {site / 'fastnorm'}" in main.stdout
    assert "has no compiled core: running the installed copy" in main.stdout
    # with no other copy on sys.path either: a clear error
    alone = _run(
        "import os, sys; here = os.getcwd(); "
        "sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') == here "
        "or not os.path.isdir(os.path.join(p or '.', 'fastnorm'))]; import fastnorm",
        checkout,
    )
    assert alone.returncode != 0 and "compiled core is not built" in alone.stderr


def test_core_built_from_other_sources_refuses_to_load(tmp_path):
    if not fastnorm._core.source_fingerprint:
        pytest.skip("this core was built without a source fingerprint")
    same = _checkout(tmp_path, "same", with_core=True)
    ok = _run("import fastnorm; print(fastnorm.rms_norm([[3.0, 4.0]]))", same)
    assert ok.returncode == 0, ok.stderr
    edited = _checkout(tmp_path, "edited", with_core=True)
    with open(edited / "src" / "norm_row_common.h", "a") as f:
        f.write("\n/* an edit made after the build */\n")
    stale = _run("import fastnorm", edited)
    assert stale.returncode != 0
    assert "was built from other sources" in stale.stderr and "Rebuild it" in stale.stderr
