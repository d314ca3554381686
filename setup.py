"""Build fastnorm's compiled core: plain C kernels (src/) behind a Cython
module (fastnorm/_core.pyx), parallelized with OpenMP when the compiler has it.

No -march=native: the wheel must run on any x86-64 (or other) CPU.  SIMD
kernels carry their own target attributes and are chosen at run time.

FASTNORM_EXTRA_CFLAGS and FASTNORM_EXTRA_LDFLAGS (shell-quoted lists) are
appended after this file's own flags, so they win where flags conflict
(e.g. "-fsanitize=address,undefined -O1" overrides -O3; used by .ci/run's
sanitizer stage).
"""

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
# fastnorm/_sources.py by path: the package itself cannot be imported yet
_sources = {}
with open(os.path.join(HERE, "fastnorm", "_sources.py")) as _f:
    exec(compile(_f.read(), "fastnorm/_sources.py", "exec"), _sources)

BASE_CFLAGS = ["-O3", "-std=c99", "-fno-math-errno", "-fno-trapping-math"]
OPENMP_FLAGS = ["-fopenmp"]

PROBE = r"""
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    printf("%d\n", n > 0);
    return 0;
}
"""


def compiler_has_openmp():
    """Compile, link and run a tiny OpenMP program with the compiler Python uses."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    cc = cc.split()
    if shutil.which(cc[0]) is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        exe = os.path.join(tmp, "probe")
        with open(src, "w") as f:
            f.write(PROBE)
        try:
            subprocess.run(
                cc + OPENMP_FLAGS + [src, "-o", exe],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            out = subprocess.run([exe], check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError):
            return False
    return out.stdout.strip() == "1"


def make_extensions():
    use_openmp = os.environ.get("FASTNORM_NO_OPENMP") != "1" and compiler_has_openmp()
    if not use_openmp:
        warnings.warn(
            "fastnorm: the C compiler has no working OpenMP; building a "
            "serial (single-threaded) fastnorm.",
            stacklevel=2,
        )
        print("WARNING: fastnorm is being built WITHOUT OpenMP (serial).", file=sys.stderr)
    extra_cflags = shlex.split(os.environ.get("FASTNORM_EXTRA_CFLAGS", ""))
    extra_ldflags = shlex.split(os.environ.get("FASTNORM_EXTRA_LDFLAGS", ""))
    cflags = BASE_CFLAGS + (OPENMP_FLAGS if use_openmp else []) + extra_cflags
    flags_text = " ".join(cflags)
    common = dict(
        include_dirs=["src", "fastnorm", numpy.get_include()],
        define_macros=[
            ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
            ("FN_BUILD_FLAGS", f'"{flags_text}"'),
            ("FN_SOURCE_FINGERPRINT", f'"{_sources["fingerprint"](HERE)}"'),
        ],
        extra_compile_args=cflags,
        extra_link_args=(OPENMP_FLAGS if use_openmp else []) + extra_ldflags,
    )
    # the core: its Cython parts (_core.pyx includes the .pxi files) and the kernels
    core = Extension(
        "fastnorm._core",
        sources=[
            "fastnorm/_core.pyx",
            "src/kernels_scalar.c",
            "src/kernels_avx2.c",
            "src/kernels_avx512.c",
            "src/kernels_avx512_bf16.c",
            "src/dispatch.c",
        ],
        **common,
    )
    # test and benchmark hooks (the streaming-copy roof), kept out of the core
    testing = Extension(
        "fastnorm._testing", sources=["fastnorm/_testing.pyx", "src/stream_copy.c"], **common
    )
    directives = {
        "language_level": 3,
        "boundscheck": os.environ.get("FASTNORM_DEBUG") == "1",
        "wraparound": False,
        "initializedcheck": False,
        "cdivision": True,
    }
    return cythonize([core, testing], compiler_directives=directives)


setup(ext_modules=make_extensions())
