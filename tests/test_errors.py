"""Every bad input gets a clear error naming what is wrong; none crashes."""

import numpy as np
import pytest

import fastnorm

# argument validation does not depend on the kernel set: run each test once
pytestmark = pytest.mark.any_isa

AxisError = np.exceptions.AxisError
X = np.ones((4, 8), np.float32)


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize(
    "x,exc,match",
    [
        (np.ones(3, np.longdouble), TypeError, str(np.dtype(np.longdouble))),
        (np.ones(3, np.complex64), TypeError, "complex64"),
        (np.array(["a", "b"]), TypeError, "dtype"),
        (np.array([object(), object()]), TypeError, "object"),
        (np.float32(3.0), TypeError, "0-d"),
        (np.array(3.0), TypeError, "0-d"),
    ],
)
def test_bad_input_dtype_or_rank(op, x, exc, match):
    with pytest.raises(exc, match=match):
        getattr(fastnorm, op)(x)


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (
            {"normalized_shape": 7},
            ValueError,
            r"normalized_shape \(7,\) does not match the trailing dimensions \(8,\) "
            r"of x with shape \(4, 8\)",
        ),
        ({"normalized_shape": (2, 4, 8)}, ValueError, r"normalized_shape \(2, 4, 8\)"),
        ({"normalized_shape": ()}, ValueError, "at least one"),
        ({"normalized_shape": 8.0}, TypeError, "normalized_shape"),
        ({"normalized_shape": "8"}, TypeError, "normalized_shape"),
        ({"axis": 2}, AxisError, "out of bounds"),
        ({"axis": -3}, AxisError, "out of bounds"),
        ({"axis": (1, -1)}, AxisError, "twice"),
        ({"axis": 1.5}, TypeError, "axis"),
        ({"axis": ()}, ValueError, "at least one"),
        ({"axis": 0, "normalized_shape": 8}, ValueError, "disagree"),
        (
            {"weight": np.ones(5)},
            ValueError,
            r"weight with shape \(5,\) cannot be broadcast to the normalized shape \(8,\)",
        ),
        ({"weight": np.ones((2, 8))}, ValueError, r"weight with shape \(2, 8\)"),
        ({"weight": np.ones(8, complex)}, TypeError, "weight"),
        ({"weight": "abc"}, TypeError, "weight"),
        ({"eps": -1.0}, ValueError, "eps"),
        ({"eps": float("nan")}, ValueError, "eps"),
        ({"eps": float("inf")}, ValueError, "eps"),
        ({"eps": "1e-5"}, TypeError, "eps"),
        ({"eps": 1j}, TypeError, "eps"),
        ({"out": np.empty((4, 8), np.float64)}, TypeError, "out has dtype float64"),
        (
            {"out": np.empty((8, 4), np.float32)},
            ValueError,
            r"out has shape \(8, 4\) but x has shape \(4, 8\)",
        ),
        ({"out": [[0.0] * 8] * 4}, TypeError, "out must be a numpy.ndarray"),
        ({"out": np.broadcast_to(np.float32(0), (4, 8))}, ValueError, "read-only"),
    ],
)
def test_bad_arguments(op, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        getattr(fastnorm, op)(X, **kwargs)


def test_eps_too_large_for_a_double_is_refused():
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="eps"):
        fastnorm.layer_norm(x, eps=10**400)


def test_bad_bias():
    with pytest.raises(ValueError, match=r"bias with shape \(3,\)"):
        fastnorm.layer_norm(X, bias=np.zeros(3))


def test_errors_name_the_shape_the_caller_passed():
    x = np.ones((4, 5, 6), np.float32)
    with pytest.raises(ValueError, match=r"weight with shape \(1, 1, 7\)"):
        fastnorm.layer_norm(x, weight=np.ones((1, 1, 7), np.float32))
    with pytest.raises(ValueError, match=r"weight with shape \(1, 1, 7\)"):
        fastnorm.layer_norm_backward(x, x, weight=np.ones((1, 1, 7), np.float32))


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_unknown_keyword(op):
    with pytest.raises(TypeError):
        getattr(fastnorm, op)(X, axes=1)
    with pytest.raises(TypeError):
        getattr(fastnorm, op)(X, None, None, None, None, None)  # too many positionals


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_normalized_axis_of_size_zero(op):
    with pytest.raises(ValueError, match=r"axis 1 of size 0.*\(3, 0\)"):
        getattr(fastnorm, op)(np.ones((3, 0)))


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_empty_batch_returns_empty(op):
    y = getattr(fastnorm, op)(np.ones((0, 5), np.float32))
    assert y.shape == (0, 5) and y.dtype == np.float32
    res = getattr(fastnorm, op)(np.ones((2, 0, 5)), axis=-1, return_stats=True)
    assert res[0].shape == (2, 0, 5) and res[-1].shape == (2, 0, 1)


def test_errors_leave_out_untouched():
    out = np.full((4, 8), 5.0, np.float32)
    with pytest.raises(ValueError):
        fastnorm.layer_norm(X, weight=np.ones(3), out=out)
    assert (out == 5.0).all()
