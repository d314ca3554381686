"""pytest-benchmark cases for whole-model prefill and decode, stock against
fastnorm.torch.patch, on a small Llama-style and GPT-2-style decoder.

    pytest benchmarks/test_torch_e2e.py                 # time them
    pytest benchmarks --benchmark-disable -q            # CI: every case once, untimed

The config is small (2 layers, hidden 256, 64-token prompt) so that the
untimed CI run stays quick; benchmarks/torch_e2e.py is the full-size
measurement.  Every case also checks that the logits it produced match the
other variant's, so a benchmark that silently measures a wrong model fails.
"""

import os
import sys

import pytest

from fastnorm.bench import harness

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_e2e  # noqa: E402  (imports torch and transformers: after the skips)

SMALL = dict(layers=2, hidden=256, heads=4, intermediate=512, vocab=1000, positions=128)
PROMPT = 64
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@pytest.fixture(
    scope="module",
    params=[(k, d) for k in torch_e2e.KINDS for d in DTYPES],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def pair(request):
    """The stock model, its patched copy, a prompt, and each variant's
    last-position prefill logits and decode-step logits."""
    kind, dname = request.param
    stock = torch_e2e.build(kind, DTYPES[dname], **SMALL)
    patched, names, _ = torch_e2e.patched_copy(stock)
    ids = torch.randint(0, SMALL["vocab"], (1, PROMPT), generator=torch.Generator().manual_seed(3))
    models = {"stock": stock, "patched": patched}
    expected, caches = {}, {}
    with torch.inference_mode():
        for name, model in models.items():
            out = torch_e2e.prefill(model, ids)
            caches[name] = out.cache
            step = torch_e2e.decode_step(model, out.cache, ids[:, -1:])
            expected[name] = {"prefill": out.logits, "decode": step.logits}
    return {
        "kind": kind,
        "dtype": dname,
        "models": models,
        "ids": ids,
        "caches": caches,
        "expected": expected,
        "names": names,
    }


def _check(pair, variant, phase, logits):
    other = "patched" if variant == "stock" else "stock"
    want = pair["expected"][other][phase].float()
    diff = float((logits.float() - want).abs().max())
    tol = torch_e2e.logits_tolerance(DTYPES[pair["dtype"]], float(want.abs().max()))
    assert diff <= tol, f"{variant} {phase} logits differ from {other}'s by {diff:.3g} > {tol:.3g}"


@pytest.mark.parametrize("variant", ["stock", "patched"])
@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_e2e(benchmark, pair, phase, variant):
    model, ids = pair["models"][variant], pair["ids"]
    benchmark.group = f"e2e {pair['kind']} {pair['dtype']} {phase} (small), 1 thread"
    benchmark.extra_info["norm_modules"] = len(pair["names"])
    if phase == "prefill":

        def run():
            return torch_e2e.prefill(model, ids).logits
    else:
        cache, token = pair["caches"][variant], ids[:, -1:]

        def run():  # decode_step cuts the cache back, so every call does the same work
            return torch_e2e.decode_step(model, cache, token).logits

    with harness.limit_threads(1), torch.inference_mode():
        logits = benchmark(run)
    _check(pair, variant, phase, logits)
