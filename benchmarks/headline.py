"""The README's headline speed table: fastnorm against NumPy, PyTorch and
ONNX Runtime, as a Markdown table.

    python benchmarks/headline.py
    python benchmarks/headline.py --shapes 4096x4096,64x768 --threads 1,2 --repeats 15

Every call allocates its output and passes a weight (and, for LayerNorm, a
bias), as a model does; float32, normalized over the last axis.  The
competitors:

- NumPy: the plain expression, ``(x - mean) / sqrt(var + eps) * w + b`` and
  ``x / sqrt(mean(x * x) + eps) * w`` (NumPy runs it on one thread);
- PyTorch: ``torch.nn.functional.layer_norm`` and ``rms_norm`` on tensors
  that share x's memory (no gradient is recorded: nothing requires one),
  with ``torch.set_num_threads`` set to the row's thread count;
- ONNX Runtime: a one-node model built in memory, LayerNormalization
  (opset 17) or RMSNormalization (opset 23), weight and bias as
  initializers, in a session with ``intra_op_num_threads`` set to the row's
  thread count.

Each competitor's output is first checked against fastnorm's.  The times are
medians over interleaved rounds: each round times every competitor once (a
batch of calls long enough for the clock), in an order that rotates from
round to round, so that noise from other processes hits them alike.  Each
batch starts after a pause, off the clock, in which the thread pools of the
batch before stop spinning.  A
competitor that is not installed, or an operator its runtime lacks, is
named in the table instead of a figure.
"""

import argparse
import os
import platform
import sys

# Measure the checkout this script lives in, not whatever fastnorm is
# installed elsewhere (an editable install may point at another worktree).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

import fastnorm
from fastnorm.bench.harness import limit_threads, time_interleaved

LN_EPS = 1e-5
RMS_EPS = 1e-6
OPS = ("layer_norm", "rms_norm")
NAMES = {"numpy": "NumPy", "torch": "PyTorch", "onnxruntime": "ONNX Runtime"}
TOLERANCE = 1e-4  # float32 results of the same norm: far below this apart
# A pause before each timed batch, off the clock: the thread pools of
# OpenMP, torch and onnxruntime spin for a while after a parallel call, and
# on a machine with few cores their spinning would slow the next batch,
# whichever competitor it is.
PAUSE = 0.02


def optional(name):
    """The module `name`, or None when it is not installed."""
    try:
        return __import__(name)
    except ImportError:
        return None


def inputs(shape, seed=0):
    """x, weight and bias, float32, normalized over the last axis."""
    rng = np.random.default_rng(seed)
    d = shape[-1]
    x = rng.standard_normal(shape, dtype=np.float32) * 2 + 1
    w = rng.standard_normal(d, dtype=np.float32)
    b = rng.standard_normal(d, dtype=np.float32)
    return x, w, b


# ---- the competitors ---------------------------------------------------------------


def fastnorm_fn(op, x, w, b):
    if op == "layer_norm":
        return lambda: fastnorm.layer_norm(x, weight=w, bias=b, eps=LN_EPS)
    return lambda: fastnorm.rms_norm(x, weight=w, eps=RMS_EPS)


def numpy_fn(op, x, w, b):
    if op == "layer_norm":

        def ln():
            mean = x.mean(axis=-1, keepdims=True)
            var = x.var(axis=-1, keepdims=True)
            return (x - mean) / np.sqrt(var + LN_EPS) * w + b

        return ln

    def rms():
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + RMS_EPS) * w

    return rms


def torch_fn(op, x, w, b):
    """torch.nn.functional's call on tensors sharing x's memory, or None."""
    torch = optional("torch")
    if torch is None:
        return None
    F = torch.nn.functional
    xt, wt, bt = (torch.from_numpy(a) for a in (x, w, b))
    shape = (x.shape[-1],)

    if op == "layer_norm":
        return lambda: F.layer_norm(xt, shape, wt, bt, LN_EPS)
    return lambda: F.rms_norm(xt, shape, wt, RMS_EPS)


def onnx_model(op, w, b):
    """A one-node ONNX model of `op` (bytes), weight and bias as initializers:
    LayerNormalization (opset 17) or RMSNormalization (opset 23)."""
    from onnx import TensorProto, helper, numpy_helper

    if op == "layer_norm":
        node_op, opset, eps, params = "LayerNormalization", 17, LN_EPS, {"W": w, "B": b}
    else:
        node_op, opset, eps, params = "RMSNormalization", 23, RMS_EPS, {"W": w}
    node = helper.make_node(node_op, ["X", *params], ["Y"], axis=-1, epsilon=eps)
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", w.shape[0]])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", w.shape[0]])],
        initializer=[numpy_helper.from_array(a, name) for name, a in params.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return model.SerializeToString()


def onnxruntime_fn(op, x, w, b, threads):
    """sess.run of the one-node model on `threads` intra-op threads; None when
    onnx or onnxruntime is missing; a string when the runtime refuses the op."""
    ort = optional("onnxruntime")
    if ort is None or optional("onnx") is None:
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        session = ort.InferenceSession(
            onnx_model(op, w, b), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # an operator or opset this onnxruntime lacks
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"not supported by onnxruntime {ort.__version__} ({first[:60]})"
    feed = {"X": x.reshape(-1, x.shape[-1])}
    return lambda: session.run(None, feed)[0]


def competitors(op, shape, threads):
    """name -> callable for one case, or -> a string saying why it is absent."""
    x, w, b = inputs(shape)
    fns = {"fastnorm": fastnorm_fn(op, x, w, b), "numpy": numpy_fn(op, x, w, b)}
    fns["torch"] = torch_fn(op, x, w, b) or "not installed"
    fns["onnxruntime"] = onnxruntime_fn(op, x, w, b, threads) or "not installed"
    return fns


def as_array(result):
    """A competitor's output as a NumPy array (torch tensors included)."""
    if hasattr(result, "numpy"):
        result = result.numpy()
    return np.asarray(result, dtype=np.float64)


def check(fns, shape):
    """Replace every competitor whose output differs from fastnorm's by a note."""
    want = as_array(fns["fastnorm"]()).reshape(shape)
    for name, fn in list(fns.items()):
        if name == "fastnorm" or isinstance(fn, str):
            continue
        err = float(np.max(np.abs(as_array(fn()).reshape(shape) - want)))
        if not err <= TOLERANCE:
            fns[name] = f"wrong result (max difference {err:.2g})"


# ---- timing ------------------------------------------------------------------------


def measure(op, shape, threads, repeats=15, min_time=0.02):
    """One row: fastnorm's median time, and for each competitor its median
    time over fastnorm's (a speed-up: above 1, fastnorm is faster) or the
    note that replaces it."""
    fns = competitors(op, shape, threads)
    check(fns, shape)
    timed = {k: f for k, f in fns.items() if not isinstance(f, str)}
    with limit_threads(threads):
        times = time_interleaved(timed, repeats, min_time, pause=PAUSE)
    row = {"fastnorm": times["fastnorm"]}
    for name in NAMES:
        fn = fns[name]
        row[name] = fn if isinstance(fn, str) else times[name] / times["fastnorm"]
    return row


# ---- the table ---------------------------------------------------------------------


def cpu_model():
    """lscpu's "Model name", with the family and model numbers on x86-64."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or platform.machine()
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return name


def versions():
    parts = [f"fastnorm {fastnorm.__version__} (kernels {fastnorm.get_isa()})"]
    parts.append(f"NumPy {np.__version__}")
    for module, label in (("torch", "PyTorch"), ("onnxruntime", "ONNX Runtime")):
        m = optional(module)
        parts.append(f"{label} {m.__version__}" if m is not None else f"{label} not installed")
    return ", ".join(parts)


def fmt_time(t):
    return f"{t * 1e6:.1f} µs" if t < 1e-3 else f"{t * 1e3:.2f} ms"


def fmt_ratio(r):
    if isinstance(r, str):
        return r
    return f"{r:.2f}×" if r < 10 else f"{r:.0f}×" if r >= 100 else f"{r:.1f}×"


def table(rows):
    """Markdown lines for [(op, shape, threads, row)]."""
    lines = [
        "| call | shape | threads | fastnorm | NumPy / fastnorm | PyTorch / fastnorm "
        "| ONNX Runtime / fastnorm |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for op, shape, threads, row in rows:
        cells = [
            op,
            "(" + ", ".join(map(str, shape)) + ")",
            str(threads),
            fmt_time(row["fastnorm"]),
            *(fmt_ratio(row[name]) for name in NAMES),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def parse_shapes(text):
    return [tuple(int(n) for n in s.split("x")) for s in text.split(",") if s]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="4096x4096,64x768", help="e.g. 4096x4096,64x768")
    parser.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    parser.add_argument("--ops", default=",".join(OPS), help="layer_norm,rms_norm")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds")
    parser.add_argument(
        "--min-time", type=float, default=0.02, help="seconds per timed batch of calls"
    )
    args = parser.parse_args(argv)
    ops = [op for op in args.ops.split(",") if op]
    unknown = sorted(set(ops) - set(OPS))
    if unknown:
        parser.error(f"unknown ops {unknown}; choose from {', '.join(OPS)}")
    threads = [int(n) for n in args.threads.split(",") if n]
    rows = []
    for shape in parse_shapes(args.shapes):
        for op in ops:
            for n in threads:
                rows.append((op, shape, n, measure(op, shape, n, args.repeats, args.min_time)))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    busy = f", load average {load[0]:.1f} when done" if load else ""
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs{busy}")
    print(versions())
    print(
        f"float32, weight{' and bias' if 'layer_norm' in ops else ''}, allocating calls; "
        f"medians of {args.repeats} interleaved rounds; "
        "ratios above 1: fastnorm is faster"
    )
    print()
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
