"""The one reference every test compares against: LayerNorm and RMSNorm in
extended precision (numpy.longdouble), shifted by the row median and done in
two passes, so it is exact to far below float64 rounding for the inputs the
tests use."""
import numpy as np

OPS = ("layer_norm", "rms_norm")


def axes_of(ndim, normalized_shape=None, axis=None):
    """The sorted normalized axes, by the public API's rules."""
    if axis is not None:
        ax = (axis,) if np.isscalar(axis) else tuple(axis)
        return tuple(sorted(a % ndim for a in ax))
    if normalized_shape is not None:
        k = 1 if np.isscalar(normalized_shape) else len(normalized_shape)
        return tuple(range(ndim - k, ndim))
    return (ndim - 1,)


def _affine_for_x(value, x_shape, axes):
    if value is None:
        return None
    norm_shape = tuple(x_shape[a] for a in axes)
    full = np.broadcast_to(np.asarray(value), norm_shape)
    keep = [x_shape[a] if a in axes else 1 for a in range(len(x_shape))]
    return full.reshape(keep).astype(np.longdouble)


def result_dtype(x):
    dt = np.asarray(x).dtype
    return dt if dt in (np.float32, np.float64) else np.dtype(np.float64)


def reference(op, x, axes, weight=None, bias=None, eps=None):
    """Returns (y, mean, rstd) in longdouble; mean is None for rms_norm.
    Affine parameters are first rounded to the result dtype, as the API does."""
    x = np.asarray(x)
    dt = result_dtype(x)
    if eps is None:
        eps = 1e-5 if op == "layer_norm" else float(np.finfo(dt).eps)
    xl = x.astype(dt).astype(np.longdouble)
    if op == "layer_norm":
        pivot = np.median(xl, axis=axes, keepdims=True)
        d = xl - pivot
        mu = d.mean(axis=axes, keepdims=True)
        c = d - mu
        rstd = 1 / np.sqrt((c * c).mean(axis=axes, keepdims=True) + eps)
        y = c * rstd
        mean = pivot + mu
    else:
        rstd = 1 / np.sqrt((xl * xl).mean(axis=axes, keepdims=True) + eps)
        y = xl * rstd
        mean = None
    w = _affine_for_x(None if weight is None else np.asarray(weight).astype(dt), x.shape, axes)
    b = _affine_for_x(None if bias is None else np.asarray(bias).astype(dt), x.shape, axes)
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y, mean, rstd


TOLERANCE = {np.dtype(np.float32): 5e-6, np.dtype(np.float64): 1e-12}


def max_error(actual, expected):
    """Absolute error where |expected| <= 1, relative above (the issue's metric).
    NaN must match NaN."""
    actual = np.asarray(actual, dtype=np.longdouble)
    expected = np.asarray(expected, dtype=np.longdouble)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    assert np.array_equal(nan_a, nan_e), "NaN positions differ"
    ok = ~nan_e
    if not ok.any():
        return 0.0
    err = np.abs(actual[ok] - expected[ok]) / np.maximum(1, np.abs(expected[ok]))
    return float(err.max())


def assert_close(actual, expected, dtype):
    err = max_error(actual, expected)
    tol = TOLERANCE[np.dtype(dtype)]
    assert err <= tol, f"max error {err:.3g} > {tol:g} for {np.dtype(dtype)}"


def reference_backward(op, dy, x, axes, weight=None, eps=None):
    """(dx, dweight over the normalized shape or None, dbias or None), longdouble."""
    x = np.asarray(x)
    dt = result_dtype(x)
    if eps is None:
        eps = 1e-5 if op == "layer_norm" else float(np.finfo(dt).eps)
    xl = x.astype(dt).astype(np.longdouble)
    dyl = np.asarray(dy).astype(dt).astype(np.longdouble)
    n = np.prod([x.shape[a] for a in axes])
    if op == "layer_norm":
        pivot = np.median(xl, axis=axes, keepdims=True)
        c = (xl - pivot) - (xl - pivot).mean(axis=axes, keepdims=True)
    else:
        c = xl
    rstd = 1 / np.sqrt((c * c).mean(axis=axes, keepdims=True) + eps)
    xhat = c * rstd
    w = _affine_for_x(None if weight is None else np.asarray(weight).astype(dt), x.shape, axes)
    g = dyl * w if w is not None else dyl
    mean_gx = (g * xhat).sum(axis=axes, keepdims=True) / n
    if op == "layer_norm":
        dx = rstd * (g - g.sum(axis=axes, keepdims=True) / n - xhat * mean_gx)
    else:
        dx = rstd * (g - xhat * mean_gx)
    batch = tuple(a for a in range(x.ndim) if a not in axes)
    norm_shape = tuple(x.shape[a] for a in axes)
    dw = (dyl * xhat).sum(axis=batch).reshape(norm_shape) if weight is not None else None
    db = dyl.sum(axis=batch).reshape(norm_shape) if op == "layer_norm" else None
    return dx, dw, db
