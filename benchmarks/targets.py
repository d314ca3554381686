"""The project's own speed targets, measured side by side as ratios.

    python benchmarks/targets.py                      # the forward targets
    python benchmarks/targets.py --backward           # the backward targets
    python benchmarks/targets.py --fused              # the fused residual add + norm targets
    python benchmarks/targets.py --spellings          # every spelling of a small call
    python benchmarks/targets.py --dtype bfloat16     # the half-precision targets
    python benchmarks/targets.py --torch              # fastnorm.torch against torch
    python benchmarks/targets.py --dask --repeats 5   # fastnorm on Dask arrays
    python benchmarks/targets.py --incache            # the kernels against a plain kernel, in cache
    python benchmarks/targets.py --quant              # the quantized outputs (targets_quant.py)
    python benchmarks/targets.py --group              # GroupNorm (benchmarks/targets_group.py)
    python benchmarks/targets.py --isa avx2 --repeats 41 --threads 1

Each target is a ratio of medians measured in one process, its competitors
interleaved round by round (fastnorm.bench.harness.time_interleaved), and a goal
that the ratio should meet.  The goals are the project's, not a user's, so
they live here, outside the installed package; the package keeps the timing
machinery and ``python -m fastnorm bench``.  --threads 1 runs only the
targets that need no more than one thread (each target fixes its own thread
counts: they are part of what it measures)."""

import argparse
import functools
import os
import sys
from dataclasses import dataclass
from typing import Callable, Optional

# Measure the checkout this script lives in, not whatever fastnorm is
# installed (an editable install may point at another worktree).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

import fastnorm
from fastnorm.bench import harness
from fastnorm.bench.cli import parse_ints
from fastnorm.bench.harness import Case, limit_threads, make_inputs, time_interleaved

EPS = harness.EPS
BIG = (4096, 4096)


@dataclass(frozen=True)
class Target:
    """name: the table's label; goal: the ratio to meet (at most, or with
    higher_is_better at least); threads: every thread count it runs on;
    measure(repeats=N): the ratio, or None when a competitor is missing."""

    name: str
    goal: Optional[float]  # None: a reference figure, not a target
    threads: tuple
    measure: Callable[[int], Optional[float]]
    higher_is_better: bool = False

    def met(self, value):
        if self.goal is None:
            return None
        return value >= self.goal if self.higher_is_better else value <= self.goal


def _ratio(case, threads, num, den, repeats, min_time=2e-3, extra=None):
    """Median time of competitor `num` over the faster of `den` (names)."""
    with limit_threads(threads):
        fns = harness.competitors(case)
        if extra:
            fns.update(extra(case))
        needed = {num, *den}
        if not needed <= set(fns):
            return None
        times = time_interleaved({k: fns[k] for k in needed}, repeats, min_time)
    return times[num] / min(times[d] for d in den)


def _vs(case, threads, num, den, *, rounds=1, min_time=2e-3, extra=None):
    """measure(repeats=N) for _ratio: `rounds` interleaved rounds per repeat."""

    def measure(repeats):
        return _ratio(case, threads, num, den, repeats * rounds, min_time, extra)

    return measure


def _once(fn):
    """fn(repeats) measured once per run and shared by the targets that read
    the same interleaved timings."""
    cache = {}

    def get(repeats):
        if repeats not in cache:
            cache[repeats] = fn(repeats)
        return cache[repeats]

    return get


def _plain_fastnorm(case):
    """fastnorm without weight and bias."""
    x, _, _ = make_inputs(case)
    out = np.empty_like(x)
    fn = fastnorm.layer_norm if case.op == "layer_norm" else fastnorm.rms_norm
    return {"plain": lambda: fn(x, out=out)}


ALLOC = ["allocating"]


def _with_alloc(case):
    """The same call letting fastnorm allocate its output."""
    x, w, b = make_inputs(case)
    if case.op == "layer_norm":
        return {"allocating": lambda: fastnorm.layer_norm(x, None, w, b, EPS)}
    return {"allocating": lambda: fastnorm.rms_norm(x, None, w, EPS)}


def _np_add_bias(case):
    x, _, b = make_inputs(case)
    out = np.empty_like(x)
    return {"np.add": lambda: np.add(x, b, out=out)}


def _fastnorm_threads(case, threads):
    """fastnorm on `threads` OpenMP threads, to compare thread counts in one
    interleaved run.  Sets the count through threadpoolctl's library
    controllers (one cheap call) rather than entering threadpool_limits
    around every call, whose bookkeeping would swamp a sub-millisecond call."""
    from threadpoolctl import ThreadpoolController

    controllers = ThreadpoolController().select(user_api="openmp").lib_controllers
    x, w, b = make_inputs(case)
    out = np.empty_like(x)
    fn = fastnorm.layer_norm if case.op == "layer_norm" else fastnorm.rms_norm
    args = (w, b) if case.op == "layer_norm" else (w,)

    def run():
        for c in controllers:
            c.set_num_threads(threads)
        fn(x, None, *args, EPS, out=out)

    return run


def _two_over_one_thread(case, repeats):
    with limit_threads(2):
        fns = {1: _fastnorm_threads(case, 1), 2: _fastnorm_threads(case, 2)}
        times = time_interleaved(fns, repeats * 3, 2e-3)
    return times[2] / times[1]


# ---- the forward targets ----------------------------------------------------

ROOF = ["roof"]  # the streaming copy of the bytes the pass moves (fastnorm.bench.harness)
THREADS = (1, 2)  # every target that is not about one thread count runs on both


def _thread_label(n):
    return f"{n} thread" if n == 1 else f"{n} threads"


def _on_each_thread_count(name, goal, measure_on, higher_is_better=False):
    """The target `name` (its "{threads}" filled in) on 1 and on 2 threads;
    measure_on(n) gives the measure for n threads."""
    return [
        Target(name.format(threads=_thread_label(n)), goal, (n,), measure_on(n), higher_is_better)
        for n in THREADS
    ]


def _roof_scaling(case, repeats):
    """The streaming copy's own time on 2 threads over 1: what the memory
    bus allows a memory-bound pass (a reference, not a target)."""
    x = make_inputs(case)[0]
    # each copy on its own thread count: a roof_fn left to read the limit
    # at each call would run both on the 2 threads of the timing block
    fns = {n: harness.roof_fn(x.nbytes, x.size, threads=n) for n in THREADS}
    with limit_threads(2):
        times = time_interleaved(fns, repeats, 2e-3)
    return times[2] / times[1]


def forward_targets():
    """The forward targets, float32 and float64, in the README's order."""
    targets = []
    for op, goal in (("layer_norm", 1.15), ("rms_norm", 1.10)):
        case = Case(op, BIG, "float32", "last", True)
        name = f"{op} f32 {BIG} out= {{threads}} / streaming-copy roof"
        targets += _on_each_thread_count(
            name, goal, lambda n, case=case: _vs(case, n, "fastnorm", ROOF)
        )
        targets += _on_each_thread_count(
            f"{op} f32 {BIG} out= without weight and bias, {{threads}} / streaming-copy roof",
            goal,
            lambda n, case=case: _vs(case, n, "plain", ROOF, extra=_plain_fastnorm),
        )
    for op in ("layer_norm", "rms_norm"):
        case = Case(op, BIG, "float32", "last", True)
        name = f"{op} f32 {BIG} out= / allocating, {{threads}}"
        targets += _on_each_thread_count(
            name, 1.0, lambda n, case=case: _vs(case, n, "fastnorm", ALLOC, extra=_with_alloc)
        )
    for op, goal in (("layer_norm", 0.3), ("rms_norm", 0.1)):
        case = Case(op, BIG, "float32", "last", False)
        name = f"{op} f32 {BIG} allocating {{threads}} / torch"
        targets += _on_each_thread_count(
            name, goal, lambda n, case=case: _vs(case, n, "fastnorm", ["torch"])
        )
    case = Case("layer_norm", BIG, "float32", "last", False)
    name = f"numpy layer_norm / fastnorm, f32 {BIG} {{threads}}"
    targets += _on_each_thread_count(
        name, 10.0, lambda n: _vs(case, n, "numpy", ["fastnorm"]), higher_is_better=True
    )
    small = {"rounds": 20, "min_time": 2e-4}  # (8, 768) calls: many short rounds
    for op, goal in (("layer_norm", 0.4), ("rms_norm", 0.2)):
        case = Case(op, (8, 768), "float32", "last", False)
        name = f"{op} f32 (8, 768) / torch"
        targets.append(Target(name, goal, (2,), _vs(case, 2, "fastnorm", ["torch"], **small)))
    case = Case("layer_norm", (8, 768), "float32", "last", True)
    name = "layer_norm f32 (8, 768) out= / np.add(x, b, out=)"
    add = _vs(case, 2, "fastnorm", ["np.add"], extra=_np_add_bias, **small)
    targets.append(Target(name, 2.5, (2,), add))
    for op in ("layer_norm", "rms_norm"):
        case = Case(op, (512, 4096), "float32", "last", True)
        name = f"{op} f32 (512, 4096) 2 threads / 1 thread"
        targets.append(Target(name, 0.6, (1, 2), functools.partial(_two_over_one_thread, case)))
    for op, goal in (("layer_norm", 1.5), ("rms_norm", 1.5)):
        case = Case(op, BIG, "float64", "last", True)
        name = f"{op} f64 {BIG} out= {{threads}} / streaming-copy roof"
        targets += _on_each_thread_count(
            name, goal, lambda n, case=case: _vs(case, n, "fastnorm", ROOF)
        )
    for op, goal in (("layer_norm", 1.3), ("rms_norm", 1.3)):
        case = Case(op, (16, 256, 64, 64), "float32", "channels_first", True)
        name = f"{op} f32 (16, 256, 64, 64) axis=1 out= {{threads}} / streaming-copy roof"
        targets += _on_each_thread_count(
            name, goal, lambda n, case=case: _vs(case, n, "fastnorm", ROOF)
        )
    return targets


def roof_references():
    """What the memory bus allows, beside the targets: the streaming copy
    of a (4096, 4096) float32 pass on 2 threads over 1.  Where a target's 2
    threads do not reach 0.6 of its 1 thread, this says whether the bus is
    the limit."""
    case = Case("layer_norm", BIG, "float32", "last", True)
    return [
        Target(
            f"reference: streaming copy f32 {BIG} 2 threads / 1 thread",
            None,
            (1, 2),
            functools.partial(_roof_scaling, case),
        )
    ]


# ---- in cache: the kernels' own arithmetic -----------------------------------

INCACHE_SHAPE = (16, 4096)  # 256 KiB of float32: x and y stay in L2


def _incache_times(op, dtype, isa, repeats):
    """fastnorm (kernel set `isa`, out=, one thread) and the plain two-pass
    AVX2 kernel of fastnorm._testing.plain_norm on the same rows, interleaved."""
    from fastnorm import _testing

    rng = np.random.default_rng(0)
    x = rng.standard_normal(INCACHE_SHAPE, dtype=np.float32).astype(harness.np_dtype(dtype))
    n = INCACHE_SHAPE[1]
    w = rng.standard_normal(n, dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32) if op == "layer_norm" else None
    y, y_plain = np.empty_like(x), np.empty_like(x)
    norm = fastnorm.layer_norm if op == "layer_norm" else fastnorm.rms_norm
    affine = {"weight": w, "bias": b} if op == "layer_norm" else {"weight": w}
    try:
        _testing.plain_norm(op, x, y_plain, w, b)
    except RuntimeError:  # no AVX2 loop here
        return None
    fns = {
        "fastnorm": lambda: norm(x, out=y, **affine),
        "plain": lambda: _testing.plain_norm(op, x, y_plain, w, b),
    }
    with limit_threads(1), harness.forced_isa(isa):
        times = time_interleaved(fns, repeats, 2e-3)
    return times["fastnorm"] / times["plain"]


def incache_targets():
    """fastnorm over the plain two-pass AVX2 kernel (the yardstick: no
    folding, compensation or rescans), rows in L2, one thread, on every
    SIMD kernel set this CPU runs.  The AVX-512 sets are compared with the
    same AVX2 yardstick."""
    targets = []
    isas = [i for i in fastnorm.available_isas() if i != "scalar"]
    for isa in isas:
        for dtype in ("float32", "bfloat16"):
            for op in ("layer_norm", "rms_norm"):
                targets.append(
                    Target(
                        f"{op} {dtype} {INCACHE_SHAPE} in L2, {isa} / plain AVX2 two-pass",
                        1.25,
                        (1,),
                        functools.partial(_incache_times, op, dtype, isa),
                    )
                )
    return targets


# ---- half precision ---------------------------------------------------------


def half_targets(dtype="bfloat16"):
    """out= against the streaming copy of its bytes, and allocating against
    PyTorch's kernel of that dtype, each on 1 and 2 threads."""
    targets = []
    for op, goal in (("layer_norm", 1.2), ("rms_norm", 1.2)):
        case = Case(op, BIG, dtype, "last", True)
        name = f"{op} {dtype} {BIG} out= {{threads}} / streaming-copy roof"
        targets += _on_each_thread_count(
            name, goal, lambda n, case=case: _vs(case, n, "fastnorm", ROOF)
        )
    for op, goal in (("layer_norm", 0.3), ("rms_norm", 0.1)):
        case = Case(op, BIG, dtype, "last", False)
        name = f"{op} {dtype} {BIG} allocating {{threads}} / torch {dtype}"
        targets += _on_each_thread_count(
            name, goal, lambda n, case=case: _vs(case, n, "fastnorm", ["torch"])
        )
    return targets


# ---- backward ---------------------------------------------------------------


def _backward_times(op, threads, repeats):
    case = Case(op, BIG, "float32", "last", False)
    with limit_threads(threads):
        fns = harness.backward_competitors(case)
        fns.pop("copyto")
        return time_interleaved(fns, repeats, 2e-3)


def _vs_torch(times):
    return times["fastnorm"] / times["torch"] if "torch" in times else None


def _small_backward_ratio(op, repeats):
    """A small call's backward against torch's, on one thread: at (8, 768)
    torch's native_layer_norm_backward takes several times longer on two
    threads than on one, so two would time torch's thread pool."""
    with limit_threads(1):
        fns = harness.small_backward_competitors(op)
        if "torch" not in fns:
            return None
        times = time_interleaved(fns, repeats * 20, 2e-4)  # many short rounds
    return times["fastnorm"] / times["torch"]


def backward_targets():
    """The layer_norm backward against torch's and against its memory roof
    (one interleaved run for both), and rms_norm forward plus backward
    against torch's, on 1 and 2 threads; and the backward of a small call
    alone (one thread: fastnorm runs calls this small on one anyway)."""
    targets = []
    for n in THREADS:
        ln = _once(functools.partial(_backward_times, "layer_norm", n))
        rms = _once(functools.partial(_backward_times, "rms_norm", n))
        on = _thread_label(n)
        targets += [
            Target(
                f"layer_norm_backward f32 {BIG} {on} / torch native_layer_norm_backward",
                0.4,
                (n,),
                lambda repeats, ln=ln: _vs_torch(ln(repeats)),
            ),
            Target(
                f"layer_norm_backward f32 {BIG} {on} / streaming-copy roof (1.5 x)",
                1.3,
                (n,),
                lambda repeats, ln=ln: _vs_roof(ln(repeats)),
            ),
            Target(
                f"rms_norm forward+backward f32 {BIG} {on} / torch forward+autograd",
                0.1,
                (n,),
                lambda repeats, rms=rms: _vs_torch(rms(repeats)),
            ),
        ]
    targets += [
        Target(
            "layer_norm_backward f32 (8, 768) with saved stats 1 thread"
            " / torch native_layer_norm_backward",
            0.4,
            (1,),
            functools.partial(_small_backward_ratio, "layer_norm"),
        ),
        Target(
            "rms_norm_backward f32 (8, 768) with saved rstd 1 thread"
            " / torch autograd of F.rms_norm",
            0.2,
            (1,),
            functools.partial(_small_backward_ratio, "rms_norm"),
        ),
    ]
    return targets


def _vs_roof(times):
    return times["fastnorm"] / times["roof"]


# ---- fused residual add + norm ----------------------------------------------


def _fused_times(op, threads, repeats):
    case = Case(op, BIG, "float32", "last", True)
    with limit_threads(threads):
        fns = harness.fused_competitors(case)
        fns.pop("copyto")
        return time_interleaved(fns, repeats, 2e-3)


def fused_targets():
    """The fused add + norm against its two steps, and add_layer_norm
    against the roof of its bytes (reads x and the residual, writes h and y)."""
    targets = []
    for n in THREADS:
        on = _thread_label(n)
        for op in ("layer_norm", "rms_norm"):
            times = _once(functools.partial(_fused_times, op, n))

            def vs_steps(repeats, times=times):
                t = times(repeats)
                return t["fastnorm"] / t["two steps"]

            name = f"add_{op} f32 {BIG} {on} / (np.add + {op})"
            targets.append(Target(name, 0.75, (n,), vs_steps))
            if op == "layer_norm":
                name = f"add_{op} f32 {BIG} {on} / streaming-copy roof (2 x)"
                vs_roof = lambda repeats, times=times: _vs_roof(times(repeats))  # noqa: E731
                targets.append(Target(name, 1.25, (n,), vs_roof))
    return targets


# ---- every spelling of a small call ----------------------------------------

SPELLING_N = 768


def spellings(op, dtype):
    """{name: call} for one (8, 768) call of op on x of dtype, written each
    way a NumPy or PyTorch user writes it; "int" is the form the others are
    compared with."""
    n = SPELLING_N
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, n)).astype(dtype)
    w = rng.normal(1, 0.3, n).astype(np.float32)
    b = rng.normal(0, 0.3, n).astype(np.float32)
    fn = functools.partial(getattr(fastnorm, op), eps=EPS)
    extra = {"bias": b} if op == "layer_norm" else {}
    n64, eps64 = np.int64(n), np.float64(EPS)  # made once, as a caller holds them
    calls = {
        "int": lambda: fn(x, n, weight=w, **extra),
        "tuple": lambda: fn(x, (n,), weight=w, **extra),
        "axis=-1": lambda: fn(x, weight=w, axis=-1, **extra),
        "axis=(-1,)": lambda: fn(x, weight=w, axis=(-1,), **extra),
        "np.int64": lambda: fn(x, n64, weight=w, **extra),
        "eps=np.float64": lambda: fn(x, n, weight=w, **extra, eps=eps64),
    }
    if np.dtype(dtype).itemsize == 2:
        wh = w.astype(dtype)
        half = {"bias": b.astype(dtype)} if op == "layer_norm" else {}
        calls["half weight"] = lambda: fn(x, n, weight=wh, **half)
        calls["tuple, half weight"] = lambda: fn(x, (n,), weight=wh, **half)
    return calls


def _spelling_times(op, dtype, repeats):
    return time_interleaved(spellings(op, dtype), repeats * 3, 2e-3)


def spelling_targets():
    """Each spelling of an (8, 768) call, half-precision weights included,
    costs at most 1.2x the int form with float32 weights."""
    import ml_dtypes

    targets = []
    for op in ("layer_norm", "rms_norm"):
        for dtype in (np.dtype(np.float32), np.dtype(ml_dtypes.bfloat16)):
            times = _once(functools.partial(_spelling_times, op, dtype))
            for name in list(spellings(op, dtype))[1:]:

                def ratio(repeats, times=times, name=name):
                    t = times(repeats)
                    return t[name] / t["int"]

                label = f"{op} {dtype.name} (8, {SPELLING_N}) {name} / int form"
                targets.append(Target(label, 1.2, (1,), ratio))
    return targets


# ---- Dask arrays ---------------------------------------------------------------


def _dask_times(op, repeats):
    from fastnorm.bench import dask_cases

    return dask_cases.measure(op, repeats, names=["fastnorm", "dask", "identity"])


def dask_targets():
    """fastnorm on a (32768, 4096) float32 Dask array in (2048, 4096) chunks,
    computed on the threaded scheduler with 2 workers, against the same
    normalization in Dask array operations and against an identity pass of
    the blocks (x.map_blocks(np.copy)); each timed run follows an untimed
    one of the same competitor (fastnorm/dask_cases.py says why)."""
    from fastnorm.bench import dask_cases

    shape, chunks = dask_cases.SHAPE, dask_cases.CHUNKS
    targets = []
    for op, goal in (("layer_norm", 0.2), ("rms_norm", 0.5)):
        times = _once(functools.partial(_dask_times, op))

        def vs(den, repeats, times=times):
            t = times(repeats)
            return t["fastnorm"] / t[den]

        name = f"{op} f32 {shape} Dask chunks {chunks} / Dask ops"
        targets.append(Target(name, goal, (2,), functools.partial(vs, "dask")))
        name = "  the same / identity pass x.map_blocks(np.copy)"
        targets.append(Target(name, 1.1, (2,), functools.partial(vs, "identity")))
    return targets


# ---- the report -------------------------------------------------------------


def select(targets, threads=None):
    """The targets whose thread counts are all in `threads` (None: all)."""
    if threads is None:
        return list(targets)
    return [t for t in targets if set(t.threads) <= set(threads)]


def measure(targets, repeats=21, progress=None):
    """[(target, measured ratio or None)]."""
    rows = []
    for target in targets:
        rows.append((target, target.measure(repeats=repeats)))
        if progress:
            progress.step(target.name)
    return rows


def report(rows, file=None):
    """Print the table and the count of targets met (references, which have
    no goal, are printed and not counted)."""
    file = file or sys.stdout
    width = max([68] + [len(target.name) + 2 for target, _ in rows])
    print(f"{'target':<{width}}{'measured':>10}{'goal':>8}  met", file=file)
    met = counted = 0
    for target, value in rows:
        goal = "-" if target.goal is None else target.goal
        counted += target.goal is not None
        if value is None:
            print(
                f"{target.name:<{width}}{'n/a':>10}{goal:>8}  (competitor not installed)",
                file=file,
            )
            continue
        if target.goal is None:
            print(f"{target.name:<{width}}{value:>10.3f}{'':>8}  (reference)", file=file)
            continue
        ok = target.met(value)
        met += ok
        sign = ">=" if target.higher_is_better else "<="
        print(
            f"{target.name:<{width}}{value:>10.3f}{sign:>4}{goal:<5}  {'yes' if ok else 'NO'}",
            file=file,
        )
    print(f"{met} of {counted} targets met", file=file)


def parse_args(argv):
    from fastnorm import _core

    parser = argparse.ArgumentParser(
        prog="python benchmarks/targets.py",
        description="Measure the project's speed targets (ratios of medians, side by side).",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--backward", action="store_true", help="the backward targets")
    which.add_argument("--fused", action="store_true", help="the fused residual add + norm targets")
    which.add_argument(
        "--spellings",
        action="store_true",
        help="every spelling of an (8, 768) call against its int form",
    )
    which.add_argument(
        "--dtype", choices=harness.HALF_DTYPES, help="the half-precision targets of this dtype"
    )
    which.add_argument(
        "--torch",
        action="store_true",
        help="fastnorm.torch against PyTorch (benchmarks/targets_torch.py)",
    )
    which.add_argument(
        "--incache",
        action="store_true",
        help="the kernels against a plain two-pass kernel, rows in L2, one thread",
    )
    which.add_argument(
        "--quant",
        action="store_true",
        help="the quantized outputs against their two steps and the roof (targets_quant.py)",
    )
    which.add_argument(
        "--group", action="store_true", help="GroupNorm against torch and the roof (needs torch)"
    )
    which.add_argument(
        "--dask",
        action="store_true",
        help="fastnorm on Dask arrays against Dask-native expressions (needs dask)",
    )
    parser.add_argument("--repeats", type=int, default=21, help="interleaved rounds per target")
    parser.add_argument(
        "--threads",
        type=parse_ints,
        help="only the targets that run on these thread counts, e.g. 1 or 1,2",
    )
    parser.add_argument(
        "--isa",
        choices=_core.available_isas(),
        help="force fastnorm's kernel set (default: the best this CPU supports, or FASTNORM_ISA)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    harness.require_optional(
        parser, need_torch=args.torch or args.group, need_dask=args.dask, dask_install="'.[dask]'"
    )
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.torch:
        import targets_torch

        return targets_torch.main(args.repeats, args.isa, args.threads)
    if args.dtype:
        targets = half_targets(args.dtype)
    elif args.fused:
        targets = fused_targets()
    elif args.spellings:
        targets = spelling_targets()
    elif args.backward:
        targets = backward_targets()
    elif args.dask:
        targets = dask_targets()
    elif args.incache:
        targets = incache_targets()
    elif args.quant:
        import targets_quant

        targets = targets_quant.quant_targets(Target, _thread_label, THREADS)
    elif args.group:
        import targets_group

        targets = targets_group.group_targets(Target, _thread_label, THREADS)
    else:
        targets = forward_targets()
    if not (args.spellings or args.incache or args.quant or args.group):
        targets += roof_references()
    targets = select(targets, args.threads)
    if not targets:
        print(f"no target of this set runs on threads {args.threads} alone", file=sys.stderr)
        return 2
    with harness.forced_isa(args.isa):
        print(harness.header())
        rows = measure(targets, args.repeats, harness.Progress(len(targets)))
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
