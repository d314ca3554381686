from collections.abc import Sequence

import torch
from torch import Tensor

_Shape = int | Sequence[int] | torch.Size
_Dims = int | Sequence[int]

def layer_norm(
    input: Tensor,
    normalized_shape: _Shape | None,
    weight: Tensor | None = ...,
    bias: Tensor | None = ...,
    eps: float = ...,
    *,
    dim: _Dims | None = ...,
) -> Tensor: ...
def rms_norm(
    input: Tensor,
    normalized_shape: _Shape | None,
    weight: Tensor | None = ...,
    eps: float | None = ...,
    *,
    dim: _Dims | None = ...,
) -> Tensor: ...
def add_layer_norm(
    input: Tensor,
    residual: Tensor,
    normalized_shape: _Shape | None,
    weight: Tensor | None = ...,
    bias: Tensor | None = ...,
    eps: float = ...,
    *,
    dim: _Dims | None = ...,
) -> tuple[Tensor, Tensor]: ...
def add_rms_norm(
    input: Tensor,
    residual: Tensor,
    normalized_shape: _Shape | None,
    weight: Tensor | None = ...,
    eps: float | None = ...,
    *,
    dim: _Dims | None = ...,
) -> tuple[Tensor, Tensor]: ...

class LayerNorm(torch.nn.LayerNorm):
    def forward(self, input: Tensor) -> Tensor: ...

class RMSNorm(torch.nn.RMSNorm):
    def forward(self, input: Tensor) -> Tensor: ...

def patch(model: torch.nn.Module, *, verify: bool = ...) -> list[str]: ...
def unpatch(model: torch.nn.Module) -> list[str]: ...
