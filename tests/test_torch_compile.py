"""fastnorm's torch.library ops: torch.compile(fullgraph=True), torch.export,
opcheck (schema, fake implementation, autograd registration), meta tensors,
torch's fallback inside the ops, and double backward.

Compiling is slow, so most tests use the "eager" or "aot_eager" backends,
which run the traced graph with the same kernels as eager mode: forward
results are then compared bit for bit.  One test uses inductor."""

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from _hf_norms import LlamaRMSNorm  # noqa: E402

import fastnorm.torch as fnt  # noqa: E402
from fastnorm.torch import _ops as _torch_ops  # noqa: E402

# The graph-level behaviour tested here does not depend on the kernel set
# (the kernels' numerics are tested per ISA elsewhere).
pytestmark = [pytest.mark.any_isa, pytest.mark.slow]  # subprocesses, compiles

OPS = torch.ops.fastnorm


class Net(torch.nn.Module):
    """Every way into fastnorm.torch: modules, functions (fused add, channels-first
    dim=1) and a patched block of torch and Hugging Face norms."""

    def __init__(self, n=16, c=4):
        super().__init__()
        self.ln = fnt.LayerNorm(n)
        self.rms = fnt.RMSNorm(n, eps=1e-6)
        self.proj = torch.nn.Linear(n, n)
        self.cw = torch.nn.Parameter(torch.ones(c))
        self.cb = torch.nn.Parameter(torch.zeros(c))
        self.block = torch.nn.Sequential(
            torch.nn.Linear(n, n), torch.nn.LayerNorm(n), torch.nn.RMSNorm(n), LlamaRMSNorm(n)
        )
        assert fnt.patch(self.block) == ["1", "2", "3"]
        gen = torch.Generator().manual_seed(7)
        with torch.no_grad():  # no all-ones weights: they would hide a wrong gradient
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + (1.0 if p.dim() == 1 else 0))

    def forward(self, x, img):
        h = self.ln(x)
        y, h = fnt.add_layer_norm(self.proj(h), x, (x.shape[-1],), self.ln.weight, self.ln.bias)
        y, h = fnt.add_rms_norm(y, h, x.shape[-1], self.rms.weight)
        y = self.rms(y) + self.block(h)
        c = fnt.layer_norm(img, (img.shape[1],), self.cw, self.cb, dim=1)
        c = fnt.rms_norm(c, None, self.cw, dim=1)
        return y, c


def inputs(requires_grad=False):
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(2, 5, 16, generator=gen).requires_grad_(requires_grad)
    img = (torch.randn(2, 4, 3, 3, generator=gen) * 2 + 1).requires_grad_(requires_grad)
    return x, img


def grads(net, x, img, out):
    y, c = out
    loss = (y * torch.linspace(-1, 1, y.shape[-1])).sum() + (c**2).sum()
    return torch.autograd.grad(loss, [x, img] + list(net.parameters()))


def max_ulp(a, b):
    """Largest difference in units of a's dtype's eps, relative to max(|b|, 1)."""
    return ((a.double() - b.double()).abs() / b.double().abs().clamp(min=1)).max().item() / float(
        torch.finfo(a.dtype).eps
    )


# ---- torch.compile -------------------------------------------------------------------


def test_compile_fullgraph_forward_and_backward():
    """aot_eager traces forward and backward (as inductor would) and runs them
    with the same kernels: the forward is bitwise eager fastnorm's.  The
    gradients agree within a few ulp, not bitwise: the compiled backward op
    recomputes rstd from the input, eager autograd reuses the forward's."""
    net = Net()
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    x, img = inputs(requires_grad=True)
    got = compiled(x, img)
    want = net(x, img)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    with torch.no_grad():  # the direct path too
        for g, w in zip(compiled(x, img), net(x, img)):
            assert torch.equal(g, w)
    for g, w in zip(grads(net, x, img, got), grads(net, x, img, want)):
        assert g.shape == w.shape and g.dtype == w.dtype
        assert max_ulp(g, w) <= 16, max_ulp(g, w)  # measured: at most 6


def test_compiled_graph_calls_fastnorm_ops():
    """The traced graph holds fastnorm's ops in both directions, not torch's norms."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = []

    def keep(gm, example_inputs):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    net = Net()
    compiled = torch.compile(
        net, fullgraph=True, backend=aot_autograd(fw_compiler=keep, bw_compiler=keep)
    )
    x, img = inputs(requires_grad=True)
    y, c = compiled(x, img)
    (y.sum() + c.sum()).backward()
    fw, bw = graphs
    fw_ops = {str(n.target) for n in fw.graph.nodes if n.op == "call_function"}
    bw_ops = {str(n.target) for n in bw.graph.nodes if n.op == "call_function"}
    for name in ("layer_norm", "rms_norm", "add_layer_norm", "add_rms_norm"):
        assert f"fastnorm.{name}.default" in fw_ops
    assert {"fastnorm.layer_norm_backward.default", "fastnorm.rms_norm_backward.default"} <= bw_ops
    assert not any("native_layer_norm" in op or "aten.rms_norm" in op for op in fw_ops)


def test_compile_inductor():
    """The default backend: inductor compiles the ops as extern calls around
    its own fused kernels.  fastnorm's outputs are bitwise eager's; the sum
    inductor fuses around them may round differently, so it is compared with
    a tolerance."""

    def f(x, r, w, b):
        y, h = fnt.add_layer_norm(x, r, 32, w, b)
        return fnt.rms_norm(torch.relu(y), 32, w) + h

    gen = torch.Generator().manual_seed(3)
    x, r = torch.randn(2, 8, 32, generator=gen), torch.randn(2, 8, 32, generator=gen)
    w, b = torch.randn(32, generator=gen), torch.randn(32, generator=gen)
    compiled = torch.compile(f, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, r, w, b), f(x, r, w, b), rtol=2e-6, atol=2e-6)


def test_compile_dynamic_shapes():
    """dynamic=True: sizes are symbolic (normalized_shape is SymInt[]), one graph
    serves every batch and sequence length."""
    net = Net()
    compiled = torch.compile(net, fullgraph=True, dynamic=True, backend="eager")
    with torch.no_grad():
        for t in (3, 7):
            x = torch.randn(2, t, 16)
            img = torch.randn(t, 4, 2, t)
            for g, w in zip(compiled(x, img), net(x, img)):
                assert torch.equal(g, w)


def test_eager_calls_do_not_use_the_ops(monkeypatch):
    """Plain eager CPU calls keep their direct and autograd paths: the
    dispatcher costs more than the kernel at small sizes."""

    def fail(*args):
        raise AssertionError("eager call went through torch.ops.fastnorm")

    monkeypatch.setattr(_torch_ops, "norm", fail)
    monkeypatch.setattr(_torch_ops, "add_norm", fail)
    net = Net()
    x, img = inputs(requires_grad=True)
    y, c = net(x, img)
    (y.sum() + c.sum()).backward()
    with torch.no_grad():
        net(x, img)


# ---- torch.export --------------------------------------------------------------------


def test_export():
    """Exported with a symbolic batch and sequence length; the program runs
    fastnorm's kernels at other sizes, bit for bit as eager."""
    net = Net()
    x, img = inputs()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    ep = torch.export.export(net, (x, img), dynamic_shapes=({0: batch, 1: seq}, {0: batch}))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    for name in ("layer_norm", "rms_norm", "add_layer_norm", "add_rms_norm"):
        assert f"fastnorm.{name}.default" in targets
    with torch.no_grad():
        want = net(x, img)
        x2, img2 = torch.randn(3, 9, 16) * 3 - 1, torch.randn(3, 4, 3, 3)
        want2 = net(x2, img2)
    for g, w in zip(ep.module()(x, img), want):
        assert torch.equal(g, w)
    for g, w in zip(ep.module()(x2, img2), want2):
        assert torch.equal(g, w)


# ---- opcheck ---------------------------------------------------------------------------


def _samples(dtype):
    gen = torch.Generator().manual_seed(5)

    def t(*shape, grad=True):
        return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype).requires_grad_(grad)

    x, r, w, b = t(3, 4, 8), t(3, 4, 8), t(8), t(8)
    img, wc, bc = t(2, 4, 3, 3), t(4), t(4)
    strided = t(4, 3, 8, grad=False).transpose(0, 1).requires_grad_()  # non-contiguous, a leaf
    return [
        (OPS.layer_norm, (x, [8], w, b, 1e-5, None)),
        (OPS.layer_norm, (strided, [4, 8], None, None, 1e-3, None)),
        (OPS.layer_norm, (img, [4], wc, bc, 1e-5, [1])),
        (OPS.rms_norm, (x, [8], w, None, None)),
        (OPS.rms_norm, (img, [4], None, 1e-6, [1])),
        (OPS.add_layer_norm, (x, r, [8], w, None, 1e-5, None)),
        (OPS.add_rms_norm, (x, r, [8], None, None, None)),
        (OPS.add_layer_norm, (img, img.detach() * 2, [4], wc, bc, 1e-5, [1])),
        (
            OPS.layer_norm_backward,
            (x.detach(), r.detach(), [8], w.detach(), b.detach(), 1e-5, None),
        ),
        (OPS.rms_norm_backward, (x.detach(), r.detach(), [4, 8], None, None, None)),
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_opcheck(dtype):
    for op, args in _samples(dtype):
        torch.library.opcheck(op, args)


# ---- meta and fake tensors -------------------------------------------------------------


def test_meta_tensors_through_the_ops():
    x = torch.empty(2, 6, 8, device="meta", dtype=torch.bfloat16)
    w = torch.empty(8, device="meta")  # a float32 weight on bfloat16 input
    y = OPS.layer_norm(x, [8], w, None, 1e-5, None)
    assert y.device.type == "meta" and y.shape == x.shape and y.dtype == x.dtype
    assert y.is_contiguous()
    y, h = OPS.add_rms_norm(x, x.float(), [8], w, None, None)  # torch's type promotion
    assert y.dtype == h.dtype == torch.float32 and h.shape == x.shape
    img = torch.empty(2, 4, 3, 3, device="meta").to(memory_format=torch.channels_last)
    y = OPS.rms_norm(img, [4], None, None, [1])
    assert y.shape == img.shape and y.is_contiguous()  # C order, as the real op returns
    g = OPS.layer_norm_backward(x, x, [8], w, w.to(torch.float64), 1e-5, None)
    assert [t.dtype for t in g] == [torch.bfloat16, torch.float32, torch.float64]
    assert len(OPS.rms_norm_backward(x, x, [6, 8], None, None, None)) == 1
    with pytest.raises(ValueError, match="normalized_shape"):
        OPS.layer_norm(x, [7], None, None, 1e-5, None)
    # the public functions send meta tensors to the ops too
    assert fnt.add_layer_norm(x, x, 8)[0].device.type == "meta"


def test_fake_tensors():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(4, 16)
        y, h = fnt.add_layer_norm(x, x, 16, torch.empty(16), torch.empty(16))
        assert y.shape == h.shape == (4, 16)
        assert fnt.rms_norm(torch.empty(2, 3, 5, 5), (3,), dim=1).shape == (2, 3, 5, 5)


# ---- torch's ops inside the ops (other devices and dtypes) ---------------------------------


@pytest.mark.parametrize("case", ["ln", "ln_dim", "rms", "add_ln", "add_rms_dim"])
def test_torch_fallback_inside_the_ops(case, monkeypatch):
    """Where fastnorm's kernels do not apply (e.g. CUDA), the ops compute with
    torch's: forced here on CPU float64, their forward and backward must
    match torch's autograd of torch's own ops."""
    monkeypatch.setattr(_torch_ops, "KERNEL_DTYPES", frozenset())
    gen = torch.Generator().manual_seed(9)
    dim = [1] if case.endswith("dim") else None
    shape = (2, 4, 3, 5) if dim else (3, 4, 5)
    n = 4 if dim else 5
    x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    r = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(n, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(n, generator=gen, dtype=torch.float64, requires_grad=True)
    kind = "rms" if "rms" in case else "ln"

    def reference(x, r):
        h = x if r is None else x + r
        if dim:
            h = h.movedim(1, -1)
        y = F.layer_norm(h, (n,), w, b, 1e-5) if kind == "ln" else F.rms_norm(h, (n,), w, 1e-5)
        return y.movedim(-1, 1) if dim else y

    if case.startswith("add"):
        op = OPS.add_layer_norm if kind == "ln" else OPS.add_rms_norm
        extra = (w, b) if kind == "ln" else (w,)
        y, h = op(x, r, [n], *extra, 1e-5, dim)
        torch.testing.assert_close(h, x + r)
        args, want = [x, r, w] + ([b] if kind == "ln" else []), reference(x, r)
    else:
        if kind == "ln":
            y = OPS.layer_norm(x, [n], w, b, 1e-5, dim)
        else:
            y = OPS.rms_norm(x, [n], w, 1e-5, dim)
        args, want = [x, w] + ([b] if kind == "ln" else []), reference(x, None)
    assert y.is_contiguous()
    torch.testing.assert_close(y, want)
    gy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    for g, e in zip(torch.autograd.grad(y, args, gy), torch.autograd.grad(want, args, gy)):
        torch.testing.assert_close(g, e)


# ---- autograd ----------------------------------------------------------------------------


def test_gradcheck_through_the_ops():
    gen = torch.Generator().manual_seed(2)

    def t(*shape):
        return torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)

    x, r, w, b, img, wc = t(3, 6), t(3, 6), t(6), t(6), t(2, 3, 2, 2), t(3)
    assert torch.autograd.gradcheck(lambda *a: OPS.layer_norm(*a, 1e-5, None), (x, [6], w, b))
    assert torch.autograd.gradcheck(lambda *a: OPS.rms_norm(*a, None, [1]), (img, [3], wc))
    assert torch.autograd.gradcheck(
        lambda x, r, w, b: OPS.add_layer_norm(x, r, [6], w, b, 1e-5, None), (x, r, w, b)
    )
    assert torch.autograd.gradcheck(
        lambda x, r: OPS.add_rms_norm(x, r, [6], None, None, None)[0], (x, r)
    )
    assert torch.autograd.gradcheck(  # only h used downstream
        lambda x, r: OPS.add_rms_norm(x, r, [6], w, None, None)[1], (x, r)
    )


def test_parameter_grads_in_the_parameters_dtype():
    x = torch.randn(4, 8, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(8, requires_grad=True)  # float32 weight, bfloat16 input
    b = torch.randn(8, dtype=torch.float64, requires_grad=True)
    OPS.layer_norm(x, [8], w, b, 1e-5, None).float().sum().backward()
    assert (x.grad.dtype, w.grad.dtype, b.grad.dtype) == (
        torch.bfloat16,
        torch.float32,
        torch.float64,
    )


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm", "add_layer_norm", "add_rms_norm"])
def test_double_backward_raises(op):
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, dtype=torch.float64, requires_grad=True)
    if op == "layer_norm":
        y = OPS.layer_norm(x, [8], w, None, 1e-5, None)
    elif op == "rms_norm":
        y = OPS.rms_norm(x, [8], w, None, None)
    elif op == "add_layer_norm":
        y = OPS.add_layer_norm(x, x * 2, [8], w, None, 1e-5, None)[0]
    else:
        y = OPS.add_rms_norm(x, x * 2, [8], w, None, None)[0]
    (gx,) = torch.autograd.grad((y * y).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        gx.sum().backward()
