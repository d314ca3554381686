"""The public functions of fastnorm for NumPy arrays: their signatures and
documentation.  Each is one call into the compiled core (fastnorm/_calls.pxi),
which builds the call's specification (every argument checked once, with
messages that name the values and shapes involved) and runs the kernels.  When one of the
arrays is a Dask collection the core raises DaskOperand instead of computing
it, and the call runs lazily on Dask (fastnorm/_dask.py): any Dask operand
makes the result lazy, as in Dask's own convention (numpy.add of a NumPy
array and a Dask array is a Dask array).  The check is the core's, made only
on arguments that are not ndarrays, so a NumPy call pays nothing for it.

The annotations are the package's typing (py.typed): results are typed as
NumPy arrays, and with ``return_stats`` as a literal True or False the
number of them is known."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, overload

from . import _core, _dask

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Union

    import numpy as np
    from numpy.typing import ArrayLike, DTypeLike, NDArray
    from typing_extensions import TypeAlias

    Axes: TypeAlias = Union[int, Sequence[int]]  # normalized_shape, axis
    Array: TypeAlias = NDArray[np.floating]  # results and statistics

__all__ = [
    "layer_norm",
    "rms_norm",
    "layer_norm_backward",
    "rms_norm_backward",
    "add_layer_norm",
    "add_rms_norm",
]

_LN, _RMS = _core.OP_LAYER_NORM, _core.OP_RMS_NORM


@overload
def layer_norm(
    x: ArrayLike,
    normalized_shape: Axes | None = ...,
    weight: ArrayLike | None = ...,
    bias: ArrayLike | None = ...,
    eps: float | None = ...,
    *,
    axis: Axes | None = ...,
    out: Array | None = ...,
    dtype: DTypeLike | None = ...,
    return_stats: Literal[False] = ...,
) -> Array: ...
@overload
def layer_norm(
    x: ArrayLike,
    normalized_shape: Axes | None = ...,
    weight: ArrayLike | None = ...,
    bias: ArrayLike | None = ...,
    eps: float | None = ...,
    *,
    axis: Axes | None = ...,
    out: Array | None = ...,
    dtype: DTypeLike | None = ...,
    return_stats: Literal[True],
) -> tuple[Array, Array, Array]: ...
@overload
def layer_norm(
    x: ArrayLike,
    normalized_shape: Axes | None = ...,
    weight: ArrayLike | None = ...,
    bias: ArrayLike | None = ...,
    eps: float | None = ...,
    *,
    axis: Axes | None = ...,
    out: Array | None = ...,
    dtype: DTypeLike | None = ...,
    return_stats: bool,
) -> Array | tuple[Array, Array, Array]: ...
def layer_norm(
    x: ArrayLike,
    normalized_shape: Axes | None = None,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    eps: float | None = 1e-5,
    *,
    axis: Axes | None = None,
    out: Array | None = None,
    dtype: DTypeLike | None = None,
    return_stats: bool = False,
) -> Array | tuple[Array, Array, Array]:
    """Layer normalization: ``(x - mean) / sqrt(var + eps) * weight + bias``.

    Mean and (biased) variance are taken over the normalized axes, with a
    shifted Welford scheme that stays accurate when the mean is large
    relative to the spread.

    Parameters
    ----------
    x : array_like
        Input.  float32 and float64 are computed in their own precision;
        float16 and bfloat16 (``ml_dtypes.bfloat16``) are computed in
        float32 and rounded once to the input's dtype; integer and bool
        inputs are converted to float64.  Every array argument is taken as
        ``numpy.asarray`` takes it (a ``numpy.matrix`` is its 2-D array);
        masked arrays are refused with a TypeError.  A Dask array here or
        in weight or bias gives lazy Dask arrays back, one fastnorm call per
        block, bit for bit the in-memory call on the computed (C-order)
        arrays (docs/dask.md: dispatch, chunking, determinism).
    normalized_shape : int or tuple of int, optional
        Sizes of the trailing dimensions to normalize over, as in
        ``torch.nn.functional.layer_norm``.
    weight, bias : array_like, optional
        Scale and shift.  With at most as many dimensions as there are
        normalized axes, they broadcast to the normalized shape (the sizes of
        the normalized axes in increasing axis order) and every row shares
        them; a scalar or a vector over the last normalized axis both work.
        With x's number of dimensions they broadcast against x itself:
        per-sample modulation (AdaLN), e.g. x (B, T, D) with weight and bias
        (B, 1, D), applied in the same pass.  Converted to the compute dtype
        (x's, or float32 for float16/bfloat16 inputs).
    eps : float, default 1e-5
        Added to the variance; finite and >= 0.  None also means 1e-5.
    axis : int or tuple of int, optional
        NumPy-style axes to normalize over; they need not be trailing
        (``axis=1`` on NCHW is the channels-first LayerNorm).  If given with
        `normalized_shape`, both must name the same axes.  With neither, the
        last axis is normalized.
    out : ndarray, optional
        Where to write the result: x's shape and the result dtype, any
        strides whose elements do not overlap each other (ValueError for a
        broadcast or sliding-window view); it may be x itself (in place).
        Not with a Dask input (a TypeError): write a lazy result with
        ``dask.array.store`` or ``to_zarr`` instead.
    dtype : dtype, optional
        The result's dtype: float32, float64, float16 or bfloat16 (default
        x's, float64 for integer input).  The computation is unchanged, only
        the final rounding differs: ``rms_norm(x_bf16, dtype=np.float32)``
        gives the float32 values that are otherwise rounded to bfloat16
        (every kernel set but ``avx512_bf16``, whose bfloat16 rounding
        flushes results below 2**-126 to zero, rounds them to exactly
        ``rms_norm(x_bf16)``).  A dtype narrower than the compute dtype
        rounds its result once.  `out` must have this dtype.
    return_stats : bool, default False
        Also return ``mean`` and ``rstd = 1/sqrt(var + eps)``, shaped like x
        with 1 at each normalized axis (float64 for float64 results, else
        float32, also for float16 and bfloat16).

    Returns
    -------
    y : ndarray or dask.array.Array
        The normalized array (``out`` when given; a Dask array when an
        argument is one).
    mean, rstd : ndarray
        Only when `return_stats` is true.

    Raises
    ------
    TypeError
        Unsupported dtype, 0-d input, non-real eps, or an out of the wrong dtype.
    ValueError
        Shapes that do not fit, a normalized axis of size 0, a bad eps, or a
        read-only out.
    numpy.exceptions.AxisError
        An axis out of range or named twice.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> x = np.arange(8, dtype=np.float32).reshape(2, 4)
    >>> fastnorm.layer_norm(x).round(3)
    array([[-1.342, -0.447,  0.447,  1.342],
           [-1.342, -0.447,  0.447,  1.342]], dtype=float32)
    """
    try:
        return _core.normalize(
            _LN, x, normalized_shape, weight, bias, eps, axis, out, return_stats, dtype
        )
    except _core.DaskOperand:
        return _dask.normalize(
            _LN, x, normalized_shape, weight, bias, eps, axis, out, return_stats, dtype
        )


@overload
def rms_norm(
    x: ArrayLike,
    normalized_shape: Axes | None = ...,
    weight: ArrayLike | None = ...,
    eps: float | None = ...,
    *,
    axis: Axes | None = ...,
    out: Array | None = ...,
    dtype: DTypeLike | None = ...,
    return_stats: Literal[False] = ...,
) -> Array: ...
@overload
def rms_norm(
    x: ArrayLike,
    normalized_shape: Axes | None = ...,
    weight: ArrayLike | None = ...,
    eps: float | None = ...,
    *,
    axis: Axes | None = ...,
    out: Array | None = ...,
    dtype: DTypeLike | None = ...,
    return_stats: Literal[True],
) -> tuple[Array, Array]: ...
@overload
def rms_norm(
    x: ArrayLike,
    normalized_shape: Axes | None = ...,
    weight: ArrayLike | None = ...,
    eps: float | None = ...,
    *,
    axis: Axes | None = ...,
    out: Array | None = ...,
    dtype: DTypeLike | None = ...,
    return_stats: bool,
) -> Array | tuple[Array, Array]: ...
def rms_norm(
    x: ArrayLike,
    normalized_shape: Axes | None = None,
    weight: ArrayLike | None = None,
    eps: float | None = None,
    *,
    axis: Axes | None = None,
    out: Array | None = None,
    dtype: DTypeLike | None = None,
    return_stats: bool = False,
) -> Array | tuple[Array, Array]:
    """Root-mean-square normalization: ``x / sqrt(mean(x**2) + eps) * weight``.

    Parameters
    ----------
    x : array_like
        Input, as in `layer_norm` (float16 and bfloat16 compute in float32;
        a Dask array gives lazy Dask arrays back).
    normalized_shape : int or tuple of int, optional
        Sizes of the trailing dimensions to normalize over.
    weight : array_like, optional
        Scale, under either of `layer_norm`'s rules (shared, or per-sample
        with x's number of dimensions).
    eps : float, optional
        Added to the mean square; default the machine epsilon of the
        compute dtype, as in PyTorch: ``numpy.finfo(numpy.float32).eps``
        for float32, float16 and bfloat16 inputs, float64's for float64.
    axis : int or tuple of int, optional
        NumPy-style axes to normalize over (see `layer_norm`).
    out : ndarray, optional
        Where to write the result (may be x itself).
    dtype : dtype, optional
        The result's dtype (see `layer_norm`).
    return_stats : bool, default False
        Also return ``rstd = 1/sqrt(mean(x**2) + eps)`` in keepdims shape.

    Returns
    -------
    y : ndarray
    rstd : ndarray
        Only when `return_stats` is true.

    Raises
    ------
    TypeError, ValueError, numpy.exceptions.AxisError
        As for `layer_norm`.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> fastnorm.rms_norm(np.array([3.0, 4.0]), eps=0.0)
    array([0.84852814, 1.13137085])
    """
    try:
        return _core.normalize(
            _RMS, x, normalized_shape, weight, None, eps, axis, out, return_stats, dtype
        )
    except _core.DaskOperand:
        return _dask.normalize(
            _RMS, x, normalized_shape, weight, None, eps, axis, out, return_stats, dtype
        )


def layer_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    normalized_shape: Axes | None = None,
    weight: ArrayLike | None = None,
    *,
    mean: ArrayLike | None = None,
    rstd: ArrayLike | None = None,
    eps: float | None = 1e-5,
    axis: Axes | None = None,
    bias: ArrayLike | None = None,
) -> tuple[Array, Array | None, Array]:
    """Gradients of `layer_norm` in one fused pass.

    Parameters
    ----------
    dy : array_like
        Gradient of the loss with respect to the forward's output; x's shape.
    x : array_like
        The forward's input.  When any argument is a Dask array, every
        result is a lazy Dask array: dx block by block, bit for bit the
        in-memory dx on the computed (C-order) arrays; dweight and dbias
        the sum of each block's float64 partial sums in a fixed tree,
        rounded once: the same bits for a given chunking on any scheduler
        and any number of workers.
    normalized_shape, axis : optional
        The normalized axes, as in `layer_norm`.
    weight : array_like, optional
        The forward's weight, under either of `layer_norm`'s rules (shared,
        or per-sample with x's number of dimensions).
    mean, rstd : ndarray, optional
        The statistics `layer_norm(..., return_stats=True)` returned, in
        keepdims shape.  With rstd the variance is not recomputed; without
        them both are recomputed from x with `eps`.  The mean is always taken
        from x in the same pass (from pivot-shifted sums), which is exact
        where a float32 mean would have been rounded; `mean` is checked for
        shape only.
    eps : float, default 1e-5
        As in the forward (None also means 1e-5); used only when rstd is not
        given.
    bias : array_like, optional
        The forward's bias.  Only its shape is used: dbias comes back in that
        shape (summed over the dimensions it was broadcast along).

    Returns
    -------
    dx : ndarray
        x's shape and dtype.
    dweight : ndarray or None
        Weight's own shape (summed over the dimensions it was broadcast
        along); None when weight is None.
    dbias : ndarray
        The bias's shape when `bias` is given, else the normalized shape.

    dweight and dbias are float32 for float16 and bfloat16 inputs (summed in
    float64; rounding them to the input's dtype would cost more accuracy
    than the whole computation), else x's dtype.

    Notes
    -----
    The sums over rows for dweight and dbias are taken in fixed-size row
    blocks with float64 partial sums, added in a fixed order: the result is
    bitwise the same for any number of threads.  With a per-sample weight or
    bias, dx still comes from the fused kernel and the parameter sums from
    float64 NumPy reductions.
    """
    try:
        return _core.normalize_backward(
            _LN, dy, x, normalized_shape, weight, mean, rstd, eps, axis, bias
        )
    except _core.DaskOperand:
        return _dask.normalize_backward(
            _LN, dy, x, normalized_shape, weight, mean, rstd, eps, axis, bias
        )


def rms_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    normalized_shape: Axes | None = None,
    weight: ArrayLike | None = None,
    *,
    rstd: ArrayLike | None = None,
    eps: float | None = None,
    axis: Axes | None = None,
) -> tuple[Array, Array | None]:
    """Gradients of `rms_norm` in one fused pass.

    Parameters
    ----------
    dy, x, normalized_shape, weight, axis
        As in `layer_norm_backward`.
    rstd : ndarray, optional
        The statistic `rms_norm(..., return_stats=True)` returned; recomputed
        from x with `eps` when omitted.
    eps : float, optional
        As in the forward (default the compute dtype's machine epsilon, as in
        `rms_norm`).

    Returns
    -------
    dx : ndarray
    dweight : ndarray or None
    """
    try:
        return _core.normalize_backward(
            _RMS, dy, x, normalized_shape, weight, None, rstd, eps, axis, None
        )
    except _core.DaskOperand:
        return _dask.normalize_backward(
            _RMS, dy, x, normalized_shape, weight, None, rstd, eps, axis, None
        )


def add_layer_norm(
    x: ArrayLike,
    residual: ArrayLike,
    normalized_shape: Axes | None = None,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    eps: float | None = 1e-5,
    *,
    axis: Axes | None = None,
    out: Array | None = None,
    dtype: DTypeLike | None = None,
    residual_out: Array | None = None,
    return_stats: bool = False,
) -> tuple[Array, ...]:
    """Fused residual add and layer norm: ``h = x + residual; y = layer_norm(h)``.

    One pass reads x and residual and writes h and y.  h is rounded to x's
    dtype before it is normalized, so y equals ``layer_norm(x + residual)``
    bit for bit.

    Parameters
    ----------
    x, residual : array_like
        Same shape; residual is converted to x's dtype.  When either (or
        weight or bias) is a Dask array, y and h (and the stats) are lazy
        Dask arrays.
    normalized_shape, weight, bias, eps, axis, out, dtype, return_stats
        As in `layer_norm`; dtype is y's (h keeps x's).
    residual_out : ndarray, optional
        Where to write h (x's shape and dtype, elements not overlapping each
        other, as for `out`); it may be `residual` itself.

    Returns
    -------
    y, h : ndarray
        The normalized array and the sum (``out`` and ``residual_out`` when
        given).
    mean, rstd : ndarray
        Only when `return_stats` is true.
    """
    try:
        return _core.add_normalize(
            _LN, x, residual, normalized_shape, weight, bias, eps, axis, out, residual_out,
            return_stats, dtype,
        )  # fmt: skip
    except _core.DaskOperand:
        return _dask.add_normalize(
            _LN, x, residual, normalized_shape, weight, bias, eps, axis, out, residual_out,
            return_stats, dtype,
        )  # fmt: skip


def add_rms_norm(
    x: ArrayLike,
    residual: ArrayLike,
    normalized_shape: Axes | None = None,
    weight: ArrayLike | None = None,
    eps: float | None = None,
    *,
    axis: Axes | None = None,
    out: Array | None = None,
    dtype: DTypeLike | None = None,
    residual_out: Array | None = None,
    return_stats: bool = False,
) -> tuple[Array, ...]:
    """Fused residual add and RMS norm: ``h = x + residual; y = rms_norm(h)``.

    See `add_layer_norm`; returns ``(y, h)`` or ``(y, h, rstd)``.  eps
    defaults as in `rms_norm`.
    """
    try:
        return _core.add_normalize(
            _RMS, x, residual, normalized_shape, weight, None, eps, axis, out, residual_out,
            return_stats, dtype,
        )  # fmt: skip
    except _core.DaskOperand:
        return _dask.add_normalize(
            _RMS, x, residual, normalized_shape, weight, None, eps, axis, out, residual_out,
            return_stats, dtype,
        )  # fmt: skip
