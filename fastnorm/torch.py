"""fastnorm for PyTorch: LayerNorm and RMSNorm on CPU tensors, with autograd.

    import fastnorm.torch as fnt
    y = fnt.layer_norm(x, (768,), weight, bias)          # torch.nn.functional's order
    y = fnt.layer_norm(img, (C,), w, b, dim=1)           # channels-first NCHW, no permute
    y, h = fnt.add_rms_norm(x, residual, (768,), weight) # h = x + residual, y = rms_norm(h)
    names = fnt.patch(model)                             # nn.LayerNorm/nn.RMSNorm -> fastnorm

CPU tensors of float32, float64, float16 and bfloat16, with any strides, are
handed to fastnorm's kernels without a copy (their pointers, sizes and
strides); the outputs are fresh tensors in C order, as torch's own ops return
them.  Anything else (another device, another dtype, tensor subclasses) runs
torch's own op, so a patched model keeps working after ``.to("cuda")``.  Code
traced by ``torch.compile`` or ``torch.export``, and meta and fake tensors, go
through the custom ops ``torch.ops.fastnorm.*`` (see ``fastnorm/_torch_ops.py``).
Where those are invisible or unknown (``torch.jit.trace``, ONNX export), and
for forward-mode AD and nested tensors, torch's own op runs; ``torch.fx``
symbolic tracing records the call itself.

Gradients come from fastnorm's fused backward passes
(`fastnorm.layer_norm_backward`, `fastnorm.rms_norm_backward`), once: double
backward raises.

This module is never imported by ``import fastnorm``.
"""

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "fastnorm.torch needs PyTorch, which is not installed. Install the CPU build "
        "with:  pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
    ) from exc

import numbers
import warnings

import ml_dtypes
import numpy as np
from torch.autograd.function import once_differentiable
from torch.nn.utils import parametrize

from . import _api, _core, _torch_ops

_core.torch_setup(torch)
_direct = _core.torch_forward  # the pointer path: None when it does not take a call
_LN, _RMS = _core.OP_LAYER_NORM, _core.OP_RMS_NORM
__all__ = [
    "layer_norm",
    "rms_norm",
    "add_layer_norm",
    "add_rms_norm",
    "LayerNorm",
    "RMSNorm",
    "patch",
    "unpatch",
]

_BF16 = np.dtype(ml_dtypes.bfloat16)
_KERNEL_DTYPES = _torch_ops.KERNEL_DTYPES
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)
_is_compiling = torch.compiler.is_compiling


# ---- conversions -------------------------------------------------------------


class _ArrayView:
    """Carries an __array_interface__ for np.asarray, and the tensor: the
    array's base is this object, so the array keeps the tensor alive."""

    __slots__ = ("__array_interface__", "tensor")


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
            or t.dtype not in _KERNEL_DTYPES
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


def _rms_eps(input, eps):
    """rms_norm's eps=None: the compute dtype's epsilon, as in torch."""
    return _torch_ops.rms_eps(input.dtype, eps)


# ---- the normalized dimensions -------------------------------------------------


def _shape_tuple(normalized_shape):
    if isinstance(normalized_shape, numbers.Integral) and not isinstance(normalized_shape, bool):
        return (int(normalized_shape),)
    try:
        items = tuple(normalized_shape)
    except TypeError:
        raise TypeError(
            f"normalized_shape must be an int, a tuple of ints or a torch.Size, "
            f"got {normalized_shape!r}"
        ) from None
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in items):
        raise TypeError(
            f"normalized_shape must be an int, a tuple of ints or a torch.Size, "
            f"got {normalized_shape!r}"
        )
    return tuple(int(s) for s in items)


@torch.compiler.assume_constant_result
def _as_dim_tuple(dim):
    """dim by the functional API's axis rule (compiled code, which dynamo
    cannot trace: under torch.compile it runs once, at trace time, on the
    constant dim)."""
    return _core.as_axis_tuple(dim, "dim")


def _dims_tuple(ndim, dim):
    """dim as a sorted tuple of non-negative dimensions (errors as fastnorm's axis=)."""
    raw = _as_dim_tuple(dim)
    if not raw:
        raise ValueError("dim must name at least one dimension, got ()")
    dims = []
    for d in raw:
        if not -ndim <= d < ndim:
            raise _core.AxisError(d, ndim)
        d %= ndim
        if d in dims:
            raise ValueError(f"dim {raw} names dimension {d} twice")
        dims.append(d)
    return tuple(sorted(dims))


def _resolve(input, normalized_shape, dim):
    """(normalized_shape, axis) for fastnorm, and the sorted dims (None when the
    normalized dims are trailing).  A one-element shape is passed as an int,
    which fastnorm's fast path takes."""
    if dim is None:  # the hot paths
        t = type(normalized_shape)
        if t is int:
            return normalized_shape, None, None
        if (
            (t is torch.Size or t is tuple)
            and len(normalized_shape) == 1
            and type(normalized_shape[0]) is int
        ):
            return normalized_shape[0], None, None
    if dim is None:
        if normalized_shape is None:
            return None, None, None
        ns = _shape_tuple(normalized_shape)
        return (ns[0] if len(ns) == 1 else ns), None, None
    if input.dim() == 0:
        raise TypeError("input must have at least one dimension, got a 0-d tensor")
    dims = _dims_tuple(input.dim(), dim)
    if normalized_shape is not None:
        ns = _shape_tuple(normalized_shape)
        sizes = tuple(input.shape[d] for d in dims)
        if ns != sizes:
            raise ValueError(
                f"normalized_shape {ns} does not match the sizes {sizes} of dims "
                f"{dims} of input with shape {tuple(input.shape)}"
            )
    trailing = tuple(range(input.dim() - len(dims), input.dim()))
    if dims == trailing:  # trailing dims: the plain path
        return tuple(input.shape[d] for d in dims) if len(dims) > 1 else input.shape[-1], None, None
    return None, dims, dims


# ---- torch's own ops, for everything fastnorm does not take --------------------------


def _torch_norm(kind, input, ns, dims, weight, bias, eps):
    """torch's own norm (or, while tracing and for meta or fake tensors, the
    fastnorm ops); ns and dims as _resolve gives them."""
    if _torch_ops.use_ops(input, weight, bias):  # compiling, exporting, meta or fake tensors
        return _torch_ops.norm(kind, input, ns, dims, weight, bias, eps)
    shape, dim = _torch_ops.op_args(input, ns, dims)
    return _torch_ops.torch_norm(kind, input, shape, weight, bias, eps, dim)


def _check_residual(input, residual):
    _check_tensor(residual, "residual", optional=False)
    if residual.shape != input.shape:
        raise ValueError(
            f"residual has shape {tuple(residual.shape)} but input has shape {tuple(input.shape)}"
        )


# ---- autograd ---------------------------------------------------------------------
# Eager training calls: the pointer path when it takes the call (as the
# no-grad path does), else NumPy views through _api.  The stats the forward
# computed are kept (as NumPy arrays) for the backward.


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
    ns, axis, _ = _resolve(input, normalized_shape, dim)
    kw = {} if axis is None else {"axis": axis}
    affine = (_np_opt(weight), _np_opt(bias)) if op == _LN else (_np_opt(weight),)
    y = _new_output(input)
    if residual is None:
        fn = _api.layer_norm if op == _LN else _api.rms_norm
        res = fn(_np(input), ns, *affine, eps, out=_np(y), return_stats=want_stats, **kw)
        outs = (y,)
    else:
        h = _new_output(input)
        fn = _api.add_layer_norm if op == _LN else _api.add_rms_norm
        res = fn(
            _np(input),
            _np(residual),
            ns,
            *affine,
            eps,
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
    ns, axis, _ = _resolve(x, normalized_shape, dim)
    kw = {} if axis is None else {"axis": axis}
    if op == _LN:
        bias = None if bias_shape is None else np.broadcast_to(np.float32(0), bias_shape)
        dx, dw, db = _api.layer_norm_backward(
            _np(dy), _np(x), ns, _np_opt(weight), rstd=rstd, eps=eps, bias=bias, **kw
        )
    else:
        dx, dw = _api.rms_norm_backward(
            _np(dy), _np(x), ns, _np_opt(weight), rstd=rstd, eps=eps, **kw
        )
        db = None
    return (_from_np(dx), dw if want_dweight else None, db if want_dbias else None)


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


# ---- the functions ----------------------------------------------------------------


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
    ns, axis, dims = _resolve(input, normalized_shape, dim)
    if eps is None and op == _LN:
        eps = _core.LAYER_NORM_EPS
    kind = "ln" if op == _LN else "rms"
    if route == _TORCH:
        if (
            add
            and residual.dtype == input.dtype
            and _torch_ops.use_ops(input, residual, weight, bias)
        ):  # compiling, meta, fake
            return _torch_ops.add_norm(
                kind,
                input,
                residual,
                ns,
                dims,
                weight,
                bias,
                _rms_eps(input, eps) if op == _RMS else eps,
            )
        h = input if residual is None else input + residual  # torch's type promotion
        if op == _RMS:
            eps = _rms_eps(h, eps)  # of the dtype h has
        y = _torch_norm(kind, h, ns, dims, weight, bias, eps)
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


# Hugging Face RMSNorms (LlamaRMSNorm and its copies).  They compute
#     hidden = x.to(float32); hidden = hidden * rsqrt(hidden.pow(2).mean(-1) + eps)
#     return weight * hidden.to(input_dtype)
# The replacement follows that rounding order exactly: fastnorm normalizes in
# float32 (half inputs are widened) with no weight and rounds once to x's
# dtype; torch then multiplies by the weight, with torch's type promotion.
_HF_FAST_DTYPES = frozenset((torch.float32, torch.float16, torch.bfloat16))


def _hf_runs_original(x):
    """Whether a Hugging Face replacement runs the original forward: for
    dtypes whose rounding only it gives (float64 etc.), and under graph
    capture and forward-mode AD (fx, jit.trace), which record its ops."""
    if isinstance(x, _Proxy) or x.dtype not in _HF_FAST_DTYPES:
        return True
    return not _is_compiling() and _core.torch_context_declines()  # (dynamo: rms_norm decides)


class _HFPatched:
    """What the Hugging Face replacements share: they pickle (torch.save of a
    model, copy.deepcopy) as a reference to the original class, rebuilt as
    its replacement on load (the dynamic class itself has no importable name)."""

    def __reduce_ex__(self, protocol):
        rv = object.__reduce_ex__(self, max(protocol, 2))  # (copyreg.__newobj__, (cls,), state...)
        return (_new_hf_replacement, (self._fastnorm_base,)) + tuple(rv[2:])


def _new_hf_replacement(base):
    """An empty instance of base's replacement class, for unpickling."""
    cls = _hf_replacement(base)
    return cls.__new__(cls)


class _HFRMSNormForward(_HFPatched):
    """Mixed into a dynamic subclass of a Hugging Face Llama-style RMSNorm class."""

    def forward(self, hidden_states):
        if _hf_runs_original(hidden_states):
            return self._fastnorm_base.forward(self, hidden_states)
        hidden = rms_norm(
            hidden_states, hidden_states.shape[-1], None, float(self.variance_epsilon)
        )
        return _param(self, self._parameters, "weight") * hidden


# Gemma's RMSNorms compute
#     output = normalized(x.float()) * (1.0 + weight.float()); return output.type_as(x)
# that is, everything in float32 and one rounding at the end: fastnorm's
# rms_norm with the float32 scale (1 + weight) does the same.  The scale is
# computed once while the weight's bytes stay the same, when no gradient
# flows through it.
class _GemmaRMSNormForward(_HFPatched):
    """Mixed into a dynamic subclass of a Hugging Face Gemma-style RMSNorm class."""

    def forward(self, x):
        if _hf_runs_original(x):
            return self._fastnorm_base.forward(self, x)
        return rms_norm(x, x.shape[-1], _gemma_scale(self), float(self.eps))


def _gemma_scale(module):
    """1 + weight in float32 (verify calls this on the unswitched module).
    Cached while the weight's bytes stay the same (the core compares them in
    full on every call, so no in-place update can leave it stale), except
    when a gradient flows through it or a tracer must record it."""
    w = _param(module, module._parameters, "weight")
    if (
        (w.requires_grad and torch.is_grad_enabled())
        or _is_compiling()
        or _core.torch_context_declines()
    ):
        return 1.0 + w.float()
    scale = _core.torch_derived(w, "gemma scale", _one_plus)
    return 1.0 + w.float() if scale is None else scale


def _one_plus(w):
    """1 + w in float32 as a tensor, from w's values as a NumPy array: the
    same rounding as torch's 1.0 + w.float()."""
    return torch.from_numpy(1.0 + w.astype(np.float32))


# class name -> (forward mixin, the module's eps attribute)
_HF_RMS_KINDS = dict.fromkeys(
    ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"),
    (_HFRMSNormForward, "variance_epsilon"),
)
_HF_RMS_KINDS.update(
    dict.fromkeys(("GemmaRMSNorm", "Gemma2RMSNorm", "Gemma3RMSNorm"), (_GemmaRMSNormForward, "eps"))
)
_HF_CLASSES = {}


def _hf_replacement(cls):
    new = _HF_CLASSES.get(cls)
    if new is None:
        mixin = _HF_RMS_KINDS[cls.__name__][0]
        new = type(
            cls.__name__,
            (mixin, cls),
            {"_fastnorm_base": cls, "__module__": cls.__module__, "__qualname__": cls.__qualname__},
        )
        _HF_CLASSES[cls] = new
    return new


def _is_hf_rms_norm(module, cls):
    kind = _HF_RMS_KINDS.get(cls.__name__)
    if kind is None or "_fastnorm_base" in cls.__dict__:
        return False
    weight = getattr(module, "weight", None)
    return (
        isinstance(weight, torch.Tensor)
        and weight.dim() == 1
        and isinstance(getattr(module, kind[1], None), numbers.Real)
    )


def _own_class(module):
    """module's class, or for a parametrized module (torch.nn.utils.parametrize
    puts it in a dynamic subclass of its class) the class below that."""
    cls = type(module)
    return cls.__bases__[0] if parametrize.is_parametrized(module) else cls


def _replacement_class(module):
    cls = _own_class(module)
    if cls is torch.nn.LayerNorm:
        return LayerNorm
    if cls is torch.nn.RMSNorm:
        return RMSNorm
    if _is_hf_rms_norm(module, cls):
        return _hf_replacement(cls)
    return None


def _original_class(cls):
    if cls is LayerNorm:
        return torch.nn.LayerNorm
    if cls is RMSNorm:
        return torch.nn.RMSNorm
    return cls.__dict__.get("_fastnorm_base")


def _switch_class(module, own_cls):
    """Make own_cls module's class; a parametrized module keeps its
    parametrizations, in a dynamic subclass of own_cls like the one it had."""
    cls = type(module)
    if parametrize.is_parametrized(module):
        attrs = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
        own_cls = type(cls.__name__, (own_cls,), attrs)
    module.__class__ = own_cls


def _probe_shape(module):
    ns = getattr(module, "normalized_shape", None)
    if ns is None:  # Hugging Face: the weight's size
        ns = tuple(module.weight.shape)
    return (2,) + tuple(ns)


def _tolerance(dtype):
    if dtype in (torch.float16, torch.bfloat16):  # one rounding apart at most: 1 ulp
        return dict(rtol=2 * float(torch.finfo(dtype).eps), atol=1e-5)
    if dtype is torch.float64:
        return dict(rtol=1e-10, atol=1e-10)
    return dict(rtol=1e-5, atol=1e-5)


def _verify(module, orig_cls, new_cls):
    """None if the replacement agrees with the original on a probe input, else why not."""
    params = list(module.parameters(recurse=False))
    dtype = params[0].dtype if params else torch.get_default_dtype()
    device = params[0].device if params else torch.device("cpu")
    if device.type != "cpu" or dtype not in _KERNEL_DTYPES:
        return None  # fastnorm.torch falls back to torch's op there anyway
    gen = torch.Generator().manual_seed(0)
    probe = torch.randn(_probe_shape(module), generator=gen, dtype=torch.float64) * 2 + 0.5
    probe = probe.to(dtype)
    with torch.no_grad():
        try:
            want = orig_cls.forward(module, probe)
            got = new_cls.forward(module, probe)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"result {tuple(got.shape)} {got.dtype} vs {tuple(want.shape)} {want.dtype}"
    tol = _tolerance(got.dtype)
    diff = (got.double() - want.double()).abs()
    bound = tol["atol"] + tol["rtol"] * want.double().abs()
    bad = ~(diff <= bound) & ~(got.isnan() & want.isnan())
    if bool(bad.any()):
        return f"max difference {float(diff.max()):.3g} exceeds rtol={tol['rtol']:.3g}"
    return None


def patch(model, *, verify=True):
    """Switch model's torch.nn.LayerNorm and torch.nn.RMSNorm modules (and the
    Hugging Face LlamaRMSNorm / MistralRMSNorm / Qwen2RMSNorm / Qwen3RMSNorm)
    to fastnorm's forward, in place, by changing their class: parameters,
    buffers, hooks and state_dict keys are untouched.  Subclasses and modules
    it does not know are left alone.

    With ``verify=True`` each replacement is first compared with the original
    on a probe input of shape ``(2, *normalized_shape)`` in the module's dtype;
    one that differs beyond rounding is left alone, with a warning.

    Returns the qualified names of the modules switched ("" for model itself).
    """
    switched = []
    for name, module in model.named_modules():
        new_cls = _replacement_class(module)
        if new_cls is None:
            continue
        orig_cls = _own_class(module)
        if verify:
            problem = _verify(module, orig_cls, new_cls)
            if problem is not None:
                warnings.warn(
                    f"fastnorm.torch.patch: {name or type(model).__name__} "
                    f"({orig_cls.__name__}) left unpatched: {problem}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
        _switch_class(module, new_cls)
        switched.append(name)
    return switched


def unpatch(model):
    """Undo `patch`: restore the original classes.  Returns the names restored."""
    restored = []
    for name, module in model.named_modules():
        orig = _original_class(_own_class(module))
        if orig is not None:
            _switch_class(module, orig)
            restored.append(name)
    return restored
