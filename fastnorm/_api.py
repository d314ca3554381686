"""The public functions: argument checking, allocation, and the call into the
compiled core.  Everything a user can get wrong is caught here, with a
message that names the values and shapes involved."""
import numbers
import operator

import ml_dtypes
import numpy as np

from . import _core

try:  # NumPy >= 1.25
    from numpy.exceptions import AxisError
except ImportError:  # pragma: no cover
    from numpy import AxisError

__all__ = ["layer_norm", "rms_norm", "layer_norm_backward", "rms_norm_backward",
           "add_layer_norm", "add_rms_norm"]

_BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
# dtypes with kernels of their own; float16 and bfloat16 compute in float32
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16), _BFLOAT16)


def _is_real(dt):
    return dt.kind in "fiub" or dt == _BFLOAT16


def _refuse_masked(value, name):
    """Masked arrays are refused: the kernels would read the masked values."""
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array; masked arrays are not supported: fill "
                        f"the masked values ({name}.filled(...)) or pass {name}.data")


def _plain_array(value, name):
    """An array argument as a plain ndarray, as numpy.asarray makes it:
    subclasses such as numpy.matrix become the arrays they hold (a matrix is
    its 2-D array); masked arrays are refused."""
    if type(value) is np.ndarray:
        return value
    _refuse_masked(value, name)
    return np.asarray(value)


def _input_array(x):
    """x as an ndarray of a kernel dtype; integers and bools become float64."""
    x = _plain_array(x, "x")
    dt = x.dtype
    if dt in _KERNEL_DTYPES:
        pass
    elif dt.kind == "f" and dt.newbyteorder("=") in _KERNEL_DTYPES:
        x = x.astype(dt.newbyteorder("="))  # non-native byte order
    elif dt.kind in "iub":
        x = x.astype(np.float64)
    elif dt.kind == "f":
        raise TypeError(
            f"fastnorm does not support dtype {dt}; convert x to float32 or float64")
    else:
        raise TypeError(
            f"x must be a real numeric array (float16, bfloat16, float32, float64, integer "
            f"or bool), got dtype {dt}")
    if x.ndim == 0:
        raise TypeError("x must have at least one dimension, got a 0-d array (a scalar)")
    return x


def _as_axis_tuple(value, name):
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool):
        return (operator.index(value),)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be an int or a tuple of ints, got {value!r}") from None
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (numbers.Integral, np.integer)):
            raise TypeError(f"{name} must be an int or a tuple of ints, got {value!r}")
    return tuple(operator.index(v) for v in items)


def _normalized_axes(shape, normalized_shape, axis):
    """Sorted tuple of the normalized axes of an array of this shape."""
    ndim = len(shape)
    axes_from_shape = None
    if normalized_shape is not None:
        ns = _as_axis_tuple(normalized_shape, "normalized_shape")
        if len(ns) == 0:
            raise ValueError("normalized_shape must name at least one dimension, got ()")
        if len(ns) > ndim or tuple(shape[ndim - len(ns):]) != ns:
            trailing = tuple(shape[max(ndim - len(ns), 0):])
            raise ValueError(
                f"normalized_shape {ns} does not match the trailing dimensions {trailing} "
                f"of x with shape {tuple(shape)}")
        axes_from_shape = tuple(range(ndim - len(ns), ndim))
    if axis is None:
        axes = axes_from_shape if axes_from_shape is not None else (ndim - 1,)
    else:
        raw = _as_axis_tuple(axis, "axis")
        if len(raw) == 0:
            raise ValueError("axis must name at least one axis, got ()")
        axes = []
        for a in raw:
            if not -ndim <= a < ndim:
                raise AxisError(a, ndim)
            a = a % ndim
            if a in axes:
                raise AxisError(f"axis {raw} names axis {a} twice (x has shape {tuple(shape)})")
            axes.append(a)
        axes = tuple(sorted(axes))
        if axes_from_shape is not None and axes != axes_from_shape:
            raise ValueError(
                f"axis {raw} and normalized_shape {tuple(shape[axes_from_shape[0]:])} disagree "
                f"for x with shape {tuple(shape)}: normalized_shape names axes {axes_from_shape}")
    for a in axes:
        if shape[a] == 0:
            raise ValueError(
                f"cannot normalize over axis {a} of size 0 (x has shape {tuple(shape)})")
    return axes


def _real_array(value, name):
    """value as an ndarray of a real numeric dtype, else TypeError."""
    arr = _plain_array(value, name)
    if not _is_real(arr.dtype):
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return arr


def _broadcasts(shape, target):
    return len(shape) <= len(target) and all(
        s in (1, t) for s, t in zip(shape[::-1], target[::-1]))


def _affine_kind(weight, bias, x, axes):
    """Which rule weight and bias follow: True when one of them has x's
    number of dimensions, broadcasts against x itself and varies along a
    batch axis (per-sample modulation, AdaLN); False when every row shares
    them (a parameter of x's rank that is 1 on every batch axis is shared).
    ValueError for shapes that fit neither rule."""
    norm_shape = tuple(x.shape[a] for a in axes)
    per_sample = False
    for name, value in (("weight", weight), ("bias", bias)):
        if value is None:
            continue
        shape = np.shape(value)
        if len(shape) <= len(axes) and _broadcasts(shape, norm_shape):
            continue
        if len(shape) == x.ndim and _broadcasts(shape, x.shape):
            per_sample |= any(shape[a] != 1 for a in range(x.ndim) if a not in axes)
            continue
        raise ValueError(
            f"{name} with shape {shape} cannot be broadcast to the normalized shape "
            f"{norm_shape}, nor (as a per-sample {name} with x's {x.ndim} dimensions) "
            f"against x with shape {x.shape}")
    return per_sample


def _affine(value, name, dtype, norm_shape):
    """weight/bias broadcast to the normalized shape, C-contiguous, in the
    compute dtype (x's, or float32 for float16/bfloat16 inputs)."""
    if value is None:
        return None
    arr = _real_array(value, name)
    if not _broadcasts(arr.shape, norm_shape):
        raise ValueError(
            f"{name} with shape {arr.shape} cannot be broadcast to the normalized shape "
            f"{norm_shape}")
    if arr.shape != norm_shape:
        arr = np.broadcast_to(arr, norm_shape)
    return _kernel_operand(arr, dtype, contiguous=True)


def _kernel_operand(arr, dtype, contiguous=False):
    """arr in x's compute dtype, aligned (C reads it as FN_T: an unaligned
    view of a byte buffer would be undefined behaviour there), and
    C-contiguous when asked; copied only when it is not so already."""
    requirements = ("A", "C") if contiguous else ("A",)
    return np.require(arr, dtype=_core.compute_dtype(dtype), requirements=requirements)


def _per_sample_affine(value, name, x, axes):
    """A weight/bias under either rule as an array of x.ndim dimensions that
    broadcasts against x, in the compute dtype."""
    if value is None:
        return None
    arr = _real_array(value, name)
    if arr.ndim < x.ndim:  # the normalized-shape rule: place it on the normalized axes
        norm_shape = tuple(x.shape[a] for a in axes)
        arr = np.broadcast_to(arr, norm_shape).reshape(
            tuple(x.shape[a] if a in axes else 1 for a in range(x.ndim)))
    return _kernel_operand(arr, x.dtype)


def _prepare_affine(weight, bias, x, axes):
    """Check weight and bias (errors name the shapes the caller passed) and
    convert them for the kernels: returns (weight, bias, per_sample)."""
    weight, bias = (None if v is None else _real_array(v, name)
                    for v, name in ((weight, "weight"), (bias, "bias")))
    if _affine_kind(weight, bias, x, axes):
        return (_per_sample_affine(weight, "weight", x, axes),
                _per_sample_affine(bias, "bias", x, axes), True)
    norm_shape = tuple(x.shape[a] for a in axes)
    return (_affine(_drop_batch_axes(weight, x, axes), "weight", x.dtype, norm_shape),
            _affine(_drop_batch_axes(bias, x, axes), "bias", x.dtype, norm_shape), False)


def _drop_batch_axes(value, x, axes):
    """A shared weight/bias of x's rank (1 on every batch axis) as one over
    the normalized axes; anything else unchanged."""
    if value is None or np.ndim(value) != x.ndim or x.ndim == len(axes):
        return value
    shape = np.shape(value)
    return np.reshape(value, tuple(shape[a] for a in axes))


def _resolve_eps(eps, op, dtype):
    """eps checked, with None meaning the op's default (_core.default_eps)."""
    return _core.default_eps(op, dtype) if eps is None else _check_eps(eps)


def _check_eps(eps):
    if isinstance(eps, bool) or not isinstance(eps, (numbers.Real, np.integer, np.floating)):
        raise TypeError(f"eps must be a real number, got {eps!r}")
    try:
        eps = float(eps)
    except OverflowError:
        raise ValueError(f"eps must be finite and >= 0, got {eps!r}") from None
    if not (eps >= 0.0 and np.isfinite(eps)):
        raise ValueError(f"eps must be finite and >= 0, got {eps!r}")
    return eps


def _check_out(out, x, name="out"):
    """out as the plain ndarray the kernels write through (a view of the
    caller's array when that is a subclass such as numpy.matrix)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    out = _plain_array(out, name)
    if out.dtype != x.dtype:
        raise TypeError(f"{name} has dtype {out.dtype} but the result has dtype {x.dtype}")
    if out.shape != x.shape:
        raise ValueError(f"{name} has shape {out.shape} but x has shape {x.shape}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    if out.size and any(st == 0 and n > 1 for st, n in zip(out.strides, out.shape)):
        raise ValueError(f"{name} has elements that share memory (a zero stride, as from "
                         "broadcast_to); it cannot hold a result")
    overlap = _core.internal_overlap(out)
    if overlap == 1:
        raise ValueError(f"{name} has elements that share memory (shape {out.shape}, strides "
                         f"{out.strides}, as from a sliding-window as_strided view); it cannot "
                         "hold a result")
    if overlap:
        raise ValueError(f"{name} has interleaved strides {out.strides} (shape {out.shape}) "
                         "whose elements may share memory, and is too large to check "
                         "exactly; pass an array whose elements do not overlap")
    return out


def _axes_last(ndim, axes):
    """The transpose order that moves the normalized axes to the end (for
    work copies of layouts the kernels cannot walk), and their new positions."""
    batch = tuple(a for a in range(ndim) if a not in axes)
    return batch + axes, tuple(range(len(batch), ndim))


def _new_stats(op, x, axes, return_stats):
    """(mean, rstd) arrays in keepdims shape to be filled, or Nones."""
    if not return_stats:
        return None, None
    stats_shape = tuple(1 if a in axes else s for a, s in enumerate(x.shape))
    dtype = _core.compute_dtype(x.dtype)
    mean = np.empty(stats_shape, dtype) if op == _core.OP_LAYER_NORM else None
    return mean, np.empty(stats_shape, dtype)


def _same_view(a, b):
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.strides == b.strides and a.shape == b.shape)


def _normalize(op, x, normalized_shape, weight, bias, eps, axis, out, return_stats):
    """The general path: everything _core.fast_forward declined."""
    x_in, out_in = x, out
    x = _input_array(x)
    axes = _normalized_axes(x.shape, normalized_shape, axis)
    weight, bias, per_sample = _prepare_affine(weight, bias, x, axes)
    eps = _resolve_eps(eps, op, x.dtype)
    if out is not None:
        out = _check_out(out, x)

    mean, rstd = _new_stats(op, x, axes, return_stats)

    y = out if out is not None else _core.empty_output(x)
    if x.size == 0:
        return _result(op, y if out_in is None else out_in, mean, rstd, return_stats)

    if out is not None and out_in is not x_in and np.may_share_memory(x, out) \
            and not _same_view(x, out):
        x = x.copy()  # partial overlap: read from a private copy
    if not x.flags.aligned:
        x = x.copy()
    for name in ("weight", "bias"):
        w = weight if name == "weight" else bias
        if w is not None and np.may_share_memory(w, y):
            if name == "weight":
                weight = w.copy()
            else:
                bias = w.copy()

    y_work = y if y.flags.aligned else np.empty_like(x)
    if not _core.forward(op, x, y_work, weight, bias, mean, rstd, eps, axes,
                         per_sample=per_sample):
        # the normalized axes of x or y are not one strided run: move them to
        # the end of contiguous work copies
        order, tail = _axes_last(x.ndim, axes)
        x_work = np.ascontiguousarray(np.transpose(x, order))
        y_work = np.empty_like(x_work)
        stats_w = [None if st is None else np.empty(np.transpose(st, order).shape, st.dtype)
                   for st in (mean, rstd)]
        if per_sample:
            weight, bias = (None if w is None else np.transpose(w, order) for w in (weight, bias))
        _core.forward(op, x_work, y_work, weight, bias, *stats_w, eps, tail,
                      per_sample=per_sample)
        np.copyto(np.transpose(y, order), y_work)
        for st, st_w in zip((mean, rstd), stats_w):
            if st is not None:
                np.copyto(np.transpose(st, order), st_w)
    elif y_work is not y:
        np.copyto(y, y_work)
    return _result(op, y if out_in is None else out_in, mean, rstd, return_stats)


def _result(op, y, mean, rstd, return_stats):
    if not return_stats:
        return y
    if op == _core.OP_LAYER_NORM:
        return y, mean, rstd
    return y, rstd


def layer_norm(x, normalized_shape=None, weight=None, bias=None, eps=1e-5, *,
               axis=None, out=None, return_stats=False):
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
        masked arrays are refused with a TypeError.
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
    return_stats : bool, default False
        Also return ``mean`` and ``rstd = 1/sqrt(var + eps)``, shaped like x
        with 1 at each normalized axis (float64 for float64 results, else
        float32, also for float16 and bfloat16).

    Returns
    -------
    y : ndarray
        The normalized array (``out`` when given).
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
    fast = _core.fast_forward(_core.OP_LAYER_NORM, x, normalized_shape, weight, bias, eps,
                              axis, out, return_stats)
    if fast is not None:
        return fast
    return _normalize(_core.OP_LAYER_NORM, x, normalized_shape, weight, bias, eps,
                      axis, out, return_stats)


def rms_norm(x, normalized_shape=None, weight=None, eps=None, *, axis=None, out=None,
             return_stats=False):
    """Root-mean-square normalization: ``x / sqrt(mean(x**2) + eps) * weight``.

    Parameters
    ----------
    x : array_like
        Input, as in `layer_norm` (float16 and bfloat16 compute in float32).
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
    fast = _core.fast_forward(_core.OP_RMS_NORM, x, normalized_shape, weight, None, eps,
                              axis, out, return_stats)
    if fast is not None:
        return fast
    return _normalize(_core.OP_RMS_NORM, x, normalized_shape, weight, None, eps,
                      axis, out, return_stats)


# ---- backward --------------------------------------------------------------

def _grad_input(dy, x):
    """dy as an array of x's shape and dtype."""
    arr = _real_array(dy, "dy")
    if arr.shape != x.shape:
        raise ValueError(f"dy has shape {arr.shape} but x has shape {x.shape}")
    if arr.dtype != x.dtype or not arr.flags.aligned:
        arr = arr.astype(x.dtype)
    return arr


def _stats_input(value, name, x, axes):
    if value is None:
        return None
    arr = _real_array(value, name)
    keep = tuple(1 if a in axes else s for a, s in enumerate(x.shape))
    if arr.shape != keep:
        raise ValueError(
            f"{name} has shape {arr.shape} but the statistics of x with shape {x.shape} "
            f"over axes {axes} have shape {keep} (as the forward returns them)")
    return _kernel_operand(arr, x.dtype, contiguous=True)


def _sum_to_shape(full, shape):
    """Sum a gradient over the normalized shape down to a broadcast parameter's shape."""
    lead = full.ndim - len(shape)
    if lead:
        full = full.sum(axis=tuple(range(lead)))
    keep = tuple(i for i, s in enumerate(shape) if s == 1 and full.shape[i] != 1)
    if keep:
        full = full.sum(axis=keep, keepdims=True)
    return full.reshape(shape)


def _param_grad(g, shape, x, axes):
    """A parameter gradient over the normalized shape summed down to the
    parameter's own shape (which may have x's number of dimensions, all 1
    on the batch axes)."""
    if len(shape) == x.ndim and len(shape) != len(axes):
        g = g.reshape(tuple(x.shape[a] if a in axes else 1 for a in range(x.ndim)))
        return _sum_over_broadcast(g, shape, x, axes)
    return _sum_to_shape(g, shape)


def _sum_over_broadcast(full, shape, x, axes):
    """A gradient of x's shape (float64) summed down to a parameter's own
    shape, under either broadcasting rule."""
    if len(shape) == x.ndim:  # per-sample: broadcast against x
        over = tuple(a for a in range(x.ndim) if shape[a] == 1 and x.shape[a] != 1)
        return full.sum(axis=over, keepdims=True).reshape(shape)
    batch = tuple(a for a in range(x.ndim) if a not in axes)
    return _sum_to_shape(full.sum(axis=batch), shape)


def _per_sample_backward(op, dy, x, axes, weight, weight_shape, bias_shape, rstd, eps):
    """Backward with a per-sample weight or bias (AdaLN).  With g = dy * w,
    dx is the backward of an unweighted norm at g, so the fused kernel
    computes it; dweight = sum(dy * xhat) and dbias = sum(dy) are summed in
    float64 over the axes each parameter was broadcast along."""
    dtype = _core.compute_dtype(x.dtype)
    # In short rows dx can cancel to a small fraction of g (two elements:
    # dx = rstd * g' * eps / (var + eps)), so a float32 rounding of g would
    # show in dx; as the kernels do for shared weights (rows shorter than two
    # vectors take the portable kernel, which forms g in double), such rows
    # are computed in float64 here.
    n = int(np.prod([x.shape[a] for a in axes]))
    work = np.float64 if n < 32 else dtype
    x_c, dy_c = x.astype(work, copy=False), dy.astype(work, copy=False)
    w = _per_sample_affine(weight, "weight", x_c, axes)
    g = dy_c if w is None else dy_c * w
    dx = _normalize_backward(op, g, x_c, None, None, None, rstd, eps, axes)[0]
    result = [dx.astype(x.dtype, copy=False)]
    if weight is not None:
        fwd = (layer_norm(x_c, None, None, None, eps, axis=axes, return_stats=True)
               if op == _core.OP_LAYER_NORM
               else rms_norm(x_c, None, None, eps, axis=axes, return_stats=True))
        xhat, rstd_fwd = fwd[0], fwd[-1]
        if rstd is not None:  # the caller's rstd, where it differs from eps's
            xhat = xhat * np.where(rstd == rstd_fwd, 1, rstd / rstd_fwd)
        full = np.multiply(dy_c, xhat, dtype=np.float64)
        result.append(_sum_over_broadcast(full, weight_shape, x, axes).astype(dtype))
    else:
        result.append(None)
    if op == _core.OP_LAYER_NORM:
        dbias = np.asarray(dy_c, dtype=np.float64)
        shape = bias_shape if bias_shape is not None else tuple(x.shape[a] for a in axes)
        result.append(_sum_over_broadcast(dbias, shape, x, axes).astype(dtype))
    return tuple(result)


def _normalize_backward(op, dy, x, normalized_shape, weight, mean, rstd, eps, axis,
                        bias_shape=None):
    x = _input_array(x)
    axes = _normalized_axes(x.shape, normalized_shape, axis)
    norm_shape = tuple(x.shape[a] for a in axes)
    dy = _grad_input(dy, x)
    if mean is not None and rstd is None:
        raise ValueError("mean was given without rstd: pass both statistics the forward "
                         "returned, or neither to recompute them")
    _stats_input(mean, "mean", x, axes)  # validated; the kernel recomputes the mean exactly
    rstd = _stats_input(rstd, "rstd", x, axes)
    eps = _resolve_eps(eps, op, x.dtype)
    weight = None if weight is None else _real_array(weight, "weight")
    weight_shape = None if weight is None else weight.shape
    bias_probe = None if bias_shape is None else np.broadcast_to(np.float32(0), bias_shape)
    if _affine_kind(weight, bias_probe, x, axes):
        return _per_sample_backward(op, dy, x, axes, weight, weight_shape, bias_shape, rstd,
                                    eps)
    weight = _affine(_drop_batch_axes(weight, x, axes), "weight", x.dtype, norm_shape)
    if not x.flags.aligned:
        x = x.copy()
    dx = _core.empty_output(x)
    want_db = op == _core.OP_LAYER_NORM
    if x.size == 0:
        sums = (np.zeros(norm_shape) if weight is not None else None,
                np.zeros(norm_shape) if want_db else None)
    else:
        sums = _core.backward(op, x, dy, dx, weight, rstd, weight is not None, want_db, eps, axes)
        if sums is None:
            # the normalized axes are not one strided run: work on copies with
            # them moved to the end
            order, tail = _axes_last(x.ndim, axes)
            x_w = np.ascontiguousarray(np.transpose(x, order))
            dy_w = np.ascontiguousarray(np.transpose(dy, order))
            dx_w = np.empty_like(x_w)
            rstd_w = None if rstd is None else np.ascontiguousarray(np.transpose(rstd, order))
            sums = _core.backward(op, x_w, dy_w, dx_w, weight, rstd_w, weight is not None,
                                  want_db, eps, tail)
            np.copyto(np.transpose(dx, order), dx_w)
    dw, db = sums
    dtype = _core.compute_dtype(x.dtype)  # float32 for float16/bfloat16
    dweight = None if dw is None else _param_grad(dw, weight_shape, x, axes).astype(dtype)
    dbias = None if db is None else \
        _param_grad(db, norm_shape if bias_shape is None else bias_shape, x, axes).astype(dtype)
    if op == _core.OP_LAYER_NORM:
        return dx, dweight, dbias
    return dx, dweight


def layer_norm_backward(dy, x, normalized_shape=None, weight=None, *, mean=None, rstd=None,
                        eps=1e-5, axis=None, bias=None):
    """Gradients of `layer_norm` in one fused pass.

    Parameters
    ----------
    dy : array_like
        Gradient of the loss with respect to the forward's output; x's shape.
    x : array_like
        The forward's input.
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
    bias_shape = None if bias is None else np.shape(_real_array(bias, "bias"))
    return _normalize_backward(_core.OP_LAYER_NORM, dy, x, normalized_shape, weight, mean, rstd,
                               eps, axis, bias_shape)


def rms_norm_backward(dy, x, normalized_shape=None, weight=None, *, rstd=None, eps=None,
                      axis=None):
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
    return _normalize_backward(_core.OP_RMS_NORM, dy, x, normalized_shape, weight, None, rstd,
                               eps, axis)


# ---- fused residual add + norm ------------------------------------------------

def _add_normalize(op, x, residual, normalized_shape, weight, bias, eps, axis, out,
                   residual_out, return_stats):
    x = _input_array(x)
    r = _real_array(residual, "residual")
    if r.shape != x.shape:
        raise ValueError(f"residual has shape {r.shape} but x has shape {x.shape}")
    out_in, residual_out_in = out, residual_out
    if residual_out is not None:
        residual_out = _check_out(residual_out, x, "residual_out")
        if out is not None and np.may_share_memory(out, residual_out):
            raise ValueError("out and residual_out overlap: y and h need separate arrays")
        h = residual_out
    else:
        h = _core.empty_output(x)
    if r.dtype != x.dtype or not r.flags.aligned:
        r = r.astype(x.dtype)
    if out is not None:
        out = _check_out(out, x)
    axes = _normalized_axes(x.shape, normalized_shape, axis)
    weight, bias, per_sample = _prepare_affine(weight, bias, x, axes)
    eps = _resolve_eps(eps, op, x.dtype)
    y = out if out is not None else _core.empty_output(x)
    # weight or bias inside y or h would be overwritten while in use
    if weight is not None and (np.may_share_memory(weight, y) or np.may_share_memory(weight, h)):
        weight = weight.copy()
    if bias is not None and (np.may_share_memory(bias, y) or np.may_share_memory(bias, h)):
        bias = bias.copy()
    mean, rstd = _new_stats(op, x, axes, return_stats)

    # The kernels fuse the add for rows with contiguous elements: they read
    # a row of x and residual, write it to h, then write y from h, exactly as
    # the norm of the stored h would.  That covers C-contiguous arrays
    # normalized over trailing axes; other layouts (whose norm may run on
    # another kernel) and overlaps other than h is residual or y is x take
    # the two-step path, which is the reference the fused path must match.
    def clash(a, b):
        return np.may_share_memory(a, b) and not _same_view(a, b)
    trailing = axes == tuple(range(x.ndim - len(axes), x.ndim))
    fused_ok = (x.size > 0 and trailing
                and all(a.flags.c_contiguous and a.flags.aligned for a in (x, r, h, y))
                and not (clash(h, r) or clash(y, x)
                         or np.may_share_memory(h, x) or np.may_share_memory(y, r)
                         or np.may_share_memory(y, h)))
    if fused_ok and _core.forward(op, x, y, weight, bias, mean, rstd, eps, axes,
                                  residual=r, h=h, per_sample=per_sample):
        pass
    else:
        np.add(x, r, out=h)
        result = _normalize(op, h, None, weight, bias, eps, axes, y, return_stats)
        if return_stats:
            stats = result[1:]
            mean, rstd = (stats if op == _core.OP_LAYER_NORM else (None, stats[0]))
    y = y if out_in is None else out_in
    h = h if residual_out_in is None else residual_out_in
    if not return_stats:
        return y, h
    if op == _core.OP_LAYER_NORM:
        return y, h, mean, rstd
    return y, h, rstd


def add_layer_norm(x, residual, normalized_shape=None, weight=None, bias=None, eps=1e-5, *,
                   axis=None, out=None, residual_out=None, return_stats=False):
    """Fused residual add and layer norm: ``h = x + residual; y = layer_norm(h)``.

    One pass reads x and residual and writes h and y.  h is rounded to x's
    dtype before it is normalized, so y equals ``layer_norm(x + residual)``
    bit for bit.

    Parameters
    ----------
    x, residual : array_like
        Same shape; residual is converted to x's dtype.
    normalized_shape, weight, bias, eps, axis, out, return_stats
        As in `layer_norm`.
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
    return _add_normalize(_core.OP_LAYER_NORM, x, residual, normalized_shape, weight, bias, eps,
                          axis, out, residual_out, return_stats)


def add_rms_norm(x, residual, normalized_shape=None, weight=None, eps=None, *, axis=None,
                 out=None, residual_out=None, return_stats=False):
    """Fused residual add and RMS norm: ``h = x + residual; y = rms_norm(h)``.

    See `add_layer_norm`; returns ``(y, h)`` or ``(y, h, rstd)``.  eps
    defaults as in `rms_norm`.
    """
    return _add_normalize(_core.OP_RMS_NORM, x, residual, normalized_shape, weight, None, eps,
                          axis, out, residual_out, return_stats)
