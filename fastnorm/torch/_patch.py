"""fastnorm.torch.patch and unpatch: switch a model's norm modules to
fastnorm's forward in place, by changing their class (parameters, buffers,
hooks and state_dict keys untouched).  torch.nn.LayerNorm and RMSNorm become
fastnorm.torch.LayerNorm and RMSNorm; the Hugging Face RMSNorms it knows by
class name get a dynamic subclass whose forward keeps their rounding order.
Each replacement is first checked against the original on a probe input."""

import numbers
import warnings
from typing import Any

import numpy as np
import torch
from torch.nn.utils import parametrize

from .. import _core
from ._functions import LayerNorm, RMSNorm, _param, _Proxy, rms_norm
from ._group import GroupNorm
from ._tensors import KERNEL_DTYPES, _is_compiling

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

    # what the mixins read of the Hugging Face module they are mixed into
    _fastnorm_base: Any
    _parameters: Any
    variance_epsilon: Any
    eps: Any

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
_HF_RMS_KINDS: dict[str, tuple[type, str]] = dict.fromkeys(
    ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"),
    (_HFRMSNormForward, "variance_epsilon"),
)
_HF_RMS_KINDS.update(
    dict.fromkeys(("GemmaRMSNorm", "Gemma2RMSNorm", "Gemma3RMSNorm"), (_GemmaRMSNormForward, "eps"))
)
_HF_CLASSES: dict[type, type] = {}


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
    if cls is torch.nn.GroupNorm:
        return GroupNorm
    if _is_hf_rms_norm(module, cls):
        return _hf_replacement(cls)
    return None


def _original_class(cls):
    if cls is LayerNorm:
        return torch.nn.LayerNorm
    if cls is RMSNorm:
        return torch.nn.RMSNorm
    if cls is GroupNorm:
        return torch.nn.GroupNorm
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
    if isinstance(module, torch.nn.GroupNorm):  # (N, C, H, W)
        return (2, module.num_channels, 3, 5)
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
    if device.type != "cpu" or dtype not in KERNEL_DTYPES:
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
    """Switch model's torch.nn.LayerNorm, RMSNorm and GroupNorm modules (and the
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
