"""End to end for GroupNorm: what fastnorm.torch.patch buys on a
small UNet-style convolutional model built from torch modules.

    python benchmarks/unet_e2e.py                          # batch 8, 64x64, width 64
    python benchmarks/unet_e2e.py --batch 2 --size 32 --repeats 3   # quick look

The model is conv + GroupNorm + SiLU blocks, down, middle and up with a skip
(GroupNorm(32, C) as Stable Diffusion's UNet and VAE use it).  For each dtype
(float32, bfloat16) and memory format (contiguous, channels_last) the stock
model and a patched deep copy (same weights) are checked (patch must switch
every GroupNorm, and the outputs must agree with stock within the dtype's
rounding), then their forward passes timed in interleaved rounds in one
process (fastnorm.bench.harness.time_interleaved), medians, on each thread
count.  The functions are reused by benchmarks/test_unet_e2e.py on a small
config.
"""

import argparse
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

import fastnorm.torch as fnt
from fastnorm.bench.harness import time_interleaved

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class UNet(torch.nn.Module):
    """conv + GroupNorm(32) + SiLU blocks: down, middle (half resolution,
    twice the width) and up, with a skip connection."""

    def __init__(self, width=64):
        super().__init__()

        def block(cin, cout):
            return torch.nn.Sequential(
                torch.nn.Conv2d(cin, cout, 3, padding=1),
                torch.nn.GroupNorm(32, cout),
                torch.nn.SiLU(),
            )

        self.down = torch.nn.Sequential(block(3, width), block(width, width))
        self.mid = torch.nn.Sequential(
            torch.nn.AvgPool2d(2), block(width, 2 * width), block(2 * width, 2 * width)
        )
        self.up = torch.nn.Upsample(scale_factor=2)
        self.out = torch.nn.Sequential(block(3 * width, width), torch.nn.Conv2d(width, 3, 1))

    def forward(self, x):
        d = self.down(x)
        return self.out(torch.cat([d, self.up(self.mid(d))], dim=1))


def build(dtype, channels_last, batch, size, width, seed=0):
    """(stock model, patched copy, input, names patched)."""
    torch.manual_seed(seed)
    stock = UNet(width).to(dtype).eval()
    x = torch.randn(batch, 3, size, size).to(dtype)
    if channels_last:
        stock = stock.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    patched = copy.deepcopy(stock)
    names = fnt.patch(patched)
    return stock, patched, x, names


def check(stock, patched, x, names):
    """The largest difference between the outputs, after checking that every
    GroupNorm was switched and that the outputs agree."""
    n_groupnorm = sum(isinstance(m, torch.nn.GroupNorm) for m in stock.modules())
    assert len(names) == n_groupnorm, (names, n_groupnorm)
    with torch.no_grad():
        want, got = stock(x), patched(x)
    tol = 1e-4 if x.dtype == torch.float32 else 5e-2
    torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol)
    assert got.is_contiguous(memory_format=torch.channels_last) == want.is_contiguous(
        memory_format=torch.channels_last
    )
    return float((got.float() - want.float()).abs().max())


def time_forward(stock, patched, x, repeats):
    """Median seconds of a forward pass, stock and patched, interleaved."""
    with torch.no_grad():
        return time_interleaved(
            {"stock": lambda: stock(x), "patched": lambda: patched(x)}, repeats, 2e-3
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args(argv)
    print(f"UNet width {args.width}, input ({args.batch}, 3, {args.size}, {args.size})")
    print(
        f"{'threads':>7} {'dtype':>9} {'format':>14} {'stock ms':>9} {'patched ms':>11}"
        f" {'ratio':>6} {'max diff':>9}"
    )
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for dname, dtype in DTYPES.items():
            for channels_last in (False, True):
                stock, patched, x, names = build(
                    dtype, channels_last, args.batch, args.size, args.width
                )
                diff = check(stock, patched, x, names)
                t = time_forward(stock, patched, x, args.repeats)
                fmt = "channels_last" if channels_last else "contiguous"
                print(
                    f"{threads:>7} {dname:>9} {fmt:>14} {t['stock'] * 1e3:9.2f} "
                    f"{t['patched'] * 1e3:11.2f} {t['patched'] / t['stock']:6.2f} {diff:9.2e}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
