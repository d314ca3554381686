"""A patched model through torch's graph capture: torch.jit.trace,
torch.fx.symbolic_trace and both ONNX exporters (TorchScript-based and
torch.export-based, the exported model run in onnxruntime).  Each must
record a graph that computes the norm (never the pointer path's empty
output), and running it must give the eager model's result."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from _hf_norms import GemmaRMSNorm, LlamaRMSNorm  # noqa: E402

import fastnorm.torch as fnt  # noqa: E402

pytestmark = pytest.mark.any_isa


def _model(norm="LayerNorm"):
    """Linear -> norm -> Linear -> norm, with parameters away from 1 and 0, patched."""
    torch.manual_seed(0)
    norms = {
        "LayerNorm": lambda: torch.nn.LayerNorm(16),
        "RMSNorm": lambda: torch.nn.RMSNorm(16),
        "Llama": lambda: LlamaRMSNorm(16),
        "Gemma": lambda: GemmaRMSNorm(16),
    }[norm]
    m = torch.nn.Sequential(torch.nn.Linear(16, 16), norms(), torch.nn.Linear(16, 16), norms())
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.rand(p.shape))
    m.eval()
    assert fnt.patch(m) == ["1", "3"]
    return m


def _unpatched_result(m, x):
    fnt.unpatch(m)
    try:
        with torch.no_grad():
            return m(x)
    finally:
        fnt.patch(m)


@pytest.mark.parametrize("norm", ["LayerNorm", "RMSNorm", "Llama", "Gemma"])
def test_jit_trace_records_the_norm(norm):
    m = _model(norm)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)  # none expected
        traced = torch.jit.trace(m, torch.randn(4, 16))
    graph = str(traced.inlined_graph)
    assert "empty_like" not in graph
    x = torch.randn(5, 16) * 3 + 1
    with torch.no_grad():
        torch.testing.assert_close(traced(x), _unpatched_result(m, x), rtol=1e-5, atol=1e-5)
        # the traced graph reads the parameters: a later update reaches it
        m[1].weight.mul_(2)
        torch.testing.assert_close(traced(x), _unpatched_result(m, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["LayerNorm", "RMSNorm", "Llama", "Gemma"])
def test_fx_symbolic_trace_records_a_graph_that_runs_fastnorm(norm):
    m = _model(norm)
    gm = torch.fx.symbolic_trace(m)
    x = torch.randn(5, 16) * 3 + 1
    with torch.no_grad():
        torch.testing.assert_close(gm(x), _unpatched_result(m, x), rtol=1e-5, atol=1e-5)
    if norm in ("LayerNorm", "RMSNorm"):  # recorded as fastnorm's function, run eagerly
        targets = {n.target for n in gm.graph.nodes if n.op == "call_function"}
        want = fnt.layer_norm if norm == "LayerNorm" else fnt.rms_norm
        assert want in targets, targets


@pytest.mark.parametrize("fn", [fnt.add_layer_norm, fnt.add_rms_norm])
def test_fx_symbolic_trace_of_the_fused_add_unpacks(fn):
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.rand(16) + 0.5)

        def forward(self, x, r):
            y, h = fn(x, r, (16,), self.weight)
            return y * 2 + h

    b = Block()
    gm = torch.fx.symbolic_trace(b)
    x, r = torch.randn(3, 16), torch.randn(3, 16)
    with torch.no_grad():
        assert torch.equal(gm(x, r), b(x, r))


def _run_onnx(path, x):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.slow
# the legacy exporter, which torch deprecates: this test's own call of it,
# and deprecated helpers of its own
@pytest.mark.filterwarnings(
    "ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning"
)
@pytest.mark.filterwarnings(
    "ignore:The feature will be removed. Please remove usage of this function"
    r":DeprecationWarning:torch\.onnx\._internal\.torchscript_exporter\.utils"
)
def test_torchscript_onnx_export_gives_layer_normalization(tmp_path):
    onnx = pytest.importorskip("onnx")
    m = _model("LayerNorm")
    x = torch.randn(4, 16)
    path = str(tmp_path / "m.onnx")
    torch.onnx.export(m, (x,), path, dynamo=False, opset_version=17)
    graph = onnx.load(path).graph
    assert len(graph.input) == 1
    assert [n.op_type for n in graph.node].count("LayerNormalization") == 2
    x = torch.randn(4, 16) * 3 + 1  # the same shape: the export is static
    np.testing.assert_allclose(_run_onnx(path, x), _unpatched_result(m, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["LayerNorm", "RMSNorm", "Llama", "Gemma"])
@pytest.mark.slow
def test_torch_export_based_onnx_export_runs_in_onnxruntime(norm, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    m = _model(norm)
    x = torch.randn(4, 16)
    path = str(tmp_path / "m.onnx")
    torch.onnx.export(m, (x,), path, dynamo=True, opset_version=23, verbose=False)
    ops = [n.op_type for n in onnx.load(path).graph.node]
    if norm in ("LayerNorm", "RMSNorm"):  # (the Hugging Face norms are written out in ops)
        want_op = "LayerNormalization" if norm == "LayerNorm" else "RMSNormalization"
        assert ops.count(want_op) == 2, ops
    np.testing.assert_allclose(_run_onnx(path, x), _unpatched_result(m, x), rtol=1e-5, atol=1e-5)


def test_functional_calls_record_torchs_op_under_jit_trace():
    w, b = torch.rand(16) + 0.5, torch.randn(16)

    def f(x):
        y, h = fnt.add_layer_norm(x, x * 2, (16,), w, b)
        return fnt.rms_norm(y + h, 16, w)

    with torch.no_grad():
        traced = torch.jit.trace(f, torch.randn(3, 16))
    x = torch.randn(4, 16)
    h = x + x * 2
    want = F.rms_norm(F.layer_norm(h, (16,), w, b) + h, (16,), w, torch.finfo(torch.float32).eps)
    torch.testing.assert_close(traced(x), want, rtol=1e-5, atol=1e-5)
