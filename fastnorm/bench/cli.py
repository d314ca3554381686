"""``python -m fastnorm``: report the build, check the results against a plain
NumPy reference, and time fastnorm against a plain-NumPy layer norm.
Exits with status 1 when the self-check fails.

``python -m fastnorm bench [options]``: the user-facing benchmark (see
``python -m fastnorm bench --help``)."""

import argparse
import os
import sys
import time

import ml_dtypes
import numpy as np

import fastnorm
from fastnorm import _core


def numpy_layer_norm(x, axis=-1, eps=1e-5):
    mean = x.mean(axis=axis, keepdims=True)
    var = x.var(axis=axis, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def numpy_rms_norm(x, axis=-1, eps=1e-6):
    return x / np.sqrt(np.mean(x * x, axis=axis, keepdims=True) + eps)


def self_check():
    """(name, max error, tolerance) for a handful of layouts and dtypes."""
    rng = np.random.default_rng(0)
    results = []
    # half precision: one rounding of the output, an ulp at |y| = 1 (relative above)
    for dtype, tol in (
        (np.float32, 2e-5),
        (np.float64, 1e-12),
        (np.float16, 2.0**-10),
        (ml_dtypes.bfloat16, 2.0**-7),
    ):
        x = rng.normal(2, 3, (37, 515)).astype(dtype)
        xc = rng.normal(0, 1, (2, 24, 5, 7)).astype(dtype)
        cases = [
            (
                "layer_norm last axis",
                fastnorm.layer_norm(x),
                numpy_layer_norm(x.astype(np.float64)),
            ),
            (
                "layer_norm Fortran",
                fastnorm.layer_norm(np.asfortranarray(x)),
                numpy_layer_norm(x.astype(np.float64)),
            ),
            (
                "layer_norm axis=1 (NCHW)",
                fastnorm.layer_norm(xc, axis=1),
                numpy_layer_norm(xc.astype(np.float64), axis=1),
            ),
            (
                "rms_norm last axis",
                fastnorm.rms_norm(x, eps=1e-6),
                numpy_rms_norm(x.astype(np.float64)),
            ),
            (
                "rms_norm strided",
                fastnorm.rms_norm(x[::2, ::3], eps=1e-6),
                numpy_rms_norm(x[::2, ::3].astype(np.float64)),
            ),
        ]
        for name, got, want in cases:
            got = got.astype(np.float64)
            err = float(np.max(np.abs(got - want) / np.maximum(1, np.abs(want))))
            results.append((f"{name} {np.dtype(dtype).name}", err, tol))
    return results


def time_once(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def timing_table(shapes, repeats):
    """(shape, fastnorm seconds, numpy seconds): medians of interleaved runs,
    so that noise on this shared machine hits both competitors alike."""
    rows = []
    for shape in shapes:
        x = np.random.default_rng(1).standard_normal(shape, dtype=np.float32)
        out = np.empty_like(x)
        t_np, t_fn = [], []
        for _ in range(repeats):
            t_np.append(time_once(lambda x=x: numpy_layer_norm(x)))
            t_fn.append(time_once(lambda x=x, out=out: fastnorm.layer_norm(x, out=out)))
        rows.append((shape, float(np.median(t_fn)), float(np.median(t_np))))
    return rows


def parse_shapes(text):
    try:
        return [tuple(int(v) for v in part.lower().split("x")) for part in text.split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--shapes takes sizes like 8x768,4096x4096, got {text!r}"
        ) from None


def parse_ints(text):
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def bench_main(argv):
    from . import harness

    parser = argparse.ArgumentParser(
        prog="python -m fastnorm bench",
        description="Time fastnorm against NumPy, PyTorch (if installed) and the memory roof "
        "(a copy of the bytes each pass moves: streaming stores on x86-64, memcpy elsewhere).",
    )
    parser.add_argument(
        "--shapes",
        type=parse_shapes,
        default=[s for s in harness.DEFAULT_SHAPES if s != (32768, 1024)],
        help="comma-separated shapes, e.g. 8x768,4096x4096 "
        "(4-D shapes with --layout channels_first)",
    )
    parser.add_argument(
        "--dtype", choices=["float32", "float64", "float16", "bfloat16"], default="float32"
    )
    parser.add_argument(
        "--threads", type=parse_ints, default=[1, 2], help="thread counts to measure, e.g. 1,2"
    )
    parser.add_argument(
        "--op", default="layer_norm,rms_norm", help="layer_norm, rms_norm or both (comma-separated)"
    )
    parser.add_argument("--layout", choices=["last", "channels_first"], default="last")
    parser.add_argument(
        "--alloc",
        action="store_true",
        help="let each call allocate its output (default: out= preallocated)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="interleaved rounds per case (default 21; 5 with --dask)",
    )
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw GB/s against size for every competitor (needs matplotlib)",
    )
    # the project's speed targets left the package: a pointer for old habits
    parser.add_argument("--targets", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--backward",
        action="store_true",
        help="time the backward passes (with --torch: forward plus backward)",
    )
    parser.add_argument(
        "--fused",
        action="store_true",
        help="time the fused residual add + norm against its two steps",
    )
    parser.add_argument(
        "--torch",
        action="store_true",
        help="time fastnorm.torch's function and module against PyTorch's "
        "(ratios of medians, side by side; needs torch)",
    )
    parser.add_argument(
        "--dask",
        action="store_true",
        help="time fastnorm on a (32768, 4096) float32 Dask array in (2048, 4096) chunks "
        "against the Dask-native expression and an identity pass (threaded scheduler, "
        "2 workers; needs dask: pip install 'fastnorm-layernorm[dask]')",
    )
    parser.add_argument(
        "--isa",
        choices=_core.available_isas(),
        help="force fastnorm's kernel set for the run (default: the best "
        "this CPU supports, or FASTNORM_ISA)",
    )
    args = parser.parse_args(argv)
    if args.targets:
        parser.error(
            "the project's speed targets moved out of the package: run "
            "python benchmarks/targets.py in a source checkout"
        )
    if args.repeats is None:
        args.repeats = 5 if args.dask else 21
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    harness.require_optional(parser, need_torch=args.torch, need_dask=args.dask)
    if args.dask:
        if args.torch or args.fused or args.backward or args.plot:
            parser.error("--dask takes --op, --repeats and --isa")
    with harness.forced_isa(args.isa):
        return _bench_dispatch(parser, args)


def _bench_dispatch(parser, args):
    from . import harness

    ops = [o.strip() for o in args.op.split(",") if o.strip()]
    for op in ops:
        if op not in ("layer_norm", "rms_norm"):
            parser.error(f"--op takes layer_norm and/or rms_norm, got {op!r}")
    if args.dask:
        from . import dask_cases

        return dask_cases.bench_dask(args.repeats, ops)
    if args.torch:
        if args.layout != "last" or args.fused or args.alloc or args.plot:
            parser.error(
                "--torch compares last-axis calls; it takes --shapes, --dtype, "
                "--threads, --op, --backward, --repeats and --isa"
            )
        if args.backward and args.dtype not in ("float32", "float64"):
            parser.error("--torch --backward compares float32 or float64")
        return bench_torch(args, ops)
    if args.fused:
        return bench_fused(args)
    if args.backward and args.layout != "last":
        parser.error("--backward measures the last-axis layout")
    if args.layout == "channels_first" and any(len(s) != 4 for s in args.shapes):
        parser.error("--layout channels_first needs 4-D shapes such as 8x96x56x56")
    if args.plot:
        try:
            import matplotlib
        except ImportError:
            parser.error("--plot needs matplotlib: pip install matplotlib")
        matplotlib.use("Agg")

    cases = [
        (harness.Case(op, shape, args.dtype, args.layout, not args.alloc), n)
        for op in ops
        for shape in args.shapes
        for n in args.threads
    ]
    print(harness.header())
    progress = harness.Progress(len(cases))
    rows = []
    for case, n in cases:
        with harness.limit_threads(n):
            if args.backward:
                fns = harness.backward_competitors(case)
            else:
                fns = harness.competitors(case)
            times = harness.time_interleaved(fns, args.repeats, min_time=2e-3)
        row = harness.summarize(case, times, backward=args.backward)
        row["threads"] = n
        row["shape"] = case.shape
        row["op"] = case.op
        row["nbytes"] = case.bytes_moved() // 2  # x's bytes
        rows.append(row)
        progress.step(case.label)
    header = (
        f"{'case':<44}{'thr':>4}{'time':>11}{'GB/s':>8}{'% roof':>8}{'x copyto':>10}"
        f"{'x numpy':>9}{'x torch':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        torch_txt = f"{r['vs_torch']:.1f}" if r["vs_torch"] is not None else "-"
        numpy_txt = f"{r['vs_numpy']:.1f}" if r["vs_numpy"] is not None else "-"
        print(
            f"{r['case']:<44}{r['threads']:>4}{harness.fmt_time(r['time']):>11}{r['gbps']:>8.1f}"
            f"{r['roof_pct']:>7.0f}%{r['vs_copyto']:>10.2f}{numpy_txt:>9}{torch_txt:>9}"
        )
    if args.backward:
        print(
            "backward: layer_norm is layer_norm_backward with the forward's stats; rms_norm is "
            "forward plus backward. GB/s counts the bytes each moves (layer_norm reads x and dy "
            f"and writes dx; rms_norm adds its forward); % roof is a {harness.roof_kind()} of "
            "as many bytes over fastnorm's time; numpy has no backward ('-')."
        )
    else:
        print(
            "GB/s counts one read of x and one write of y; % roof is the time of a "
            f"{harness.roof_kind()} of x's bytes between aligned buffers over fastnorm's; "
            "x copyto is np.copyto's time over fastnorm's."
        )
    if args.plot:
        plot(rows, args.plot)
        print(f"plot written to {args.plot}")
    return 0


def bench_torch(args, ops):
    """fastnorm.torch against torch on the given shapes, dtype and threads
    (the ISA is already forced by bench_main)."""
    from . import harness, torch_cases

    cases = torch_cases.comparison_cases(ops, args.shapes, args.dtype, args.threads, args.backward)
    result = torch_cases.run(cases, args.repeats, progress=harness.Progress(len(cases)))
    # a case whose result differs from torch's has no ratio: that is a failure
    return 0 if all(row.error is None for row in result.rows) else 1


def bench_fused(args):
    from . import harness

    cases = [
        (harness.Case(op, shape, args.dtype, "last", True), n)
        for op in ("layer_norm", "rms_norm")
        for shape in args.shapes
        for n in args.threads
    ]
    progress = harness.Progress(len(cases))
    rows = []
    for case, n in cases:
        with harness.limit_threads(n):
            times = harness.time_interleaved(harness.fused_competitors(case), args.repeats, 2e-3)
        rows.append((case, n, times))
        progress.step(case.label)
    print(f"{'case':<44}{'thr':>4}{'fused':>11}{'2 steps':>11}{'ratio':>8}")
    for case, n, t in rows:
        print(
            f"{'add_' + case.label:<44}{n:>4}{harness.fmt_time(t['fastnorm']):>11}"
            f"{harness.fmt_time(t['two steps']):>11}{t['fastnorm'] / t['two steps']:>8.2f}"
        )
    print(
        "fused: add_layer_norm / add_rms_norm with out= and residual_out=; "
        "2 steps: np.add(x, r, out=h), then the norm with out=."
    )
    return 0


def plot(rows, path):
    import matplotlib.pyplot as plt

    from . import harness

    roof_label = f"{harness.roof_kind()} roof"
    series: dict[tuple, dict[str, list]] = {}
    for r in rows:
        nbytes = r["nbytes"]
        key = (r["op"], r["threads"])
        times = dict(r["times"])
        times[roof_label] = times.pop("roof")
        for name, t in times.items():
            series.setdefault(key, {}).setdefault(name, []).append((nbytes, 2 * nbytes / t / 1e9))
    fig, axes = plt.subplots(1, len(series), figsize=(6 * len(series), 4.5), squeeze=False)
    for ax, ((op, threads), by_name) in zip(axes[0], sorted(series.items())):
        for name, points in sorted(by_name.items()):
            points.sort()
            xs, ys = zip(*points)
            roof = name == roof_label
            style = dict(color="black", linestyle="--") if roof else dict(marker="o")
            ax.plot(xs, ys, label=name, **style)
        ax.set_xscale("log")
        ax.set_xlabel("array size (bytes)")
        ax.set_ylabel("GB/s (read x + write y)")
        ax.set_title(f"{op}, {threads} thread{'s' if threads > 1 else ''}")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "bench":
        return bench_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m fastnorm",
        description=__doc__.splitlines()[0],
        epilog="python -m fastnorm bench --help: the benchmark",
    )
    parser.add_argument("--repeats", type=int, default=15, help="timing repeats per shape")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also say which copy of fastnorm runs, and from where",
    )
    args = parser.parse_args(argv)
    if args.verbose:
        print(f"fastnorm package: {os.path.dirname(fastnorm.__file__)}")
        print(f"compiled core:    {_core.__file__}")
        deferred_from = getattr(fastnorm, "_deferred_from", None)
        if deferred_from:
            print(
                f"(the source checkout {deferred_from} has no compiled core: "
                "running the installed copy, Python and C both)"
            )

    print(f"fastnorm {fastnorm.__version__}  (numpy {np.__version__})")
    print(
        f"build:   OpenMP {'on' if _core.openmp_enabled else 'OFF (serial build)'}; "
        f"flags: {_core.build_flags}"
    )
    print(f"kernels: {_core.isa()}")
    print(f"threads: {_core.max_threads()} (OMP_NUM_THREADS / threadpoolctl)")
    print()
    print("self-check against a NumPy float64 reference:")
    ok = True
    for name, err, tol in self_check():
        passed = err <= tol
        ok &= passed
        print(
            f"  {'ok  ' if passed else 'FAIL'} {name:<36} max error {err:.2e} (tolerance {tol:.0e})"
        )
    print()
    print("layer_norm, float32, out= preallocated; median of", args.repeats, "interleaved runs:")
    print(f"  {'shape':<14}{'fastnorm':>12}{'numpy':>12}{'speed-up':>10}")
    for shape, t_fn, t_np in timing_table([(8, 768), (512, 4096), (4096, 4096)], args.repeats):
        print(f"  {str(shape):<14}{t_fn * 1e3:>10.3f}ms{t_np * 1e3:>10.3f}ms{t_np / t_fn:>9.1f}x")
    print()
    print("self-check:", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
