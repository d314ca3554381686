from typing import Any, List, Literal, Mapping, NamedTuple, Optional, Sequence, Tuple, Union, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

__version__: str

_Axes = Union[int, Sequence[int]]

class IncompatibleKeys(NamedTuple):
    missing_keys: List[str]
    unexpected_keys: List[str]

@overload
def layer_norm(x: ArrayLike, normalized_shape: Optional[_Axes] = ..., weight: Optional[ArrayLike] = ...,
               bias: Optional[ArrayLike] = ..., eps: Optional[float] = ..., *, axis: Optional[_Axes] = ...,
               out: Optional[NDArray[np.floating]] = ...,
               return_stats: Literal[False] = ...) -> NDArray[np.floating]: ...
@overload
def layer_norm(x: ArrayLike, normalized_shape: Optional[_Axes] = ..., weight: Optional[ArrayLike] = ...,
               bias: Optional[ArrayLike] = ..., eps: Optional[float] = ..., *, axis: Optional[_Axes] = ...,
               out: Optional[NDArray[np.floating]] = ...,
               return_stats: Literal[True]) -> Tuple[NDArray[np.floating], NDArray[np.floating], NDArray[np.floating]]: ...
@overload
def rms_norm(x: ArrayLike, normalized_shape: Optional[_Axes] = ..., weight: Optional[ArrayLike] = ...,
             eps: Optional[float] = ..., *, axis: Optional[_Axes] = ...,
             out: Optional[NDArray[np.floating]] = ...,
             return_stats: Literal[False] = ...) -> NDArray[np.floating]: ...
@overload
def rms_norm(x: ArrayLike, normalized_shape: Optional[_Axes] = ..., weight: Optional[ArrayLike] = ...,
             eps: Optional[float] = ..., *, axis: Optional[_Axes] = ...,
             out: Optional[NDArray[np.floating]] = ...,
             return_stats: Literal[True]) -> Tuple[NDArray[np.floating], NDArray[np.floating]]: ...

def available_isas() -> list[str]: ...
def get_isa() -> str: ...
def show_config(file: Optional[object] = ...) -> None: ...

def layer_norm_backward(dy: ArrayLike, x: ArrayLike, normalized_shape: Optional[_Axes] = ...,
                        weight: Optional[ArrayLike] = ..., *, mean: Optional[ArrayLike] = ...,
                        rstd: Optional[ArrayLike] = ..., eps: Optional[float] = ...,
                        axis: Optional[_Axes] = ...,
                        bias: Optional[ArrayLike] = ...) -> Tuple[NDArray[np.floating], Optional[NDArray[np.floating]], NDArray[np.floating]]: ...
def rms_norm_backward(dy: ArrayLike, x: ArrayLike, normalized_shape: Optional[_Axes] = ...,
                      weight: Optional[ArrayLike] = ..., *, rstd: Optional[ArrayLike] = ...,
                      eps: Optional[float] = ...,
                      axis: Optional[_Axes] = ...) -> Tuple[NDArray[np.floating], Optional[NDArray[np.floating]]]: ...

class LayerNorm:
    normalized_shape: Tuple[int, ...]
    eps: float
    elementwise_affine: bool
    dtype: np.dtype
    weight: Optional[NDArray[np.floating]]
    bias: Optional[NDArray[np.floating]]
    weight_grad: Optional[NDArray[np.floating]]
    bias_grad: Optional[NDArray[np.floating]]
    def __init__(self, normalized_shape: _Axes, eps: Optional[float] = ..., elementwise_affine: bool = ...,
                 bias: bool = ..., dtype: object = ...) -> None: ...
    def __call__(self, x: ArrayLike) -> NDArray[np.floating]: ...
    def backward(self, dy: ArrayLike) -> NDArray[np.floating]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = ...) -> IncompatibleKeys: ...

class RMSNorm:
    normalized_shape: Tuple[int, ...]
    eps: Optional[float]
    elementwise_affine: bool
    dtype: np.dtype
    weight: Optional[NDArray[np.floating]]
    weight_grad: Optional[NDArray[np.floating]]
    def __init__(self, normalized_shape: _Axes, eps: Optional[float] = ...,
                 elementwise_affine: bool = ..., dtype: object = ...) -> None: ...
    def __call__(self, x: ArrayLike) -> NDArray[np.floating]: ...
    def backward(self, dy: ArrayLike) -> NDArray[np.floating]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = ...) -> IncompatibleKeys: ...

def add_layer_norm(x: ArrayLike, residual: ArrayLike, normalized_shape: Optional[_Axes] = ...,
                   weight: Optional[ArrayLike] = ..., bias: Optional[ArrayLike] = ...,
                   eps: Optional[float] = ..., *, axis: Optional[_Axes] = ...,
                   out: Optional[NDArray[np.floating]] = ...,
                   residual_out: Optional[NDArray[np.floating]] = ...,
                   return_stats: bool = ...) -> tuple: ...
def add_rms_norm(x: ArrayLike, residual: ArrayLike, normalized_shape: Optional[_Axes] = ...,
                 weight: Optional[ArrayLike] = ..., eps: Optional[float] = ..., *,
                 axis: Optional[_Axes] = ..., out: Optional[NDArray[np.floating]] = ...,
                 residual_out: Optional[NDArray[np.floating]] = ...,
                 return_stats: bool = ...) -> tuple: ...
