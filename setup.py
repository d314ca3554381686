"""Build fastnorm's compiled core: plain C kernels (src/) behind a Cython
module (fastnorm/_core.pyx), parallelized with OpenMP when the compiler has it.

No -march=native: the wheel must run on any x86-64 (or other) CPU.  Each
x86-64 kernel set is one C file (src/kernels_<isa>.c) compiled with its own
instruction-set flags (X86_KERNEL_SETS below), as NumPy and libbase64 do;
every other file is compiled for the baseline of its architecture, so that
nothing runs a vector instruction before dispatch.c has asked the CPU which
sets it can run.  GCC and clang read the same flags (clang ignores the
`#pragma GCC target` that once did this).  On aarch64 (Linux's "aarch64",
macOS's "arm64") the NEON set, src/kernels_neon.c, is built with no flag at
all: Advanced SIMD is that architecture's baseline.  Elsewhere only the
portable set is compiled: no file is built for an architecture it is not
written for.

The build compiles every object of both extensions at once, the heaviest
first, on as many processes as there are CPUs (FASTNORM_BUILD_JOBS or
build_ext's --parallel set another number), then links each extension.

FASTNORM_EXTRA_CFLAGS and FASTNORM_EXTRA_LDFLAGS (shell-quoted lists) are
appended after this file's own flags, so they win where flags conflict
(e.g. "-fsanitize=address,undefined -O1" overrides -O3; used by .ci/run's
sanitizer stage).  FASTNORM_WERROR=1 turns warnings in src/'s C files
(-Wall -Wextra) into errors, as CI's wheel and clang stages build them.

Importing this file (as .ci/check_objects.py and the tests do, to read the
source plan) builds nothing: setup() runs only when it is run as a script,
which is how pip and `python setup.py` run it.
"""

import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))

# -ffp-contract=off: no a*b+c fused into an FMA unless a kernel asks for one
# with an intrinsic.  It is GCC's default in ISO C mode (-std=c99); clang
# fuses by default, and would round the scalar parts of the kernels
# differently from a GCC build.
BASE_CFLAGS = ["-O3", "-std=c99", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]
OPENMP_FLAGS = ["-fopenmp"]
# the kernels' own C files (not the Cython-generated ones) are kept free of
# these warnings; CI turns them into errors for GCC and clang
SRC_WARNINGS = ["-Wall", "-Wextra"]

AVX512_FLAGS = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c"]
# The x86-64 kernel sets: name (as dispatch.c and FASTNORM_ISA call it), the
# macro that tells dispatch.c the set is linked in, its file, its flags, and
# a function using the set's newest intrinsic, which the compiler must take
# for the set to be built.  Listed heaviest first: the build starts the
# longest compiles first.
X86_KERNEL_SETS = (
    (
        "avx512",
        "FN_HAVE_AVX512",
        "src/kernels_avx512.c",
        AVX512_FLAGS,
        "__m512 f(__m512 a, __mmask16 m) { return _mm512_maskz_fmadd_ps(m, a, a, a); }",
    ),
    (
        "avx2",
        "FN_HAVE_AVX2",
        "src/kernels_avx2.c",
        ["-mavx2", "-mfma", "-mf16c"],
        "__m128i f(__m256 a) { return _mm256_cvtps_ph(_mm256_fmadd_ps(a, a, a), 0); }",
    ),
    (
        "avx512_bf16",
        "FN_HAVE_AVX512BF16",
        "src/kernels_avx512_bf16.c",
        AVX512_FLAGS + ["-mavx512bf16"],
        "__m256bh f(__m512 a) { return _mm512_cvtneps_pbh(a); }",
    ),
)
# the portable kernels and the dispatcher: every architecture, no ISA flags
CORE_C_SOURCES = ["src/kernels_scalar.c", "src/dispatch.c"]
# the aarch64 kernel set: baseline Advanced SIMD, so no flags either
AARCH64_C_SOURCES = ["src/kernels_neon.c"]
# the benchmarks' streaming-copy roof (fastnorm._testing), and its AVX2 loop
TESTING_C_SOURCES = ["src/stream_copy.c", "src/plain_norm.c"]
X86_TESTING_SOURCES = (
    ("src/stream_copy_avx2.c", ["-mavx2"]),
    ("src/plain_norm_avx2.c", ["-mavx2", "-mfma"]),
)


def target_machine():
    """The CPU architecture the build is for: platform.machine(), unless
    ARCHFLAGS names another, as on macOS when arm64 wheels are built on an
    x86-64 Mac (cibuildwheel sets ARCHFLAGS="-arch arm64" there)."""
    words = shlex.split(os.environ.get("ARCHFLAGS", ""))
    arches = {b for a, b in zip(words, words[1:]) if a == "-arch"}
    if len(arches) > 1:
        # a universal2 build compiles each file once for both architectures,
        # so the x86 files could not get x86-only flags: build one per arch
        raise RuntimeError(
            f"fastnorm builds one architecture at a time; ARCHFLAGS names {sorted(arches)}"
        )
    return arches.pop() if arches else platform.machine()


def is_x86_64(machine):
    return machine.lower() in ("x86_64", "amd64", "x64")


def is_aarch64(machine):
    """Little-endian 64-bit Arm: Linux says aarch64, macOS arm64."""
    return machine.lower() in ("aarch64", "arm64")


def compile_plan(machine):
    """{extension name: [(C source, its own extra flags), ...]} for a build
    for `machine`: every architecture gets the portable files, x86-64 also
    each kernel set's file with that set's flags, aarch64 the NEON file."""
    core = [(src, []) for src in CORE_C_SOURCES]
    testing = [(src, []) for src in TESTING_C_SOURCES]
    if is_x86_64(machine):
        core += [(src, flags) for _, _, src, flags, _ in X86_KERNEL_SETS]
        testing += [(src, flags) for src, flags in X86_TESTING_SOURCES]
    elif is_aarch64(machine):
        core += [(src, []) for src in AARCH64_C_SOURCES]
    return {"fastnorm._core": core, "fastnorm._testing": testing}


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


def build_jobs(parallel=None):
    """Compiler processes to run at once: build_ext --parallel, else
    FASTNORM_BUILD_JOBS, else the CPUs this process may use."""
    if parallel not in (None, False, True):
        return max(1, int(parallel))
    if os.environ.get("FASTNORM_BUILD_JOBS"):
        return max(1, int(os.environ["FASTNORM_BUILD_JOBS"]))
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class BuildExt(build_ext):
    """build_ext with per-file flags and one parallel compile of everything.

    setuptools gives every file of an extension the same flags and compiles
    them one after another.  This command keeps setuptools' checks, link and
    in-place copy (build_extension), but first (1) leaves out any kernel set
    whose flags the compiler refuses, and tells dispatch.c which sets are
    in, then (2) compiles every source of every extension on build_jobs()
    processes, each with its extension's flags plus its own.
    """

    # {source path: its own flags}, from compile_plan (set by make_extensions)
    source_flags = {}

    def build_extensions(self):
        self.check_extensions_list(self.extensions)
        self._leave_out_refused_kernel_sets()
        todo = [e for e in self.extensions if self._out_of_date(e)]
        jobs = [(ext, src) for ext in todo for src in ext.sources]
        objects = self._compile_all(jobs)
        # link: setuptools' own build_extension, whose compile step now only
        # hands back the objects compiled above
        compile_ = self.compiler.compile
        self.compiler.compile = lambda sources, **kw: [objects[s] for s in sources]
        try:
            for ext in self.extensions:
                self.build_extension(ext)
        finally:
            self.compiler.compile = compile_

    def _out_of_date(self, ext):
        from setuptools.modified import newer_group  # setuptools 69+

        target = self.get_ext_fullpath(ext.name)
        return self.force or newer_group(list(ext.sources) + list(ext.depends), target, "newer")

    def _compiler_takes(self, flags, code):
        # imported here: the tests read this file with whatever setuptools
        # their venv has (3.9's has no setuptools.errors.CompileError)
        from setuptools.errors import CompileError

        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as f:
                f.write("#include <immintrin.h>\n" + code + "\n")
            try:
                self.compiler.compile([src], output_dir=tmp, extra_postargs=flags)
            except CompileError:  # also raised when the compiler is missing
                return False
        return True

    def _leave_out_refused_kernel_sets(self):
        core = next(e for e in self.extensions if e.name == "fastnorm._core")
        built = set()
        for name, macro, src, flags, probe in X86_KERNEL_SETS:
            if src not in core.sources or any(m[0] == macro for m in core.define_macros):
                continue  # not an x86-64 build, or decided in an earlier run
            ok = self._compiler_takes(flags, probe)
            if ok and name == "avx512_bf16":
                ok = "avx512" in built  # its table reuses the AVX-512 kernels
            if ok:
                built.add(name)
            else:
                core.sources.remove(src)
                msg = (
                    f"fastnorm: the C compiler refuses {' '.join(flags)}: building without "
                    f"the {name} kernels (GCC 10 or clang 14 and newer build every set)"
                )
                warnings.warn(msg, stacklevel=1)
                print(f"WARNING: {msg}", file=sys.stderr)
            core.define_macros.append((macro, "1" if ok else "0"))

    def _compile_all(self, jobs):
        """Compile (extension, source) jobs in parallel; {source: object}."""
        sources = [src for _, src in jobs]
        if len(set(sources)) != len(sources):
            raise RuntimeError("a source file is in two extensions")

        def cost(job):  # kernel sets first, in their listed order, then by size
            order = [s for _, _, s, _, _ in X86_KERNEL_SETS]
            src = job[1]
            return (order.index(src), 0) if src in order else (len(order), -os.path.getsize(src))

        def compile_one(ext, src):
            macros = list(ext.define_macros) + [(u,) for u in ext.undef_macros]
            # the file's own flags first: the extension's (FASTNORM_EXTRA_CFLAGS
            # last of all) then win where they conflict
            flags = self.source_flags.get(src, []) + list(ext.extra_compile_args or [])
            (obj,) = self.compiler.compile(
                [src],
                output_dir=self.build_temp,
                macros=macros,
                include_dirs=ext.include_dirs,
                debug=self.debug,
                extra_postargs=flags,
                depends=ext.depends,
            )
            return obj

        for obj in self.compiler.object_filenames(sources, output_dir=self.build_temp):
            os.makedirs(os.path.dirname(obj) or ".", exist_ok=True)
        n = build_jobs(self.parallel)
        if jobs:
            print(f"fastnorm: compiling {len(jobs)} files on {n} processes", file=sys.stderr)
        with ThreadPoolExecutor(max_workers=n) as pool:
            ordered = sorted(jobs, key=cost)
            futures = [(src, pool.submit(compile_one, ext, src)) for ext, src in ordered]
            try:
                return {src: fut.result() for src, fut in futures}
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise


def source_fingerprint():
    """fastnorm/_sources.py's fingerprint of this checkout's core sources
    (read by path: the package itself cannot be imported yet)."""
    _sources = {}
    with open(os.path.join(HERE, "fastnorm", "_sources.py")) as _f:
        exec(compile(_f.read(), "fastnorm/_sources.py", "exec"), _sources)
    return _sources["fingerprint"](HERE)


def c_macros(cflags):
    """The macros every C file of both extensions is compiled with; cflags
    are the flags show_config reports."""
    return [
        ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
        ("FN_BUILD_FLAGS", f'"{" ".join(cflags)}"'),
        ("FN_SOURCE_FINGERPRINT", f'"{source_fingerprint()}"'),
    ]


def cython_directives():
    return {
        "language_level": 3,
        "boundscheck": os.environ.get("FASTNORM_DEBUG") == "1",
        "wraparound": False,
        "initializedcheck": False,
        "cdivision": True,
    }


def make_extensions():
    import numpy
    from Cython.Build import cythonize

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
    common = dict(
        include_dirs=["src", "fastnorm", numpy.get_include()],
        define_macros=c_macros(cflags),
        extra_compile_args=cflags,
        extra_link_args=(OPENMP_FLAGS if use_openmp else []) + extra_ldflags,
    )
    plan = compile_plan(target_machine())
    # FASTNORM_WERROR=1 (CI) makes the kernels' warnings errors
    src_warnings = SRC_WARNINGS + (["-Werror"] if os.environ.get("FASTNORM_WERROR") == "1" else [])
    BuildExt.source_flags = {
        src: src_warnings + flags for files in plan.values() for src, flags in files
    }
    # the core: its Cython parts (_core.pyx includes the .pxi files) and the kernels
    core = Extension(
        "fastnorm._core",
        sources=["fastnorm/_core.pyx"] + [src for src, _ in plan["fastnorm._core"]],
        **common,
    )
    # test and benchmark hooks (the streaming-copy roof), kept out of the core
    testing = Extension(
        "fastnorm._testing",
        sources=["fastnorm/_testing.pyx"] + [src for src, _ in plan["fastnorm._testing"]],
        **common,
    )
    return cythonize([core, testing], compiler_directives=cython_directives())


if __name__ == "__main__":
    setup(ext_modules=make_extensions(), cmdclass={"build_ext": BuildExt})
