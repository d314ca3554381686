# Type stubs for the compiled core (fastnorm/_core.pyx), for mypy: the
# functions and constants the package calls.  Describes _core.pyx as it is;
# update it together with any change of a def/cpdef signature there.
from typing import Any

import numpy as np
import numpy.typing as npt

_Stats = np.ndarray | None

# cpdef enum: the op codes every entry point takes
OP_LAYER_NORM: int
OP_RMS_NORM: int
LAYER_NORM_EPS: float

openmp_enabled: bool
build_flags: str
source_fingerprint: str

def compute_dtype(dtype: npt.DTypeLike) -> np.dtype[Any]: ...
def in_forked_child() -> bool: ...
def set_stream_min_bytes(nbytes: int) -> int: ...
def empty_output(x: np.ndarray) -> np.ndarray: ...
def buffer_cache_info() -> tuple[int, int, int]: ...
def set_buffer_cache(cap_bytes: int) -> None: ...
def available_isas() -> list[str]: ...
def isa() -> str: ...
def set_isa(name: str) -> None: ...
def max_threads() -> int: ...
def last_num_threads() -> int: ...
def forward(
    op: int,
    x: np.ndarray,
    y: np.ndarray,
    weight: _Stats,
    bias: _Stats,
    mean: _Stats,
    rstd: _Stats,
    eps: float,
    norm_axes: tuple[int, ...],
    residual: _Stats = None,
    h: _Stats = None,
    per_sample: bool = False,
) -> bool: ...
def backward(
    op: int,
    x: np.ndarray,
    dy: np.ndarray,
    dx: np.ndarray,
    weight: _Stats,
    rstd: np.ndarray,
    want_dweight: bool,
    want_dbias: bool,
    eps: float,
    norm_axes: tuple[int, ...],
) -> tuple[_Stats, _Stats] | None: ...
def default_eps(op: int, dtype: npt.DTypeLike) -> float: ...
def internal_overlap(a: np.ndarray) -> int: ...
def fast_forward(
    op: int,
    x: object,
    normalized_shape: object,
    weight: object,
    bias: object,
    eps: object,
    axis: object,
    out: object,
    return_stats: bool,
) -> np.ndarray | tuple[np.ndarray, ...] | None: ...

# the torch bridge: tensors are typed Any so that the stubs need no torch
def torch_setup(torch: Any) -> None: ...
def torch_forward(
    op: int,
    x: Any,
    normalized_shape: Any,
    weight: Any,
    bias: Any,
    eps: Any,
    dim: Any,
    residual: Any,
    check_grad: bool,
    want_stats: bool,
) -> Any: ...
def torch_backward(
    op: int,
    dy: Any,
    x: Any,
    weight: Any,
    rstd: Any,
    eps: Any,
    normalized_shape: Any,
    dim: Any,
    want_dweight: bool,
    want_dbias: bool,
) -> Any: ...

# test hooks: the portable float16/bfloat16 conversions ('f16' or 'bf16')
def software_narrow(kind: str, values: npt.ArrayLike) -> npt.NDArray[np.uint16]: ...
def software_widen(kind: str, bits: npt.ArrayLike) -> npt.NDArray[np.float32]: ...
