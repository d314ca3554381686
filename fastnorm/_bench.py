"""Benchmark cases shared by ``python -m fastnorm bench`` and the
pytest-benchmark suite in ``benchmarks/``.

A case is one normalization (op, shape, dtype, layout, out= or allocating);
each competitor is a zero-argument callable doing that work its own way:
fastnorm, plain NumPy, PyTorch's CPU kernel (when torch is installed), and the
copy roof (the faster of ``np.copyto`` and ``np.multiply(x, 1, out=)``, which
move the same bytes as a normalization and do nothing else)."""
import contextlib
import sys
import time
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
    op: str = "layer_norm"          # or "rms_norm"
    shape: tuple = (4096, 4096)
    dtype: str = "float32"
    layout: str = "last"            # or "channels_first" (axis=1 of a 4-D array)
    out: bool = True                # preallocated out= (else allocating)

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


def competitors(case, include_torch=True):
    """{name: callable} for this case.  The callables close over their inputs."""
    x, w, b = make_inputs(case)
    out = np.empty_like(x)
    axis = case.axis
    fns = {}
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
    roof_out = out
    fns["copy"] = lambda: np.copyto(roof_out, x)
    if case.dtype not in HALF_DTYPES:  # ml_dtypes' bfloat16 ufuncs are no roof
        fns["multiply"] = lambda: np.multiply(x, 1, out=roof_out)
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
            return lambda: F.layer_norm(xt.permute(0, 2, 3, 1), (n,), wt, bt, EPS).permute(0, 3, 1, 2)
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
    from . import _core
    previous = _core.isa()
    _core.set_isa(name)
    try:
        yield
    finally:
        _core.set_isa(previous)


def time_interleaved(fns, repeats, min_time=0.0):
    """Median seconds per call of each callable, measured in interleaved rounds
    so that noise on a shared machine hits every competitor alike.  Each round
    times a batch of calls long enough for the clock (min_time seconds)."""
    for fn in fns.values():  # warm up: first-touch pages, caches, thread teams
        fn()
    batch = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        once = max(time.perf_counter() - t0, 1e-7)
        batch[name] = max(1, int(min_time / once))
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            k = batch[name]
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            samples[name].append((time.perf_counter() - t0) / k)
    return {name: float(np.median(v)) for name, v in samples.items()}


def summarize(case, times, backward=False):
    """Derived figures for one case: roof, GB/s, ratios.  The backward moves
    1.5 times a forward's bytes (reads x and dy, writes dx)."""
    traffic = 1.5 if backward else 1.0
    roof = traffic * min(times[k] for k in ("copy", "multiply") if k in times)
    t = times["fastnorm"]
    return {
        "case": case.label,
        "time": t,
        "gbps": traffic * case.bytes_moved() / t / 1e9,
        "roof_pct": 100.0 * roof / t,
        "vs_roof": t / roof,
        "vs_numpy": times["numpy"] / t if "numpy" in times else None,
        "vs_torch": times["torch"] / t if "torch" in times else None,
        "times": times,
    }


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


# ---- the speed targets, measured side by side ---------------------

def _ratio(case, threads, num, den, repeats, min_time=2e-3, extra=None):
    """Median time of competitor `num` over the faster of `den` (names)."""
    with limit_threads(threads):
        fns = competitors(case)
        if extra:
            fns.update(extra(case))
        needed = {num, *den}
        if not needed <= set(fns):
            return None
        times = time_interleaved({k: fns[k] for k in needed}, repeats, min_time)
    return times[num] / min(times[d] for d in den)


def _plain_fastnorm(case):
    """fastnorm without weight and bias."""
    x, _, _ = make_inputs(case)
    out = np.empty_like(x)
    fn = fastnorm.layer_norm if case.op == "layer_norm" else fastnorm.rms_norm
    return {"plain": lambda: fn(x, out=out)}


def _np_add_bias(case):
    x, _, b = make_inputs(case)
    out = np.empty_like(x)
    return {"np.add": lambda: np.add(x, b, out=out)}


def _fastnorm_threads(case, threads):
    """fastnorm on `threads` OpenMP threads, to compare thread counts in one
    interleaved run.  Sets the count through threadpoolctl's library
    controllers (one cheap call) rather than entering threadpool_limits
    around every call, whose bookkeeping would swamp a sub-millisecond call."""
    from threadpoolctl import ThreadpoolController
    controllers = ThreadpoolController().select(user_api="openmp").lib_controllers
    x, w, b = make_inputs(case)
    out = np.empty_like(x)
    fn = fastnorm.layer_norm if case.op == "layer_norm" else fastnorm.rms_norm
    args = (w, b) if case.op == "layer_norm" else (w,)

    def run():
        for c in controllers:
            c.set_num_threads(threads)
        fn(x, None, *args, EPS, out=out)
    return run


def _target_rows(progress):
    """(rows, add): add(name, value, goal, higher_is_better=False) appends a
    target row and advances the progress bar."""
    rows = []

    def add(name, value, goal, higher_is_better=False):
        rows.append((name, value, goal, higher_is_better))
        if progress:
            progress.step(name)
    return rows, add


def measure_targets(repeats=21, progress=None):
    """[(target, measured, goal)]: measured and goal are ratios where lower is
    better, except the NumPy speed-up where higher is better."""
    C = Case
    big = (4096, 4096)
    rows, add = _target_rows(progress)

    for op in ("layer_norm", "rms_norm"):
        add(f"{op} f32 {big} out= 1 thread / copy roof",
            _ratio(C(op, big, "float32", "last", True), 1, "fastnorm", ["copy", "multiply"], repeats),
            1.15)
        add(f"  the same without weight and bias",
            _ratio(C(op, big, "float32", "last", True), 1, "plain", ["copy", "multiply"], repeats,
                   extra=_plain_fastnorm), 1.15)
    for op, goal in (("layer_norm", 0.3), ("rms_norm", 0.1)):
        add(f"{op} f32 {big} allocating 2 threads / torch",
            _ratio(C(op, big, "float32", "last", False), 2, "fastnorm", ["torch"], repeats), goal)
    r = _ratio(C("layer_norm", big, "float32", "last", False), 2, "numpy", ["fastnorm"], repeats)
    add(f"numpy layer_norm / fastnorm, f32 {big}", r, 10.0, higher_is_better=True)
    for op, goal in (("layer_norm", 0.4), ("rms_norm", 0.2)):
        add(f"{op} f32 (8, 768) / torch",
            _ratio(C(op, (8, 768), "float32", "last", False), 2, "fastnorm", ["torch"], repeats * 20,
                   min_time=2e-4), goal)
    add("layer_norm f32 (8, 768) out= / np.add(x, b, out=)",
        _ratio(C("layer_norm", (8, 768), "float32", "last", True), 2, "fastnorm", ["np.add"],
               repeats * 20, min_time=2e-4, extra=_np_add_bias), 2.5)
    for op in ("layer_norm", "rms_norm"):
        case = C(op, (512, 4096), "float32", "last", True)
        with limit_threads(2):
            times = time_interleaved({1: _fastnorm_threads(case, 1), 2: _fastnorm_threads(case, 2)},
                                     repeats * 3, 2e-3)
        add(f"{op} f32 (512, 4096) 2 threads / 1 thread", times[2] / times[1], 0.6)
    for op in ("layer_norm", "rms_norm"):
        add(f"{op} f64 {big} out= 1 thread / copy roof",
            _ratio(C(op, big, "float64", "last", True), 1, "fastnorm", ["copy", "multiply"], repeats),
            1.5)
        add(f"{op} f32 (16, 256, 64, 64) axis=1 out= 1 thread / copy roof",
            _ratio(C(op, (16, 256, 64, 64), "float32", "channels_first", True), 1, "fastnorm",
                   ["copy", "multiply"], repeats), 1.5)
    return rows


TARGET_COUNT = 16


def measure_half_targets(dtype="bfloat16", repeats=21, progress=None):
    """The half-precision targets: out= against a copy of the same dtype on
    one thread, and allocating against PyTorch's kernel of that dtype on two."""
    big = (4096, 4096)
    rows, add = _target_rows(progress)
    for op in ("layer_norm", "rms_norm"):
        add(f"{op} {dtype} {big} out= 1 thread / {dtype} copy",
            _ratio(Case(op, big, dtype, "last", True), 1, "fastnorm", ["copy"], repeats), 1.2)
    for op, goal in (("layer_norm", 0.3), ("rms_norm", 0.1)):
        add(f"{op} {dtype} {big} allocating 2 threads / torch {dtype}",
            _ratio(Case(op, big, dtype, "last", False), 2, "fastnorm", ["torch"], repeats), goal)
    return rows


HALF_TARGET_COUNT = 4


# ---- backward ---------------------------------------------------------------

def backward_competitors(case, include_torch=True):
    """{name: callable} for the backward of `case` (last axis).

    layer_norm: fastnorm.layer_norm_backward with the forward's stats, against
    torch.ops.aten.native_layer_norm_backward with all three outputs.
    rms_norm: forward plus backward, against torch's forward plus autograd.
    'copy' and 'multiply' give the copy roof (the backward reads x and dy
    and writes dx: 1.5 times a copy's traffic)."""
    x, w, b = make_inputs(case)
    dy = np.random.default_rng(1).standard_normal(case.shape).astype(case.dtype)
    out = np.empty_like(x)
    n = case.norm_size
    fns = {}
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
            _, mt, rt = torch.ops.aten.native_layer_norm(xt, [n], wt, bt, EPS)
            fns["torch"] = lambda: torch.ops.aten.native_layer_norm_backward(
                dyt, xt, [n], mt, rt, wt, bt, [True, True, True])
        else:
            xg = xt.clone().requires_grad_(True)
            wg = wt.clone().requires_grad_(True)

            def torch_fwd_bwd():
                xg.grad = None
                wg.grad = None
                torch.nn.functional.rms_norm(xg, (n,), wg, EPS).backward(dyt)
            fns["torch"] = torch_fwd_bwd
    fns["copy"] = lambda: np.copyto(out, x)
    fns["multiply"] = lambda: np.multiply(x, 1, out=out)
    return fns


def measure_backward_targets(repeats=21, progress=None):
    big = (4096, 4096)
    rows, add = _target_rows(progress)
    case = Case("layer_norm", big, "float32", "last", False)
    with limit_threads(2):
        fns = backward_competitors(case)
        times = time_interleaved(fns, repeats, 2e-3)
    roof = min(times["copy"], times["multiply"])
    add(f"layer_norm_backward f32 {big} 2 threads / torch native_layer_norm_backward",
        times["fastnorm"] / times["torch"] if "torch" in times else None, 0.4)
    add(f"layer_norm_backward f32 {big} 2 threads / (1.5 x copy roof)",
        times["fastnorm"] / (1.5 * roof), 1.3)
    case = Case("rms_norm", big, "float32", "last", False)
    with limit_threads(2):
        fns = backward_competitors(case)
        fns.pop("copy")
        fns.pop("multiply")
        times = time_interleaved(fns, repeats, 2e-3)
    add(f"rms_norm forward+backward f32 {big} 2 threads / torch forward+autograd",
        times["fastnorm"] / times["torch"] if "torch" in times else None, 0.1)
    return rows


BACKWARD_TARGET_COUNT = 3


# ---- fused residual add + norm ----------------------------------------------

def fused_competitors(case):
    """{name: callable}: the fused add+norm against its two steps (np.add
    then the norm), both with out= and residual_out= preallocated."""
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
    return {"fastnorm": fused, "two steps": two_steps}


def measure_fused_targets(repeats=21, progress=None):
    rows, add = _target_rows(progress)
    for op in ("layer_norm", "rms_norm"):
        case = Case(op, (4096, 4096), "float32", "last", True)
        with limit_threads(1):
            times = time_interleaved(fused_competitors(case), repeats, 2e-3)
        add(f"add_{op} f32 (4096, 4096) 1 thread / (np.add + {op})",
            times["fastnorm"] / times["two steps"], 0.75)
    return rows


FUSED_TARGET_COUNT = 2
