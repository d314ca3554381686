"""pytest-benchmark suite for fastnorm.torch against PyTorch: the speed
targets, one group per case with both competitors in it.  The
targets (shapes, dtypes, thread counts, goals) live in
benchmarks/targets_torch.py, which ``python benchmarks/targets.py --torch``
measures as ratios.

    pytest benchmarks/test_torch.py                       # both competitors, per case
    pytest benchmarks/test_torch.py --benchmark-group-by=group

Each fastnorm test checks the result (and gradients) of the call it timed
against torch's, so that CI's --benchmark-disable run (each call once,
untimed) catches a broken call rather than a benchmark silently timing it."""

import os
import sys

import pytest

pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import targets_torch

from fastnorm.bench import torch_cases

TARGETS = targets_torch.TARGETS


@pytest.mark.parametrize("competitor", ["fastnorm", "torch"])
@pytest.mark.parametrize("case", TARGETS, ids=[c.key for c in TARGETS])
def test_torch_target(benchmark, case, competitor):
    pair = torch_cases.build(case)
    benchmark.group = f"{case.label}, {case.threads} thread(s), goal fastnorm/torch <= {case.goal}"
    benchmark.extra_info["goal"] = case.goal
    with torch_cases.case_context(case):
        result = benchmark(getattr(pair, competitor))
        if competitor == "fastnorm":
            # the timed call's own result (pytest-benchmark returns the last
            # call's) must match torch's, or the figure means nothing
            torch_cases.check(case, result, pair.torch())
