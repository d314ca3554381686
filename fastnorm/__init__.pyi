from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

__version__: str

_Axes = int | Sequence[int]

class IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]

@overload
def layer_norm(
    x: ArrayLike,
    normalized_shape: _Axes | None = ...,
    weight: ArrayLike | None = ...,
    bias: ArrayLike | None = ...,
    eps: float | None = ...,
    *,
    axis: _Axes | None = ...,
    out: NDArray[np.floating] | None = ...,
    return_stats: Literal[False] = ...,
) -> NDArray[np.floating]: ...
@overload
def layer_norm(
    x: ArrayLike,
    normalized_shape: _Axes | None = ...,
    weight: ArrayLike | None = ...,
    bias: ArrayLike | None = ...,
    eps: float | None = ...,
    *,
    axis: _Axes | None = ...,
    out: NDArray[np.floating] | None = ...,
    return_stats: Literal[True],
) -> tuple[NDArray[np.floating], NDArray[np.floating], NDArray[np.floating]]: ...
@overload
def rms_norm(
    x: ArrayLike,
    normalized_shape: _Axes | None = ...,
    weight: ArrayLike | None = ...,
    eps: float | None = ...,
    *,
    axis: _Axes | None = ...,
    out: NDArray[np.floating] | None = ...,
    return_stats: Literal[False] = ...,
) -> NDArray[np.floating]: ...
@overload
def rms_norm(
    x: ArrayLike,
    normalized_shape: _Axes | None = ...,
    weight: ArrayLike | None = ...,
    eps: float | None = ...,
    *,
    axis: _Axes | None = ...,
    out: NDArray[np.floating] | None = ...,
    return_stats: Literal[True],
) -> tuple[NDArray[np.floating], NDArray[np.floating]]: ...
def available_isas() -> list[str]: ...
def get_isa() -> str: ...
def show_config(file: object | None = ...) -> None: ...
def layer_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    normalized_shape: _Axes | None = ...,
    weight: ArrayLike | None = ...,
    *,
    mean: ArrayLike | None = ...,
    rstd: ArrayLike | None = ...,
    eps: float | None = ...,
    axis: _Axes | None = ...,
    bias: ArrayLike | None = ...,
) -> tuple[NDArray[np.floating], NDArray[np.floating] | None, NDArray[np.floating]]: ...
def rms_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    normalized_shape: _Axes | None = ...,
    weight: ArrayLike | None = ...,
    *,
    rstd: ArrayLike | None = ...,
    eps: float | None = ...,
    axis: _Axes | None = ...,
) -> tuple[NDArray[np.floating], NDArray[np.floating] | None]: ...

class LayerNorm:
    normalized_shape: tuple[int, ...]
    eps: float
    elementwise_affine: bool
    dtype: np.dtype
    weight: NDArray[np.floating] | None
    bias: NDArray[np.floating] | None
    weight_grad: NDArray[np.floating] | None
    bias_grad: NDArray[np.floating] | None
    def __init__(
        self,
        normalized_shape: _Axes,
        eps: float | None = ...,
        elementwise_affine: bool = ...,
        bias: bool = ...,
        dtype: object = ...,
    ) -> None: ...
    def __call__(self, x: ArrayLike) -> NDArray[np.floating]: ...
    def backward(self, dy: ArrayLike) -> NDArray[np.floating]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = ...
    ) -> IncompatibleKeys: ...

class RMSNorm:
    normalized_shape: tuple[int, ...]
    eps: float | None
    elementwise_affine: bool
    dtype: np.dtype
    weight: NDArray[np.floating] | None
    weight_grad: NDArray[np.floating] | None
    def __init__(
        self,
        normalized_shape: _Axes,
        eps: float | None = ...,
        elementwise_affine: bool = ...,
        dtype: object = ...,
    ) -> None: ...
    def __call__(self, x: ArrayLike) -> NDArray[np.floating]: ...
    def backward(self, dy: ArrayLike) -> NDArray[np.floating]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = ...
    ) -> IncompatibleKeys: ...

def add_layer_norm(
    x: ArrayLike,
    residual: ArrayLike,
    normalized_shape: _Axes | None = ...,
    weight: ArrayLike | None = ...,
    bias: ArrayLike | None = ...,
    eps: float | None = ...,
    *,
    axis: _Axes | None = ...,
    out: NDArray[np.floating] | None = ...,
    residual_out: NDArray[np.floating] | None = ...,
    return_stats: bool = ...,
) -> tuple: ...
def add_rms_norm(
    x: ArrayLike,
    residual: ArrayLike,
    normalized_shape: _Axes | None = ...,
    weight: ArrayLike | None = ...,
    eps: float | None = ...,
    *,
    axis: _Axes | None = ...,
    out: NDArray[np.floating] | None = ...,
    residual_out: NDArray[np.floating] | None = ...,
    return_stats: bool = ...,
) -> tuple: ...
