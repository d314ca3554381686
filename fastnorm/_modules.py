"""LayerNorm and RMSNorm as stateful modules, for NumPy training loops and
for weights exported from PyTorch (same state_dict keys)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import ml_dtypes
import numpy as np

from . import _core
from ._api import layer_norm, layer_norm_backward, rms_norm, rms_norm_backward

# the argument rules of the functional API (one place: fastnorm/_rules.pxi)
_as_axis_tuple, _check_eps, _real_array = _core.as_axis_tuple, _core.check_eps, _core.real_array
_refuse_masked, _resolve_eps = _core.refuse_masked, _core.resolve_eps

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, DTypeLike

    from ._api import Array, Axes

__all__ = ["LayerNorm", "RMSNorm", "IncompatibleKeys"]


class IncompatibleKeys(NamedTuple):
    """What `load_state_dict` returns, as torch.nn.Module's does: the
    parameter names the state_dict lacked and the keys it had that name no
    parameter of the module."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class StateDictKeyError(RuntimeError, KeyError):
    """load_state_dict(strict=True) with missing or unexpected keys.  A
    RuntimeError, as PyTorch raises; also a KeyError, as earlier releases
    raised."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def _shape_tuple(normalized_shape):
    shape = _as_axis_tuple(normalized_shape, "normalized_shape")  # the functional API's rule
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"normalized_shape must be non-empty positive sizes, got {shape}")
    return shape


def _module_dtype(dtype):
    dt = np.dtype(dtype)
    allowed = _core.KERNEL_DTYPES
    if dt not in allowed:
        raise TypeError(f"dtype must be float32, float64, float16 or bfloat16, got {dt}")
    return dt


def _to_numpy(value):
    """A NumPy array from an array, a list or a (CPU) torch tensor."""
    _refuse_masked(value, "a state_dict value")
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # no NumPy bfloat16 in torch:
            return value.float().numpy().astype(ml_dtypes.bfloat16)  # exact both ways
        value = value.numpy()
    return np.asarray(value)


class _Norm:
    """What LayerNorm and RMSNorm share: their parameters by name, and the
    state_dict round trip."""

    _param_names: tuple[str, ...] = ()
    normalized_shape: tuple[int, ...]
    elementwise_affine: bool
    dtype: np.dtype
    weight: Array | None
    weight_grad: Array | None
    _saved: Any

    def state_dict(self) -> dict[str, Array]:
        """The parameters under PyTorch's names (copies)."""
        return {
            name: getattr(self, name).copy()
            for name in self._param_names
            if getattr(self, name) is not None
        }

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> IncompatibleKeys:
        """Load parameters saved by `state_dict` or by the PyTorch module of
        the same name (tensors are converted), as torch.nn.Module does.

        Parameters
        ----------
        state_dict : mapping
            Parameter name -> real-valued array (or tensor) of the
            parameter's shape.
        strict : bool, default True
            Require the keys to be exactly this module's parameters.  With
            False, the parameters present are loaded, the others keep their
            values and unexpected keys are ignored.

        Returns
        -------
        IncompatibleKeys
            Named tuple of ``missing_keys`` and ``unexpected_keys`` (lists).

        Raises
        ------
        RuntimeError
            With strict=True, when keys are missing or unexpected (the
            message lists them); the error is also a KeyError.
        TypeError
            For a value that is not real-valued (complex, object, string) or
            is a masked array.
        ValueError
            For a value whose shape differs from the parameter's.

        Nothing is loaded when an error is raised.
        """
        expected = [k for k in self._param_names if getattr(self, k) is not None]
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in state_dict if k not in expected]
        if strict and (missing or unexpected):
            raise StateDictKeyError(
                f"Error(s) in loading state_dict for {type(self).__name__}: state_dict keys "
                f"{sorted(state_dict)} do not match this module's parameters "
                f"{sorted(expected)}; missing key(s): {missing}, unexpected key(s): "
                f"{unexpected}"
            )
        new: dict[str, np.ndarray] = {}
        for name in expected:
            if name not in state_dict:
                continue
            arr = _real_array(_to_numpy(state_dict[name]), f"{name} in the state_dict")
            current = getattr(self, name)
            if arr.shape != current.shape:
                raise ValueError(
                    f"{name} in the state_dict has shape {arr.shape}, "
                    f"but this module's {name} has shape {current.shape}"
                )
            new[name] = np.array(arr, dtype=self.dtype)
        for name, arr in new.items():
            setattr(self, name, arr)
        return IncompatibleKeys(missing, unexpected)

    def _require_saved(self):
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward needs a forward call first")
        return self._saved


class LayerNorm(_Norm):
    """Layer normalization over the trailing `normalized_shape` dimensions.

    Parameters
    ----------
    normalized_shape : int or tuple of int
    eps : float, default 1e-5
        None also means 1e-5.
    elementwise_affine : bool, default True
        Learnable `weight` (ones) and, with `bias`, `bias` (zeros).
    bias : bool, default True
    dtype : float32, float64, float16 or bfloat16, default float32
        Dtype of the parameters (float16/bfloat16 modules compute in float32;
        their gradients are float32).

    Calling the module runs `fastnorm.layer_norm` and keeps what `backward`
    needs (a reference to x, as autograd does: do not modify x in place
    before `backward`); `backward(dy)` returns dx and sets `weight_grad` and
    `bias_grad`.
    """

    _param_names = ("weight", "bias")
    eps: float
    bias: Array | None
    bias_grad: Array | None

    def __init__(
        self,
        normalized_shape: Axes,
        eps: float | None = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        dtype: DTypeLike = np.float32,
    ) -> None:
        self.normalized_shape = _shape_tuple(normalized_shape)
        # None means the default, as in the functional API (the dtype does
        # not enter layer_norm's default)
        self.eps = _resolve_eps(eps, _core.OP_LAYER_NORM, np.float32)
        self.elementwise_affine = bool(elementwise_affine)
        self.dtype = _module_dtype(dtype)
        affine = self.elementwise_affine
        self.weight = np.ones(self.normalized_shape, self.dtype) if affine else None
        self.bias = np.zeros(self.normalized_shape, self.dtype) if affine and bias else None
        self.weight_grad = self.bias_grad = None
        self._saved = None

    def __call__(self, x: ArrayLike) -> Array:
        y, mean, rstd = layer_norm(
            x, self.normalized_shape, self.weight, self.bias, self.eps, return_stats=True
        )
        self._saved = (x, mean, rstd)
        return y

    def backward(self, dy: ArrayLike) -> Array:
        x, mean, rstd = self._require_saved()
        dx, dw, db = layer_norm_backward(
            dy, x, self.normalized_shape, self.weight, mean=mean, rstd=rstd, eps=self.eps
        )
        self.weight_grad = dw
        self.bias_grad = db if self.bias is not None else None
        return dx

    def __repr__(self):
        return (
            f"LayerNorm({self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}, "
            f"dtype={self.dtype.name})"
        )


class RMSNorm(_Norm):
    """RMS normalization over the trailing `normalized_shape` dimensions.

    Parameters
    ----------
    normalized_shape : int or tuple of int
    eps : float, optional
        Default: the machine epsilon of each input's compute dtype, as in
        PyTorch (float32's for float32, float16 and bfloat16 inputs).
    elementwise_affine : bool, default True
        Learnable `weight` (ones).
    dtype : float32, float64, float16 or bfloat16, default float32
        Dtype of the parameters (float16/bfloat16 modules compute in float32;
        their gradients are float32).
    """

    _param_names = ("weight",)
    eps: float | None

    def __init__(
        self,
        normalized_shape: Axes,
        eps: float | None = None,
        elementwise_affine: bool = True,
        dtype: DTypeLike = np.float32,
    ) -> None:
        self.normalized_shape = _shape_tuple(normalized_shape)
        self.eps = None if eps is None else _check_eps(eps)
        self.elementwise_affine = bool(elementwise_affine)
        self.dtype = _module_dtype(dtype)
        self.weight = (
            np.ones(self.normalized_shape, self.dtype) if self.elementwise_affine else None
        )
        self.weight_grad = None
        self._saved = None

    def __call__(self, x: ArrayLike) -> Array:
        y, rstd = rms_norm(x, self.normalized_shape, self.weight, self.eps, return_stats=True)
        self._saved = (x, rstd)
        return y

    def backward(self, dy: ArrayLike) -> Array:
        x, rstd = self._require_saved()
        dx, dw = rms_norm_backward(
            dy, x, self.normalized_shape, self.weight, rstd=rstd, eps=self.eps
        )
        self.weight_grad = dw
        return dx

    def __repr__(self):
        return (
            f"RMSNorm({self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, dtype={self.dtype.name})"
        )
