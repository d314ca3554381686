"""pytest-benchmark suite for the fused residual add + norm: add_layer_norm
and add_rms_norm (out= and residual_out= preallocated) against their two
steps (np.add, then the norm) and the memory roof of their bytes (a
streaming copy of twice x's bytes: they read x and the residual and write
h and y), one group per case."""

import pytest

from fastnorm.bench import harness

COMPETITORS = ["fastnorm", "two steps", "roof", "copyto"]
CASES = [
    (harness.Case(op, s, "float32", "last", True), t)
    for op in ("layer_norm", "rms_norm")
    for s in [(8, 768), (1024, 4096), (4096, 4096)]
    for t in (1, 2)
]


@pytest.mark.parametrize("competitor", COMPETITORS)
@pytest.mark.parametrize(
    "case,threads",
    CASES,
    ids=[f"add_{c.op}-{'x'.join(map(str, c.shape))}-{t}thr" for c, t in CASES],
)
def test_fused(benchmark, case, threads, competitor):
    fns = harness.fused_competitors(case)
    benchmark.group = f"add_{case.op} {case.shape} {case.dtype}, {threads} thread(s)"
    traffic = harness.ROOF_COPIES["fused"] * case.bytes_moved()
    benchmark.extra_info["bytes"] = traffic
    with harness.limit_threads(threads):
        benchmark(fns[competitor])
    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.median > 0:
        benchmark.extra_info["GB/s"] = traffic / stats.stats.median / 1e9
