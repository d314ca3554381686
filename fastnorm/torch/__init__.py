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
through the custom ops ``torch.ops.fastnorm.*`` (see ``fastnorm/torch/_ops.py``).
Where those are invisible or unknown (``torch.jit.trace``, ONNX export), and
for forward-mode AD and nested tensors, torch's own op runs; ``torch.fx``
symbolic tracing records the call itself.

Gradients come from fastnorm's fused backward passes
(`fastnorm.layer_norm_backward`, `fastnorm.rms_norm_backward`), once: double
backward raises.

This module is never imported by ``import fastnorm``.
"""

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "fastnorm.torch needs PyTorch, which is not installed. Install the CPU build "
        "with:  pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
    ) from exc

from ._functions import LayerNorm, RMSNorm, add_layer_norm, add_rms_norm, layer_norm, rms_norm
from ._group import GroupNorm, group_norm
from ._patch import patch, unpatch
from ._quant import add_layer_norm_quant, add_rms_norm_quant, layer_norm_quant, rms_norm_quant

__all__ = [
    "layer_norm",
    "rms_norm",
    "add_layer_norm",
    "add_rms_norm",
    "LayerNorm",
    "RMSNorm",
    "group_norm",
    "GroupNorm",
    "patch",
    "unpatch",
    # quantized outputs, for inference (fastnorm/torch/_quant.py)
    "rms_norm_quant",
    "layer_norm_quant",
    "add_rms_norm_quant",
    "add_layer_norm_quant",
]
