"""Patch a small PyTorch transformer's norms with fastnorm and check that it
still computes the same thing, forward and backward; print timings.

    python examples/torch_patch.py [--steps 20] [--threads 1] [--quiet]

The model is a pre-norm transformer (nn.LayerNorm before attention, nn.RMSNorm
before the MLP, a final nn.LayerNorm).  fastnorm.torch.patch switches those
modules to fastnorm's kernels in place; fastnorm.torch.unpatch switches back.
"""

import argparse
import statistics
import sys
import time

import torch

import fastnorm.torch as fnt


class Block(torch.nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(d)
        self.attn = torch.nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm2 = torch.nn.RMSNorm(d)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(d, 4 * d), torch.nn.GELU(), torch.nn.Linear(4 * d, d)
        )

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyLM(torch.nn.Module):
    def __init__(self, vocab=256, d=128, heads=4, layers=2):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, d)
        self.blocks = torch.nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.final = torch.nn.LayerNorm(d)
        self.head = torch.nn.Linear(d, vocab)

    def forward(self, ids):
        x = self.emb(ids)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.final(x))


def _forward_backward(model, ids):
    model.zero_grad(set_to_none=True)
    logits = model(ids)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids.flatten())
    loss.backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _median_ms(fn, steps):
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def run(steps=20, threads=1, quiet=False):
    """Returns (max logit difference, max gradient difference, timings in ms)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # shared with fastnorm's OpenMP: restored below
    try:
        return _run(steps, threads, quiet)
    finally:
        torch.set_num_threads(previous)


def _run(steps, threads, quiet):
    torch.manual_seed(0)
    model = TinyLM()
    ids = torch.randint(0, 256, (4, 64))

    want_logits, want_grads = _forward_backward(model, ids)
    names = fnt.patch(model)
    got_logits, got_grads = _forward_backward(model, ids)
    logit_diff = (got_logits - want_logits).abs().max().item()
    grad_diff = max((got_grads[n] - want_grads[n]).abs().max().item() for n in want_grads)

    timings = {}
    with torch.no_grad():  # interleaved rounds: patched, then torch's own
        for label in ("fastnorm", "torch"):
            timings[label] = []
        for _ in range(steps):
            timings["fastnorm"].append(_median_ms(lambda: model(ids), 3))
            fnt.unpatch(model)
            timings["torch"].append(_median_ms(lambda: model(ids), 3))
            fnt.patch(model, verify=False)
    timings = {k: statistics.median(v) for k, v in timings.items()}
    if not quiet:
        print(f"patched {len(names)} modules: {', '.join(names)}")
        print(f"max |logits difference|   {logit_diff:.3g}")
        print(f"max |gradient difference| {grad_diff:.3g}")
        print(
            f"no-grad forward, {threads} thread(s): fastnorm {timings['fastnorm']:.3f} ms, "
            f"torch {timings['torch']:.3f} ms (medians)"
        )
    fnt.unpatch(model)
    return logit_diff, grad_diff, timings


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    logit_diff, grad_diff, _ = run(args.steps, args.threads, args.quiet)
    ok = logit_diff < 1e-4 and grad_diff < 1e-4
    print("outputs agree" if ok else "OUTPUTS DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
