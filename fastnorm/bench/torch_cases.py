"""``python -m fastnorm bench --torch``: ``fastnorm.torch`` against torch,
as ratios of medians (the machinery; the project's own speed targets built
on it live in ``benchmarks/targets_torch.py``, outside the package).

Each comparison is a ratio of medians, fastnorm's time over torch's, measured
in one process with the two calls interleaved round by round, so that noise
on a shared machine hits both alike.  Before any timing, each case checks
that fastnorm's outputs (and gradients) match torch's: a harness that
silently timed a broken call would report a meaningless figure.

torch is imported only inside the functions here, never at module import:
``import fastnorm`` must not import torch, and ``fastnorm.bench.harness`` (which the
NumPy benchmarks import) must keep working without it."""

import contextlib
import os
import platform
import subprocess
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .. import _core
from . import harness

EPS = 1e-5

# How many interleaved rounds a case gets per --repeats, and how long each
# competitor's batch of calls runs per round.  Small calls (microseconds) are
# timed in batches of about a millisecond, so that the clock's resolution and
# the timer's own cost are noise rather than a bias toward a ratio of 1, and
# get many rounds because a single round is cheap.  Large calls (tens of
# milliseconds) are timed one call per round.
_SMALL_ROUNDS, _SMALL_MIN_TIME = 20, 1e-3
_LARGE_ROUNDS, _LARGE_MIN_TIME = 1, 0.0


@dataclass(frozen=True)
class TorchCase:
    """One comparison.

    op: "layer_norm" or "rms_norm"; form: "function" (fastnorm.torch.layer_norm
    against F.layer_norm) or "module" (fastnorm.torch.LayerNorm against
    torch.nn.LayerNorm); grad: forward and backward with x, weight and bias
    requiring grad (else a forward under torch.no_grad()); threads: the count
    given to both torch and fastnorm's OpenMP."""

    op: str
    form: str
    shape: tuple
    dtype: str
    grad: bool
    threads: int

    @property
    def label(self):
        if self.form == "module":
            name = {"layer_norm": "LayerNorm", "rms_norm": "RMSNorm"}[self.op] + " module"
        else:
            name = self.op + " function"
        what = "fwd+bwd" if self.grad else "no grad"
        dtype = {"float32": "f32", "float64": "f64", "float16": "f16", "bfloat16": "bf16"}[
            self.dtype
        ]
        return f"{name} {self.shape} {dtype} {what}"

    @property
    def small(self):
        return int(np.prod(self.shape)) < 1 << 20

    @property
    def rounds_per_repeat(self):
        return _SMALL_ROUNDS if self.small else _LARGE_ROUNDS

    @property
    def min_time(self):
        return _SMALL_MIN_TIME if self.small else _LARGE_MIN_TIME


DTYPES = ("float32", "float64", "bfloat16", "float16")


def comparison_cases(ops, shapes, dtype, threads, backward=False):
    """The cases of ``bench --torch``: for every op, shape and thread count,
    the function and the module form without grad, or with `backward` the
    function form forward plus backward."""
    forms = [("function", True)] if backward else [("function", False), ("module", False)]
    return [
        TorchCase(op, form, tuple(shape), dtype, grad, n)
        for op in ops
        for shape in shapes
        for n in threads
        for form, grad in forms
    ]


@dataclass
class Pair:
    """The two competitors of a case: zero-argument callables that do the
    whole timed work and return what `check` compares (the output, and for
    fwd+bwd the gradients of x, weight and bias)."""

    fastnorm: object
    torch: object


def _torch():
    import torch

    return torch


def _inputs(case, torch):
    """x, weight, bias and dy (float32 draws, rounded to the case's dtype).
    The weight and bias are random rather than ones and zeros so that the
    affine part of both kernels does real work and a mistake in it shows."""
    g = torch.Generator().manual_seed(0)
    dtype = getattr(torch, case.dtype)
    n = case.shape[-1]
    x = torch.randn(case.shape, generator=g).to(dtype)
    w = (1 + 0.5 * torch.randn(n, generator=g)).to(dtype)
    b = (0.5 * torch.randn(n, generator=g)).to(dtype)
    dy = torch.randn(case.shape, generator=g).to(dtype)
    return x, w, b, dy


def _module(case, torch, cls, w, b):
    n = case.shape[-1]
    dtype = getattr(torch, case.dtype)
    m = cls(n, eps=EPS, dtype=dtype)  # torch.nn.LayerNorm's and RMSNorm's shared signature
    with torch.no_grad():
        m.weight.copy_(w)
        if case.op == "layer_norm":
            m.bias.copy_(b)
    return m


def _forward_callable(case, norm_fn, x, w, b):
    n = case.shape[-1]
    if case.op == "layer_norm":
        return lambda: norm_fn(x, (n,), w, b, EPS)
    return lambda: norm_fn(x, (n,), w, EPS)


def _fwd_bwd_callable(case, norm_fn, x, w, b, dy):
    """Forward and backward from fresh leaves' point of view: the grads are
    cleared before each call (as an optimizer's zero_grad(set_to_none=True)
    does), so that every call does the same work and returns its own grads."""
    n = case.shape[-1]
    xg = x.clone().requires_grad_(True)
    wg = w.clone().requires_grad_(True)
    bg = b.clone().requires_grad_(True) if case.op == "layer_norm" else None
    leaves = [t for t in (xg, wg, bg) if t is not None]

    def run():
        for t in leaves:
            t.grad = None
        if case.op == "layer_norm":
            y = norm_fn(xg, (n,), wg, bg, EPS)
        else:
            y = norm_fn(xg, (n,), wg, EPS)
        y.backward(dy)
        return (y, *(t.grad for t in leaves))

    return run


def build(case):
    """The Pair for `case`.  In fwd+bwd cases each competitor has its own
    leaf tensors, so that neither can see the other's gradients."""
    torch = _torch()
    import fastnorm.torch as fnt

    x, w, b, dy = _inputs(case, torch)
    F = torch.nn.functional
    if case.form == "module":
        if case.grad:
            raise ValueError("module cases are forward-only")
        fast_cls = fnt.LayerNorm if case.op == "layer_norm" else fnt.RMSNorm
        torch_cls = torch.nn.LayerNorm if case.op == "layer_norm" else torch.nn.RMSNorm
        fm, tm = _module(case, torch, fast_cls, w, b), _module(case, torch, torch_cls, w, b)
        return Pair(lambda: fm(x), lambda: tm(x))
    fast_fn = fnt.layer_norm if case.op == "layer_norm" else fnt.rms_norm
    torch_fn = F.layer_norm if case.op == "layer_norm" else F.rms_norm
    if case.grad:
        return Pair(
            _fwd_bwd_callable(case, fast_fn, x, w, b, dy),
            _fwd_bwd_callable(case, torch_fn, x, w, b, dy),
        )
    return Pair(
        _forward_callable(case, fast_fn, x, w, b), _forward_callable(case, torch_fn, x, w, b)
    )


def _tolerance(case):
    """(rtol, atol) for fastnorm's results against torch's.

    bfloat16: each side rounds its float32 result once, so they may be an
    ulp apart, which is at most 2**-7 relative; the absolute term covers
    values near zero, where the float32 intermediates differ by a few float32
    eps of the terms.  float32: a few eps on the outputs; the weight and bias
    gradients are sums over the rows, which fastnorm adds in float64 and
    torch in float32, so they differ by torch's rounding of a 4096-term sum."""
    if case.dtype == "bfloat16":
        return 2.0**-7, 2.0**-12
    if case.dtype == "float16":  # the same argument, at float16's ulp
        return 2.0**-10, 2.0**-14
    if case.grad:
        return 1e-4, 1e-3
    return 1e-5, 1e-5


def check(case, fast_result, torch_result):
    """AssertionError (with torch.testing's report) unless fastnorm's results
    are close to torch's."""
    torch = _torch()
    rtol, atol = _tolerance(case)
    fast = fast_result if isinstance(fast_result, tuple) else (fast_result,)
    ref = torch_result if isinstance(torch_result, tuple) else (torch_result,)
    names = ("y", "grad x", "grad weight", "grad bias")
    assert len(fast) == len(ref), (len(fast), len(ref))
    for name, got, want in zip(names, fast, ref):
        assert got is not None, f"fastnorm gave no {name}"
        assert got.dtype == want.dtype, f"{name} is {got.dtype}, torch's {want.dtype}"
        torch.testing.assert_close(
            got.detach(),
            want.detach(),
            rtol=rtol,
            atol=atol,
            msg=lambda m, name=name: f"{name}: {m}",
        )


@contextlib.contextmanager
def case_context(case):
    """The case's thread count for torch and fastnorm's OpenMP (restored
    afterwards: torch.set_num_threads also limits fastnorm's OpenMP, as the
    two share libgomp), and torch.no_grad() for the forward-only cases."""
    torch = _torch()
    with harness.limit_threads(case.threads):
        with torch.set_grad_enabled(case.grad):
            yield


def run_checked(case, pair=None):
    """Run both competitors once under the case's context and check them;
    returns the pair (built if not given)."""
    pair = pair or build(case)
    with case_context(case):
        check(case, pair.fastnorm(), pair.torch())
    return pair


def measure(case, repeats):
    """(fastnorm median seconds, torch median seconds) for one case, after
    checking that the two agree."""
    pair = run_checked(case)
    with case_context(case):
        times = harness.time_interleaved(
            {"fastnorm": pair.fastnorm, "torch": pair.torch},
            max(1, repeats * case.rounds_per_repeat),
            case.min_time,
        )
    return times["fastnorm"], times["torch"]


def cpu_model():
    """lscpu's "Model name" (/proc/cpuinfo's, or platform's, when lscpu is
    missing): ratios are only comparable on the same CPU."""
    try:
        out = subprocess.run(
            ["lscpu"], capture_output=True, text=True, timeout=10, env={**os.environ, "LC_ALL": "C"}
        ).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count()


@dataclass
class Row:
    case: TorchCase
    fastnorm: Optional[float] = None  # median seconds per call
    torch: Optional[float] = None
    error: Optional[str] = None  # why the case was not timed (results differ from torch's)

    @property
    def ratio(self):
        if self.error or self.fastnorm is None or self.torch is None:
            return None
        return self.fastnorm / self.torch


@dataclass
class Run:
    """Measured rows and what the table's header reports about the run."""

    rows: list
    repeats: int
    kernels: str
    torch_threads: int


def measure_all(cases, repeats=21, isa=None, progress=None):
    """Measure every case (with kernel set `isa` forced, if given); a case
    whose results differ from torch's gets an error instead of times, and
    the other cases still run."""
    torch = _torch()
    rows = []
    with harness.forced_isa(isa):
        kernels = _core.isa()
        torch_threads = torch.get_num_threads()
        for case in cases:
            try:
                rows.append(Row(case, *measure(case, repeats)))
            except AssertionError as exc:
                rows.append(Row(case, error=str(exc).splitlines()[0]))
            if progress:
                progress.step(case.label)
    return Run(rows, repeats, kernels, torch_threads)


def print_table(run, file=None, extra_header="", extra=None):
    """The table of a Run.  `extra(row)` (for a timed row) is appended to its
    line, under `extra_header`: the targets' goal and met columns."""
    import sys

    import fastnorm

    file = file or sys.stdout
    print(
        f"fastnorm {fastnorm.__version__} (kernels {run.kernels}), torch {_torch().__version__}",
        file=file,
    )
    print(
        f"CPU: {cpu_model()}; {available_cpus()} CPUs available; threads per case in 'thr' "
        f"(torch.set_num_threads and fastnorm's OpenMP; torch's default here is "
        f"{run.torch_threads})",
        file=file,
    )
    print(
        f"medians of interleaved rounds: {run.repeats} x {_SMALL_ROUNDS} rounds of ~"
        f"{_SMALL_MIN_TIME * 1e3:.0f} ms batches for small calls, {run.repeats} x "
        f"{_LARGE_ROUNDS} single calls for large ones",
        file=file,
    )
    header = f"{'case':<46}{'thr':>4}{'fastnorm':>11}{'torch':>11}{'ratio':>8}{extra_header}"
    print(header, file=file)
    print("-" * len(header), file=file)
    for row in run.rows:
        case = row.case
        if row.error:
            print(
                f"{case.label:<46}{case.threads:>4}  WRONG RESULT, not timed: {row.error}",
                file=file,
            )
            continue
        print(
            f"{case.label:<46}{case.threads:>4}{harness.fmt_time(row.fastnorm):>11}"
            f"{harness.fmt_time(row.torch):>11}{row.ratio:>8.3f}"
            f"{extra(row) if extra else ''}",
            file=file,
        )


def run(cases, repeats=21, isa=None, progress=None, file=None):
    """Measure `cases`, print the table to `file` (default stdout); returns
    the Run."""
    import sys

    file = file or sys.stdout
    result = measure_all(cases, repeats, isa, progress)
    print_table(result, file)
    print("ratio = fastnorm median / torch median (lower is better)", file=file)
    return result
