"""Benchmark cases and timing helpers shared by ``python -m fastnorm bench``,
the pytest-benchmark suite in ``benchmarks/`` and the project's speed targets
(``benchmarks/targets.py``, which is not installed).

A case is one normalization (op, shape, dtype, layout, out= or allocating);
each competitor is a zero-argument callable doing that work its own way:
fastnorm, plain NumPy, PyTorch's CPU kernel (when torch is installed), and
the memory roof.

The roof ("roof") is the physical limit of a pass: a copy, with streaming
(non-temporal) stores, of as many bytes as the pass must move, between
64-byte-aligned buffers (src/stream_copy.c through fastnorm._testing).  Off
x86-64 the copy is a plain memcpy (roof_kind()).  A
copy of n bytes reads n and writes n, so the roof of a pass that reads R
bytes and writes W copies (R + W) / 2:

- a forward reads x and writes y: one copy of x's bytes;
- the fused add reads x and the residual and writes h and y: two;
- a backward reads x and dy and writes dx: one and a half;
- rms_norm forward plus backward: two and a half.

``np.copyto`` ("copyto", the same bytes as x) stays as a second, labelled
reference: it is what a NumPy user's copy costs, not the limit."""

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import ml_dtypes
import numpy as np

import fastnorm

EPS = 1e-5
HALF_DTYPES = ("float16", "bfloat16")


def np_dtype(name):
    """The NumPy dtype of a case's dtype name (bfloat16 comes from ml_dtypes)."""
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


DEFAULT_SHAPES = [(1, 768), (8, 768), (512, 4096), (4096, 4096), (32768, 1024)]


@dataclass(frozen=True)
class Case:
    op: str = "layer_norm"  # or "rms_norm"
    shape: tuple = (4096, 4096)
    dtype: str = "float32"
    layout: str = "last"  # or "channels_first" (axis=1 of a 4-D array)
    out: bool = True  # preallocated out= (else allocating)

    @property
    def label(self):
        shape = "x".join(map(str, self.shape))
        return f"{self.op} {shape} {self.dtype} {self.layout} {'out=' if self.out else 'alloc'}"

    @property
    def axis(self):
        return 1 if self.layout == "channels_first" else -1

    @property
    def norm_size(self):
        return self.shape[self.axis]

    def bytes_moved(self):
        """Read x once and write y once."""
        return 2 * int(np.prod(self.shape)) * np_dtype(self.dtype).itemsize


def make_inputs(case, seed=0):
    rng = np.random.default_rng(seed)
    dtype = np_dtype(case.dtype)
    x = rng.standard_normal(case.shape, dtype=np.float32).astype(dtype)
    n = case.norm_size
    w = rng.standard_normal(n).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    if case.layout == "channels_first":  # broadcast over H, W
        w, b = w.reshape(n, 1, 1), b.reshape(n, 1, 1)
    return x, w, b


def numpy_layer_norm(x, w, b, axis):
    mean = x.mean(axis=axis, keepdims=True)
    var = x.var(axis=axis, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * w + b


def numpy_rms_norm(x, w, axis):
    return x / np.sqrt(np.mean(x * x, axis=axis, keepdims=True) + EPS) * w


def torch_module():
    try:
        import torch
    except ImportError:
        return None
    return torch


def require_optional(parser, need_torch=False, need_dask=False, dask_install=None):
    """parser.error, naming what to install, when --torch or --dask asks for
    a package that is not there (dask_install: the pip argument that brings
    dask in this context; default, this package's dask extra)."""
    if need_torch and torch_module() is None:
        parser.error("--torch needs PyTorch, which is not installed")
    if need_dask:
        try:
            import dask.array  # noqa: F401
        except ImportError:
            hint = dask_install or "'fastnorm-layernorm[dask]'"
            parser.error(f"--dask needs dask: pip install {hint}")


def aligned_empty(nbytes, align=64):
    """A uint8 buffer of nbytes whose data starts on an `align`-byte boundary."""
    raw = np.empty(nbytes + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start : start + nbytes]


def roof_fn(nbytes, elements, threads=None):
    """The roof of a pass that moves 2 * nbytes: a streaming copy of nbytes
    between aligned buffers, on the threads a fastnorm call of `elements`
    elements would use when it runs (one below fastnorm's parallel
    threshold; else OMP_NUM_THREADS or threadpoolctl's limit, read at each
    call).  `threads` fixes the count instead: a caller timing copies on
    different thread counts side by side, under one limit, must."""
    from .. import _core, _testing

    src = aligned_empty(nbytes)
    src[:] = 1  # touched: no zero-page reads
    dst = aligned_empty(nbytes)
    if threads is not None:
        return lambda: _testing.stream_copy(dst, src, threads)
    if elements < PARALLEL_MIN_ELEMENTS:
        return lambda: _testing.stream_copy(dst, src, 1)
    return lambda: _testing.stream_copy(dst, src, _core.max_threads())


def roof_kind():
    """What the roof copies with on this machine: streaming stores on
    x86-64; elsewhere (aarch64 among them) a plain copy, memcpy, as
    src/stream_copy.c has no streaming loop there."""
    from .. import _testing

    if _testing.stream_copy_isa() == "portable":
        return "plain copy (memcpy)"
    return "streaming (non-temporal) copy"


PARALLEL_MIN_ELEMENTS = 65536  # fastnorm/_run.pxi: smaller calls run on one thread

# the roof's bytes, in copies of x: see the module docstring
ROOF_COPIES = {"forward": 1.0, "fused": 2.0, "backward": 1.5, "forward+backward": 2.5}


def roof_competitors(x, pass_="forward"):
    """{"roof": the streaming copy, "copyto": np.copyto of x} for a pass
    over x (a key of ROOF_COPIES)."""
    nbytes = int(round(ROOF_COPIES[pass_] * x.nbytes))
    out = np.empty_like(x)
    return {"roof": roof_fn(nbytes, x.size), "copyto": lambda: np.copyto(out, x)}


def competitors(case, include_torch=True):
    """{name: callable} for this case.  The callables close over their inputs."""
    x, w, b = make_inputs(case)
    out = np.empty_like(x)
    axis = case.axis
    fns: dict[str, Callable[[], object]] = {}
    if case.op == "layer_norm":
        wb = (w.reshape(-1), b.reshape(-1)) if case.layout == "channels_first" else (w, b)
        if case.out:
            fns["fastnorm"] = lambda: fastnorm.layer_norm(x, None, *wb, EPS, axis=axis, out=out)
        else:
            fns["fastnorm"] = lambda: fastnorm.layer_norm(x, None, *wb, EPS, axis=axis)
        fns["numpy"] = _numpy_fn(case, numpy_layer_norm, x, w, b, axis)
    else:
        wf = w.reshape(-1)
        if case.out:
            fns["fastnorm"] = lambda: fastnorm.rms_norm(x, None, wf, EPS, axis=axis, out=out)
        else:
            fns["fastnorm"] = lambda: fastnorm.rms_norm(x, None, wf, EPS, axis=axis)
        fns["numpy"] = _numpy_fn(case, numpy_rms_norm, x, w, axis)
    torch = torch_module() if include_torch else None
    if torch is not None:
        fns["torch"] = _torch_fn(torch, case, x, w, b)
    fns.update(roof_competitors(x))
    return fns


def _numpy_fn(case, fn, x, *args):
    """NumPy's way: half-precision inputs are computed in float32 (as a
    NumPy user would; ml_dtypes' own bfloat16 ufuncs are far slower)."""
    if case.dtype not in HALF_DTYPES:
        return lambda: fn(x, *args)
    f32 = [a.astype(np.float32) if isinstance(a, np.ndarray) else a for a in args]
    return lambda: fn(x.astype(np.float32), *f32).astype(x.dtype)


def _to_torch(torch, case, a):
    """A tensor of the case's dtype (torch cannot take ml_dtypes arrays)."""
    a = np.ascontiguousarray(a)
    if case.dtype not in HALF_DTYPES:
        return torch.from_numpy(a)
    tdt = torch.bfloat16 if case.dtype == "bfloat16" else torch.float16
    return torch.from_numpy(a.astype(np.float32)).to(tdt)


def _torch_fn(torch, case, x, w, b):
    xt = _to_torch(torch, case, x)
    wt = _to_torch(torch, case, w.reshape(-1))
    bt = _to_torch(torch, case, b.reshape(-1))
    n = case.norm_size
    F = torch.nn.functional
    if case.layout == "channels_first":
        if case.op == "layer_norm":
            return lambda: F.layer_norm(xt.permute(0, 2, 3, 1), (n,), wt, bt, EPS).permute(
                0, 3, 1, 2
            )
        return lambda: F.rms_norm(xt.permute(0, 2, 3, 1), (n,), wt, EPS).permute(0, 3, 1, 2)
    if case.op == "layer_norm":
        return lambda: F.layer_norm(xt, (n,), wt, bt, EPS)
    return lambda: F.rms_norm(xt, (n,), wt, EPS)


@contextlib.contextmanager
def limit_threads(n):
    """Limit fastnorm's (OpenMP) and torch's threads to n for the block."""
    from threadpoolctl import threadpool_limits

    torch = torch_module()
    previous = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(previous)


@contextlib.contextmanager
def forced_isa(name):
    """fastnorm's kernel set forced to `name` for the block (None leaves it):
    the in-process counterpart of FASTNORM_ISA, which only acts at import."""
    if name is None:
        yield
        return
    from .. import _core

    previous = _core.isa()
    _core.set_isa(name)
    try:
        yield
    finally:
        _core.set_isa(previous)


def time_interleaved(fns, repeats, min_time=0.0, pause=0.0):
    """Median seconds per call of each callable, measured in interleaved rounds
    so that noise on a shared machine hits every competitor alike.  Each round
    times a batch of calls long enough for the clock (min_time seconds).
    pause: seconds slept, off the clock, before each batch (a competitor
    whose worker threads spin after a call, as ONNX Runtime's do, would
    otherwise take CPU from the next batch)."""
    for fn in fns.values():  # warm up: first-touch pages, caches, thread teams
        fn()
    batch = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        once = max(time.perf_counter() - t0, 1e-7)
        batch[name] = max(1, int(min_time / once))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            k = batch[name]
            if pause:
                time.sleep(pause)
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            samples[name].append((time.perf_counter() - t0) / k)
    return {name: float(np.median(v)) for name, v in samples.items()}


def backward_pass(case):
    """The roof key of case's backward competitor: layer_norm times the
    backward alone, rms_norm forward plus backward."""
    return "backward" if case.op == "layer_norm" else "forward+backward"


def summarize(case, times, backward=False):
    """Derived figures for one case: GB/s, the roof's share, ratios.  GB/s
    counts the bytes the pass moves (the roof's copy moves the same)."""
    traffic = ROOF_COPIES[backward_pass(case) if backward else "forward"]
    roof = times["roof"]
    t = times["fastnorm"]
    return {
        "case": case.label,
        "time": t,
        "gbps": traffic * case.bytes_moved() / t / 1e9,
        "roof_pct": 100.0 * roof / t,
        "vs_roof": t / roof,
        "vs_copyto": times["copyto"] / t,
        "vs_numpy": times["numpy"] / t if "numpy" in times else None,
        "vs_torch": times["torch"] / t if "torch" in times else None,
        "times": times,
    }


def header():
    """The line that names what was measured: fastnorm, its kernels, torch."""
    torch = torch_module()
    return (
        f"fastnorm {fastnorm.__version__}, kernels {fastnorm.get_isa()}, "
        f"torch {'not installed' if torch is None else torch.__version__}"
    )


def fmt_time(t):
    """Seconds as microseconds below a millisecond, else as milliseconds."""
    return f"{t * 1e6:.1f}us" if t < 1e-3 else f"{t * 1e3:.2f}ms"


class Progress:
    """A one-line text progress bar on stderr (no dependency)."""

    def __init__(self, total, width=30, stream=None):
        self.total, self.width, self.done = total, width, 0
        self.stream = stream or sys.stderr

    def step(self, label):
        self.done += 1
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} {label[:50]:<50}")
        if self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()


# ---- backward ---------------------------------------------------------------


def _torch_layer_norm_backward(torch, xt, wt, bt, dyt):
    """torch's layer_norm backward op with its forward's saved statistics,
    all three outputs (the last axis normalized)."""
    n = xt.shape[-1]
    _, mt, rt = torch.ops.aten.native_layer_norm(xt, [n], wt, bt, EPS)
    return lambda: torch.ops.aten.native_layer_norm_backward(
        dyt, xt, [n], mt, rt, wt, bt, [True, True, True]
    )


def backward_competitors(case, include_torch=True):
    """{name: callable} for the backward of `case` (last axis).

    layer_norm: fastnorm.layer_norm_backward with the forward's stats, against
    torch.ops.aten.native_layer_norm_backward with all three outputs.
    rms_norm: forward plus backward, against torch's forward plus autograd.
    "roof" and "copyto" as in the module docstring, for those bytes."""
    x, w, b = make_inputs(case)
    dy = np.random.default_rng(1).standard_normal(case.shape).astype(case.dtype)
    n = case.norm_size
    fns: dict[str, Callable[[], object]] = {}
    if case.op == "layer_norm":
        _, mean, rstd = fastnorm.layer_norm(x, None, w, b, EPS, return_stats=True)
        fns["fastnorm"] = lambda: fastnorm.layer_norm_backward(dy, x, None, w, mean=mean, rstd=rstd)
    else:

        def fwd_bwd():
            y, rstd = fastnorm.rms_norm(x, None, w, EPS, return_stats=True)
            return y, fastnorm.rms_norm_backward(dy, x, None, w, rstd=rstd)

        fns["fastnorm"] = fwd_bwd
    torch = torch_module() if include_torch else None
    if torch is not None:
        xt, wt, bt, dyt = (torch.from_numpy(a) for a in (x, w, b, dy))
        if case.op == "layer_norm":
            fns["torch"] = _torch_layer_norm_backward(torch, xt, wt, bt, dyt)
        else:
            xg = xt.clone().requires_grad_(True)
            wg = wt.clone().requires_grad_(True)

            def torch_fwd_bwd():
                xg.grad = None
                wg.grad = None
                torch.nn.functional.rms_norm(xg, (n,), wg, EPS).backward(dyt)

            fns["torch"] = torch_fwd_bwd
    fns.update(roof_competitors(x, backward_pass(case)))
    return fns


def small_backward_competitors(op, shape=(8, 768), include_torch=True):
    """{name: callable} for one small float32 backward with the forward's
    saved statistics, each side's backward alone.

    layer_norm: fastnorm.layer_norm_backward (dx, dweight, dbias) against
    torch.ops.aten.native_layer_norm_backward with all three outputs.
    rms_norm: fastnorm.rms_norm_backward (dx, dweight) against torch's
    autograd backward of F.rms_norm (which has no backward op of its own):
    torch.autograd.grad through a graph recorded once and retained, so that
    torch's forward is not counted against it."""
    case = Case(op, shape, "float32", "last", False)
    x, w, b = make_inputs(case)
    dy = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    n = case.norm_size
    fns: dict[str, Callable[[], object]] = {}
    if op == "layer_norm":
        _, mean, rstd = fastnorm.layer_norm(x, None, w, b, EPS, return_stats=True)
        fns["fastnorm"] = lambda: fastnorm.layer_norm_backward(dy, x, None, w, mean=mean, rstd=rstd)
    else:
        _, rstd = fastnorm.rms_norm(x, None, w, EPS, return_stats=True)
        fns["fastnorm"] = lambda: fastnorm.rms_norm_backward(dy, x, None, w, rstd=rstd)
    torch = torch_module() if include_torch else None
    if torch is not None:
        xt, wt, bt, dyt = (torch.from_numpy(a) for a in (x, w, b, dy))
        if op == "layer_norm":
            fns["torch"] = _torch_layer_norm_backward(torch, xt, wt, bt, dyt)
        else:
            xg = xt.clone().requires_grad_(True)
            wg = wt.clone().requires_grad_(True)
            y = torch.nn.functional.rms_norm(xg, (n,), wg, EPS)
            fns["torch"] = lambda: torch.autograd.grad(y, (xg, wg), dyt, retain_graph=True)
    return fns


# ---- fused residual add + norm ----------------------------------------------


def fused_competitors(case):
    """{name: callable}: the fused add+norm against its two steps (np.add
    then the norm), both with out= and residual_out= preallocated, and the
    roof of its bytes (reads x and the residual, writes h and y)."""
    x, w, b = make_inputs(case)
    r = np.random.default_rng(2).standard_normal(case.shape).astype(case.dtype)
    y = np.empty_like(x)
    h = np.empty_like(x)
    if case.op == "layer_norm":
        fused = lambda: fastnorm.add_layer_norm(x, r, None, w, b, EPS, out=y, residual_out=h)  # noqa: E731

        def two_steps():
            np.add(x, r, out=h)
            fastnorm.layer_norm(h, None, w, b, EPS, out=y)
    else:
        fused = lambda: fastnorm.add_rms_norm(x, r, None, w, EPS, out=y, residual_out=h)  # noqa: E731

        def two_steps():
            np.add(x, r, out=h)
            fastnorm.rms_norm(h, None, w, EPS, out=y)

    return {"fastnorm": fused, "two steps": two_steps, **roof_competitors(x, "fused")}
