"""fastnorm.torch's quantized norms: `rms_norm_quant`,
`layer_norm_quant` and their fused residual add forms on CPU tensors, and
their torch.library ops.

Registers, in the namespace ``fastnorm``::

    torch.ops.fastnorm.rms_norm_quant(input, normalized_shape, weight, eps, dim, dtype,
                                      group_size, scale) -> (q, scale)
    torch.ops.fastnorm.layer_norm_quant(input, normalized_shape, weight, bias, eps, dim,
                                        dtype, group_size, scale) -> (q, scale)
    torch.ops.fastnorm.add_rms_norm_quant(input, residual, ...) -> (q, scale, h)
    torch.ops.fastnorm.add_layer_norm_quant(input, residual, ...) -> (q, scale, h)

each with a fake implementation.  They are inference ops: no autograd, and
an argument that requires grad while grad mode is on is an error.

The arithmetic is the NumPy functions' (`fastnorm.rms_norm_quant` and the
others): the tensors travel as NumPy views of their memory (as
``_tensors._np`` makes them: no copy, no lasting mark on the caller's
storage) and the results come back as tensors sharing the arrays' memory,
so the bits are the NumPy functions' on the same data.  float8 e4m3fn codes
are ``ml_dtypes.float8_e4m3fn`` on the NumPy side and
``torch.float8_e4m3fn`` here: the same bytes, handed over as uint8.

As for the float ops (``_ops``), the eager functions do not go through the
dispatcher; they call the ops only while torch.compile or torch.export
traces, and for meta and fake tensors.

This module imports torch and is imported by ``fastnorm.torch`` only.
"""

import ml_dtypes
import numpy as np
import torch

from .. import _core, _quantized
from . import _ops  # noqa: F401  (defines the fastnorm namespace this module adds to)
from ._tensors import KERNEL_DTYPES, _check_tensor, _np, op_args

__all__ = ["rms_norm_quant", "layer_norm_quant", "add_rms_norm_quant", "add_layer_norm_quant"]

# torch's code dtype -> NumPy's (the same bytes)
_CODE_DTYPES = {
    torch.int8: np.dtype(np.int8),
    torch.float8_e4m3fn: np.dtype(ml_dtypes.float8_e4m3fn),
}


# ---- arguments ------------------------------------------------------------------------


def _check_arguments(tensors, dtype):
    """TypeError for non-tensors and an unknown code dtype; RuntimeError for
    an argument that requires grad while grad mode is on (these are
    inference ops: nothing would carry the gradient back)."""
    for name, value in tensors.items():
        _check_tensor(value, name, optional=name not in ("input", "residual"))
    if dtype not in _CODE_DTYPES:
        raise TypeError(
            f"dtype must be torch.int8 or torch.float8_e4m3fn (the quantized outputs), got {dtype}"
        )
    if torch.is_grad_enabled():
        for name, value in tensors.items():
            if value is not None and value.requires_grad:
                raise RuntimeError(
                    f"fastnorm.torch's quantized norms are for inference and have no gradient, "
                    f"but {name} requires grad: call them under torch.no_grad() or "
                    f"torch.inference_mode(), or pass {name}.detach()"
                )


def _scale_tensor(scale):
    """A static scale as the ops take it: None, or a tensor (a number becomes
    a 0-d float64 tensor, exact: the core rounds it to float32)."""
    if scale is None or isinstance(scale, torch.Tensor):
        return scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a number, a torch.Tensor or None, got {scale!r}")
    return torch.tensor(float(scale), dtype=torch.float64)


def _use_ops(input):
    """Whether to go through the dispatcher: while torch.compile or
    torch.export traces, and for meta and fake tensors."""
    return (
        torch.compiler.is_compiling()
        or input.device.type == "meta"
        or isinstance(input, torch._subclasses.FakeTensor)
    )


# ---- the kernels: the NumPy functions on views of the tensors ----------------------------


def _array(t, name):
    """A CPU tensor of a kernel dtype as a NumPy view of its memory, else TypeError."""
    if t is None:
        return None
    if t.device.type != "cpu" or t.dtype not in KERNEL_DTYPES:
        raise TypeError(
            f"{name} must be a CPU tensor of float32, float64, float16 or bfloat16 for "
            f"fastnorm's quantized norms, got a {t.device.type} tensor of {t.dtype}"
        )
    return _np(t.detach())


def _scale_array(scale):
    if scale is None:
        return None
    if scale.is_complex() or scale.dtype == torch.bool:
        raise TypeError(f"scale must be real, got a tensor of {scale.dtype}")
    # float64 holds every value of torch's real dtypes up to float32 exactly;
    # the core rounds the scales to float32 once, as for a NumPy scale
    return scale.detach().to(device="cpu", dtype=torch.float64).numpy()


def _tensor(arr):
    """A tensor sharing the memory of the core's result arr (float8 e4m3fn
    and bfloat16 travel as same-sized integers)."""
    if arr.dtype == _CODE_DTYPES[torch.float8_e4m3fn]:
        return torch.from_numpy(arr.view(np.uint8)).view(torch.float8_e4m3fn)
    if arr.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(arr)


def _kernel(kind, input, residual, normalized_shape, weight, bias, eps, dim, dtype, group_size,
            scale):  # fmt: skip
    """The NumPy function's results on the tensors' memory, as tensors."""
    x = _array(input, "input")
    if residual is not None and residual.dtype != input.dtype:
        raise TypeError(
            f"residual has dtype {residual.dtype} but input has dtype {input.dtype}: the "
            "quantized add_ norms take both in one dtype"
        )
    if isinstance(normalized_shape, (list, torch.Size)):  # (the ops' int lists)
        normalized_shape = tuple(normalized_shape)
    # the normalized dims by torch's rule (fastnorm.torch's, with dim=), as axes
    axes = _core.torch_dims(input.shape, normalized_shape, dim)
    args = dict(
        axis=axes, dtype=_CODE_DTYPES[dtype], group_size=group_size, scale=_scale_array(scale)
    )
    w, b, r = _array(weight, "weight"), _array(bias, "bias"), _array(residual, "residual")
    result: tuple  # (q, scale) or (q, scale, h); the dims are passed as axes
    if kind == "rms":
        if r is None:
            result = _quantized.rms_norm_quant(x, None, w, eps, **args)
        else:
            result = _quantized.add_rms_norm_quant(x, r, None, w, eps, **args)
    elif r is None:
        result = _quantized.layer_norm_quant(x, None, w, b, eps, **args)
    else:
        result = _quantized.add_layer_norm_quant(x, r, None, w, b, eps, **args)
    # (C order, as the fake implementations promise; the core returns it so)
    return tuple(_tensor(a).contiguous() for a in result)


# ---- the public functions ------------------------------------------------------------------


def _call(kind, add, input, residual, normalized_shape, weight, bias, eps, dim, dtype, group_size,
          scale):  # fmt: skip
    tensors = {"input": input, "residual": residual, "weight": weight, "bias": bias}
    if not add:
        del tensors["residual"]
    if kind == "rms":
        del tensors["bias"]
    _check_arguments(tensors, dtype)
    scale = _scale_tensor(scale)
    if _use_ops(input):
        shape, dims = op_args(input, normalized_shape, dim)
        ops = torch.ops.fastnorm
        if kind == "rms" and residual is None:
            return ops.rms_norm_quant(input, shape, weight, eps, dims, dtype, group_size, scale)
        if kind == "rms":
            return ops.add_rms_norm_quant(
                input, residual, shape, weight, eps, dims, dtype, group_size, scale
            )
        if residual is None:
            return ops.layer_norm_quant(
                input, shape, weight, bias, eps, dims, dtype, group_size, scale
            )
        return ops.add_layer_norm_quant(
            input, residual, shape, weight, bias, eps, dims, dtype, group_size, scale
        )
    return _kernel(
        kind, input, residual, normalized_shape, weight, bias, eps, dim, dtype, group_size, scale
    )


def rms_norm_quant(
    input,
    normalized_shape,
    weight=None,
    eps=None,
    *,
    dim=None,
    dtype=torch.int8,
    group_size=None,
    scale=None,
):
    """``fastnorm.rms_norm_quant`` on tensors: RMS norm and symmetric quantization.

    Parameters
    ----------
    input : torch.Tensor
        A CPU tensor of float32, float64, float16 or bfloat16.
    normalized_shape : int or tuple of int
        As in `fastnorm.torch.rms_norm` (with `dim`, the sizes of those dims, or None).
    weight : torch.Tensor, optional
        Of the normalized shape.
    eps : float, optional
        None: the compute dtype's epsilon, as in `fastnorm.torch.rms_norm`.
    dim : int or tuple of int, optional
        The normalized dims when they are not trailing.
    dtype : torch.dtype, default torch.int8
        ``torch.int8`` or ``torch.float8_e4m3fn``.
    group_size : int, optional
        One scale per `group_size` consecutive elements of the last
        normalized dim, instead of one per row.
    scale : float or torch.Tensor, optional
        Static scales (a number, or a tensor broadcasting to the scales' shape).

    Returns
    -------
    q : torch.Tensor
        input's shape, `dtype`.
    scale : torch.Tensor
        float32: input's shape without the normalized dims, plus a trailing
        dim of ``n // group_size`` when grouped.

    Notes
    -----
    Bit for bit `fastnorm.rms_norm_quant` on the same data: the norm in
    float32 (float64 for float64 input), then ``scale = max(amax / qmax,
    2**-126)`` and ``q = saturate(rint(y * (1 / scale)))``.  For inference:
    an argument that requires grad while grad mode is on is a RuntimeError.
    """
    return _call("rms", False, input, None, normalized_shape, weight, None, eps, dim, dtype,
                 group_size, scale)  # fmt: skip


def layer_norm_quant(
    input,
    normalized_shape,
    weight=None,
    bias=None,
    eps=1e-5,
    *,
    dim=None,
    dtype=torch.int8,
    group_size=None,
    scale=None,
):
    """``fastnorm.layer_norm_quant`` on tensors: layer norm and quantization.

    Arguments and results as in `rms_norm_quant`, with ``bias`` and
    ``eps=1e-5`` as in `fastnorm.torch.layer_norm`.
    """
    return _call("ln", False, input, None, normalized_shape, weight, bias, eps, dim, dtype,
                 group_size, scale)  # fmt: skip


def add_rms_norm_quant(
    input,
    residual,
    normalized_shape,
    weight=None,
    eps=None,
    *,
    dim=None,
    dtype=torch.int8,
    group_size=None,
    scale=None,
):
    """``h = input + residual``, then `rms_norm_quant` of h: returns ``(q, scale, h)``.

    residual must have input's shape and dtype; h has them too and is bit
    for bit `fastnorm.torch.add_rms_norm`'s h.  Otherwise as `rms_norm_quant`.
    """
    return _call("rms", True, input, residual, normalized_shape, weight, None, eps, dim, dtype,
                 group_size, scale)  # fmt: skip


def add_layer_norm_quant(
    input,
    residual,
    normalized_shape,
    weight=None,
    bias=None,
    eps=1e-5,
    *,
    dim=None,
    dtype=torch.int8,
    group_size=None,
    scale=None,
):
    """``h = input + residual``, then `layer_norm_quant` of h: returns ``(q, scale, h)``.

    See `add_rms_norm_quant` and `layer_norm_quant`.
    """
    return _call("ln", True, input, residual, normalized_shape, weight, bias, eps, dim, dtype,
                 group_size, scale)  # fmt: skip


# ---- the ops ---------------------------------------------------------------------------------


def _rms_norm_quant_impl(input, normalized_shape, weight, eps, dim, dtype, group_size, scale):
    return _kernel("rms", input, None, normalized_shape, weight, None, eps, dim, dtype,
                   group_size, scale)  # fmt: skip


def _layer_norm_quant_impl(
    input, normalized_shape, weight, bias, eps, dim, dtype, group_size, scale
):
    return _kernel("ln", input, None, normalized_shape, weight, bias, eps, dim, dtype,
                   group_size, scale)  # fmt: skip


def _add_rms_norm_quant_impl(
    input, residual, normalized_shape, weight, eps, dim, dtype, group_size, scale
):
    return _kernel("rms", input, residual, normalized_shape, weight, None, eps, dim, dtype,
                   group_size, scale)  # fmt: skip


def _add_layer_norm_quant_impl(
    input, residual, normalized_shape, weight, bias, eps, dim, dtype, group_size, scale
):
    return _kernel("ln", input, residual, normalized_shape, weight, bias, eps, dim, dtype,
                   group_size, scale)  # fmt: skip


def _fake(input, residual, normalized_shape, dim, dtype, group_size):
    """Fresh C-order outputs: q (input's shape, dtype), the float32 scales
    (the batch dims, + n // group_size when grouped) and h (input's)."""
    dims = _core.torch_dims(input.shape, normalized_shape, dim)
    if residual is not None and (residual.shape != input.shape or residual.dtype != input.dtype):
        raise ValueError(
            f"residual has shape {tuple(residual.shape)} and dtype {residual.dtype} but input "
            f"has shape {tuple(input.shape)} and dtype {input.dtype}"
        )
    batch = [n for d, n in enumerate(input.shape) if d not in dims]
    if group_size is not None:
        n = 1
        for d in dims:
            n = n * input.shape[d]
        batch.append(n // group_size)
    q = torch.empty(input.shape, dtype=dtype, device=input.device)
    s = torch.empty(batch, dtype=torch.float32, device=input.device)
    if residual is None:
        return q, s
    return q, s, torch.empty(input.shape, dtype=input.dtype, device=input.device)


def _rms_norm_quant_fake(input, normalized_shape, weight, eps, dim, dtype, group_size, scale):
    return _fake(input, None, normalized_shape, dim, dtype, group_size)


def _layer_norm_quant_fake(
    input, normalized_shape, weight, bias, eps, dim, dtype, group_size, scale
):
    return _fake(input, None, normalized_shape, dim, dtype, group_size)


def _add_rms_norm_quant_fake(
    input, residual, normalized_shape, weight, eps, dim, dtype, group_size, scale
):
    return _fake(input, residual, normalized_shape, dim, dtype, group_size)


def _add_layer_norm_quant_fake(
    input, residual, normalized_shape, weight, bias, eps, dim, dtype, group_size, scale
):
    return _fake(input, residual, normalized_shape, dim, dtype, group_size)


_TAIL = "int[]? dim, ScalarType dtype, int? group_size, Tensor? scale)"
_SCHEMAS = {
    "rms_norm_quant": "(Tensor input, SymInt[] normalized_shape, Tensor? weight, float? eps, "
    + _TAIL
    + " -> (Tensor, Tensor)",
    "layer_norm_quant": "(Tensor input, SymInt[] normalized_shape, Tensor? weight, "
    "Tensor? bias, float? eps, " + _TAIL + " -> (Tensor, Tensor)",
    "add_rms_norm_quant": "(Tensor input, Tensor residual, SymInt[] normalized_shape, "
    "Tensor? weight, float? eps, " + _TAIL + " -> (Tensor, Tensor, Tensor)",
    "add_layer_norm_quant": "(Tensor input, Tensor residual, SymInt[] normalized_shape, "
    "Tensor? weight, Tensor? bias, float? eps, " + _TAIL + " -> (Tensor, Tensor, Tensor)",
}
# (a fragment: fastnorm/torch/_ops.py defines the namespace)
_lib = torch.library.Library("fastnorm", "FRAGMENT")
for _name, _schema in _SCHEMAS.items():
    _lib.define(_name + _schema)
    _lib.impl(_name, globals()[f"_{_name}_impl"], "CompositeExplicitAutograd")
    torch.library.register_fake("fastnorm::" + _name, globals()[f"_{_name}_fake"], lib=_lib)
del _name, _schema
