"""CI check of a build's object files: no AVX instruction outside the kernel
sets' own files.

dispatch.c asks the CPU which kernel sets it can run, so every object but
the kernel sets' (setup.py's X86_KERNEL_SETS and the benchmark hooks'
AVX2 loop) must be plain baseline x86-64: one AVX instruction in the Cython
core, the portable kernels or the dispatcher could run, and fault, before
that question is asked.  This script disassembles the objects a real build
left in <tree>/build/temp.*/ (pip builds a local directory in place) and
fails if

  - any object of the build plan, or of the two Cython modules, is missing;
  - a baseline object has an AVX instruction (a VEX/EVEX 'v' mnemonic or a
    ymm, zmm or mask register);
  - a kernel set's object has none (the check would be blind, or the set's
    flags were lost), or an AVX2 object has AVX-512 (zmm, mask or
    xmm16-31 registers);
  - --compiler is given and another compiler built the objects (the
    objects' .comment section names it).

    python .ci/check_objects.py [--compiler gcc|clang] TREE
"""

import argparse
import glob
import os
import re
import runpy
import subprocess
import sys

# VMX instructions also start with 'v' but are no AVX (never emitted by a
# compiler for this code; listed so that the rule is exact)
NOT_AVX = {"verr", "verw", "vmcall", "vmlaunch", "vmresume", "vmxoff", "vmxon", "vmread"}
NOT_AVX |= {"vmwrite", "vmptrld", "vmptrst", "vmclear", "vmfunc"}
INSN = re.compile(r"^\s*[0-9a-f]+:\s+(\S+)\s*(.*)$")
WIDE_REG = re.compile(r"%(?:ymm|zmm)\d+|%k[0-7]\b")
AVX512_REG = re.compile(r"%zmm\d+|%k[0-7]\b|%[xy]mm(?:1[6-9]|2\d|3[01])\b")


def instructions(obj):
    """(mnemonic, operands) of every instruction in obj's code."""
    out = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", obj], check=True, capture_output=True, text=True
    ).stdout
    for line in out.splitlines():
        m = INSN.match(line)
        if m:
            yield m.group(1), m.group(2)


def avx_counts(obj):
    """(AVX instructions, of which AVX-512) in obj."""
    avx = avx512 = 0
    for mnemonic, operands in instructions(obj):
        is_avx = (mnemonic.startswith("v") and mnemonic not in NOT_AVX) or WIDE_REG.search(operands)
        if is_avx:
            avx += 1
            avx512 += bool(AVX512_REG.search(operands))
    return avx, avx512


def compiler_of(obj):
    """The compilers that obj's .comment section names."""
    out = subprocess.run(["readelf", "-p", ".comment", obj], capture_output=True, text=True).stdout
    names = re.findall(r"^\s*\[\s*[0-9a-f]+\]\s+(.*\S)\s*$", out, re.M)
    return " | ".join(dict.fromkeys(names))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree", help="the source tree that was built (holds setup.py, build/)")
    parser.add_argument("--compiler", choices=["gcc", "clang"])
    args = parser.parse_args()
    tree = os.path.abspath(args.tree)

    setup = runpy.run_path(os.path.join(tree, "setup.py"), run_name="fastnorm_setup_plan")
    plan = setup["compile_plan"]("x86_64")
    own_flags = {src: flags for files in plan.values() for src, flags in files}
    expected = set(own_flags) | {"fastnorm/_core.c", "fastnorm/_testing.c"}

    temps = sorted(glob.glob(os.path.join(tree, "build", "temp.*")), key=os.path.getmtime)
    if not temps:
        sys.exit(f"check_objects: no build/temp.* in {tree}: build it in place first")
    temp = temps[-1]  # the newest build
    objects = {
        os.path.relpath(o, temp)[: -len(".o")] + ".c": o
        for o in glob.glob(os.path.join(temp, "**", "*.o"), recursive=True)
    }
    failures = []
    missing = sorted(expected - set(objects))
    if missing:
        failures.append(f"no object for {missing} in {temp}")

    print(f"check_objects: {temp}")
    for src in sorted(expected & set(objects)):
        obj = objects[src]
        avx, avx512 = avx_counts(obj)
        flags = own_flags.get(src, [])
        simd = any(f.startswith("-mavx") for f in flags)
        compiler = compiler_of(obj)
        kind = " ".join(flags) if simd else "baseline"
        print(f"  {src:32s} {kind:44.44s} AVX {avx:6d}  AVX-512 {avx512:6d}  [{compiler}]")
        if not simd and avx:
            failures.append(f"{src}: {avx} AVX instructions in a baseline object")
        if simd and not avx:
            failures.append(f"{src}: no AVX instruction in a kernel set's object ({kind})")
        if simd and "-mavx512f" not in flags and avx512:
            failures.append(f"{src}: {avx512} AVX-512 instructions in an AVX2 object")
        if simd and "-mavx512f" in flags and not avx512:
            failures.append(f"{src}: no AVX-512 instruction in an AVX-512 object")
        if args.compiler == "clang" and "clang" not in compiler:
            failures.append(f"{src}: built by {compiler!r}, not clang")
        if args.compiler == "gcc" and ("GCC" not in compiler or "clang" in compiler):
            failures.append(f"{src}: built by {compiler!r}, not GCC")
    if failures:
        print("CI: check_objects failed:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print(f"check_objects: {len(expected)} objects, AVX only in the kernel sets' own files")


if __name__ == "__main__":
    main()
