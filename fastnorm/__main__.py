"""``python -m fastnorm``: report the build, check the results against a plain
NumPy reference, and time fastnorm against a plain-NumPy layer norm.

Exits with status 1 when the self-check fails."""
import argparse
import sys
import time

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
    for dtype, tol in ((np.float32, 2e-5), (np.float64, 1e-12)):
        x = rng.normal(2, 3, (37, 515)).astype(dtype)
        xc = rng.normal(0, 1, (2, 24, 5, 7)).astype(dtype)
        cases = [
            ("layer_norm last axis", fastnorm.layer_norm(x), numpy_layer_norm(x.astype(np.float64))),
            ("layer_norm Fortran", fastnorm.layer_norm(np.asfortranarray(x)),
             numpy_layer_norm(x.astype(np.float64))),
            ("layer_norm axis=1 (NCHW)", fastnorm.layer_norm(xc, axis=1),
             numpy_layer_norm(xc.astype(np.float64), axis=1)),
            ("rms_norm last axis", fastnorm.rms_norm(x, eps=1e-6), numpy_rms_norm(x.astype(np.float64))),
            ("rms_norm strided", fastnorm.rms_norm(x[::2, ::3], eps=1e-6),
             numpy_rms_norm(x[::2, ::3].astype(np.float64))),
        ]
        for name, got, want in cases:
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
            t_np.append(time_once(lambda: numpy_layer_norm(x)))
            t_fn.append(time_once(lambda: fastnorm.layer_norm(x, out=out)))
        rows.append((shape, float(np.median(t_fn)), float(np.median(t_np))))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastnorm", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timing repeats per shape")
    args = parser.parse_args(argv)

    print(f"fastnorm {fastnorm.__version__}  (numpy {np.__version__})")
    print(f"build:   OpenMP {'on' if _core.openmp_enabled else 'OFF (serial build)'}; "
          f"flags: {_core.build_flags}")
    print(f"kernels: {_core.isa()}")
    print(f"threads: {_core.max_threads()} (OMP_NUM_THREADS / threadpoolctl)")
    print()
    print("self-check against a NumPy float64 reference:")
    ok = True
    for name, err, tol in self_check():
        passed = err <= tol
        ok &= passed
        print(f"  {'ok  ' if passed else 'FAIL'} {name:<36} max error {err:.2e} (tolerance {tol:.0e})")
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
