# Type stubs for the compiled core (fastnorm/_core.pyx and the .pxi parts it
# includes), for mypy: the functions and constants the package calls.  Update
# it together with any change of a def/cpdef signature there.
from typing import Any, final

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
def default_eps(op: int, dtype: npt.DTypeLike) -> float: ...
def internal_overlap(a: np.ndarray) -> int: ...

# the argument rules (fastnorm/_rules.pxi), for the modules and fastnorm.torch
KERNEL_DTYPES: tuple[np.dtype[Any], ...]
AxisError: type[Exception]

class DaskOperand(TypeError): ...

def real_array(value: object, name: str) -> np.ndarray: ...
def refuse_masked(value: object, name: str) -> None: ...
def as_axis_tuple(value: object, name: str) -> tuple[int, ...]: ...
def check_eps(eps: object) -> float: ...
def resolve_eps(eps: object, op: int, dtype: npt.DTypeLike) -> float: ...

# the call specification (fastnorm/_spec.pxi): a call's arguments checked,
# not run (the Dask layer's check of a call)
@final
class Call:
    @property
    def op(self) -> int: ...
    @property
    def axes(self) -> tuple[int, ...]: ...
    @property
    def per_sample(self) -> bool: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...

def normalize_call(
    op: int,
    x: object,
    normalized_shape: object,
    weight: object,
    bias: object,
    eps: object,
    axis: object,
    out: object,
    return_stats: bool,
    dtype: npt.DTypeLike | None = None,
) -> Call: ...
def add_normalize_call(
    op: int,
    x: object,
    residual: object,
    normalized_shape: object,
    weight: object,
    bias: object,
    eps: object,
    axis: object,
    out: object,
    residual_out: object,
    return_stats: bool,
    dtype: npt.DTypeLike | None = None,
) -> Call: ...
def normalize_backward_call(
    op: int,
    dy: object,
    x: object,
    normalized_shape: object,
    weight: object,
    mean: object,
    rstd: object,
    eps: object,
    axis: object,
    bias: object,
    param_dtype: npt.DTypeLike | None = None,
    per_sample: bool = False,
) -> Call: ...

# the calls (fastnorm/_calls.pxi): one entry per family of public functions
def normalize(
    op: int,
    x: object,
    normalized_shape: object,
    weight: object,
    bias: object,
    eps: object,
    axis: object,
    out: object,
    return_stats: bool,
    dtype: npt.DTypeLike | None = None,
) -> Any: ...
def add_normalize(
    op: int,
    x: object,
    residual: object,
    normalized_shape: object,
    weight: object,
    bias: object,
    eps: object,
    axis: object,
    out: object,
    residual_out: object,
    return_stats: bool,
    dtype: npt.DTypeLike | None = None,
) -> Any: ...
def normalize_backward(
    op: int,
    dy: object,
    x: object,
    normalized_shape: object,
    weight: object,
    mean: object,
    rstd: object,
    eps: object,
    axis: object,
    bias: object,
    param_dtype: npt.DTypeLike | None = None,
    per_sample: bool = False,
) -> Any: ...

# the torch bridge: tensors are typed Any so that the stubs need no torch
# quantized outputs (_quant.pxi)
QUANT_DTYPES: tuple[np.dtype[Any], ...]

def quantize(
    y: object,
    dtype: object,
    axis: object,
    group_size: object,
    scale: object,
    out: object,
    scale_out: object,
) -> tuple[np.ndarray, np.ndarray]: ...
def quantize_call(
    x: object, axes: object, dtype: object, group_size: object, scale: object
) -> tuple[np.dtype[Any], tuple[int, ...], np.ndarray | None]: ...
def normalize_quant(
    op: int,
    x: object,
    residual: object,
    normalized_shape: object,
    weight: object,
    bias: object,
    eps: object,
    axis: object,
    dtype: object,
    group_size: object,
    scale: object,
    out: object,
    scale_out: object,
    residual_out: object,
) -> Any: ...
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
def torch_dims(shape: Any, normalized_shape: Any, dim: Any) -> tuple[int, ...]: ...
def torch_context_declines() -> bool: ...
def torch_derived(w: Any, tag: Any, make: Any) -> Any: ...

# the cache of values derived from parameter vectors (widened half weights)
def derived_cache_info() -> tuple[int, int]: ...

# GroupNorm (fastnorm/_group.pxi)
@final
class GroupCall:
    x: Any
    weight: Any
    bias: Any
    out: Any
    n: int
    channels: int
    groups: int
    spatial: int
    last: bool
    eps: float

def group_norm(
    x: Any,
    num_groups: Any,
    weight: Any = ...,
    bias: Any = ...,
    eps: Any = ...,
    channel_axis: Any = ...,
    out: Any = ...,
    return_stats: bool = ...,
) -> Any: ...
def group_norm_backward(
    dy: Any,
    x: Any,
    num_groups: Any,
    weight: Any = ...,
    mean: Any = ...,
    rstd: Any = ...,
    eps: Any = ...,
    channel_axis: Any = ...,
    float64_sums: bool = ...,
) -> Any: ...
