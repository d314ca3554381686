"""fastnorm.torch under torch's modes and mechanisms that change what a call
must do: parameters updated without a version bump (fused optimizers),
inference mode, forward-mode AD, nested and zero tensors, tensor swapping on
module conversion, pickling, parametrizations, and arguments of the wrong
kind.  Each test is a case where a plain pointer call would be silently
wrong or would crash, and checks the result against torch's own op."""

import io
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.autograd.forward_ad as fwAD  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch.nn.utils.parametrize as parametrize  # noqa: E402
from _hf_norms import GemmaRMSNorm, LlamaRMSNorm  # noqa: E402

import fastnorm.torch as fnt  # noqa: E402

HALF = (torch.float16, torch.bfloat16)
DTYPES = (torch.float32, torch.float64) + HALF


def _close(got, want, dtype):
    """Within a few roundings of dtype (torch's op is itself rounded once)."""
    eps = torch.finfo(dtype).eps
    tol = 2 * eps if dtype in HALF else 64 * eps
    torch.testing.assert_close(got.double(), want.double(), rtol=tol, atol=tol)


# ---- parameters updated in place --------------------------------------------------


@pytest.mark.any_isa
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "step",
    ["Adam", "AdamW", "Adagrad", "data_add", "view_write"],
)
@pytest.mark.parametrize("kind", ["LayerNorm", "RMSNorm"])
def test_parameters_updated_without_a_version_bump_are_read_again(dtype, step, kind):
    """A fused optimizer step writes the parameters in place without bumping
    their version counter, at the same address; the next forward (no_grad,
    grad mode, and inference mode) must see the new values."""
    torch.manual_seed(0)
    m = getattr(torch.nn, kind)(64, dtype=dtype)
    assert fnt.patch(m) == [""]
    x = torch.randn(4, 64, dtype=dtype)
    m(x).float().pow(3).sum().backward()
    before = [p.detach().clone() for p in m.parameters()]
    if step in ("Adam", "AdamW", "Adagrad"):
        getattr(torch.optim, step)(m.parameters(), lr=0.1, fused=True).step()
    elif step == "data_add":
        for p in m.parameters():
            p.data.add_(0.25)
    else:  # through a NumPy view of the same memory: no torch op sees the write
        for p in m.parameters():
            if p.element_size() == 2:
                p.detach().view(torch.int16).numpy()[3] ^= 1 << 9
            else:
                p.detach().numpy()[3] += 1
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, m.parameters()))
    w = m.weight.detach().double()
    b = None if kind == "RMSNorm" else m.bias.detach().double()
    if kind == "LayerNorm":
        want = F.layer_norm(x.double(), (64,), w, b, m.eps)
    else:
        eps = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
        want = F.rms_norm(x.double(), (64,), w, eps)
    for mode in (torch.no_grad, torch.enable_grad, torch.inference_mode):
        with mode():
            _close(m(x), want, dtype)


@pytest.mark.any_isa
@pytest.mark.parametrize("dtype", HALF)
def test_half_weights_of_another_tensor_at_a_reused_address_are_widened_anew(dtype):
    """The widened-weight cache compares bytes, not identities: a new weight
    with other values, even in the freed memory of an old one, is widened anew."""
    x = torch.randn(3, 32, dtype=dtype)
    for i in range(6):
        w = torch.full((32,), 1.0 + i / 8, dtype=dtype)
        with torch.no_grad():
            assert torch.equal(fnt.rms_norm(x, 32, w), F.rms_norm(x, (32,), w))
        del w


@pytest.mark.any_isa
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gemma_scale_follows_a_fused_optimizer_step(dtype):
    """Gemma's cached scale (1 + weight) is read again after a fused Adam step."""
    torch.manual_seed(1)
    m = GemmaRMSNorm(48, eps=1e-6).to(dtype)
    with torch.no_grad():
        m.weight.normal_(0, 0.5)
    assert fnt.patch(m) == [""]
    x = torch.randn(5, 48, dtype=dtype)
    with torch.no_grad():
        m(x)  # fills the cache
    m(x).float().pow(3).sum().backward()
    torch.optim.Adam(m.parameters(), lr=0.2, fused=True).step()
    with torch.no_grad():
        _close(m(x), GemmaRMSNorm.forward(m, x), dtype)


# ---- inference mode -------------------------------------------------------------------


@pytest.mark.any_isa
@pytest.mark.parametrize("dtype", DTYPES)
def test_modules_built_in_inference_mode_run_there_and_outside(dtype):
    """Inference tensors have no version counter: half-precision weights made
    in inference mode, used in and out of it, give torch's result."""
    with torch.inference_mode():
        ln = fnt.LayerNorm(96, dtype=dtype)
        rms = fnt.RMSNorm(96, dtype=dtype)
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-1, 1)
        rms.weight.uniform_(0.5, 1.5)
        x = torch.randn(3, 96, dtype=dtype)
        assert ln.weight.is_inference()
        got_ln, got_rms = ln(x), rms(x)
        want_ln = torch.nn.LayerNorm.forward(ln, x)
        want_rms = torch.nn.RMSNorm.forward(rms, x)
    _close(got_ln, want_ln, dtype)
    _close(got_rms, want_rms, dtype)
    with torch.no_grad():
        _close(ln(x.clone()), want_ln, dtype)


# ---- forward-mode AD ------------------------------------------------------------------


@pytest.mark.any_isa
@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm", "add_layer_norm", "add_rms_norm"])
def test_dual_tensors_keep_their_tangent(op, requires_grad):
    """Forward-mode AD: the output of a dual input carries torch's tangent,
    with or without a weight that requires grad, in grad mode or not."""
    torch.manual_seed(2)
    x, t = torch.randn(3, 16, dtype=torch.float64), torch.randn(3, 16, dtype=torch.float64)
    r = torch.randn(3, 16, dtype=torch.float64)
    w = torch.randn(16, dtype=torch.float64).requires_grad_(requires_grad)
    b = torch.randn(16, dtype=torch.float64)
    with fwAD.dual_level():
        xd = fwAD.make_dual(x, t)
        if op == "layer_norm":
            got, want = fnt.layer_norm(xd, (16,), w, b), F.layer_norm(xd, (16,), w, b)
        elif op == "rms_norm":
            got, want = fnt.rms_norm(xd, (16,), w, 1e-6), F.rms_norm(xd, (16,), w, 1e-6)
        else:
            fn = fnt.add_layer_norm if op == "add_layer_norm" else fnt.add_rms_norm
            args = (w, b, 1e-5) if op == "add_layer_norm" else (w, 1e-5)
            got, h = fn(xd, r, (16,), *args)
            norm = F.layer_norm if op == "add_layer_norm" else F.rms_norm
            want = norm(xd + r, (16,), *args)
            assert fwAD.unpack_dual(h).tangent is not None
            torch.testing.assert_close(fwAD.unpack_dual(h).tangent, t)
        got_t, want_t = fwAD.unpack_dual(got).tangent, fwAD.unpack_dual(want).tangent
        assert got_t is not None
        torch.testing.assert_close(got_t, want_t)
        torch.testing.assert_close(fwAD.unpack_dual(got).primal, fwAD.unpack_dual(want).primal)


# ---- tensors without plain memory -------------------------------------------------------


@pytest.mark.any_isa
def test_patched_layer_norm_runs_torchs_op_on_nested_tensors():
    ln = torch.nn.LayerNorm(8)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
    want_ln = torch.nn.LayerNorm(8)
    want_ln.load_state_dict(ln.state_dict())
    fnt.patch(ln)
    nt = torch.nested.nested_tensor([torch.randn(2, 8), torch.randn(3, 8)])
    got, want = ln(nt), want_ln(nt)
    assert got.is_nested
    for g, w in zip(got.unbind(), want.unbind()):
        assert torch.equal(g, w)


@pytest.mark.any_isa
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm", "add_layer_norm"])
def test_efficient_zero_grad_output_gives_zero_gradients(op):
    """torch._efficientzerotensor has no memory behind it: the gradients are zeros, as torch's."""
    x = torch.randn(2, 8, requires_grad=True)
    w = torch.randn(8, requires_grad=True)
    if op == "add_layer_norm":
        y, _ = fnt.add_layer_norm(x, torch.randn(2, 8), 8, w)
    else:
        y = getattr(fnt, op)(x, 8, w)
    gx, gw = torch.autograd.grad(y, (x, w), torch._efficientzerotensor((2, 8)))
    assert torch.equal(gx, torch.zeros(2, 8)) and torch.equal(gw, torch.zeros(8))


# ---- module conversion, pickling, parametrizations ---------------------------------------


@pytest.mark.any_isa
@pytest.mark.parametrize("dtype", HALF)
def test_swap_tensors_on_conversion_works_after_a_call(dtype):
    """With swap_module_params_on_conversion, .float() swaps each parameter
    (torch.utils.swap_tensors refuses tensors with a weak reference)."""
    previous = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        ln = torch.nn.LayerNorm(8, dtype=dtype)
        fnt.patch(ln)
        x = torch.randn(2, 8, dtype=dtype)
        with torch.no_grad():
            ln(x)
        ln.float()
        assert ln.weight.dtype == torch.float32
        with torch.no_grad():
            want = F.layer_norm(x.float(), (8,), ln.weight, ln.bias)
            _close(ln(x.float()), want, torch.float32)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(previous)


@pytest.mark.any_isa
@pytest.mark.parametrize("cls", [LlamaRMSNorm, GemmaRMSNorm, torch.nn.LayerNorm])
def test_patched_models_pickle_and_load_patched(cls):
    """torch.save(model) and copy.deepcopy of a patched model: the copy
    runs the same forward and is still patched."""
    import copy

    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), cls(16))
    assert fnt.patch(model) == ["1"]
    x = torch.randn(3, 16)
    with torch.no_grad():
        want = model(x)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    for loaded in (
        torch.load(buf, weights_only=False),
        copy.deepcopy(model),
        pickle.loads(pickle.dumps(model)),
    ):
        assert type(loaded[1]) is type(model[1])
        with torch.no_grad():
            assert torch.equal(loaded(x), want)
        assert fnt.unpatch(loaded) == ["1"] and type(loaded[1]) is cls


class _Double(torch.nn.Module):
    def forward(self, w):
        return 2 * w


@pytest.mark.any_isa
@pytest.mark.parametrize("order", ["patch_first", "parametrize_first"])
def test_patch_and_unpatch_keep_parametrizations(order):
    """patch and unpatch switch the class under a parametrization, whichever
    came first, and the parametrized weight is the one used."""
    ln = torch.nn.LayerNorm(8)
    if order == "patch_first":
        assert fnt.patch(ln) == [""]
        parametrize.register_parametrization(ln, "weight", _Double())
    else:
        parametrize.register_parametrization(ln, "weight", _Double())
        assert fnt.patch(ln) == [""]
    assert isinstance(ln, fnt.LayerNorm) and parametrize.is_parametrized(ln)
    x = torch.randn(3, 8)
    want = F.layer_norm(x, (8,), 2 * ln.parametrizations.weight.original, ln.bias)
    torch.testing.assert_close(ln(x), want)
    assert fnt.unpatch(ln) == [""]
    assert not isinstance(ln, fnt.LayerNorm) and parametrize.is_parametrized(ln)
    assert type(ln).__bases__ == (torch.nn.LayerNorm,)
    torch.testing.assert_close(ln(x), want)
    parametrize.remove_parametrizations(ln, "weight")
    assert type(ln) is torch.nn.LayerNorm


# ---- arguments of the wrong kind ------------------------------------------------------


@pytest.mark.any_isa
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("fn", [fnt.add_layer_norm, fnt.add_rms_norm])
def test_numpy_residual_next_to_a_tensor_is_a_type_error(fn, grad):
    x = torch.randn(2, 8, requires_grad=grad)
    with pytest.raises(TypeError, match="residual must be a torch.Tensor, got ndarray"):
        fn(x, np.zeros((2, 8), np.float32), (8,))


@pytest.mark.any_isa
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_zero_dim_tensor_eps_is_taken_as_its_value(op):
    x = torch.randn(3, 8)
    eps = torch.tensor(0.5, dtype=torch.float64)
    assert torch.equal(getattr(fnt, op)(x, (8,), eps=eps), getattr(fnt, op)(x, (8,), eps=0.5))
    with pytest.raises(
        TypeError,
        match=r"eps must be a real number or a 0-d real tensor, got a "
        r"torch.float32 tensor of shape \(2,\)",
    ):
        getattr(fnt, op)(x, (8,), eps=torch.ones(2))


# ---- the derived-value cache's bound ----------------------------------------------------


@pytest.mark.any_isa
def test_widened_weight_cache_stays_bounded():
    """The cache holds no reference to the weights, so it is bounded instead:
    at most 4096 entries and 64 MiB, the oldest dropped first; results stay
    right for weights that were dropped and come back."""
    from fastnorm import _core

    x = torch.randn(2, 16, dtype=torch.bfloat16)
    weights = [torch.full((16,), 1 + i / 4096, dtype=torch.bfloat16) for i in range(4200)]
    with torch.no_grad():
        for w in weights:
            fnt.rms_norm(x, 16, w)
        entries, nbytes = _core.derived_cache_info()
        assert entries <= 4096 and nbytes <= 64 << 20
        assert torch.equal(fnt.rms_norm(x, 16, weights[0]), F.rms_norm(x, (16,), weights[0]))
        big = torch.rand(1 << 23, dtype=torch.bfloat16) + 0.5  # 16 MiB, 48 MiB counted
        xb = torch.randn(1, 1 << 23, dtype=torch.bfloat16)
        for _ in range(2):
            fnt.rms_norm(xb, 1 << 23, big)
            assert _core.derived_cache_info()[1] <= 64 << 20
        big2 = torch.rand(1 << 23, dtype=torch.bfloat16) + 0.5
        fnt.rms_norm(xb, 1 << 23, big2)
        assert _core.derived_cache_info()[1] <= 64 << 20
