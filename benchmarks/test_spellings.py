"""pytest-benchmark suite: every spelling of one small call, side by side.

One (8, 768) layer_norm (and rms_norm) call written each way a NumPy or
PyTorch user writes it: an int or tuple normalized_shape, axis=-1 or (-1,),
a NumPy integer, a float or NumPy eps, float32 or half-precision weights.
Each spelling runs the same argument rules (fastnorm/_calls.pxi), so each
should cost about what the int form costs; the project's goal (at most 1.2x
the int form) is measured by python benchmarks/targets.py --spellings.

    pytest benchmarks/test_spellings.py
"""

import os
import sys

import ml_dtypes
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import targets

N = targets.SPELLING_N
spellings = targets.spellings


CASES = [
    (op, dt)
    for op in ("layer_norm", "rms_norm")
    for dt in (np.float32, np.float16, ml_dtypes.bfloat16)
]
IDS = [f"{op}-{np.dtype(dt).name}" for op, dt in CASES]


@pytest.mark.parametrize("op,dtype", CASES, ids=IDS)
@pytest.mark.parametrize("spelling", list(spellings("layer_norm", np.float16)))
def test_spelling(benchmark, op, dtype, spelling):
    calls = spellings(op, dtype)
    if spelling not in calls:
        pytest.skip("half-precision weights apply to half-precision inputs")
    # each spelling gives its int form's bits (half weights: the int form
    # with the same half weights)
    want = calls["half weight" if "half weight" in spelling else "int"]()
    assert np.array_equal(
        np.asarray(calls[spelling]()).view(np.uint8), np.asarray(want).view(np.uint8)
    )
    benchmark.group = f"{op} {np.dtype(dtype).name} (8, {N}) spellings"
    benchmark(calls[spelling])
