"""fastnorm.torch's tensor calls: the one place that reads tensors' memory.

CPU tensors of fastnorm's dtypes go to the core's pointer path
(``_core.torch_forward`` / ``torch_backward``: pointers, sizes and strides,
no copy), or else as NumPy views through ``fastnorm._api``.  Here too: which
route a call takes (fastnorm's kernels, with or without autograd, or torch's
own op), the normalized dims of the ``dim=`` spelling, and the conversions.
Every other module of the package builds on this one; it imports none of them.
"""

import warnings
from typing import Any

import ml_dtypes
import numpy as np
import torch

from .. import _api, _core

_core.torch_setup(torch)
_direct = _core.torch_forward  # the pointer path: None when it does not take a call
_LN, _RMS = _core.OP_LAYER_NORM, _core.OP_RMS_NORM
_BF16 = np.dtype(ml_dtypes.bfloat16)
KERNEL_DTYPES = frozenset((torch.float32, torch.float64, torch.float16, torch.bfloat16))
_F32_EPS = float(torch.finfo(torch.float32).eps)
_F64_EPS = float(torch.finfo(torch.float64).eps)
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)
_is_compiling = torch.compiler.is_compiling


# ---- conversions -------------------------------------------------------------


class _ArrayView:
    """Carries an __array_interface__ for np.asarray, and the tensor: the
    array's base is this object, so the array keeps the tensor alive."""

    __slots__ = ("__array_interface__", "tensor")
    __array_interface__: dict
    tensor: Any


# typestr, itemsize, the NumPy dtype to view the result as (bfloat16 travels as int16)
_INTERFACE = {
    torch.float32: (np.dtype(np.float32).str, 4, None),
    torch.float64: (np.dtype(np.float64).str, 8, None),
    torch.float16: (np.dtype(np.float16).str, 2, None),
    torch.bfloat16: (np.dtype(np.int16).str, 2, _BF16),
}


def _np(t):
    """The NumPy view of a CPU tensor of a kernel dtype: same memory, same strides.

    Built from the tensor's pointer rather than with ``Tensor.numpy()``, which
    would mark the tensor's storage as never resizable again (a lasting side
    effect on the caller's tensors and parameters: FSDP, for one, frees
    parameters with ``storage.resize_(0)``).  The array keeps the tensor alive."""
    typestr, size, view = _INTERFACE[t.dtype]
    if t.is_neg():  # a lazily negated view (e.g. complex.conj().imag): materialize it
        t = t.resolve_neg()
    ptr = t.data_ptr()
    if t.numel() == 0:
        arr = np.empty(tuple(t.shape), typestr)
    else:
        v = _ArrayView()
        v.tensor = t
        if t.is_contiguous():
            v.__array_interface__ = {"data": (ptr, False), "shape": t.shape, "typestr": typestr}
        else:
            v.__array_interface__ = {
                "data": (ptr, False),
                "shape": t.shape,
                "typestr": typestr,
                "strides": tuple([st * size for st in t.stride()]),
            }
        arr = np.asarray(v)
    return arr if view is None else arr.view(view)


def _np_opt(t):
    return None if t is None else _np(t)


def _from_np(arr):
    """A tensor sharing arr's memory (arr stays alive as long as the tensor)."""
    if arr.dtype == _BF16:
        return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(arr)


def _new_output(input):
    """A fresh, torch-owned C-order tensor like input (torch's ops return C order too)."""
    if input.is_contiguous():
        return torch.empty_like(input)  # the cheapest allocation torch has
    return torch.empty_like(input, memory_format=torch.contiguous_format)


# routes
_TORCH, _DIRECT, _AUTOGRAD = 0, 1, 2


def _route(*tensors):
    """_DIRECT when every tensor given (None skipped) can go to fastnorm's
    kernels and none needs a gradient, _AUTOGRAD when one does, else _TORCH.
    (Types were checked by the caller.)"""
    if _is_compiling() or _core.torch_context_declines():  # first: not traceable
        return _TORCH
    grad = False
    for t in tensors:
        if t is None:
            continue
        if (
            type(t) not in _PLAIN_TYPES
            or not t.is_cpu
            or t.dtype not in KERNEL_DTYPES
            or t.is_nested
            or not _has_data(t)
        ):
            return _TORCH
        if t.requires_grad:
            grad = True
    return _AUTOGRAD if grad and torch.is_grad_enabled() else _DIRECT


def _has_data(t):
    """Whether t's memory can be read: not so for torch.func's wrappers
    (vmap, grad: data_ptr raises), functionalized tensors, freed storages and
    efficient zero tensors (data_ptr is 0).  Those run torch's own op, which
    knows them."""
    try:
        return t.data_ptr() != 0 or t.numel() == 0
    except RuntimeError:
        return False


def _check_tensor(value, name, optional=True):
    if value is None and optional:
        return
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor{' or None' if optional else ''}, "
            f"got {type(value).__name__}"
        )


def rms_eps(dtype, eps):
    """rms_norm's eps=None: the compute dtype's epsilon, as in torch."""
    if eps is not None:
        return eps
    return _F64_EPS if dtype == torch.float64 else _F32_EPS


# ---- the normalized dimensions -------------------------------------------------
# By the core's one rule for them (_core.torch_dims), whose errors are the
# NumPy functions' with input and dim for x and axis.


def _dims(input, normalized_shape, dim):
    """input's normalized dims, sorted."""
    return _core.torch_dims(input.shape, normalized_shape, dim)


@torch.compiler.assume_constant_result
def _dims_of_rank(ndim, dim):
    """The sorted dims that dim names in a tensor of ndim dims.  Under
    torch.compile, dynamo cannot trace compiled code: this runs once, at
    trace time, on the constants ndim and dim."""
    return _core.torch_dims(ndim, None, dim)


def op_args(input, normalized_shape, dim):
    """The torch.library ops' (normalized_shape, dim) for a call:
    normalized_shape as a list (the sizes of the normalized dims when None)
    and dim as the sorted dims, None when they are trailing.  Dynamo traces
    this under torch.compile, so normalized_shape is not checked here: the
    ops check it (their fake implementations too, while tracing)."""
    ndim = input.dim()
    dims = (ndim - 1,) if dim is None else _dims_of_rank(ndim, dim)
    if normalized_shape is None:
        shape = [input.shape[d] for d in dims]
    elif isinstance(normalized_shape, (tuple, list)):  # (torch.Size is a tuple)
        shape = list(normalized_shape)
    else:
        shape = [normalized_shape]
    if dim is None or dims == tuple(range(ndim - len(dims), ndim)):
        return shape, None
    return shape, list(dims)


def _check_residual(input, residual):
    _check_tensor(residual, "residual", optional=False)
    if not _same_shape(residual, input):
        raise ValueError(
            f"residual has shape {tuple(residual.shape)} but input has shape {tuple(input.shape)}"
        )


def _same_shape(a, b):
    """Whether tensors a and b have one shape.  Under torch.jit.trace their
    sizes are traced values, and comparing them warns that the trace keeps
    the result as a constant: that is what an argument check wants (made
    once, at trace time, as torch's own ops make theirs), so it says nothing."""
    if not torch.jit.is_tracing():
        return a.shape == b.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return a.shape == b.shape


# ---- fastnorm's kernels on tensors ------------------------------------------------
# The eager autograd Functions and the torch.library ops both run through
# these.  Stats come back as NumPy arrays (the backward takes them so).


def _param_grad(g, dtype, needed):
    """A parameter's gradient (fastnorm's, summed in float64) in the parameter's dtype."""
    if not needed or g is None:
        return None
    if not isinstance(g, torch.Tensor):
        g = _from_np(np.ascontiguousarray(g))
    return g if g.dtype == dtype else g.to(dtype)


def _kernel_forward(op, input, residual, normalized_shape, weight, bias, eps, dim, want_stats):
    """fastnorm's forward kernels on CPU tensors of the kernel dtypes, with no
    autograd: the pointer path, else NumPy views through _api (which also
    raises the argument errors).  Returns (y,) or (y, h), then (mean, rstd)
    or (rstd,) as NumPy arrays when want_stats.  The eager autograd
    Functions and the torch.library ops both run forwards through here."""
    out = _direct(op, input, normalized_shape, weight, bias, eps, dim, residual, False, want_stats)
    if out is not None:
        return out if isinstance(out, tuple) else (out,)
    kw = {"axis": _dims(input, normalized_shape, dim), "weight": _np_opt(weight)}
    if op == _LN:
        kw["bias"] = _np_opt(bias)
    y = _new_output(input)
    if residual is None:
        fn = _api.layer_norm if op == _LN else _api.rms_norm
        res = fn(_np(input), eps=eps, out=_np(y), return_stats=want_stats, **kw)
        outs: tuple[Any, ...] = (y,)
    else:
        h = _new_output(input)
        add_fn = _api.add_layer_norm if op == _LN else _api.add_rms_norm
        res = add_fn(
            _np(input),
            _np(residual),
            eps=eps,
            out=_np(y),
            residual_out=_np(h),
            return_stats=want_stats,
            **kw,
        )
        outs = (y, h)
    return outs + (tuple(res[len(outs) :]) if want_stats else ())


def _kernel_backward(op, dy, x, weight, rstd, eps, normalized_shape, dim, want_dweight, bias_shape):
    """fastnorm's backward kernels: (dx, dweight, dbias), the parameter
    gradients summed in float64 in the compute dtype (None where not wanted;
    dbias when bias_shape is given).  rstd: the forward's, or None to
    recompute it.  The pointer path, else NumPy views through _api."""
    want_dbias = op == _LN and bias_shape is not None
    grads = _core.torch_backward(
        op, dy, x, weight, rstd, eps, normalized_shape, dim, want_dweight, want_dbias
    )
    if grads is not None:
        return grads
    if dy._is_zerotensor():  # autograd's efficient zeros have no memory: materialize them
        dy = torch.zeros(dy.shape, dtype=dy.dtype)
    axis = _dims(x, normalized_shape, dim)
    if op == _LN:
        bias = None if bias_shape is None else np.broadcast_to(np.float32(0), bias_shape)
        dx, dw, db = _api.layer_norm_backward(
            _np(dy), _np(x), None, _np_opt(weight), rstd=rstd, eps=eps, axis=axis, bias=bias
        )
    else:
        dx, dw = _api.rms_norm_backward(
            _np(dy), _np(x), None, _np_opt(weight), rstd=rstd, eps=eps, axis=axis
        )
        db = None
    return (_from_np(dx), dw if want_dweight else None, db if want_dbias else None)
