"""Arguments are taken as a user expects (defaults that match PyTorch, None
meaning the documented default) or refused with a clear error."""
import ml_dtypes
import numpy as np
import pytest

import fastnorm

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


def _ordered_bits(a):
    """16-bit float bit patterns as integers in the order of the values they
    encode (+0 and -0 both 0), so that a difference is a count of ulps."""
    b = a.view(np.int16).astype(np.int32)
    return np.where(b < 0, -(b & 0x7FFF), b)


# ---- rms_norm's default eps --------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float16, BFLOAT16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("op", ["rms_norm", "add_rms_norm", "module"])
def test_default_rms_eps_of_half_inputs_matches_torch(op, dtype, rng):
    """Small activations (RMS 1e-3): a default eps of the half dtype's own
    epsilon (2**-7 for bfloat16) would swamp the mean square and give RMS
    0.01 instead of about 1; PyTorch uses float32's epsilon."""
    torch = pytest.importorskip("torch")
    tdt = torch.float16 if dtype == np.float16 else torch.bfloat16
    x = (1e-3 * rng.standard_normal((4, 4096))).astype(dtype)
    if op == "rms_norm":
        y = fastnorm.rms_norm(x)
    elif op == "add_rms_norm":
        y, _ = fastnorm.add_rms_norm(x, np.zeros_like(x))
    else:
        y = fastnorm.RMSNorm(4096, dtype=dtype)(x)
    expected = torch.nn.functional.rms_norm(
        torch.from_numpy(x.astype(np.float32)).to(tdt), (4096,)).float().numpy().astype(dtype)
    assert y.dtype == dtype
    assert np.abs(_ordered_bits(y) - _ordered_bits(expected)).max() <= 1


@pytest.mark.any_isa
@pytest.mark.parametrize("dtype,eps", [(np.float16, 2.0 ** -23), (BFLOAT16, 2.0 ** -23),
                                       (np.float32, 2.0 ** -23), (np.float64, 2.0 ** -52)],
                         ids=["float16", "bfloat16", "float32", "float64"])
def test_default_rms_eps_is_the_compute_dtypes_epsilon(dtype, eps):
    """A zero row's rstd is 1/sqrt(eps): it shows the eps in use, in the
    forward and the fused add; the backward and the module show it in dx."""
    x = np.zeros((2, 8), dtype)
    x[0] = 1
    expected_rstd = 1 / np.sqrt(eps)
    _, rstd = fastnorm.rms_norm(x, return_stats=True)
    assert rstd[1, 0] == pytest.approx(expected_rstd, rel=1e-6)
    _, _, rstd = fastnorm.add_rms_norm(x, np.zeros_like(x), return_stats=True)
    assert rstd[1, 0] == pytest.approx(expected_rstd, rel=1e-6)
    assert fastnorm._core.default_eps(dtype) == eps
    dx_default, _ = fastnorm.rms_norm_backward(np.ones_like(x), x)
    dx_explicit, _ = fastnorm.rms_norm_backward(np.ones_like(x), x, eps=eps)
    assert np.array_equal(dx_default.astype(np.float64), dx_explicit.astype(np.float64))
    module = fastnorm.RMSNorm(8, dtype=dtype)
    _, rstd_explicit = fastnorm.rms_norm(x, weight=module.weight, eps=eps, return_stats=True)
    module(x)
    dx_module = module.backward(np.ones_like(x))
    dx_explicit, _ = fastnorm.rms_norm_backward(np.ones_like(x), x, weight=module.weight,
                                                rstd=rstd_explicit, eps=eps)
    assert np.array_equal(dx_module.astype(np.float64), dx_explicit.astype(np.float64))
