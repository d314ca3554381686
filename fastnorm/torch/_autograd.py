"""fastnorm.torch's eager autograd: torch.autograd.Functions whose forward
and backward are fastnorm's kernels (the pointer path when it takes the
call, as the no-grad path does, else NumPy views through fastnorm._api).
The forward keeps its statistics (as NumPy arrays) for the backward, which
runs once: double backward raises."""

import torch
from torch.autograd.function import once_differentiable

from ._tensors import _kernel_backward, _kernel_forward, _param_grad


def _forward_with_stats(ctx, op, input, residual, weight, bias, normalized_shape, dim, eps):
    """(y,) or (y, h), with what _backward needs saved on ctx."""
    ctx.op, ctx.normalized_shape, ctx.dim, ctx.eps = op, normalized_shape, dim, eps
    ctx.weight_dtype = None if weight is None else weight.dtype
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.bias_shape = None if bias is None else tuple(bias.shape)
    out = _kernel_forward(op, input, residual, normalized_shape, weight, bias, eps, dim, True)
    ctx.rstd = out[-1]
    return out[:1] if residual is None else out[:2]


def _backward(ctx, dy, x, weight, need_weight, need_bias):
    """(dx, dweight, dbias) tensors for the saved forward at dy."""
    dx, dw, db = _kernel_backward(
        ctx.op,
        dy,
        x,
        weight,
        ctx.rstd,
        ctx.eps,
        ctx.normalized_shape,
        ctx.dim,
        need_weight,
        ctx.bias_shape if need_bias else None,
    )
    return (
        dx,
        _param_grad(dw, ctx.weight_dtype, need_weight),
        _param_grad(db, ctx.bias_dtype, db is not None),
    )


class _NormFunction(torch.autograd.Function):
    """y = norm(input) * weight (+ bias), with fastnorm's forward and backward."""

    @staticmethod
    def forward(ctx, op, input, weight, bias, normalized_shape, dim, eps):
        (y,) = _forward_with_stats(ctx, op, input, None, weight, bias, normalized_shape, dim, eps)
        ctx.save_for_backward(input, weight)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        dx, dw, db = _backward(ctx, dy, x, weight, need[2], need[3])
        return None, dx if need[1] else None, dw, db, None, None, None


class _AddNormFunction(torch.autograd.Function):
    """h = input + residual; y = norm(h) * weight (+ bias); returns (y, h)."""

    @staticmethod
    def forward(ctx, op, input, residual, weight, bias, normalized_shape, dim, eps):
        ctx.set_materialize_grads(False)
        y, h = _forward_with_stats(
            ctx, op, input, residual, weight, bias, normalized_shape, dim, eps
        )
        ctx.save_for_backward(h, weight)
        return y, h

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh):
        h, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        if dy is not None:
            dx, dw, db = _backward(ctx, dy, h, weight, need[3], need[4])
            if dh is not None:
                dx.add_(dh)
        else:  # only h was used downstream
            dx, dw, db = dh, None, None
        d_input = dx if need[1] else None
        d_residual = None
        if need[2] and dx is not None:
            d_residual = dx.clone() if need[1] else dx  # never one tensor for two grads
        return None, d_input, d_residual, dw, db, None, None, None
