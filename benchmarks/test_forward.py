"""pytest-benchmark suite: fastnorm, NumPy, PyTorch CPU (when installed) and
the memory roof (a streaming copy of the same bytes, fastnorm.bench.harness) and
np.copyto as a labelled reference, side by side, one group per case.

    pytest benchmarks                                  # run and print the tables
    pytest benchmarks --benchmark-autosave             # keep a baseline
    pytest benchmarks --benchmark-compare --benchmark-compare-fail=median:10%

Each benchmark records the bandwidth it reached (one read of x, one write of
y) in extra_info["GB/s"].  CI runs the suite with --benchmark-disable (every
case once, untimed) so that it cannot rot."""

import pytest

from fastnorm.bench import harness

COMPETITORS = ["fastnorm", "numpy", "torch", "roof", "copyto"]

LAST = [(1, 768), (8, 768), (512, 4096), (4096, 4096), (32768, 1024)]
CASES = (
    [
        (harness.Case(op, s, "float32", "last", True), t)
        for op in ("layer_norm", "rms_norm")
        for s in LAST
        for t in (1, 2)
    ]
    + [
        (harness.Case(op, s, "float32", "last", False), 2)
        for op in ("layer_norm", "rms_norm")
        for s in [(8, 768), (4096, 4096)]
    ]
    + [
        (harness.Case(op, s, "float64", "last", True), 1)
        for op in ("layer_norm", "rms_norm")
        for s in [(512, 4096), (4096, 4096)]
    ]
    + [
        (harness.Case(op, s, "float32", "channels_first", True), t)
        for op in ("layer_norm", "rms_norm")
        for s in [(8, 96, 56, 56), (16, 256, 64, 64)]
        for t in (1, 2)
    ]
    + [
        (harness.Case(op, s, "bfloat16", "last", out), t)
        for op in ("layer_norm", "rms_norm")
        for s in [(8, 768), (4096, 4096)]
        for out, t in ((True, 1), (False, 2))
    ]
)


@pytest.mark.parametrize("competitor", COMPETITORS)
@pytest.mark.parametrize(
    "case,threads", CASES, ids=[f"{c.label.replace(' ', '-')}-{t}thr" for c, t in CASES]
)
def test_forward(benchmark, case, threads, competitor):
    fns = harness.competitors(case)
    if competitor not in fns:
        pytest.skip(f"{competitor} is not installed or does not apply to {case.dtype}")
    benchmark.group = f"{case.label}, {threads} thread(s)"
    benchmark.extra_info["bytes"] = case.bytes_moved()
    with harness.limit_threads(threads):
        benchmark(fns[competitor])
    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.median > 0:
        benchmark.extra_info["GB/s"] = case.bytes_moved() / stats.stats.median / 1e9
