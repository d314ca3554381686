from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

_Shape = Union[int, Sequence[int], torch.Size]
_Dims = Union[int, Sequence[int]]

def layer_norm(input: Tensor, normalized_shape: Optional[_Shape], weight: Optional[Tensor] = ...,
               bias: Optional[Tensor] = ..., eps: float = ..., *,
               dim: Optional[_Dims] = ...) -> Tensor: ...
def rms_norm(input: Tensor, normalized_shape: Optional[_Shape], weight: Optional[Tensor] = ...,
             eps: Optional[float] = ..., *, dim: Optional[_Dims] = ...) -> Tensor: ...
def add_layer_norm(input: Tensor, residual: Tensor, normalized_shape: Optional[_Shape],
                   weight: Optional[Tensor] = ..., bias: Optional[Tensor] = ...,
                   eps: float = ..., *, dim: Optional[_Dims] = ...) -> Tuple[Tensor, Tensor]: ...
def add_rms_norm(input: Tensor, residual: Tensor, normalized_shape: Optional[_Shape],
                 weight: Optional[Tensor] = ..., eps: Optional[float] = ..., *,
                 dim: Optional[_Dims] = ...) -> Tuple[Tensor, Tensor]: ...

class LayerNorm(torch.nn.LayerNorm):
    def forward(self, input: Tensor) -> Tensor: ...

class RMSNorm(torch.nn.RMSNorm):
    def forward(self, input: Tensor) -> Tensor: ...

def patch(model: torch.nn.Module, *, verify: bool = ...) -> List[str]: ...
def unpatch(model: torch.nn.Module) -> List[str]: ...
