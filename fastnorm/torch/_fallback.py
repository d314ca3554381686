"""torch's own norms, for what fastnorm's kernels do not take: other
devices and dtypes, and (as the backward op's fallback) gradients written
out with torch's ops.  Outputs are in the input's dtype and C order, as the
custom ops' fake implementations promise.  Imports torch only."""

import torch
import torch.nn.functional as F


def _c_order(t):
    return t if t.is_contiguous() else t.contiguous()


def _moved(input, dim):
    """input with the dims in dim moved to the end (a view), and the moved-to dims."""
    tail = tuple(range(input.dim() - len(dim), input.dim()))
    return input.movedim(tuple(dim), tail), tail


def _torch_forward(kind, input, normalized_shape, weight, bias, eps):
    """torch's norm over input's trailing dims."""
    ns = tuple(normalized_shape)
    if kind == "ln":
        y = F.layer_norm(input, ns, weight, bias, eps)
    else:
        y = F.rms_norm(input, ns, weight, eps)
    return y


def torch_norm(kind, input, normalized_shape, weight, bias, eps, dim):
    """torch's norm over the trailing dims or dim, in input's dtype and C order
    (what the fake implementations promise)."""
    if dim is not None:
        moved, tail = _moved(input, dim)
        y = _torch_forward(kind, moved, normalized_shape, weight, bias, eps).movedim(tail, dim)
    else:
        y = _torch_forward(kind, input, normalized_shape, weight, bias, eps)
    return _c_order(y.to(input.dtype))


def _torch_backward(kind, grad, input, normalized_shape, weight, bias, eps, dim):
    """The gradients of `torch_norm` written out with torch's ops (the backward
    op's fallback; autograd is not available below the op's autograd key).
    Computed in float32 for half inputs, float64 for float64; parameter sums
    in float64."""
    if dim is not None:
        grad, _ = _moved(grad, dim)
        x, tail = _moved(input, dim)
    else:
        x, tail = input, None
    compute = torch.float64 if input.dtype == torch.float64 else torch.float32
    n = len(tuple(normalized_shape))
    red = tuple(range(x.dim() - n, x.dim()))
    xc, gc = x.to(compute), grad.to(compute)
    if kind == "ln":
        mean = xc.mean(red, keepdim=True)
        xc = xc - mean
        rstd = torch.rsqrt((xc * xc).mean(red, keepdim=True) + eps)
    else:
        rstd = torch.rsqrt((xc * xc).mean(red, keepdim=True) + eps)
    xhat = xc * rstd
    dxhat = gc if weight is None else gc * weight.to(compute)
    proj = (dxhat * xhat).mean(red, keepdim=True)
    if kind == "ln":
        dx = rstd * (dxhat - dxhat.mean(red, keepdim=True) - xhat * proj)
    else:
        dx = rstd * (dxhat - xhat * proj)
    if tail is not None:
        dx = dx.movedim(tail, dim)
    grads = [_c_order(dx.to(input.dtype))]
    batch = tuple(range(x.dim() - n))
    if weight is not None:
        dw = (gc.double() * xhat.double()).sum(batch) if batch else gc.double() * xhat.double()
        grads.append(dw.reshape(weight.shape).to(weight.dtype).contiguous())
    if bias is not None:
        db = gc.double().sum(batch) if batch else gc.double()
        grads.append(db.reshape(bias.shape).to(bias.dtype).contiguous())
    return grads
