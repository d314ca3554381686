"""pytest-benchmark cases for the GroupNorm UNet end to end,
stock against fastnorm.torch.patch, on a small config; every case checks
the patched model's output against stock first.

    pytest benchmarks/test_unet_e2e.py                  # time them
    pytest benchmarks --benchmark-disable -q            # CI: every case once, untimed
"""

import os
import sys

import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import unet_e2e  # noqa: E402  (imports torch: after the skip)


@pytest.mark.parametrize("variant", ["stock", "patched"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", list(unet_e2e.DTYPES))
def test_unet_forward(benchmark, variant, channels_last, dtype):
    stock, patched, x, names = unet_e2e.build(unet_e2e.DTYPES[dtype], channels_last, 2, 32, 32)
    unet_e2e.check(stock, patched, x, names)
    model = stock if variant == "stock" else patched
    with torch.no_grad():
        benchmark(model, x)
