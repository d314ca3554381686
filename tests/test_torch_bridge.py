"""fastnorm.torch: parity with torch's ops, layouts, autograd, modules, patching
and fallbacks."""

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from _hf_norms import GemmaRMSNorm, LlamaRMSNorm  # noqa: E402
from _reference import max_ulp_error  # noqa: E402

import fastnorm.torch as fnt  # noqa: E402
from fastnorm.torch import _functions, _tensors  # noqa: E402
from fastnorm.torch._tensors import _BF16  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HALF = (torch.float16, torch.bfloat16)
EPS = {torch.float32: 2.0**-23, torch.float64: 2.0**-52}


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(20261122)


def randn(shape, gen, dtype=torch.float32, scale=1.0, shift=0.0):
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale + shift).to(dtype)


def params(n, gen, dtype, bias=True):
    shape = (n,) if isinstance(n, int) else tuple(n)
    w = randn(shape, gen, dtype, 0.5, 1.0)
    b = randn(shape, gen, dtype, 0.5) if bias else None
    return w, b


def torch_ref(op, x, ns, w, b, eps, residual=None):
    """torch's op, with the fused add as two steps."""
    h = x if residual is None else x + residual
    if op.endswith("layer_norm"):
        y = F.layer_norm(h, ns, w, b, 1e-5 if eps is None else eps)
    else:
        y = F.rms_norm(h, ns, w, eps)
    return y if residual is None else (y, h)


def ours(op, x, ns, w, b, eps, residual=None, **kw):
    if op == "layer_norm":
        return fnt.layer_norm(x, ns, w, b, 1e-5 if eps is None else eps, **kw)
    if op == "rms_norm":
        return fnt.rms_norm(x, ns, w, eps, **kw)
    if op == "add_layer_norm":
        return fnt.add_layer_norm(x, residual, ns, w, b, 1e-5 if eps is None else eps, **kw)
    return fnt.add_rms_norm(x, residual, ns, w, eps, **kw)


def no_pointer_path(monkeypatch):
    """Every call through the NumPy-view path (the core's pointer path declines)."""
    for module in (_functions, _tensors):
        monkeypatch.setattr(module, "_direct", lambda *a: None)


def assert_few_eps(actual, expected, dtype, k=8):
    """|actual - expected| <= k eps, relative above 1."""
    a, e = actual.double(), expected.double()
    err = ((a - e).abs() / e.abs().clamp(min=1)).max().item()
    assert err <= k * EPS[dtype], f"error {err:.3g} > {k} eps of {dtype}"


OPS = ("layer_norm", "rms_norm", "add_layer_norm", "add_rms_norm")


# ---- import -------------------------------------------------------------------------


def _python(code):
    """code run by a fresh interpreter in the checkout; it must succeed."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out


@pytest.mark.any_isa
@pytest.mark.slow
def test_runtime_imports_no_benchmark_module():
    """The benchmarks (fastnorm.bench) are for python -m fastnorm only."""
    code = (
        "import sys, fastnorm, fastnorm.torch; "
        "print(sorted(m for m in sys.modules if m.startswith('fastnorm.bench')))"
    )
    out = _python(code)
    assert out.stdout.strip() == "[]"


@pytest.mark.any_isa
@pytest.mark.slow
def test_import_fastnorm_does_not_import_torch():
    code = "import sys, fastnorm; fastnorm.layer_norm([1.0, 2.0]); print('torch' in sys.modules)"
    out = _python(code)
    assert out.stdout.strip() == "False"


@pytest.mark.any_isa
@pytest.mark.slow
def test_import_without_torch_says_how_to_install():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n    import fastnorm.torch\nexcept ImportError as e:\n    print(e)\n"
    )
    out = _python(code)
    assert "needs PyTorch" in out.stdout and "pip install torch==2.13.0" in out.stdout


# ---- forward parity -------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("ns", [(33,), (5, 33)])
def test_matches_torch(op, dtype, affine, ns, gen):
    x = randn((4, 5, 33), gen, dtype, 2.0, 3.0)
    r = randn((4, 5, 33), gen, dtype) if op.startswith("add") else None
    w, b = params(ns, gen, dtype) if affine else (None, None)
    got = ours(op, x, ns, w, b, None, r)
    # torch in float64 is the accurate reference; torch in dtype is near it
    up = lambda t: None if t is None else t.double()  # noqa: E731
    want64 = torch_ref(
        op,
        up(x),
        ns,
        up(w),
        up(b),
        None if dtype is torch.float64 else (EPS[dtype] if "rms" in op else None),
        up(r),
    )
    want = torch_ref(op, x, ns, w, b, None, r)
    if r is not None:
        assert torch.equal(got[1], want[1])  # h = x + r, as torch rounds it
        got, want, want64 = got[0], want[0], want64[0]
    assert got.dtype == dtype and got.shape == x.shape and got.is_contiguous()
    # (for float64 the "accurate" reference is torch's own float64 result)
    assert_few_eps(got, want64, dtype, 4 if dtype is torch.float32 else 16)
    assert_few_eps(got, want, dtype, 16)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("affine", [False, True])
def test_half_within_one_ulp(op, dtype, affine, gen):
    """Within 1 ulp of torch run on the float32-upcast input (not rounded)."""
    x = randn((16, 96), gen, dtype, 2.0, 1.0)
    r = randn((16, 96), gen, dtype) if op.startswith("add") else None
    w, b = params(96, gen, dtype) if affine else (None, None)
    got = ours(op, x, 96, w, b, None, r)
    up = lambda t: None if t is None else t.float()  # noqa: E731
    if r is not None:
        h_ref = x + r  # rounded to dtype, as fastnorm's h
        assert torch.equal(got[1], h_ref)
        want = torch_ref(op.replace("add_", ""), h_ref.float(), (96,), up(w), up(b), None)
        got = got[0]
    else:
        want = torch_ref(op, up(x), (96,), up(w), up(b), None)
    assert got.dtype == dtype
    # torch's float32 result is itself ~1e-7 off: allow that much absolute
    assert (
        max_ulp_error(
            got.float().numpy(),
            want.double().numpy(),
            _BF16 if dtype is torch.bfloat16 else np.float16,
            slack=1e-6,
        )
        <= 1.0
    )
    # and the torch op in half precision agrees within an ulp or so too
    direct = torch_ref(op, x, (96,), w, b, None, r)
    direct = direct[0] if r is not None else direct
    assert (direct.float() - got.float()).abs().max().item() <= 4 * float(
        torch.finfo(dtype).eps
    ) * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("base, spread", [(1e4, 0.1), (1e6, 0.01)])
@pytest.mark.parametrize("dim", [None, 1])
def test_more_accurate_than_torch_on_large_mean_rows(base, spread, dim, gen):
    """Rows whose mean is large against their spread: fastnorm stays within its
    accuracy target of the float64 result of the same float32 input, torch does
    not (each is measured against the reference, not against the other)."""
    shape = (4, 768, 3) if dim == 1 else (16, 768)
    x = randn(shape, gen, torch.float64, spread, base).float()
    moved = x.movedim(1, -1) if dim == 1 else x
    ref = F.layer_norm(moved.double(), (768,))
    got = fnt.layer_norm(x, 768, dim=dim)
    err_fastnorm = ((got.movedim(1, -1) if dim == 1 else got).double() - ref).abs().max().item()
    err_torch = (F.layer_norm(moved, (768,)).double() - ref).abs().max().item()
    assert err_fastnorm <= 5e-6
    assert err_torch > 100 * err_fastnorm  # the gap this test documents


@pytest.mark.any_isa
def test_rms_eps_none_is_compute_dtype_eps():
    """torch uses float32's epsilon for float16/bfloat16 inputs, not the half dtype's."""
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        x = torch.full((2, 8), 1e-4, dtype=dtype)
        assert torch.equal(fnt.rms_norm(x, 8), F.rms_norm(x, (8,))), dtype
        y, _ = fnt.add_rms_norm(x, torch.zeros_like(x), 8)
        assert torch.equal(y, F.rms_norm(x, (8,))), dtype


# ---- layouts ---------------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_first_dim1(op, dtype, gen):
    x = randn((2, 12, 7, 9), gen, dtype, 1.5, 0.5)
    r = randn((2, 12, 7, 9), gen, dtype) if op.startswith("add") else None
    w, b = params(12, gen, dtype)
    got = ours(op, x, (12,), w, b, None, r, dim=1)
    got_none = ours(op, x, None, w, b, None, r, dim=1)
    perm = lambda t: None if t is None else t.permute(0, 2, 3, 1).float()  # noqa: E731
    want = torch_ref(op, perm(x), (12,), w.float(), b.float(), None, perm(r))
    if r is not None:
        assert torch.equal(got[1], x + r)
        got, got_none, want = got[0], got_none[0], want[0]
    assert torch.equal(got, got_none)
    assert got.is_contiguous() and got.shape == x.shape
    want = want.permute(0, 3, 1, 2)
    tol = 1e-5 if dtype is torch.float32 else 2 * float(torch.finfo(dtype).eps) * 4
    assert (got.float() - want).abs().max().item() <= tol


@pytest.mark.any_isa
def test_dim_tuple_and_trailing_dim(gen):
    x = randn((3, 4, 5, 6), gen)
    w, b = params((4, 6), gen, torch.float32)
    got = fnt.layer_norm(x, (4, 6), w, b, dim=(3, 1))
    want = F.layer_norm(x.permute(0, 2, 1, 3), (4, 6), w, b).permute(0, 2, 1, 3)
    assert (got - want).abs().max().item() < 1e-5
    # trailing dims named by dim: the same as normalized_shape
    assert torch.equal(fnt.rms_norm(x, None, dim=(-2, -1)), fnt.rms_norm(x, (5, 6)))
    assert torch.equal(fnt.layer_norm(x, 6, dim=-1), fnt.layer_norm(x, 6))


def _noncontiguous(gen, dtype):
    base = randn((12, 40), gen, dtype, 2.0, 1.0)
    return {
        "transposed": randn((40, 12), gen, dtype, 2.0, 1.0).t(),
        "sliced_cols": base[:, ::2],
        "sliced_rows": base[::3, 4:36],
        "expanded": randn((1, 20), gen, dtype).expand(6, 20),
        "permuted3d": randn((20, 3, 4), gen, dtype).permute(1, 2, 0),
    }


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_noncontiguous_inputs(op, dtype, gen):
    for name, x in _noncontiguous(gen, dtype).items():
        n = x.shape[-1]
        r = (
            randn(x.shape, gen, dtype).t().contiguous().t()
            if op.startswith("add") and x.dim() == 2
            else (randn(x.shape, gen, dtype) if op.startswith("add") else None)
        )
        w, b = params(n, gen, dtype)
        got = ours(op, x, n, w, b, None, r)
        want = ours(op, x.contiguous(), n, w, b, None, None if r is None else r.contiguous())
        ref = torch_ref(op, x, (n,), w, b, None, r)
        if r is not None:
            assert torch.equal(got[1], ref[1]), name
            got, want, ref = got[0], want[0], ref[0]
        assert got.is_contiguous(), name
        # (fastnorm walks other layouts with other kernels: a few eps apart at most)
        assert (got.double() - want.double()).abs().max().item() <= 4 * float(
            torch.finfo(dtype).eps
        ) * max(1.0, want.abs().max().item()), name
        tol = 1e-5 if dtype is not torch.bfloat16 else 0.05
        assert (got.double() - ref.double()).abs().max().item() <= tol, name


class _AtenLog(torch.utils._python_dispatch.TorchDispatchMode):
    """Records every aten op that runs while it is active."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.any_isa
@pytest.mark.parametrize("op", OPS)
def test_no_hidden_copy_and_fresh_outputs(op, gen):
    """fastnorm reads the tensors' own memory: no aten op but the outputs'
    allocation runs (no .contiguous(), no copy), also for transposed inputs.
    The results are fresh C-order tensors, and the inputs' storages stay
    resizable (Tensor.numpy() would have fixed them for good)."""
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x = randn((40, 12), gen, dtype).t()  # transposed: a copy would move it
        r = randn((40, 12), gen, dtype).t()
        w, b = params(40, gen, torch.float32)  # the compute dtype: used as it is
        log = _AtenLog()
        with log:
            out = ours(
                op,
                x,
                40,
                w,
                b if "layer" in op else None,
                None,
                r if op.startswith("add") else None,
            )
        outs = out if isinstance(out, tuple) else (out,)
        assert set(log.ops) <= {"empty_like"}, log.ops
        for y in outs:
            assert y.is_contiguous() and y.shape == x.shape
            assert y.untyped_storage().data_ptr() not in (
                x.untyped_storage().data_ptr(),
                r.untyped_storage().data_ptr(),
            )
            y.resize_(1000)  # small outputs come from torch's allocator
        assert x.untyped_storage().resizable() and w.untyped_storage().resizable()
    w = torch.nn.Parameter(torch.ones(40))
    fnt.rms_norm(randn((3, 40), gen), 40, w).sum().backward()
    assert w.untyped_storage().resizable()


@pytest.mark.any_isa
@pytest.mark.parametrize("dtype", HALF)
def test_half_weights_widened_once_per_version(dtype, gen):
    """A half-precision weight is widened to float32 once, not on every call,
    and again after it changes in place or is given new data."""
    x = randn((4, 32), gen, dtype)
    w = torch.nn.Parameter(randn((32,), gen, dtype, 0.5, 1.0))
    with torch.no_grad():
        fnt.rms_norm(x, 32, w)
        log = _AtenLog()
        with log:
            first = fnt.rms_norm(x, 32, w)
        assert "_to_copy" not in log.ops, log.ops
        assert torch.equal(first, F.rms_norm(x, (32,), w))
        w.mul_(2)  # a new version: widened again
        assert torch.equal(fnt.rms_norm(x, 32, w), F.rms_norm(x, (32,), w))
        w.data = randn((32,), gen, dtype)  # new memory
        assert torch.equal(fnt.rms_norm(x, 32, w), F.rms_norm(x, (32,), w))


@pytest.mark.any_isa
def test_large_outputs_reuse_fastnorm_buffers_safely(gen):
    """Outputs from 4 MiB up come from fastnorm's buffer cache (a fresh block
    costs page faults): a buffer is handed out again only after every tensor
    viewing it is gone, so live results never share memory."""
    x = randn((1024, 2048), gen)
    y1 = fnt.layer_norm(x, 2048)
    view = y1[:10]
    p1 = y1.data_ptr()
    del y1
    y2 = fnt.layer_norm(x, 2048)
    assert y2.data_ptr() != p1  # the view still holds the first buffer
    assert torch.equal(view, y2[:10])
    del view
    y3 = fnt.layer_norm(x * 2, 2048)
    assert y3.data_ptr() == p1  # now free: reused, with fresh contents
    assert torch.equal(y2, fnt.layer_norm(x, 2048))
    assert (y3 - F.layer_norm(x * 2, (2048,))).abs().max().item() < 1e-4


@pytest.mark.any_isa
def test_negative_bit_views(gen):
    """complex.conj().imag is a real view with the negative bit set: it is
    materialized, not read as the un-negated memory."""
    c = torch.randn((4, 16), generator=gen, dtype=torch.complex64)
    x = c.conj().imag
    assert x.is_neg()
    assert (fnt.layer_norm(x, 16) - F.layer_norm(x, (16,))).abs().max().item() < 1e-5
    assert (fnt.rms_norm(x, 16) - F.rms_norm(x, (16,))).abs().max().item() < 1e-5


# ---- autograd ------------------------------------------------------------------------


def _leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_() for t in tensors]


@pytest.mark.any_isa
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [None, 1])
def test_gradients_match_torch(op, dtype, dim, gen):
    shape = (3, 10, 4, 5) if dim == 1 else (6, 7, 32)
    n = shape[1] if dim == 1 else shape[-1]
    x = randn(shape, gen, dtype, 1.5, 0.5)
    r = randn(shape, gen, dtype) if op.startswith("add") else None
    w, b = params(n, gen, dtype)
    b = b if "layer" in op else None
    gy = randn(shape, gen, dtype)
    gh = randn(shape, gen, dtype)

    def run(fn_ours):
        xs = _leaves(x, r, w, b)
        if fn_ours:
            out = ours(op, xs[0], (n,), xs[2], xs[3], None, xs[1], dim=dim)
        else:
            move = (lambda t: t.movedim(1, -1)) if dim == 1 else (lambda t: t)
            back = (lambda t: t.movedim(-1, 1)) if dim == 1 else (lambda t: t)
            out = torch_ref(
                op, move(xs[0]), (n,), xs[2], xs[3], None, None if r is None else move(xs[1])
            )
            out = tuple(back(o) for o in out) if r is not None else back(out)
        loss = (out[0] * gy).sum() + (out[1] * gh).sum() if r is not None else (out * gy).sum()
        loss.backward()
        return [None if t is None else t.grad for t in xs]

    got, want = run(True), run(False)
    for name, g, e in zip(("input", "residual", "weight", "bias"), got, want):
        if e is None:
            assert g is None, name
            continue
        assert g.dtype == e.dtype, name
        scale = max(1.0, e.abs().max().item())
        assert (g - e).abs().max().item() <= 64 * EPS[dtype] * scale * (
            10 if name != "input" else 1
        ), name


@pytest.mark.any_isa
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("with_weight", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_gradcheck(op, with_weight, with_bias, gen):
    if with_bias and "rms" in op:
        pytest.skip("rms_norm has no bias")
    x = randn((3, 8), gen, torch.float64, 1.0, 0.3).requires_grad_()
    r = randn((3, 8), gen, torch.float64).requires_grad_()
    w = randn((8,), gen, torch.float64, 0.5, 1.0).requires_grad_() if with_weight else None
    b = randn((8,), gen, torch.float64).requires_grad_() if with_bias else None
    if op == "layer_norm":
        fn, args = (lambda x, w, b: fnt.layer_norm(x, 8, w, b)), (x, w, b)
    elif op == "rms_norm":
        fn, args = (lambda x, w: fnt.rms_norm(x, 8, w)), (x, w)
    elif op == "add_layer_norm":
        fn, args = (lambda x, r, w, b: fnt.add_layer_norm(x, r, 8, w, b)), (x, r, w, b)
    else:
        fn, args = (lambda x, r, w: fnt.add_rms_norm(x, r, 8, w)), (x, r, w)
    assert torch.autograd.gradcheck(fn, args)
    # channels-first too
    xc = randn((2, 4, 3), gen, torch.float64, 1.0, 0.3).requires_grad_()
    wc = randn((4,), gen, torch.float64, 0.5, 1.0).requires_grad_() if with_weight else None
    assert torch.autograd.gradcheck(lambda x, w: fnt.rms_norm(x, (4,), w, dim=1), (xc, wc))


@pytest.mark.any_isa
@pytest.mark.parametrize("op", OPS)
def test_double_backward_raises(op, gen):
    x = randn((3, 8), gen, torch.float64).requires_grad_()
    r = randn((3, 8), gen, torch.float64)
    w = randn((8,), gen, torch.float64).requires_grad_()
    out = ours(op, x, 8, w, None, None, r)
    y = out[0] if isinstance(out, tuple) else out
    (gx,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        gx.sum().backward()


@pytest.mark.any_isa
def test_only_h_used_and_only_some_inputs_need_grad(gen):
    x = randn((4, 16), gen).requires_grad_()
    r = randn((4, 16), gen)
    y, h = fnt.add_layer_norm(x, r, 16)
    (h * 3).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 3.0))
    # weight only
    w = torch.ones(16, requires_grad=True)
    fnt.rms_norm(randn((4, 16), gen), 16, w).sum().backward()
    assert w.grad is not None and w.grad.shape == (16,)


@pytest.mark.any_isa
def test_half_parameter_grads_in_parameter_dtype(gen):
    x = randn((8, 32), gen, torch.bfloat16).requires_grad_()
    w = torch.ones(32, dtype=torch.bfloat16, requires_grad=True)
    b = torch.zeros(32, dtype=torch.float32, requires_grad=True)
    fnt.layer_norm(x, 32, w, b).float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and w.grad.dtype == torch.bfloat16
    assert b.grad.dtype == torch.float32
    assert torch.allclose(b.grad, torch.full((32,), 8.0))


@pytest.mark.any_isa
def test_grad_mode_paths(gen):
    x = randn((2, 8), gen)
    w = torch.ones(8, requires_grad=True)
    assert fnt.layer_norm(x, 8).grad_fn is None  # nothing requires grad: direct call
    assert fnt.layer_norm(x, 8, w).grad_fn is not None
    with torch.no_grad():
        assert fnt.layer_norm(x, 8, w).grad_fn is None
    with torch.inference_mode():
        y = fnt.rms_norm(x, 8, w)
        assert y.grad_fn is None and torch.equal(y, F.rms_norm(x, (8,), w).detach())


@pytest.mark.any_isa
def test_saved_tensor_modified_in_place_is_detected(gen):
    x = randn((2, 8), gen).requires_grad_()
    y, h = fnt.add_rms_norm(x, randn((2, 8), gen), 8)
    h.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


# ---- modules ----------------------------------------------------------------------------


@pytest.mark.any_isa
def test_modules_mirror_torch(gen):
    pairs = [
        (fnt.LayerNorm(16), torch.nn.LayerNorm(16)),
        (
            fnt.LayerNorm((4, 16), eps=1e-6, bias=False),
            torch.nn.LayerNorm((4, 16), eps=1e-6, bias=False),
        ),
        (
            fnt.LayerNorm(16, elementwise_affine=False),
            torch.nn.LayerNorm(16, elementwise_affine=False),
        ),
        (fnt.RMSNorm(16), torch.nn.RMSNorm(16)),
        (
            fnt.RMSNorm([4, 16], eps=1e-6, dtype=torch.float64),
            torch.nn.RMSNorm([4, 16], eps=1e-6, dtype=torch.float64),
        ),
    ]
    for mine, theirs in pairs:
        assert repr(mine) == repr(theirs)
        assert isinstance(mine, type(theirs))
        assert list(mine.state_dict()) == list(theirs.state_dict())
        for p in theirs.parameters():
            with torch.no_grad():
                p.copy_(randn(p.shape, gen, p.dtype, 0.5, 1.0))
        mine.load_state_dict(theirs.state_dict())
        theirs.load_state_dict(mine.state_dict())  # and back
        dtype = next(theirs.parameters()).dtype if list(theirs.parameters()) else torch.float32
        x = randn((3, 4, 16), gen, dtype, 2.0, 1.0)
        assert (mine(x) - theirs(x)).abs().max().item() < 1e-5
        assert mine.weight is None if theirs.weight is None else mine.weight.dtype == dtype


@pytest.mark.any_isa
def test_module_constructor_device_dtype():
    m = fnt.LayerNorm(8, device="meta", dtype=torch.bfloat16)
    assert m.weight.device.type == "meta" and m.weight.dtype == torch.bfloat16
    assert m(torch.empty(2, 8, device="meta", dtype=torch.bfloat16)).device.type == "meta"


# ---- patch ------------------------------------------------------------------------------


def _example_module():
    """examples/torch_patch.py, whose small transformer the patch tests reuse."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "torch_patch.py"
    spec = importlib.util.spec_from_file_location("torch_patch_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def TinyLM():
    return _example_module().TinyLM(vocab=50, d=32)


@pytest.mark.any_isa
def test_patch_unpatch_model(gen):
    torch.manual_seed(0)
    model = TinyLM().eval()
    ids = torch.randint(0, 50, (2, 9), generator=gen)
    keys = list(model.state_dict())
    with torch.no_grad():
        want = model(ids)
    names = fnt.patch(model)
    assert names == [
        "blocks.0.norm1",
        "blocks.0.norm2",
        "blocks.1.norm1",
        "blocks.1.norm2",
        "final",
    ]
    assert type(model.final) is fnt.LayerNorm and type(model.blocks[0].norm2) is fnt.RMSNorm
    assert list(model.state_dict()) == keys
    with torch.no_grad():
        got = model(ids)
    assert (got - want).abs().max().item() < 1e-4
    # training through the patched model
    model.train()
    model(ids).logsumexp(-1).sum().backward()
    assert model.final.weight.grad is not None
    assert fnt.patch(model) == []  # already patched
    assert sorted(fnt.unpatch(model)) == sorted(names)
    assert type(model.final) is torch.nn.LayerNorm
    assert type(model.blocks[1].norm2) is torch.nn.RMSNorm


@pytest.mark.any_isa
def test_patch_root_module_and_unknown_subclasses():
    class MyLN(torch.nn.LayerNorm):
        pass

    ln = torch.nn.LayerNorm(8)
    assert fnt.patch(ln) == [""] and type(ln) is fnt.LayerNorm
    # (a GroupNorm stood here until patch began to switch nn.GroupNorm)
    seq = torch.nn.Sequential(MyLN(8), torch.nn.BatchNorm1d(8))
    assert fnt.patch(seq) == []


@pytest.mark.any_isa
def test_patch_verify_leaves_disagreeing_modules(monkeypatch):
    model = torch.nn.Sequential(torch.nn.LayerNorm(8), torch.nn.RMSNorm(8))
    monkeypatch.setattr(_functions, "layer_norm", lambda *a, **k: torch.zeros(2, 8))
    with pytest.warns(RuntimeWarning, match="0 .*left unpatched"):
        names = fnt.patch(model)
    assert names == ["1"] and type(model[0]) is torch.nn.LayerNorm
    assert fnt.patch(torch.nn.Sequential(torch.nn.LayerNorm(8)), verify=False) == ["0"]


@pytest.mark.any_isa
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_patch_half_and_double_models(dtype, gen):
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 16), torch.nn.LayerNorm(16), torch.nn.RMSNorm(16)
    ).to(dtype)
    x = randn((4, 16), gen, dtype)
    with torch.no_grad():
        want = model(x)
        assert fnt.patch(model) == ["1", "2"]
        got = model(x)
    assert (got.float() - want.float()).abs().max().item() <= 4 * float(
        torch.finfo(dtype).eps
    ) * max(1.0, want.abs().max().item())


# ---- Hugging Face RMSNorms -------------------------------------------------------------------


def _check_hf_module(norm, gen, dtype):
    with torch.no_grad():
        norm.weight.copy_(randn(norm.weight.shape, gen, norm.weight.dtype, 0.5, 1.0))
    x = randn((3, 5, norm.weight.shape[0]), gen, dtype, 2.0, 0.5)
    with torch.no_grad():
        want = norm(x)
        cls = type(norm)
        assert fnt.patch(norm) == [""]
        assert type(norm) is not cls and type(norm).__name__ == cls.__name__
        assert isinstance(norm, cls)
        got = norm(x)
    assert got.dtype == want.dtype
    if dtype is torch.float32 and norm.weight.dtype is torch.float32:
        assert (got - want).abs().max().item() < 1e-5
    else:  # normalized in float32, rounded to x's dtype, then times weight: as the original
        tol = float(torch.finfo(dtype).eps) * 2 * max(1.0, want.abs().max().item())
        assert (got.float() - want.float()).abs().max().item() <= tol
    assert fnt.unpatch(norm) == [""] and type(norm) is cls


@pytest.mark.any_isa
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_patch_hf_style_rms_norm(dtype, gen):
    norm = LlamaRMSNorm(64).to(dtype)
    _check_hf_module(norm, gen, dtype)
    # a float32 weight on bfloat16 activations, as HF mixed precision keeps it
    if dtype is not torch.float32:
        _check_hf_module(LlamaRMSNorm(64), gen, dtype)


@pytest.mark.any_isa
def test_patch_hf_style_gradients(gen):
    norm = LlamaRMSNorm(32)
    ref = LlamaRMSNorm(32)
    x = randn((4, 32), gen)
    fnt.patch(norm)
    xs, xr = _leaves(x, x)
    norm(xs).pow(2).sum().backward()
    ref(xr).pow(2).sum().backward()
    assert (xs.grad - xr.grad).abs().max().item() < 1e-5
    assert (norm.weight.grad - ref.weight.grad).abs().max().item() < 1e-4


@pytest.mark.any_isa
@pytest.mark.parametrize("name", ["LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"])
def test_patch_transformers_rms_norms(name, gen):
    pytest.importorskip("transformers")
    import importlib

    module = {
        "LlamaRMSNorm": "llama",
        "MistralRMSNorm": "mistral",
        "Qwen2RMSNorm": "qwen2",
        "Qwen3RMSNorm": "qwen3",
    }[name]
    try:
        mod = importlib.import_module(f"transformers.models.{module}.modeling_{module}")
    except ImportError as exc:
        pytest.skip(f"transformers lacks {module}: {exc}")
    cls = getattr(mod, name)
    _check_hf_module(cls(48, eps=1e-6), gen, torch.float32)
    _check_hf_module(cls(48, eps=1e-6).to(torch.bfloat16), gen, torch.bfloat16)


@pytest.mark.any_isa
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_patch_gemma_rms_norm_follows_its_rounding(dtype, gen):
    """Gemma's (1 + weight) norm is switched and agrees within rounding; the
    scale follows in-place changes of the weight, and gradients flow."""
    classes = [GemmaRMSNorm]
    try:
        from transformers.models.gemma.modeling_gemma import GemmaRMSNorm as HFGemma

        classes.append(HFGemma)
    except ImportError:
        pass
    for cls in classes:
        norm = cls(48).to(dtype)
        with torch.no_grad():
            norm.weight.copy_(randn((48,), gen, dtype, 0.5))
        x = randn((3, 5, 48), gen, dtype, 2.0, 0.5)
        with torch.no_grad():
            want = norm(x)
            assert fnt.patch(norm) == [""]
            got = norm(x)
            tol = 2 * float(torch.finfo(dtype).eps) * max(1.0, want.abs().max().item())
            assert got.dtype == want.dtype
            assert (got.double() - want.double()).abs().max().item() <= tol
            norm.weight.add_(1.0)  # the cached scale must follow
            want2 = type(norm)._fastnorm_base.forward(norm, x)
            assert (norm(x).double() - want2.double()).abs().max().item() <= 2 * tol
        if dtype is torch.float32:
            xs = x.clone().requires_grad_()
            norm(xs).square().sum().backward()
            g_fast = norm.weight.grad.clone()
            norm.weight.grad = None
            fnt.unpatch(norm)
            norm(x.clone().requires_grad_()).square().sum().backward()
            assert torch.allclose(g_fast, norm.weight.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.any_isa
def test_module_with_parametrized_weight(gen):
    """A parametrized weight (not in _parameters) is read through its property."""
    from torch.nn.utils import parametrize

    class Double(torch.nn.Module):
        def forward(self, w):
            return 2 * w

    m = fnt.LayerNorm(16)
    parametrize.register_parametrization(m, "weight", Double())
    x = randn((4, 16), gen)
    with torch.no_grad():
        assert torch.allclose(m(x), 2 * F.layer_norm(x, (16,)), atol=1e-6)


# ---- fallbacks -----------------------------------------------------------------------------


@pytest.mark.any_isa
@pytest.mark.parametrize("op", OPS)
def test_meta_tensors_fall_back(op):
    x = torch.empty(2, 6, 8, device="meta")
    r = torch.empty(2, 6, 8, device="meta")
    w = torch.empty(8, device="meta")
    out = ours(op, x, 8, w, w if "layer" in op else None, None, r)
    for t in out if isinstance(out, tuple) else (out,):
        assert t.device.type == "meta" and t.shape == x.shape
    xc = torch.empty(2, 6, 5, 4, device="meta")
    y = ours(op, xc, (6,), w[:6], None, None, torch.empty_like(xc), dim=1)
    y = y[0] if isinstance(y, tuple) else y
    assert y.device.type == "meta" and y.shape == xc.shape


@pytest.mark.any_isa
def test_patched_model_on_meta():
    model = TinyLM()
    fnt.patch(model)
    model.to("meta")
    out = model(torch.zeros(2, 3, dtype=torch.long, device="meta"))
    assert out.device.type == "meta" and out.shape == (2, 3, 50)


@pytest.mark.any_isa
@pytest.mark.parametrize("op", OPS)
def test_fallback_matches_fast_path(op, monkeypatch, gen):
    """The torch-op fallback (taken for other devices) computes the same thing,
    also with dim=, and keeps autograd."""
    x = randn((3, 6, 4, 5), gen)
    r = randn((3, 6, 4, 5), gen)
    w, b = params(6, gen, torch.float32)
    b = b if "layer" in op else None
    fast = ours(op, x, (6,), w, b, None, r, dim=1)
    monkeypatch.setattr(_functions, "_route", lambda *t: _tensors._TORCH)
    no_pointer_path(monkeypatch)
    slow = ours(op, x, (6,), w, b, None, r, dim=1)
    if isinstance(fast, tuple):
        assert torch.equal(fast[1], slow[1])
        fast, slow = fast[0], slow[0]
    assert (fast - slow).abs().max().item() < 1e-5
    xs = x.clone().requires_grad_()
    out = ours(op, xs, (6,), w, b, None, r, dim=1)
    (out[0] if isinstance(out, tuple) else out).sum().backward()
    assert xs.grad is not None


@pytest.mark.any_isa
def test_mismatched_residual_dtype_uses_torch_promotion(gen):
    x = randn((2, 8), gen, torch.bfloat16)
    r = randn((2, 8), gen, torch.float32)
    y, h = fnt.add_rms_norm(x, r, 8)
    assert h.dtype == torch.float32 and torch.equal(h, x + r)
    assert torch.equal(y, F.rms_norm(x + r, (8,)))


@pytest.mark.any_isa
def test_tensors_without_readable_data_run_torch(gen):
    """A freed storage (data_ptr 0) and torch.func's wrappers (data_ptr
    raises) are never read through a pointer: torch's own op handles them,
    with its own error where there is nothing to read."""
    x = randn((3, 8), gen)
    freed = x.clone()
    freed.untyped_storage().resize_(0)
    with pytest.raises(RuntimeError, match="not allocated"):
        fnt.layer_norm(freed, 8)
    w = torch.ones(8)
    w.untyped_storage().resize_(0)
    with pytest.raises(RuntimeError, match="not allocated"):
        fnt.layer_norm(x, 8, w)
    want = F.layer_norm(x, (8,))
    assert torch.allclose(torch.func.vmap(lambda r: fnt.layer_norm(r, 8))(x), want, atol=1e-6)
    got = torch.func.functionalize(lambda t: fnt.layer_norm(t, 8))(x)
    assert torch.allclose(got, want, atol=1e-6)
    g = torch.func.grad(lambda t: fnt.rms_norm(t, 8).square().sum())(x)
    assert torch.allclose(
        g, torch.func.grad(lambda t: F.rms_norm(t, (8,)).square().sum())(x), atol=1e-5
    )


@pytest.mark.any_isa
def test_eps_none_on_every_route(gen):
    """eps=None is the default eps on the pointer path, on meta tensors (the
    ops), and for add_rms_norm with a wider residual: the epsilon of the
    dtype h is promoted to, as torch's two steps take it."""
    x = randn((2, 8), gen)
    assert torch.equal(fnt.layer_norm(x, 8, eps=None), fnt.layer_norm(x, 8))
    assert fnt.layer_norm(torch.empty(2, 8, device="meta"), 8, eps=None).shape == (2, 8)
    xh = torch.zeros(2, 8, dtype=torch.float16)
    r = randn((2, 8), gen, torch.float64) * 1e-5
    y, h = fnt.add_rms_norm(xh, r, 8)
    assert h.dtype == torch.float64
    assert torch.allclose(y, F.rms_norm(xh + r, (8,)), rtol=1e-12, atol=1e-12)


@pytest.mark.any_isa
def test_normalized_shape_with_dim_is_checked_as_without(gen):
    x = randn((2, 3, 4), gen)
    want = fnt.layer_norm(x, 4)
    assert torch.equal(fnt.layer_norm(x, np.int64(4), dim=-1), want)
    for bad in (4.0, (4.0,), [True], True):
        with pytest.raises(TypeError, match="normalized_shape"):
            fnt.layer_norm(x, bad, dim=-1)


# ---- errors ------------------------------------------------------------------------------


@pytest.mark.any_isa
def test_errors():
    x = torch.randn(4, 8)
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        fnt.layer_norm(np.zeros((4, 8), np.float32), 8)
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        fnt.rms_norm(x, 8, np.ones(8))
    with pytest.raises(TypeError, match="normalized_shape"):
        fnt.layer_norm(x, "8")
    with pytest.raises(ValueError, match="normalized_shape"):
        fnt.layer_norm(x, 7)
    with pytest.raises(ValueError, match="normalized_shape"):
        fnt.rms_norm(x, (4, 8, 8))
    with pytest.raises(ValueError, match="weight"):
        fnt.layer_norm(x, 8, torch.ones(5))
    with pytest.raises(ValueError, match="weight"):  # also on the autograd path
        fnt.layer_norm(x, 8, torch.ones(5, requires_grad=True))
    with pytest.raises(ValueError, match="eps"):
        fnt.rms_norm(x, 8, eps=-1.0)
    with pytest.raises(ValueError, match="residual"):
        fnt.add_layer_norm(x, torch.ones(8), 8)
    with pytest.raises(TypeError, match="residual"):
        fnt.add_rms_norm(x, None, 8)
    with pytest.raises(ValueError, match="does not match the sizes"):
        fnt.layer_norm(torch.randn(2, 3, 4), (4,), dim=1)
    with pytest.raises(ValueError):
        fnt.layer_norm(torch.randn(2, 3, 4), None, dim=5)
    with pytest.raises(ValueError, match="twice"):
        fnt.layer_norm(torch.randn(2, 3, 4), None, dim=(1, -2))
    with pytest.raises(TypeError):
        fnt.layer_norm(torch.tensor(1.0), None)


@pytest.mark.any_isa
@pytest.mark.parametrize(
    "normalized_shape, dim",
    [(7, None), ((2, 3, 4, 4), None), ((4,), 1), ("8", None), (None, (1, -2)), (None, 5), (3, ())],
)
def test_bad_dims_get_the_same_error_on_every_route(normalized_shape, dim):
    """One rule for the normalized dims: the pointer path's decline, the
    NumPy views, autograd and torch's own op's route (meta tensors, integer
    dtypes) all raise its error, and so does the custom op."""
    x = torch.randn(2, 3, 4)
    errors = []
    for t in (x, x.detach().requires_grad_(), x.to("meta"), x.to(torch.int64)):
        with pytest.raises((TypeError, ValueError)) as info:
            fnt.layer_norm(t, normalized_shape, dim=dim)
        errors.append((type(info.value), str(info.value)))
    if not isinstance(normalized_shape, str) and dim in (None, 1):  # the ops' spelling
        with pytest.raises((TypeError, ValueError)) as info:
            ns = [normalized_shape] if isinstance(normalized_shape, int) else normalized_shape
            torch.ops.fastnorm.layer_norm(x, ns, None, None, 1e-5, None if dim is None else [dim])
        errors.append((type(info.value), str(info.value)))
    assert len(set(errors)) == 1, errors


@pytest.mark.any_isa
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_patch_tiny_llama(dtype):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    model = transformers.LlamaForCausalLM(config).to(dtype).eval()
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        want = model(ids).logits
        names = fnt.patch(model)
        got = model(ids).logits
    assert len(names) == 2 * 2 + 1  # two per layer and the final norm
    tol = 1e-4 if dtype is torch.float32 else 0.1
    assert (got.float() - want.float()).abs().max().item() < tol
    assert len(fnt.unpatch(model)) == len(names)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, want)


@pytest.mark.parametrize("op", ["add_layer_norm", "add_rms_norm"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dim", [None, 1])
@pytest.mark.parametrize("path", ["pointers", "numpy views"])
def test_fused_add_equals_two_steps(op, dtype, dim, path, monkeypatch, gen):
    """add_* gives the bits of torch.add followed by the norm of h as stored,
    on the pointer path and on the NumPy-view path alike."""
    shape = (4, 24, 3, 5) if dim == 1 else (6, 5, 40)
    n = shape[1] if dim == 1 else shape[-1]
    x, r = randn(shape, gen, dtype, 2.0, 1.0), randn(shape, gen, dtype)
    w, b = params(n, gen, dtype)
    h = x + r
    two_step = ours(op[4:], h, (n,), w, b, None, dim=dim)
    if path == "numpy views":
        no_pointer_path(monkeypatch)
    fused = ours(op, x, (n,), w, b, None, r, dim=dim)
    assert torch.equal(fused[1], h)
    assert torch.equal(fused[0], two_step)
