"""fastnorm.torch's public functions and modules: torch.nn.functional's
arguments (and ``dim=``), torch.nn's modules.  Each call tries the core's
pointer path first; every call it does not take goes the general way
(``_general``): argument errors, autograd, NumPy views, and torch's own ops
or the custom ops for other devices, dtypes and tracing."""

import torch

from .. import _core
from . import _ops
from ._autograd import _AddNormFunction, _NormFunction
from ._fallback import torch_norm
from ._tensors import (
    _AUTOGRAD,
    _LN,
    _RMS,
    _TORCH,
    _check_residual,
    _check_tensor,
    _dims,
    _direct,
    _is_compiling,
    _kernel_forward,
    _route,
    op_args,
    rms_eps,
)


def _torch_norm(kind, input, normalized_shape, dim, weight, bias, eps):
    """torch's own norm (or, while tracing and for meta or fake tensors, the
    fastnorm ops)."""
    if _ops.use_ops(input, weight, bias):  # compiling, exporting, meta or fake tensors
        return _ops.norm(kind, input, normalized_shape, dim, weight, bias, eps)
    shape, dims = op_args(input, normalized_shape, dim)
    return torch_norm(kind, input, shape, weight, bias, eps, dims)


def _check_types(**tensors):
    """TypeError for anything but a tensor (or None where optional): the
    general path's first check (the pointer path declines such calls)."""
    for name, value in tensors.items():
        _check_tensor(value, name, optional=name not in ("input", "residual"))


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, *, dim=None):
    """Layer norm with torch.nn.functional.layer_norm's arguments, on fastnorm's kernels.

    ``dim`` (an int or a tuple) names the normalized dims when they are not
    trailing, as fastnorm's ``axis=``: ``dim=1`` on NCHW is the channels-first
    LayerNorm, computed without a permute.  With ``dim``, ``normalized_shape``
    gives the sizes of those dims (in increasing dim order) or is None.
    """
    if not _is_compiling():
        y = _direct(_LN, input, normalized_shape, weight, bias, eps, dim, None, True, False)
        if y is not None:
            return y
    return _general(_LN, False, input, None, normalized_shape, weight, bias, eps, dim)


def rms_norm(input, normalized_shape, weight=None, eps=None, *, dim=None):
    """RMS norm with torch.nn.functional.rms_norm's arguments, on fastnorm's kernels.

    ``eps=None`` is the compute dtype's epsilon (float32's for float16,
    bfloat16 and float32 inputs, float64's for float64), as in torch.
    ``dim`` as in `layer_norm`.
    """
    if not _is_compiling():
        y = _direct(_RMS, input, normalized_shape, weight, None, eps, dim, None, True, False)
        if y is not None:
            return y
    return _general(_RMS, False, input, None, normalized_shape, weight, None, eps, dim)


def add_layer_norm(
    input, residual, normalized_shape, weight=None, bias=None, eps=1e-5, *, dim=None
):
    """``h = input + residual; y = layer_norm(h, ...)`` in one pass; returns ``(y, h)``.

    residual must have input's shape.  When its dtype differs, torch's own
    ``input + residual`` (with its type promotion) and norm run instead.
    """
    if residual is not None and not _is_compiling():  # (None means no add to _direct)
        out = _direct(_LN, input, normalized_shape, weight, bias, eps, dim, residual, True, False)
        if out is not None:
            return out
    return _general(_LN, True, input, residual, normalized_shape, weight, bias, eps, dim)


def add_rms_norm(input, residual, normalized_shape, weight=None, eps=None, *, dim=None):
    """``h = input + residual; y = rms_norm(h, ...)`` in one pass; returns ``(y, h)``.

    See `add_layer_norm` and `rms_norm`.
    """
    if residual is not None and not _is_compiling():
        out = _direct(_RMS, input, normalized_shape, weight, None, eps, dim, residual, True, False)
        if out is not None:
            return out
    return _general(_RMS, True, input, residual, normalized_shape, weight, None, eps, dim)


def _general(op, add, input, residual, normalized_shape, weight, bias, eps, dim):
    """Every call the pointer path did not take: argument errors, autograd,
    layouts it does not plan (NumPy views then), and torch's own ops for
    other devices, dtypes and tracing."""
    try:
        _check_types(input=input, weight=weight, bias=bias)
        if add:
            _check_residual(input, residual)
    except TypeError:  # (checked here, off the hot path) torch.fx's stand-ins for tensors
        if any(isinstance(t, _Proxy) for t in (input, residual, weight, bias)):
            return _fx_call(op, add, input, residual, normalized_shape, weight, bias, eps, dim)
        raise
    if isinstance(eps, torch.Tensor):
        eps = _eps_number(eps)
    route = _route(input, residual, weight, bias)
    if residual is not None and residual.dtype != input.dtype:
        route = _TORCH  # torch's type promotion decides h's dtype
    if route == _AUTOGRAD:  # (the Function resolves the dims itself, only if it must)
        if residual is None:
            return _NormFunction.apply(op, input, weight, bias, normalized_shape, dim, eps)
        return _AddNormFunction.apply(op, input, residual, weight, bias, normalized_shape, dim, eps)
    if eps is None and op == _LN:
        eps = _core.LAYER_NORM_EPS
    kind = "ln" if op == _LN else "rms"
    if route == _TORCH:
        # fastnorm's errors, as on its kernels, where the sizes are plain
        # values: not while dynamo traces (it cannot call the core; the ops
        # check while tracing) or torch.jit.trace does (its sizes are traced
        # values), nor for a nested tensor (it has none): torch's op checks
        if not (_is_compiling() or torch.jit.is_tracing() or input.is_nested):
            _dims(input, normalized_shape, dim)
        if (
            add and residual.dtype == input.dtype and _ops.use_ops(input, residual, weight, bias)
        ):  # compiling, meta, fake
            return _ops.add_norm(
                kind,
                input,
                residual,
                normalized_shape,
                dim,
                weight,
                bias,
                rms_eps(input.dtype, eps) if op == _RMS else eps,
            )
        h = input if residual is None else input + residual  # torch's type promotion
        if op == _RMS:
            eps = rms_eps(h.dtype, eps)  # of the dtype h has
        y = _torch_norm(kind, h, normalized_shape, dim, weight, bias, eps)
        return y if residual is None else (y, h)
    out = _kernel_forward(op, input, residual, normalized_shape, weight, bias, eps, dim, False)
    return out[0] if residual is None else out


_PUBLIC = {
    (_LN, False): layer_norm,
    (_RMS, False): rms_norm,
    (_LN, True): add_layer_norm,
    (_RMS, True): add_rms_norm,
}
_Proxy = torch.fx.Proxy


def _fx_call(op, add, input, residual, normalized_shape, weight, bias, eps, dim):
    """Under torch.fx symbolic tracing: the call recorded as one node that
    calls this function again when the graph runs (as torch.fx.wrap
    records a function), so the graph runs fastnorm's kernels.  The fused
    add's node gives (y, h): it is returned as a pair of proxies, so that
    ``y, h = add_layer_norm(...)`` unpacks while tracing."""
    args = (input,) + ((residual,) if add else ()) + (normalized_shape, weight)
    args += ((bias,) if op == _LN else ()) + (eps,)
    tracer = next(t.tracer for t in (input, residual, weight, bias) if isinstance(t, _Proxy))
    node = tracer.create_proxy("call_function", _PUBLIC[op, add], args, {"dim": dim})
    return (node[0], node[1]) if add else node


def _eps_number(eps):
    """A 0-d real tensor eps as the number it holds (torch's functions take it)."""
    if eps.dim() != 0 or eps.dtype.is_complex or eps.dtype == torch.bool:
        raise TypeError(
            f"eps must be a real number or a 0-d real tensor, "
            f"got a {eps.dtype} tensor of shape {tuple(eps.shape)}"
        )
    return eps.item()


# ---- modules ----------------------------------------------------------------------


def _param(module, params, name):
    """module.<name>: read from its _parameters when it is there, which skips
    nn.Module.__getattr__ (half a microsecond, a tenth of a small call); a
    parametrized weight is not there and goes through its property."""
    return params[name] if name in params else getattr(module, name)


class LayerNorm(torch.nn.LayerNorm):
    """torch.nn.LayerNorm (same constructor, parameters, state_dict keys and
    repr) whose forward runs `layer_norm` on fastnorm's kernels."""

    def forward(self, input):
        p = self._parameters
        return layer_norm(
            input,
            self.normalized_shape,
            _param(self, p, "weight"),
            _param(self, p, "bias"),
            self.eps,
        )


class RMSNorm(torch.nn.RMSNorm):
    """torch.nn.RMSNorm whose forward runs `rms_norm` on fastnorm's kernels."""

    def forward(self, input):
        return rms_norm(
            input, self.normalized_shape, _param(self, self._parameters, "weight"), self.eps
        )
