"""LayerNorm and RMSNorm modules: parameters, forward/backward, state dicts
(including PyTorch's), repr and errors."""

import numpy as np
import pytest
from _reference import BFLOAT16, assert_close, reference, reference_backward

import fastnorm


def test_layer_norm_module_defaults_and_forward(rng):
    m = fastnorm.LayerNorm(8)
    assert m.weight.dtype == np.float32 and (m.weight == 1).all() and (m.bias == 0).all()
    m.weight[...] = rng.normal(1, 0.2, 8)
    m.bias[...] = rng.normal(0, 0.2, 8)
    x = rng.normal(size=(4, 8)).astype(np.float32)
    assert_close(m(x), reference("layer_norm", x, (1,), m.weight, m.bias)[0], np.float32)


def test_layer_norm_module_backward_sets_grads(rng):
    m = fastnorm.LayerNorm((3, 5), dtype=np.float64)
    m.weight[...] = rng.normal(1, 0.2, (3, 5))
    x = rng.normal(size=(4, 3, 5))
    dy = rng.normal(size=x.shape)
    m(x)
    dx = m.backward(dy)
    dx_ref, dw_ref, db_ref = reference_backward("layer_norm", dy, x, (1, 2), m.weight)
    assert_close(dx, dx_ref, np.float64)
    assert_close(m.weight_grad, dw_ref, np.float64)
    assert_close(m.bias_grad, db_ref, np.float64)


def test_rms_norm_module(rng):
    m = fastnorm.RMSNorm(6)
    x = rng.normal(size=(3, 6)).astype(np.float32)
    dy = rng.normal(size=(3, 6)).astype(np.float32)
    assert_close(m(x), reference("rms_norm", x, (1,), m.weight)[0], np.float32)
    dx = m.backward(dy)
    dx_ref, dw_ref, _ = reference_backward("rms_norm", dy, x, (1,), m.weight)
    assert_close(dx, dx_ref, np.float32)
    assert_close(m.weight_grad, dw_ref, np.float32)


def test_no_affine_and_no_bias():
    m = fastnorm.LayerNorm(4, elementwise_affine=False)
    assert m.weight is None and m.bias is None and m.state_dict() == {}
    m2 = fastnorm.LayerNorm(4, bias=False)
    assert m2.bias is None and set(m2.state_dict()) == {"weight"}
    m2(np.ones((2, 4), np.float32))
    m2.backward(np.ones((2, 4), np.float32))
    assert m2.bias_grad is None and m2.weight_grad.shape == (4,)


def test_state_dict_round_trip(rng):
    m = fastnorm.LayerNorm(5)
    m.weight[...] = rng.normal(size=5)
    sd = m.state_dict()
    m.weight[...] = 0  # the state dict holds copies
    m2 = fastnorm.LayerNorm(5)
    m2.load_state_dict(sd)
    assert not np.array_equal(m2.weight, m.weight)
    assert np.array_equal(m2.weight, sd["weight"])


def test_load_state_dict_errors():
    m = fastnorm.LayerNorm(5)
    with pytest.raises(KeyError, match="do not match"):
        m.load_state_dict({"weight": np.ones(5)})
    with pytest.raises(ValueError, match=r"weight in the state_dict has shape \(4,\)"):
        m.load_state_dict({"weight": np.ones(4), "bias": np.zeros(5)})
    assert (m.weight == 1).all()  # nothing half-loaded


def test_repr():
    assert (
        repr(fastnorm.LayerNorm(768))
        == "LayerNorm((768,), eps=1e-05, elementwise_affine=True, bias=True, dtype=float32)"
    )
    assert (
        repr(fastnorm.RMSNorm((4, 8), eps=1e-6, dtype=np.float64))
        == "RMSNorm((4, 8), eps=1e-06, elementwise_affine=True, dtype=float64)"
    )


@pytest.mark.parametrize(
    "kwargs,exc",
    [
        ({"normalized_shape": 0}, ValueError),
        ({"normalized_shape": ()}, ValueError),
        ({"normalized_shape": "x"}, TypeError),  # not an int, as in the functional API
        ({"normalized_shape": 4, "eps": -1.0}, ValueError),
        ({"normalized_shape": 4, "dtype": np.int32}, TypeError),
    ],
)
def test_constructor_errors(kwargs, exc):
    with pytest.raises(exc):
        fastnorm.LayerNorm(**kwargs)


def test_backward_before_forward():
    with pytest.raises(RuntimeError, match="forward call first"):
        fastnorm.RMSNorm(3).backward(np.ones((1, 3)))


@pytest.mark.any_isa
def test_loads_torch_state_dicts():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(3, 7, 16)).astype(np.float32)
    ln_t = torch.nn.LayerNorm(16)
    rms_t = torch.nn.RMSNorm(16)
    with torch.no_grad():
        ln_t.weight.normal_()
        ln_t.bias.normal_()
        rms_t.weight.normal_()
    ln = fastnorm.LayerNorm(16)
    ln.load_state_dict(ln_t.state_dict())
    rms = fastnorm.RMSNorm(16)
    rms.load_state_dict(rms_t.state_dict())
    with torch.no_grad():
        np.testing.assert_allclose(ln(x), ln_t(torch.from_numpy(x)).numpy(), atol=2e-6)
        np.testing.assert_allclose(rms(x), rms_t(torch.from_numpy(x)).numpy(), atol=2e-6)


@pytest.mark.any_isa
def test_bfloat16_module_loads_a_torch_bfloat16_state_dict():
    torch = pytest.importorskip("torch")
    m = torch.nn.LayerNorm(8, dtype=torch.bfloat16)
    with torch.no_grad():
        m.weight.copy_(torch.linspace(0.5, 2, 8))
    f = fastnorm.LayerNorm(8, dtype=BFLOAT16)
    f.load_state_dict(m.state_dict())
    assert f.weight.dtype == BFLOAT16
    assert np.array_equal(f.weight.astype(np.float32), m.weight.float().detach().numpy())
