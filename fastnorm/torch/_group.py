"""GroupNorm for PyTorch: `group_norm`, matching
``torch.nn.functional.group_norm``, with autograd through fastnorm's
backward; the torch.library ops ``torch.ops.fastnorm.group_norm`` and
``group_norm_backward`` with fake implementations (so that torch.compile,
fullgraph too, keeps fastnorm's kernels in both directions); and the module
`GroupNorm`, a subclass of ``torch.nn.GroupNorm``.

Tensors in ``torch.channels_last`` (or ``channels_last_3d``) memory format are
read as they are, through their (N, *spatial, C) view, with no copy, and the
result keeps the input's memory format, as torch's own op does.  CPU tensors
of fastnorm's dtypes run fastnorm's kernels; anything else runs torch's own
``F.group_norm``."""

from typing import Optional

import torch
import torch.nn.functional as F

from .. import _core
from ._tensors import KERNEL_DTYPES, _np

_DOUBLE_BACKWARD = "fastnorm.torch: double backward is not supported"


def _kernel_ok(*tensors):
    return all(t is None or (t.device.type == "cpu" and t.dtype in KERNEL_DTYPES) for t in tensors)


def _channels_last_view(t):
    """t's (N, *spatial, C) view when t is channels-last in memory (and not
    also C-contiguous), else None."""
    if t.dim() < 3 or t.is_contiguous():
        return None
    view = t.movedim(1, -1)
    return view if view.is_contiguous() else None


def _layout(t):
    """(the tensor the kernels read, its channel_axis)."""
    view = _channels_last_view(t)
    return (view, -1) if view is not None else (t, 1)


def _param_np(t, dtype):
    if t is None:
        return None
    t = t.detach()
    want = torch.float64 if dtype == torch.float64 else torch.float32
    return _np(t.to(want).contiguous())


def _empty_like_layout(input):
    view = _channels_last_view(input)
    if view is not None:
        return torch.empty_like(input, memory_format=torch.preserve_format)
    return torch.empty(input.shape, dtype=input.dtype, device=input.device)


def _forward_impl(input, num_groups, weight, bias, eps):
    if not _kernel_ok(input, weight, bias) or input.dim() < 2:
        return F.group_norm(input, num_groups, weight, bias, eps)
    x = input.detach()
    src, axis = _layout(x)
    y = _empty_like_layout(x)
    dst, _ = _layout(y) if axis == -1 else (y, 1)
    _core.group_norm(
        _np(src),
        num_groups,
        _param_np(weight, x.dtype),
        _param_np(bias, x.dtype),
        eps,
        axis,
        _np(dst),
        False,
    )
    return y


def _backward_impl(grad, input, num_groups, weight, eps):
    x = input.detach()
    g = grad.detach()
    src, axis = _layout(x)
    gsrc = g.movedim(1, -1).contiguous() if axis == -1 else g.contiguous()
    dx, dw, db = _core.group_norm_backward(
        _np(gsrc), _np(src), num_groups, _param_np(weight, x.dtype), None, None, eps, axis
    )
    dx_t = _from_numpy(dx)
    if axis == -1:
        dx_t = dx_t.movedim(-1, 1)  # the input's channels-last layout
    stat = torch.float64 if x.dtype == torch.float64 else torch.float32
    dw_t = _from_numpy(dw) if dw is not None else torch.zeros(0, dtype=stat)
    db_t = _from_numpy(db)
    return dx_t, dw_t, db_t


def _from_numpy(arr):
    from ._tensors import _from_np

    return _from_np(arr)


@torch.library.custom_op("fastnorm::group_norm", mutates_args=())
def group_norm_op(
    input: torch.Tensor,
    num_groups: int,
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    eps: float,
) -> torch.Tensor:
    return _forward_impl(input, num_groups, weight, bias, eps)


@group_norm_op.register_fake
def _(input, num_groups, weight, bias, eps):
    if input.dim() >= 2 and input.shape[1] % num_groups:
        raise ValueError(
            f"the number of channels, {input.shape[1]}, is not divisible by num_groups={num_groups}"
        )
    return torch.empty_like(input, memory_format=torch.preserve_format)


@torch.library.custom_op("fastnorm::group_norm_backward", mutates_args=())
def group_norm_backward_op(
    grad: torch.Tensor,
    input: torch.Tensor,
    num_groups: int,
    weight: Optional[torch.Tensor],
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not _kernel_ok(grad, input, weight) or input.dim() < 2:
        with torch.enable_grad():
            xi = input.detach().requires_grad_(True)
            wi = None if weight is None else weight.detach().requires_grad_(True)
            out = F.group_norm(xi, num_groups, wi, None, eps)
            grads = torch.autograd.grad(out, [xi] + ([wi] if wi is not None else []), grad)
        dw = grads[1] if weight is not None else input.new_zeros(0)
        db = grad.sum(dim=[d for d in range(grad.dim()) if d != 1])
        return grads[0], dw, db
    return _backward_impl(grad, input, num_groups, weight, eps)


@group_norm_backward_op.register_fake
def _(grad, input, num_groups, weight, eps):
    stat = torch.float64 if input.dtype == torch.float64 else torch.float32
    channels = input.shape[1]
    dw = input.new_empty((channels if weight is not None else 0,), dtype=stat)
    return (
        torch.empty_like(input, memory_format=torch.preserve_format),
        dw,
        input.new_empty((channels,), dtype=stat),
    )


def _setup_context(ctx, inputs, output):
    input, num_groups, weight, bias, eps = inputs
    ctx.save_for_backward(input, weight)
    ctx.num_groups, ctx.eps = num_groups, eps
    ctx.has_bias = bias is not None


def _backward(ctx, grad):
    input, weight = ctx.saved_tensors
    dx, dw, db = group_norm_backward_op(grad, input, ctx.num_groups, weight, ctx.eps)
    dw_out = dw.to(weight.dtype) if weight is not None else None
    db_out = db.to(weight.dtype if weight is not None else input.dtype) if ctx.has_bias else None
    return dx, None, dw_out, db_out, None


torch.library.register_autograd("fastnorm::group_norm", _backward, setup_context=_setup_context)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """``torch.nn.functional.group_norm`` on fastnorm's kernels.

    Parameters
    ----------
    input : torch.Tensor
        (N, C, *spatial); a tensor in ``torch.channels_last`` memory format is
        read in place, and the result has the input's memory format.
    num_groups : int
        Divides C.
    weight, bias : torch.Tensor, optional
        Shape (C,).
    eps : float, default 1e-5

    Returns
    -------
    torch.Tensor
        input's shape, dtype and memory format.  Differentiable (once) with
        respect to input, weight and bias, through `fastnorm.group_norm_backward`.
    """
    return group_norm_op(input, int(num_groups), weight, bias, float(eps))


class GroupNorm(torch.nn.GroupNorm):
    """torch.nn.GroupNorm (same constructor, parameters, state_dict keys and
    repr) whose forward runs `group_norm` on fastnorm's kernels."""

    def forward(self, input):
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps)
