"""Benchmark cases for fastnorm on Dask arrays: ``python -m fastnorm bench
--dask`` and the Dask speed targets (``benchmarks/targets.py --dask``).

The case: a (32768, 4096) float32 Dask array in chunks of
(2048, 4096), computed on Dask's threaded scheduler with 2 workers.  Each
competitor is a zero-argument callable that builds its graph and computes it
(``.compute()``, the result gathered into one NumPy array):

- ``fastnorm``: fastnorm.layer_norm (or rms_norm) on the Dask array;
- ``dask``: the same normalization written with Dask array operations;
- ``identity``: ``x.map_blocks(np.copy)``, moving the blocks through Dask
  and nothing else (the roof a blockwise normalization can reach);
- ``gather``: ``x.compute()`` alone;
- ``fastnorm, task threads=default``: fastnorm with its OpenMP threads not
  limited inside the tasks (dask config ``fastnorm.task-threads: None``),
  to check that limiting them to 1 is right.

Measuring: memory freed for a couple of seconds seems to go back to the host
on these machines, so the first touch of fresh memory can make one run many
times slower than the next.  Every timed run is therefore preceded by an
untimed run of the same competitor, and the competitors are interleaved
(``time_warm_interleaved``).
"""

import time

import numpy as np

import fastnorm

from .harness import EPS

SHAPE = (32768, 4096)
CHUNKS = (2048, 4096)
WORKERS = 2


def dask_competitors(op="layer_norm", shape=SHAPE, chunks=CHUNKS, threads_variant=False):
    """{name: callable} for one op on a float32 Dask array of shape in chunks."""
    import dask
    import dask.array as da

    rng = np.random.default_rng(0)
    x_np = rng.standard_normal(shape, dtype=np.float32)
    w = rng.standard_normal(shape[-1]).astype(np.float32)
    b = rng.standard_normal(shape[-1]).astype(np.float32)
    x = da.from_array(x_np, chunks=chunks)
    fns = {}
    if op == "layer_norm":
        fns["fastnorm"] = lambda: fastnorm.layer_norm(x, weight=w, bias=b, eps=EPS).compute()

        def native():
            mean = x.mean(-1, keepdims=True)
            var = x.var(-1, keepdims=True)
            return ((x - mean) / da.sqrt(var + EPS) * w + b).compute()

        def unlimited():
            with dask.config.set({"fastnorm.task-threads": None}):
                y = fastnorm.layer_norm(x, weight=w, bias=b, eps=EPS)
            return y.compute()
    else:
        fns["fastnorm"] = lambda: fastnorm.rms_norm(x, weight=w, eps=EPS).compute()

        def native():
            return (x / da.sqrt((x * x).mean(-1, keepdims=True) + EPS) * w).compute()

        def unlimited():
            with dask.config.set({"fastnorm.task-threads": None}):
                y = fastnorm.rms_norm(x, weight=w, eps=EPS)
            return y.compute()

    fns["dask"] = native
    fns["identity"] = lambda: x.map_blocks(np.copy).compute()
    fns["gather"] = lambda: x.compute()
    if threads_variant:
        fns["fastnorm, task threads=default"] = unlimited
    return fns


def time_warm_interleaved(fns, repeats):
    """Median seconds of each callable over `repeats` interleaved rounds;
    in each round every competitor runs once untimed, then once timed."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            fn()  # untimed: touches fresh memory, fills caches and pools
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: float(np.median(v)) for name, v in samples.items()}


def measure(op, repeats, names=None, threads_variant=False, shape=SHAPE, chunks=CHUNKS):
    """Median times of the competitors (all, or `names`) on the threaded
    scheduler with WORKERS workers."""
    import dask

    fns = dask_competitors(op, shape, chunks, threads_variant)
    if names is not None:
        fns = {k: fns[k] for k in names}
    with dask.config.set(scheduler="threads", num_workers=WORKERS):
        return time_warm_interleaved(fns, repeats)


def bench_dask(repeats=5, ops=("layer_norm", "rms_norm"), shape=SHAPE, chunks=CHUNKS, file=None):
    """Print the Dask comparison table: each competitor's median time and
    its ratio to the Dask-native expression and to the identity pass."""
    import dask

    from .harness import fmt_time, header

    print(header(), file=file)
    print(
        f"dask {dask.__version__}: {shape} float32 in chunks of {chunks}, threaded scheduler "
        f"with {WORKERS} workers; median of {repeats} timed runs, each after an untimed one",
        file=file,
    )
    print(f"{'case':<44}{'time':>11}{'/ dask':>9}{'/ identity':>12}", file=file)
    for op in ops:
        times = measure(op, repeats, threads_variant=True, shape=shape, chunks=chunks)
        for name, t in times.items():
            print(
                f"{op + ' ' + name:<44}{fmt_time(t):>11}{t / times['dask']:>9.3f}"
                f"{t / times['identity']:>12.3f}",
                file=file,
            )
    return 0
