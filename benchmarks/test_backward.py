"""pytest-benchmark suite for the backward passes, grouped per case:

- layer_norm: fastnorm.layer_norm_backward with the forward's stats, against
  torch.ops.aten.native_layer_norm_backward (all three outputs);
- rms_norm: forward plus backward, against torch's forward plus autograd;
- the memory roof: a streaming copy of the bytes each pass moves, and
  np.copyto of x as a labelled reference.

extra_info["GB/s"] counts the bytes each pass moves (layer_norm: reading x
and dy, writing dx; rms_norm: its forward too)."""

import pytest

from fastnorm.bench import harness

COMPETITORS = ["fastnorm", "torch", "roof", "copyto"]
CASES = [
    (harness.Case(op, s, "float32", "last", False), t)
    for op in ("layer_norm", "rms_norm")
    for s in [(8, 768), (512, 4096), (4096, 4096)]
    for t in (1, 2)
]


@pytest.mark.parametrize("competitor", COMPETITORS)
@pytest.mark.parametrize(
    "case,threads", CASES, ids=[f"{c.op}-{'x'.join(map(str, c.shape))}-{t}thr" for c, t in CASES]
)
def test_backward(benchmark, case, threads, competitor):
    fns = harness.backward_competitors(case)
    if competitor not in fns:
        pytest.skip(f"{competitor} is not installed")
    benchmark.group = f"backward {case.op} {case.shape} {case.dtype}, {threads} thread(s)"
    traffic = harness.ROOF_COPIES[harness.backward_pass(case)] * case.bytes_moved()
    benchmark.extra_info["bytes"] = traffic
    with harness.limit_threads(threads):
        benchmark(fns[competitor])
    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.median > 0:
        benchmark.extra_info["GB/s"] = traffic / stats.stats.median / 1e9
