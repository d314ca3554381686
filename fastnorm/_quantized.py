"""The public quantized outputs for NumPy arrays: `quantize`, and the norms
whose result is quantized while it is still in cache (`rms_norm_quant`,
`layer_norm_quant` and their fused residual add forms).  Each is one call
into the compiled core (fastnorm/_quant.pxi); a Dask operand makes the call
lazy (fastnorm/_dask.py), as for the float norms (fastnorm/_api.py).

The rule every function here keeps: a quantized norm is bit for bit the
float norm computed in its compute dtype (float32, float64 for float64
inputs) followed by `quantize`; `quantize` gives the same bits on every
kernel set."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import _core, _dask

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Union

    from numpy.typing import ArrayLike, DTypeLike, NDArray
    from typing_extensions import TypeAlias

    Axes: TypeAlias = Union[int, Sequence[int]]

__all__ = [
    "quantize",
    "rms_norm_quant",
    "layer_norm_quant",
    "add_rms_norm_quant",
    "add_layer_norm_quant",
]

_LN, _RMS = _core.OP_LAYER_NORM, _core.OP_RMS_NORM


def quantize(
    y: ArrayLike,
    dtype: DTypeLike = np.int8,
    *,
    axis: Axes = -1,
    group_size: int | None = None,
    scale: ArrayLike | float | None = None,
    out: NDArray | None = None,
    scale_out: NDArray | None = None,
) -> tuple[NDArray, NDArray]:
    """Symmetric quantization of each row (or group) with a float32 scale.

    For each row along `axis` (or each group of `group_size` consecutive
    elements of it)::

        scale = max(amax / qmax, 2**-126)      # float32; amax = max |y|
        q = saturate(round_half_even(y * (1 / scale)))

    with qmax 127 for int8 and 448 for float8 e4m3fn (rounded to the
    nearest e4m3fn value, ties to even, and saturated to +-448).  Each
    step is one correctly rounded float32 operation (float64 for float64
    y, with amax / qmax taken in float64 and rounded to float32): the
    reciprocal once a group, then a product per element, as in vLLM's
    int8 kernels.  The same bits on every kernel set; the dequantized value
    is ``q * scale``.

    Parameters
    ----------
    y : array_like
        Values: float32, float64, float16 or bfloat16 (the half dtypes are
        widened to float32 exactly); integers and bools become float64.
    dtype : dtype, default numpy.int8
        ``numpy.int8`` or ``ml_dtypes.float8_e4m3fn``.
    axis : int or tuple of int, default -1
        The axes a scale spans (a "row"); the others are batch axes.
    group_size : int, optional
        One scale per `group_size` consecutive elements along the last of
        `axis` (its size must be a multiple of it), instead of one a row.
    scale : float or array_like, optional
        Static scales instead of dynamic ones: a number (per tensor) or an
        array broadcasting to the scales' shape; rounded to float32 and
        used as given (finite and at least 2**-126, else ValueError).
    out : ndarray, optional
        Where to write q: y's shape and `dtype`.
    scale_out : ndarray, optional
        Where to write the scales: float32, the scales' shape.

    Returns
    -------
    q : ndarray
        y's shape, `dtype`.
    scale : ndarray
        float32, y's shape without the `axis` axes, plus a trailing axis of
        ``n // group_size`` scales when grouped (n: the elements of a row).

    Notes
    -----
    A row (or group) whose values are all zero gets the floor 2**-126 as
    its scale and codes 0.  A group holding NaN or +-Inf (or float64 values
    whose scale would overflow float32) gets scale NaN and codes 0 (int8) or
    NaN (e4m3fn): nothing in it is usable, and the NaN
    scale says so when it is dequantized.  With a static scale NaN gives 0
    (int8) or NaN, and +-Inf saturates to +-qmax.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> q, s = fastnorm.quantize(np.array([[0.5, -1.0, 0.25]], np.float32))
    >>> q, s
    (array([[  64, -127,   32]], dtype=int8), array([0.00787402], dtype=float32))
    """
    try:
        return _core.quantize(y, dtype, axis, group_size, scale, out, scale_out)
    except _core.DaskOperand:
        return _dask.quantize(y, dtype, axis, group_size, scale, out, scale_out)


_NORM_QUANT_PARAMETERS = """
    x : array_like
        Input, as in `{norm}` (float32, float64, float16, bfloat16).
    normalized_shape, axis
        The normalized axes, as in `{norm}`; the scales span them.
    weight{bias} : array_like, optional
        As in `{norm}`.
    eps : float, optional
        As in `{norm}`.
    dtype : dtype, default numpy.int8
        ``numpy.int8`` or ``ml_dtypes.float8_e4m3fn``.
    group_size, scale, out, scale_out
        As in `quantize` (groups along the last normalized axis).
"""


def rms_norm_quant(
    x: ArrayLike,
    normalized_shape: Axes | None = None,
    weight: ArrayLike | None = None,
    eps: float | None = None,
    *,
    axis: Axes | None = None,
    dtype: DTypeLike = np.int8,
    group_size: int | None = None,
    scale: ArrayLike | float | None = None,
    out: NDArray | None = None,
    scale_out: NDArray | None = None,
) -> tuple[NDArray, NDArray]:
    """`rms_norm` quantized in the same pass: ``quantize(rms_norm(x))``.

    Bit for bit ``quantize(rms_norm(x, ..., dtype=c), dtype, axis=<the
    normalized axes>, ...)`` with c the compute dtype (float64 for float64
    x, else float32); the float result is quantized a tile of rows at a
    time while it is in cache, and never written to memory.

    Parameters
    ----------{parameters}
    Returns
    -------
    q, scale : ndarray
        As `quantize` returns them.
    """
    try:
        return _core.normalize_quant(
            _RMS, x, None, normalized_shape, weight, None, eps, axis, dtype, group_size, scale,
            out, scale_out, None,
        )  # fmt: skip
    except _core.DaskOperand:
        return _dask.normalize_quant(
            _RMS, x, None, normalized_shape, weight, None, eps, axis, dtype, group_size, scale,
            out, scale_out, None,
        )  # fmt: skip


def layer_norm_quant(
    x: ArrayLike,
    normalized_shape: Axes | None = None,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    eps: float | None = 1e-5,
    *,
    axis: Axes | None = None,
    dtype: DTypeLike = np.int8,
    group_size: int | None = None,
    scale: ArrayLike | float | None = None,
    out: NDArray | None = None,
    scale_out: NDArray | None = None,
) -> tuple[NDArray, NDArray]:
    """`layer_norm` quantized in the same pass (see `rms_norm_quant`).

    Parameters
    ----------{parameters}
    Returns
    -------
    q, scale : ndarray
        As `quantize` returns them.
    """
    try:
        return _core.normalize_quant(
            _LN, x, None, normalized_shape, weight, bias, eps, axis, dtype, group_size, scale,
            out, scale_out, None,
        )  # fmt: skip
    except _core.DaskOperand:
        return _dask.normalize_quant(
            _LN, x, None, normalized_shape, weight, bias, eps, axis, dtype, group_size, scale,
            out, scale_out, None,
        )  # fmt: skip


_ADD_PARAMETERS = """    residual : array_like
        Added to x first, as in `add_{norm}`: h = x + residual, rounded to
        x's dtype, is returned and normalized.
    residual_out : ndarray, optional
        Where to write h (may be residual itself).
"""


def add_rms_norm_quant(
    x: ArrayLike,
    residual: ArrayLike,
    normalized_shape: Axes | None = None,
    weight: ArrayLike | None = None,
    eps: float | None = None,
    *,
    axis: Axes | None = None,
    dtype: DTypeLike = np.int8,
    group_size: int | None = None,
    scale: ArrayLike | float | None = None,
    out: NDArray | None = None,
    scale_out: NDArray | None = None,
    residual_out: NDArray | None = None,
) -> tuple[NDArray, NDArray, NDArray]:
    """Fused residual add, RMS norm and quantization: ``(q, scale, h)``.

    Bit for bit `add_rms_norm` (in the compute dtype) followed by
    `quantize`; h is bit for bit `add_rms_norm`'s h.

    Parameters
    ----------{parameters}
    Returns
    -------
    q, scale : ndarray
        As `quantize` returns them.
    h : ndarray
        x + residual in x's dtype (``residual_out`` when given).
    """
    try:
        return _core.normalize_quant(
            _RMS, x, residual, normalized_shape, weight, None, eps, axis, dtype, group_size,
            scale, out, scale_out, residual_out,
        )  # fmt: skip
    except _core.DaskOperand:
        return _dask.normalize_quant(
            _RMS, x, residual, normalized_shape, weight, None, eps, axis, dtype, group_size,
            scale, out, scale_out, residual_out,
        )  # fmt: skip


def add_layer_norm_quant(
    x: ArrayLike,
    residual: ArrayLike,
    normalized_shape: Axes | None = None,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    eps: float | None = 1e-5,
    *,
    axis: Axes | None = None,
    dtype: DTypeLike = np.int8,
    group_size: int | None = None,
    scale: ArrayLike | float | None = None,
    out: NDArray | None = None,
    scale_out: NDArray | None = None,
    residual_out: NDArray | None = None,
) -> tuple[NDArray, NDArray, NDArray]:
    """Fused residual add, layer norm and quantization: ``(q, scale, h)``.

    See `add_rms_norm_quant`.

    Parameters
    ----------{parameters}
    Returns
    -------
    q, scale : ndarray
        As `quantize` returns them.
    h : ndarray
        x + residual in x's dtype (``residual_out`` when given).
    """
    try:
        return _core.normalize_quant(
            _LN, x, residual, normalized_shape, weight, bias, eps, axis, dtype, group_size,
            scale, out, scale_out, residual_out,
        )  # fmt: skip
    except _core.DaskOperand:
        return _dask.normalize_quant(
            _LN, x, residual, normalized_shape, weight, bias, eps, axis, dtype, group_size,
            scale, out, scale_out, residual_out,
        )  # fmt: skip


def _fill_parameters():
    """The Parameters sections, written once above for the four norms."""
    for fn, norm, bias, add in (
        (rms_norm_quant, "rms_norm", "", False),
        (layer_norm_quant, "layer_norm", ", bias", False),
        (add_rms_norm_quant, "rms_norm", "", True),
        (add_layer_norm_quant, "layer_norm", ", bias", True),
    ):
        text = _NORM_QUANT_PARAMETERS.format(norm=norm, bias=bias)
        if add:
            text += _ADD_PARAMETERS.format(norm=norm)
        fn.__doc__ = (fn.__doc__ or "").replace("{parameters}", text)


_fill_parameters()
