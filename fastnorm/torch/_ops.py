"""fastnorm's norms as torch.library custom ops, for torch.compile and torch.export.

Registers, in the namespace ``fastnorm``::

    torch.ops.fastnorm.layer_norm(input, normalized_shape, weight, bias, eps, dim) -> y
    torch.ops.fastnorm.rms_norm(input, normalized_shape, weight, eps, dim) -> y
    torch.ops.fastnorm.add_layer_norm(input, residual, normalized_shape, weight, bias, eps,
                                      dim) -> (y, h)
    torch.ops.fastnorm.add_rms_norm(input, residual, normalized_shape, weight, eps, dim)
        -> (y, h)
    torch.ops.fastnorm.layer_norm_backward(grad, input, normalized_shape, weight, bias, eps,
                                           dim) -> [dinput, dweight?, dbias?]
    torch.ops.fastnorm.rms_norm_backward(grad, input, normalized_shape, weight, eps, dim)
        -> [dinput, dweight?]

each with a fake (meta) implementation and, for the forward ops, a registered
autograd formula whose backward is the backward op: a compiled or exported
graph holds fastnorm's kernels in both directions.  ``dim`` names non-trailing
normalized dims (as ``fastnorm.torch``'s ``dim=``, sorted, non-negative);
``normalized_shape`` is then their sizes.

Design notes
------------
* The forward ops return only y (and h), as torch's functional ops do, and the
  backward recomputes the statistics from the saved input.  fastnorm's
  backward takes the mean from the input in its single pass whether or not it
  is given one, and the variance comes from the same pass, so recomputing
  costs no extra pass over memory (measured: no difference beyond noise at
  (8, 768) or (4096, 4096)); returning the stats would put two extra outputs
  in every graph and give gradients that differ from these by about 1 ulp
  anyway.
* Outputs are always fresh C-order tensors (what the fake implementations
  promise; inductor relies on the promised strides).
* CPU tensors of fastnorm's dtypes run fastnorm's kernels; anything else (other
  devices, other dtypes, a residual of another dtype) runs torch's own ops, so
  an exported program still runs after ``.to("cuda")``.
* The eager functions in ``fastnorm.torch`` do not call these ops: the
  dispatcher costs more than the kernel at small sizes.  They call them only
  when torch.compile or torch.export is tracing, or for meta/fake tensors.

This module imports torch and is imported by ``fastnorm.torch`` only.
"""

import torch

from .. import _core
from ._fallback import _c_order, _torch_backward, torch_norm
from ._tensors import (
    _LN,
    _RMS,
    KERNEL_DTYPES,
    _kernel_backward,
    _kernel_forward,
    _param_grad,
    op_args,
    rms_eps,
)

_DOUBLE_BACKWARD = "fastnorm.torch: double backward is not supported"


def _kernel_ok(*tensors):
    """True when fastnorm's kernels take every tensor given (None skipped)."""
    for t in tensors:
        if t is not None and (t.device.type != "cpu" or t.dtype not in KERNEL_DTYPES):
            return False
    return True


def _check_shape(input, normalized_shape, dim):
    """normalized_shape and dim by the core's rule for the normalized dims
    (run by the fake implementations too, so a bad call fails while
    tracing), and dim as the ops take it: sorted and non-negative."""
    dims = _core.torch_dims(input.shape, normalized_shape, dim)
    if dim is not None and tuple(dim) != dims:
        raise ValueError(
            f"dim {tuple(dim)} must be sorted, distinct dims of a {input.dim()}-d input"
        )


def _new_output(input, dtype=None):
    """A fresh C-order tensor of input's shape: what the fake implementations promise."""
    return torch.empty(
        input.shape, dtype=input.dtype if dtype is None else dtype, device=input.device
    )


# ---- the ops ------------------------------------------------------------------------


def _eager_args(normalized_shape, dim):
    """The ops' int lists as fastnorm.torch's arguments (one dim as an int,
    which its pointer path takes)."""
    if dim is not None:
        dim = dim[0] if len(dim) == 1 else tuple(dim)
    return tuple(normalized_shape), dim


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, dim=None):
    """``F.layer_norm`` over the trailing dims, or over ``dim``, on fastnorm's kernels."""
    _check_shape(input, normalized_shape, dim)
    if not _kernel_ok(input, weight, bias):
        return torch_norm("ln", input, normalized_shape, weight, bias, eps, dim)
    ns, d = _eager_args(normalized_shape, dim)
    return _kernel_forward(_LN, input, None, ns, weight, bias, eps, d, False)[0]


def rms_norm(input, normalized_shape, weight=None, eps=None, dim=None):
    """``F.rms_norm`` over the trailing dims, or over ``dim``, on fastnorm's kernels."""
    _check_shape(input, normalized_shape, dim)
    eps = rms_eps(input.dtype, eps)
    if not _kernel_ok(input, weight):
        return torch_norm("rms", input, normalized_shape, weight, None, eps, dim)
    ns, d = _eager_args(normalized_shape, dim)
    return _kernel_forward(_RMS, input, None, ns, weight, None, eps, d, False)[0]


def _add_norm(kind, input, residual, normalized_shape, weight, bias, eps, dim):
    if residual.shape != input.shape:
        raise ValueError(
            f"residual has shape {tuple(residual.shape)} but input has shape {tuple(input.shape)}"
        )
    _check_shape(input, normalized_shape, dim)
    if kind == "rms":
        eps = rms_eps(torch.promote_types(input.dtype, residual.dtype), eps)
    if residual.dtype != input.dtype or not _kernel_ok(input, residual, weight, bias):
        h = _c_order(input + residual)  # torch's type promotion, as the eager bridge
        return torch_norm(kind, h, normalized_shape, weight, bias, eps, dim), h
    ns, d = _eager_args(normalized_shape, dim)
    op = _LN if kind == "ln" else _RMS
    return _kernel_forward(op, input, residual, ns, weight, bias, eps, d, False)


def add_layer_norm(input, residual, normalized_shape, weight=None, bias=None, eps=1e-5, dim=None):
    """``h = input + residual; y = layer_norm(h)`` in one pass; returns (y, h)."""
    return _add_norm("ln", input, residual, normalized_shape, weight, bias, eps, dim)


def add_rms_norm(input, residual, normalized_shape, weight=None, eps=None, dim=None):
    """``h = input + residual; y = rms_norm(h)`` in one pass; returns (y, h)."""
    return _add_norm("rms", input, residual, normalized_shape, weight, None, eps, dim)


def _backward_impl(kind, grad, input, normalized_shape, weight, bias, eps, dim):
    """[dinput, dweight (if weight), dbias (if bias)]: the statistics are
    recomputed from input with eps; dweight and dbias are summed in float64
    and returned in the parameter's dtype."""
    _check_shape(input, normalized_shape, dim)
    if grad.dtype != input.dtype or not _kernel_ok(grad, input, weight, bias):
        return _torch_backward(kind, grad, input, normalized_shape, weight, bias, eps, dim)
    ns, d = _eager_args(normalized_shape, dim)
    dx, dw, db = _kernel_backward(
        _LN if kind == "ln" else _RMS,
        grad,
        input,
        weight,
        None,
        eps,
        ns,
        d,
        weight is not None,
        None if bias is None else tuple(bias.shape),
    )
    grads = [_c_order(dx)]
    for g, param in ((dw, weight), (db, bias)):
        if param is not None:
            grads.append(_param_grad(g, param.dtype, True))
    return grads


def layer_norm_backward(grad, input, normalized_shape, weight=None, bias=None, eps=1e-5, dim=None):
    """Gradients of `layer_norm` at grad: [dinput, dweight (if weight), dbias (if bias)]."""
    return _backward_impl("ln", grad, input, normalized_shape, weight, bias, eps, dim)


def rms_norm_backward(grad, input, normalized_shape, weight=None, eps=None, dim=None):
    """Gradients of `rms_norm` at grad: [dinput, dweight (if weight)]."""
    return _backward_impl(
        "rms", grad, input, normalized_shape, weight, None, rms_eps(input.dtype, eps), dim
    )


# ---- fake implementations: shapes, dtypes, C order ------------------------------------


def _layer_norm_fake(input, normalized_shape, weight=None, bias=None, eps=1e-5, dim=None):
    _check_shape(input, normalized_shape, dim)
    return _new_output(input)


def _rms_norm_fake(input, normalized_shape, weight=None, eps=None, dim=None):
    _check_shape(input, normalized_shape, dim)
    return _new_output(input)


def _add_fake(input, residual, normalized_shape, dim):
    if residual.shape != input.shape:
        raise ValueError(
            f"residual has shape {tuple(residual.shape)} but input has shape {tuple(input.shape)}"
        )
    _check_shape(input, normalized_shape, dim)
    dtype = torch.promote_types(input.dtype, residual.dtype)
    return _new_output(input, dtype), _new_output(input, dtype)


def _add_layer_norm_fake(
    input, residual, normalized_shape, weight=None, bias=None, eps=1e-5, dim=None
):
    return _add_fake(input, residual, normalized_shape, dim)


def _add_rms_norm_fake(input, residual, normalized_shape, weight=None, eps=None, dim=None):
    return _add_fake(input, residual, normalized_shape, dim)


def _backward_fake(input, normalized_shape, dim, *params):
    _check_shape(input, normalized_shape, dim)
    return [_new_output(input)] + [p.new_empty(p.shape) for p in params if p is not None]


def _layer_norm_backward_fake(
    grad, input, normalized_shape, weight=None, bias=None, eps=1e-5, dim=None
):
    return _backward_fake(input, normalized_shape, dim, weight, bias)


def _rms_norm_backward_fake(grad, input, normalized_shape, weight=None, eps=None, dim=None):
    return _backward_fake(input, normalized_shape, dim, weight)


# ---- autograd -----------------------------------------------------------------------
# The forward ops save (input or h, weight, bias); the bias only for its shape
# and dtype (it is a leaf the graph holds anyway).  Their backward calls the
# backward ops, whose own backward raises: fastnorm has no second derivative.


def _norm_setup(ctx, inputs, output):
    input, normalized_shape, weight = inputs[0], inputs[1], inputs[2]
    bias = inputs[3] if ctx.kind == "ln" else None
    ctx.normalized_shape, ctx.eps, ctx.dim = normalized_shape, inputs[-2], inputs[-1]
    ctx.save_for_backward(input, weight, bias)


def _grads(ctx, dy, x, weight, bias):
    """fastnorm's backward at dy: (dx, dweight, dbias), None where not defined."""
    if ctx.kind == "ln":
        g = torch.ops.fastnorm.layer_norm_backward(
            dy, x, ctx.normalized_shape, weight, bias, ctx.eps, ctx.dim
        )
    else:
        g = torch.ops.fastnorm.rms_norm_backward(
            dy, x, ctx.normalized_shape, weight, ctx.eps, ctx.dim
        )
    dw = g[1] if weight is not None else None
    db = g[-1] if bias is not None else None
    return g[0], dw, db


def _needs(ctx):
    """ctx.needs_input_grad padded to the full argument list: the dispatcher
    drops trailing arguments equal to their defaults (setup_context sees them
    filled in again, needs_input_grad does not)."""
    return tuple(ctx.needs_input_grad) + (False,) * 7


def _norm_backward(ctx, dy):
    x, weight, bias = ctx.saved_tensors
    dx, dw, db = _grads(ctx, dy, x, weight, bias)
    need = _needs(ctx)
    dx = dx if need[0] else None
    dw = dw if need[2] else None
    if ctx.kind == "ln":
        return dx, None, dw, db if need[3] else None, None, None
    return dx, None, dw, None, None


def _add_setup(ctx, inputs, output):
    weight = inputs[3]
    bias = inputs[4] if ctx.kind == "ln" else None
    ctx.normalized_shape, ctx.eps, ctx.dim = inputs[2], inputs[-2], inputs[-1]
    ctx.save_for_backward(output[1], weight, bias)  # h: the norm's input


def _add_backward(ctx, dy, dh):
    h, weight, bias = ctx.saved_tensors
    dx, dw, db = _grads(ctx, dy, h, weight, bias)
    dx = dx + dh  # a fresh tensor, h's gradient flows to both summands
    need = _needs(ctx)
    d_input = dx if need[0] else None
    # never one tensor as the gradient of two inputs (AccumulateGrad may steal it)
    d_residual = (dx.clone() if need[0] else dx) if need[1] else None
    dw = dw if need[3] else None
    if ctx.kind == "ln":
        return d_input, d_residual, None, dw, db if need[4] else None, None, None
    return d_input, d_residual, None, dw, None, None


def _with_kind(setup, kind):
    """setup_context that also stamps ctx.kind for the shared backward."""

    def setup_context(ctx, inputs, output):
        ctx.kind = kind
        setup(ctx, inputs, output)

    return setup_context


def _no_double_backward(ctx, *grads):
    raise RuntimeError(_DOUBLE_BACKWARD)


def _no_setup(ctx, inputs, output):
    pass


# torch.library.define + impl rather than torch.library.custom_op: measured at
# (8, 768) float32 on 1 thread, custom_op's Python wrapper layers cost about
# twice the dispatcher overhead of a plain Python kernel (see the commit
# message), and compiled graphs pay that overhead on every call.
_SCHEMAS = {
    "layer_norm": "(Tensor input, SymInt[] normalized_shape, Tensor? weight=None, "
    "Tensor? bias=None, float eps=1e-05, int[]? dim=None) -> Tensor",
    "rms_norm": "(Tensor input, SymInt[] normalized_shape, Tensor? weight=None, "
    "float? eps=None, int[]? dim=None) -> Tensor",
    "add_layer_norm": "(Tensor input, Tensor residual, SymInt[] normalized_shape, "
    "Tensor? weight=None, Tensor? bias=None, float eps=1e-05, "
    "int[]? dim=None) -> (Tensor, Tensor)",
    "add_rms_norm": "(Tensor input, Tensor residual, SymInt[] normalized_shape, "
    "Tensor? weight=None, float? eps=None, int[]? dim=None) -> (Tensor, Tensor)",
    # [dinput] + [dweight if weight] + [dbias if bias]: an op cannot return
    # None for a tensor, and the list's length follows from the arguments, so
    # the fake implementation can give it.
    "layer_norm_backward": "(Tensor grad, Tensor input, SymInt[] normalized_shape, "
    "Tensor? weight=None, Tensor? bias=None, float eps=1e-05, "
    "int[]? dim=None) -> Tensor[]",
    "rms_norm_backward": "(Tensor grad, Tensor input, SymInt[] normalized_shape, "
    "Tensor? weight=None, float? eps=None, int[]? dim=None) -> Tensor[]",
}
_lib = torch.library.Library("fastnorm", "DEF")  # kept alive: the registrations live with it
_IMPLS = {
    "layer_norm": layer_norm,
    "rms_norm": rms_norm,
    "add_layer_norm": add_layer_norm,
    "add_rms_norm": add_rms_norm,
    "layer_norm_backward": layer_norm_backward,
    "rms_norm_backward": rms_norm_backward,
}
_AUTOGRAD = {
    "layer_norm": (_norm_backward, _with_kind(_norm_setup, "ln")),
    "rms_norm": (_norm_backward, _with_kind(_norm_setup, "rms")),
    "add_layer_norm": (_add_backward, _with_kind(_add_setup, "ln")),
    "add_rms_norm": (_add_backward, _with_kind(_add_setup, "rms")),
    "layer_norm_backward": (_no_double_backward, _no_setup),
    "rms_norm_backward": (_no_double_backward, _no_setup),
}
for _name, _schema in _SCHEMAS.items():
    _lib.define(_name + _schema)
    # One kernel for every device: it runs fastnorm's kernels on CPU tensors of
    # fastnorm's dtypes and torch's ops otherwise.  It is dispatched to below
    # the autograd key, so it runs without recording a graph.  Meta and fake
    # tensors get the fake implementation.
    _lib.impl(_name, _IMPLS[_name], "CompositeExplicitAutograd")
    torch.library.register_fake("fastnorm::" + _name, globals()[f"_{_name}_fake"], lib=_lib)
    _backward, _setup = _AUTOGRAD[_name]
    torch.library.register_autograd("fastnorm::" + _name, _backward, setup_context=_setup, lib=_lib)
del _name, _schema, _backward, _setup


# ---- the entry points fastnorm.torch calls while tracing ------------------------------


def use_ops(*tensors):
    """True when fastnorm.torch's fallback should call these ops rather than
    torch's: while torch.compile/torch.export trace (on CPU, where the ops run
    fastnorm's kernels; elsewhere torch's own ops compile better), and for
    meta and fake tensors (which the fake implementations handle).  Plain
    eager calls on other devices, and tensor subclasses, keep torch's ops.
    So does an ONNX export (torch.onnx.export's exporters trace with
    torch.export): ONNX has no fastnorm ops, and torch's norms become its
    LayerNormalization and RMSNormalization."""
    input = tensors[0]
    if (
        not (
            torch.compiler.is_compiling()
            or input.device.type == "meta"
            or isinstance(input, torch._subclasses.FakeTensor)
        )
        or torch.onnx.is_in_onnx_export()
    ):
        return False
    return all(
        t is None or (t.device.type in ("cpu", "meta") and t.dtype in KERNEL_DTYPES)
        for t in tensors
    )


def norm(kind, input, normalized_shape, dim, weight, bias, eps):
    """fastnorm.torch's norm through the ops."""
    shape, dim = op_args(input, normalized_shape, dim)
    if kind == "ln":
        return torch.ops.fastnorm.layer_norm(input, shape, weight, bias, eps, dim)
    return torch.ops.fastnorm.rms_norm(input, shape, weight, eps, dim)


def add_norm(kind, input, residual, normalized_shape, dim, weight, bias, eps):
    """fastnorm.torch's fused add and norm through the ops: (y, h)."""
    shape, dim = op_args(input, normalized_shape, dim)
    if kind == "ln":
        return torch.ops.fastnorm.add_layer_norm(input, residual, shape, weight, bias, eps, dim)
    return torch.ops.fastnorm.add_rms_norm(input, residual, shape, weight, eps, dim)
