"""The one reference every test compares against: LayerNorm and RMSNorm in
extended precision (numpy.longdouble), shifted by the row median and done in
two passes, so it is exact to far below float64 rounding for the inputs the
tests use."""

import ml_dtypes
import numpy as np

OPS = ("layer_norm", "rms_norm")
BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
HALF_DTYPES = (np.dtype(np.float16), BFLOAT16)


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
    """weight/bias by the API's two rules: broadcast to the normalized shape,
    or (with x's number of dimensions) against x itself."""
    if value is None:
        return None
    value = np.asarray(value)
    if value.ndim == len(x_shape):
        return np.broadcast_to(value, x_shape).astype(np.longdouble)
    norm_shape = tuple(x_shape[a] for a in axes)
    full = np.broadcast_to(value, norm_shape)
    keep = [x_shape[a] if a in axes else 1 for a in range(len(x_shape))]
    return full.reshape(keep).astype(np.longdouble)


def result_dtype(x):
    dt = np.asarray(x).dtype
    return dt if dt in (np.float32, np.float64) + HALF_DTYPES else np.dtype(np.float64)


def compute_dtype(dt):
    """What weight, bias and stats are rounded to: float32 for half inputs."""
    return np.dtype(np.float64) if np.dtype(dt) == np.float64 else np.dtype(np.float32)


def _long(a, dt):
    return np.asarray(a).astype(dt).astype(np.float64).astype(np.longdouble)


def sum_over_broadcast(full, shape, x_shape, axes):
    """A full-size gradient summed down to a parameter's own shape."""
    if len(shape) == len(x_shape):
        over = tuple(a for a in range(len(x_shape)) if shape[a] == 1 and x_shape[a] != 1)
        return full.sum(axis=over, keepdims=True).reshape(shape)
    batch = tuple(a for a in range(len(x_shape)) if a not in axes)
    g = full.sum(axis=batch)
    lead = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(lead))) if lead else g
    keep = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    return (g.sum(axis=keep, keepdims=True) if keep else g).reshape(shape)


def _default_rms_eps(dt):
    """rms_norm's default: the compute dtype's epsilon (float32's for half
    inputs), as PyTorch takes it."""
    return float(np.finfo(np.float64 if dt == np.float64 else np.float32).eps)


def reference(op, x, axes, weight=None, bias=None, eps=None):
    """Returns (y, mean, rstd) in longdouble; mean is None for rms_norm.
    Affine parameters are first rounded to the result dtype, as the API does."""
    x = np.asarray(x)
    dt = result_dtype(x)
    if eps is None:
        eps = 1e-5 if op == "layer_norm" else _default_rms_eps(dt)
    xl = _long(x, dt)
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
    cdt = compute_dtype(dt)
    w = _affine_for_x(None if weight is None else _long(weight, cdt), x.shape, axes)
    b = _affine_for_x(None if bias is None else _long(bias, cdt), x.shape, axes)
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y, mean, rstd


TOLERANCE = {np.dtype(np.float32): 5e-6, np.dtype(np.float64): 1e-12}


def max_error(actual, expected):
    """Absolute error where |expected| <= 1, relative above (the accuracy targets' metric).
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


def reference_backward(op, dy, x, axes, weight=None, eps=None, full=False):
    """(dx, dweight over the normalized shape or None, dbias or None), longdouble.
    With full=True, dweight and dbias are the unsummed dy * xhat and dy."""
    x = np.asarray(x)
    dt = result_dtype(x)
    if eps is None:
        eps = 1e-5 if op == "layer_norm" else _default_rms_eps(dt)
    xl = _long(x, dt)
    dyl = _long(dy, dt)
    n = np.prod([x.shape[a] for a in axes])
    if op == "layer_norm":
        pivot = np.median(xl, axis=axes, keepdims=True)
        c = (xl - pivot) - (xl - pivot).mean(axis=axes, keepdims=True)
    else:
        c = xl
    rstd = 1 / np.sqrt((c * c).mean(axis=axes, keepdims=True) + eps)
    xhat = c * rstd
    w = _affine_for_x(None if weight is None else _long(weight, compute_dtype(dt)), x.shape, axes)
    g = dyl * w if w is not None else dyl
    mean_gx = (g * xhat).sum(axis=axes, keepdims=True) / n
    if op == "layer_norm":
        dx = rstd * (g - g.sum(axis=axes, keepdims=True) / n - xhat * mean_gx)
    else:
        dx = rstd * (g - xhat * mean_gx)
    if full:
        return dx, dyl * xhat, dyl
    batch = tuple(a for a in range(x.ndim) if a not in axes)
    norm_shape = tuple(x.shape[a] for a in axes)
    dw = (dyl * xhat).sum(axis=batch).reshape(norm_shape) if weight is not None else None
    db = dyl.sum(axis=batch).reshape(norm_shape) if op == "layer_norm" else None
    return dx, dw, db


def ulp(values, dtype):
    """The spacing of dtype's numbers at |values| (subnormal spacing below
    the normal range)."""
    info = ml_dtypes.finfo(dtype)
    mant = int(info.nmant)
    min_exp = int(np.log2(float(info.smallest_normal)))
    mag = np.abs(np.asarray(values, dtype=np.float64))
    e = np.floor(np.log2(np.where(mag > 0, mag, 1.0)))
    e = np.maximum(np.where(mag > 0, e, min_exp), min_exp)
    return np.exp2(e - mant)


def max_ulp_error(actual, expected, dtype, slack=None):
    """Largest |actual - expected| in units of dtype's spacing at expected;
    NaN must match NaN, and infinities must match exactly.  `slack` (an
    absolute allowance per element) is subtracted from the error first."""
    a = np.asarray(actual).astype(np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, (a.shape, e.shape)
    assert np.array_equal(np.isnan(a), np.isnan(e)), "NaN positions differ"
    inf = np.isinf(e)
    assert np.array_equal(a[inf], e[inf]), "infinities differ"
    ok = ~np.isnan(e) & ~inf
    if not ok.any():
        return 0.0
    err = np.abs(a[ok] - e[ok])
    if slack is not None:
        err = np.maximum(err - np.broadcast_to(np.asarray(slack, np.float64), e.shape)[ok], 0)
    return float((err / ulp(e[ok], dtype)).max())


# ---- GroupNorm: LayerNorm over each sample's groups ----------------


def _grouped(a, num_groups, channel_axis):
    """a (N, C, *spatial) or (N, *spatial, C) as (N, G, (C/G) * S), channels-first."""
    a = np.moveaxis(np.asarray(a), channel_axis, 1)
    return a.reshape(a.shape[0], num_groups, -1)


def _per_element(value, x, num_groups, channel_axis, dt):
    """A per-channel weight or bias as a (1, G, (C/G) * S) array, in longdouble."""
    if value is None:
        return None
    xc = np.moveaxis(np.asarray(x), channel_axis, 1)
    shape = (1, xc.shape[1]) + (1,) * (xc.ndim - 2)
    full = np.broadcast_to(_long(np.reshape(value, shape), dt), (1,) + xc.shape[1:])
    return full.reshape(1, num_groups, -1)


def group_reference(x, num_groups, weight=None, bias=None, eps=1e-5, channel_axis=1):
    """GroupNorm's (y, mean, rstd) in longdouble: `reference`'s LayerNorm of
    each (sample, group), then the per-channel affine; mean and rstd are
    (N, G)."""
    x = np.asarray(x)
    cdt = compute_dtype(result_dtype(x))
    xr = _grouped(x, num_groups, channel_axis)
    y, mean, rstd = reference("layer_norm", xr, (2,), eps=eps)
    w = _per_element(weight, x, num_groups, channel_axis, cdt)
    b = _per_element(bias, x, num_groups, channel_axis, cdt)
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    xc_shape = np.moveaxis(x, channel_axis, 1).shape
    y = np.moveaxis(y.reshape(xc_shape), 1, channel_axis)
    return y, mean[..., 0], rstd[..., 0]


def group_reference_backward(dy, x, num_groups, weight=None, eps=1e-5, channel_axis=1):
    """GroupNorm's (dx, dweight or None, dbias) in longdouble."""
    x = np.asarray(x)
    cdt = compute_dtype(result_dtype(x))
    xr, dyr = _grouped(x, num_groups, channel_axis), _grouped(dy, num_groups, channel_axis)
    w = _per_element(weight, x, num_groups, channel_axis, cdt)
    dx, dwx, dbx = reference_backward("layer_norm", dyr, xr, (2,), weight=w, eps=eps, full=True)
    xc_shape = np.moveaxis(x, channel_axis, 1).shape
    dx = np.moveaxis(dx.reshape(xc_shape), 1, channel_axis)

    def per_channel(full):
        full = full.reshape(xc_shape)
        return full.sum(axis=tuple(a for a in range(len(xc_shape)) if a != 1))

    return dx, (per_channel(dwx) if weight is not None else None), per_channel(dbx)
