"""End to end: what fastnorm.torch.patch buys on a whole Hugging Face decoder.

    python benchmarks/torch_e2e.py                       # 12 layers, hidden 768, 512-token prefill
    python benchmarks/torch_e2e.py --layers 2 --hidden 256 --prefill 64 --repeats 3   # quick look

Two decoders are built from configs with random weights (nothing is
downloaded): a Llama-style one (RMSNorm, Hugging Face's LlamaRMSNorm) and a
GPT-2-style one (torch.nn.LayerNorm).  For each dtype the stock model and a
patched deep copy (same weights) are

- checked: patch() must switch every norm module, and the logits of a full
  prefill and of one cached decode step must agree with the stock model's
  (the tolerances are explained at `logits_tolerance`);
- timed: prefill (batch 1, `--prefill` tokens, as generate() runs it, i.e.
  with a cache and logits for the last position only) and one-token decode
  against that cache, stock and patched in interleaved rounds in one process,
  medians;
- profiled: the share of forward time spent inside the norm modules, two ways
  (see `norm_share`).

torch.set_num_threads also sets fastnorm's OpenMP thread count (both use the
process's libgomp), so each thread count applies to both sides.
The functions are reused by benchmarks/test_torch_e2e.py on a small config.
"""

import argparse
import copy
import os
import statistics
import subprocess
import sys
import time
import warnings

# Benchmark the checkout this script lives in, not whatever fastnorm is
# installed (an editable install may point at another worktree); fastnorm's
# __init__ borrows an installed compiled core if this checkout is not built.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
import transformers

import fastnorm
import fastnorm.torch as fnt
from fastnorm.bench import harness

KINDS = ("llama", "gpt2")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# ---- models ---------------------------------------------------------------------


def build(
    kind,
    dtype,
    *,
    layers=12,
    hidden=768,
    heads=12,
    intermediate=2048,
    vocab=32000,
    positions=1024,
    attn="sdpa",
    seed=0,
):
    """A randomly initialised decoder in eval mode.  Weights are drawn in
    float32 and then cast, so a seed gives the same model in every dtype up to
    that cast.  bos/eos ids are set inside the vocabulary only to silence
    transformers' config check on small vocabularies."""
    torch.manual_seed(seed)
    if kind == "llama":
        config = transformers.LlamaConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=positions,
            bos_token_id=0,
            eos_token_id=1,
            attn_implementation=attn,
        )
        model = transformers.LlamaForCausalLM(config)
    elif kind == "gpt2":
        # GPT-2's own MLP width (4 * hidden); intermediate applies to Llama only.
        config = transformers.GPT2Config(
            vocab_size=vocab,
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            n_positions=positions,
            bos_token_id=0,
            eos_token_id=1,
            attn_implementation=attn,
        )
        model = transformers.GPT2LMHeadModel(config)
    else:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")
    return model.to(dtype).eval()


def norm_module_names(model):
    """Every norm module a user would expect patch() to switch: torch's two and
    any class named *RMSNorm (the Hugging Face copies)."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, (torch.nn.LayerNorm, torch.nn.RMSNorm))
        or type(m).__name__.endswith("RMSNorm")
    ]


def patched_copy(model):
    """(deep copy of model, patched; switched names; warning messages).
    Raises if patch() did not switch exactly the norm modules."""
    twin = copy.deepcopy(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = fnt.patch(twin)
    messages = [str(w.message) for w in caught if "fastnorm" in str(w.message)]
    expected = norm_module_names(model)
    if sorted(names) != sorted(expected):
        missing = sorted(set(expected) - set(names))
        extra = sorted(set(names) - set(expected))
        raise AssertionError(
            f"patch() switched {len(names)} modules, expected {len(expected)}; "
            f"missing {missing[:5]}, unexpected {extra[:5]}; "
            f"warnings: {messages}"
        )
    return twin, names, messages


# ---- forward passes -----------------------------------------------------------------


def prefill(model, ids, last_only=True):
    """One prefill forward with a fresh cache; generate() keeps only the last
    position's logits, so the timed prefill does too (the full 512 x vocab LM
    head would otherwise dilute every other layer)."""
    return model(ids, use_cache=True, logits_to_keep=1 if last_only else 0)


def decode_step(model, cache, token):
    """One cached decode step, then the cache is cut back by that token so
    that every step starts from the same cache state (DynamicCache appends by
    concatenation, so each step does the same work as a real step at this
    length)."""
    out = model(token, cache=cache, use_cache=True)
    cache.crop(-1)
    return out


# ---- correctness ----------------------------------------------------------------------


def logits_tolerance(dtype, scale):
    """Largest max|patched - stock| accepted, for logits of magnitude `scale`.

    float32: each norm output is within a few float32 eps of torch's (a
    different summation order), and a random-init decoder amplifies that only
    mildly over 12 layers: 1e-4 relative to the logits' scale is ~800 eps,
    far above what is seen (~1e-6) yet far below any real bug (a wrong eps or
    rounding order shows up at 1e-3 and more).

    bfloat16: activations are rounded to 8 significant bits after every op.
    When one norm element lands on the other side of a rounding boundary
    (1 bf16 ulp = 2**-7 relative), the difference is carried through every
    later matmul and rounding, so the logits of the two models can differ by a
    few bf16 ulps of their scale even though both models are equally right.
    The bound is 16 ulps of the scale (16 * 2**-8 * scale, i.e. 6%), and
    `compare` also checks the stricter property that matters: against the
    same weights run in float32, the patched model is not less accurate than
    the stock one.
    """
    if dtype == torch.float32:
        return 1e-4 * max(1.0, scale)
    return 16 * 2.0**-8 * max(1.0, scale)


def compare(stock, patched, ids, reference=None):
    """Max differences of full-prefill logits and one decode step's logits.

    With `reference` (the stock model's weights in float32), also each
    model's max error against it, so that a half-precision difference can be
    judged against the rounding noise the stock model itself has."""
    token = ids[:, :1]
    outs = {}
    with torch.inference_mode():
        for name, model in (("stock", stock), ("patched", patched), ("ref", reference)):
            if model is None:
                continue
            out = prefill(model, ids, last_only=False)
            step = decode_step(model, out.cache, token)
            outs[name] = torch.cat([out.logits.float().flatten(), step.logits.float().flatten()])
    a, b = outs["stock"], outs["patched"]
    scale = float(a.abs().max())
    result = {
        "max_diff": float((a - b).abs().max()),
        "scale": scale,
        "tol": logits_tolerance(stock.dtype, scale),
        "argmax_agree": float(
            (
                a.view(-1, stock.config.vocab_size).argmax(-1)
                == b.view(-1, stock.config.vocab_size).argmax(-1)
            )
            .float()
            .mean()
        ),
    }
    if "ref" in outs:
        r = outs["ref"]
        result["stock_err"] = float((a - r).abs().max())
        result["patched_err"] = float((b - r).abs().max())
    result["ok"] = result["max_diff"] <= result["tol"] and (
        "ref" not in outs or result["patched_err"] <= 1.25 * result["stock_err"] + 1e-6
    )
    return result


# ---- timing ------------------------------------------------------------------------


def _rounds(names, repeats):
    """Round orders alternating A B / B A, so that a drift in machine speed
    (turbo, a neighbour's load) does not favour whoever runs first."""
    for r in range(repeats):
        yield names if r % 2 == 0 else names[::-1]


def time_prefill(models, ids, repeats):
    """Median seconds of one prefill for each model (dict name -> model)."""
    samples = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():  # warm up: allocator pools, oneDNN primitives, thread team
            prefill(m, ids)
        for order in _rounds(list(models), repeats):
            for k in order:
                t0 = time.perf_counter()
                prefill(models[k], ids)
                samples[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def time_decode(models, ids, repeats, steps):
    """Median seconds of one decode step at cache length len(ids), for each
    model; each round times `steps` steps per model, each from the same cache."""
    token = ids[:, -1:]
    samples = {k: [] for k in models}
    with torch.inference_mode():
        caches = {k: prefill(m, ids).cache for k, m in models.items()}
        for k, m in models.items():
            decode_step(m, caches[k], token)
        for order in _rounds(list(models), repeats):
            for k in order:
                m, cache = models[k], caches[k]
                for _ in range(steps):
                    t0 = time.perf_counter()
                    m(token, cache=cache, use_cache=True)
                    samples[k].append(time.perf_counter() - t0)
                    cache.crop(-1)  # outside the timed region
    return {k: statistics.median(v) for k, v in samples.items()}


# ---- where the time goes ---------------------------------------------------------------


class _NormHooks:
    """Forward pre/post hooks on the norm modules that either add up their
    wall time (perf_counter) or open a torch.profiler range around them.
    Norm modules do not nest, so one open slot is enough."""

    def __init__(self, model, names, profiler_range=None):
        self.total = 0.0
        self._t0 = None
        self._range = None
        self._label = profiler_range
        self._handles = []
        for name in names:
            m = model.get_submodule(name)
            self._handles.append(m.register_forward_pre_hook(self._pre))
            self._handles.append(m.register_forward_hook(self._post))

    def _pre(self, module, args):
        if self._label is not None:
            self._range = torch.profiler.record_function(self._label)
            self._range.__enter__()
        self._t0 = time.perf_counter()

    def _post(self, module, args, output):
        self.total += time.perf_counter() - self._t0
        if self._range is not None:
            self._range.__exit__(None, None, None)
            self._range = None

    def remove(self):
        for h in self._handles:
            h.remove()


def _phase_runner(model, ids, phase, steps):
    """A callable running the phase's forwards once (prefill, or `steps`
    decode steps from one cache), and the number of forwards it runs."""
    if phase == "prefill":
        return (lambda: prefill(model, ids)), 1
    cache = prefill(model, ids).cache
    token = ids[:, -1:]
    return (lambda: [decode_step(model, cache, token) for _ in range(steps)]), steps


def norm_share(model, names, ids, phase, steps=4, runs=3):
    """Share of the phase's wall time spent inside the norm modules, two ways.

    "hooks": perf_counter in forward pre/post hooks around each norm module,
    over the wall time of the whole forward, with no profiler running.  This
    is the honest figure for the latency table: it costs two Python calls per
    norm and nothing per op.  The median of `runs` runs, since one run can be
    hit by a neighbour's load.

    "profiler": torch.profiler with a record_function range opened by the
    same hooks around each norm module, its CPU time over that of a range
    around the forwards.  The profiler charges a fixed cost to every aten op it
    records; the stock HF RMSNorm runs ~7 ops where the patched one runs 2
    (an empty_like and the weight multiply), so this figure overstates the
    stock share on decode, where the ops are tiny.  Both figures are printed.
    Module-level ranges are used rather than op names because Hugging Face's
    RMSNorm is built from generic ops (pow, mean, rsqrt, mul, to) that cannot
    be told apart from the rest of the model by name.
    """
    with torch.inference_mode():
        run, _ = _phase_runner(model, ids, phase, steps)
        run()  # warm up
        shares = []
        for _ in range(runs):
            hooks = _NormHooks(model, names)
            try:
                t0 = time.perf_counter()
                run()
                wall = time.perf_counter() - t0
            finally:
                hooks.remove()
            shares.append(hooks.total / wall)
        hook_share = statistics.median(shares)

        run, _ = _phase_runner(model, ids, phase, steps)
        hooks = _NormHooks(model, names, profiler_range="e2e_norm")
        try:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                with torch.profiler.record_function("e2e_forward"):
                    run()
        finally:
            hooks.remove()
    times = {e.key: e.cpu_time_total for e in prof.key_averages() if e.key.startswith("e2e_")}
    prof_share = times.get("e2e_norm", 0.0) / times["e2e_forward"]
    return {"hooks": hook_share, "profiler": prof_share}


# ---- the report ---------------------------------------------------------------------


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown (lscpu failed)"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def load_average():
    try:
        one, five, fifteen = os.getloadavg()
        return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"
    except OSError:
        return "load average unknown"


def header(args):
    return "\n".join(
        [
            f"CPU: {cpu_model()}; fastnorm ISA: {fastnorm.get_isa()} "
            f"(available: {', '.join(fastnorm.available_isas())})",
            f"torch {torch.__version__}, transformers {transformers.__version__}, "
            f"fastnorm {fastnorm.__version__} from {os.path.dirname(fastnorm.__file__)}; "
            f"{load_average()}",
            f"models: {args.layers} layers, hidden {args.hidden}, {args.heads} heads, "
            f"Llama intermediate {args.intermediate}, GPT-2 MLP {4 * args.hidden}, "
            f"vocab {args.vocab}, attn={args.attn}; batch 1, prefill {args.prefill} tokens, "
            f"decode at cache length {args.prefill}",
            f"timing: {args.repeats} interleaved rounds (prefill: 1 forward per round, decode: "
            f"{args.decode_steps} steps per round), medians; torch.inference_mode",
        ]
    )


COLUMNS = (
    "model",
    "dtype",
    "thr",
    "phase",
    "stock ms",
    "patched ms",
    "speed-up",
    "norm% stock",
    "norm% patched",
    "prof% stock",
    "prof% patched",
)


def format_table(rows):
    control = any(r.get("copy") for r in rows)
    columns = COLUMNS + (("A/A stock/copy",) if control else ())
    cells = [columns] + [
        (
            r["model"],
            r["dtype"],
            str(r["threads"]),
            r["phase"],
            f"{1e3 * r['stock']:.2f}",
            f"{1e3 * r['patched']:.2f}",
            f"{r['stock'] / r['patched']:.3f}x",
            f"{100 * r['share_stock']['hooks']:.1f}",
            f"{100 * r['share_patched']['hooks']:.1f}",
            f"{100 * r['share_stock']['profiler']:.1f}",
            f"{100 * r['share_patched']['profiler']:.1f}",
        )
        + ((f"{r['stock'] / r['copy']:.3f}x",) if control else ())
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = []
    for j, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
            )
        )
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _csv(text, convert=str):
    return [convert(x.strip()) for x in text.split(",") if x.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="llama,gpt2", help="comma list of: llama, gpt2")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--intermediate", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--prefill", type=int, default=512, help="prompt length (tokens)")
    p.add_argument("--dtype", default="float32,bfloat16")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=7, help="interleaved rounds per measurement")
    p.add_argument("--decode-steps", type=int, default=10, help="decode steps per round")
    p.add_argument("--attn", default="sdpa", choices=("sdpa", "eager"))
    p.add_argument(
        "--control",
        action="store_true",
        help="also time an unpatched copy of the stock model (A/A noise floor)",
    )
    args = p.parse_args(argv)
    args.models = _csv(args.models)
    args.dtype = _csv(args.dtype)
    args.threads = _csv(args.threads, int)
    for d in args.dtype:
        if d not in _DTYPES:
            p.error(f"--dtype: {d!r} is not one of {', '.join(_DTYPES)}")
    for k in args.models:
        if k not in KINDS:
            p.error(f"--models: {k!r} is not one of {', '.join(KINDS)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    print(header(args), flush=True)
    sizes = dict(
        layers=args.layers,
        hidden=args.hidden,
        heads=args.heads,
        intermediate=args.intermediate,
        vocab=args.vocab,
        positions=max(1024, args.prefill + 8),
        attn=args.attn,
    )
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, args.vocab, (1, args.prefill), generator=gen)
    rows, checks, failed = [], [], False
    t_start = time.perf_counter()
    for kind in args.models:
        for dname in args.dtype:
            dtype = _DTYPES[dname]
            stock = build(kind, dtype, **sizes)
            patched, names, messages = patched_copy(stock)
            reference = copy.deepcopy(stock).float() if dtype != torch.float32 else None
            check = compare(stock, patched, ids, reference)
            del reference
            failed |= not check["ok"]
            extra = (
                f", max|stock-f32| {check['stock_err']:.3g}, max|patched-f32| "
                f"{check['patched_err']:.3g}"
                if "stock_err" in check
                else ""
            )
            checks.append(
                f"{kind} {dname}: patched {len(names)} norm modules "
                f"({type(patched.get_submodule(names[0])).__name__}); logits "
                f"max|patched-stock| {check['max_diff']:.3g} (tol {check['tol']:.3g}, "
                f"scale {check['scale']:.3g}{extra}), argmax agree "
                f"{100 * check['argmax_agree']:.1f}%"
                f"{'' if check['ok'] else '  FAILED'}"
                + (f"; warnings: {messages}" if messages else "")
            )
            print(checks[-1], flush=True)
            models = {"stock": stock, "patched": patched}
            if args.control:
                # A/A control: an unpatched copy made the same way as the patched
                # one, so that stock/copy shows the noise and memory-placement
                # floor a stock/patched ratio has to clear.
                models["copy"] = copy.deepcopy(stock)
            for threads in args.threads:
                with harness.limit_threads(threads):
                    for phase in ("prefill", "decode"):
                        if phase == "prefill":
                            t = time_prefill(models, ids, args.repeats)
                        else:
                            t = time_decode(models, ids, args.repeats, args.decode_steps)
                        rows.append(
                            {
                                "model": kind,
                                "dtype": dname,
                                "threads": threads,
                                "phase": phase,
                                "stock": t["stock"],
                                "patched": t["patched"],
                                "copy": t.get("copy"),
                                "share_stock": norm_share(stock, names, ids, phase),
                                "share_patched": norm_share(patched, names, ids, phase),
                            }
                        )
                        r = rows[-1]
                        print(
                            f"  {kind} {dname} {threads} thr {phase}: stock "
                            f"{1e3 * r['stock']:.2f} ms, patched {1e3 * r['patched']:.2f} ms"
                            + (f", copy {1e3 * r['copy']:.2f} ms" if r["copy"] else "")
                            + " "
                            f"({time.perf_counter() - t_start:.0f} s elapsed)",
                            flush=True,
                        )
            del stock, patched, models
    print()
    print(header(args))
    print(
        "norm%: share of wall time inside norm modules (perf_counter hooks); prof%: the same "
        "from torch.profiler ranges (overstates many-op stock norms)"
    )
    print()
    print(format_table(rows))
    print()
    print("logits checks:")
    for line in checks:
        print("  " + line)
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
