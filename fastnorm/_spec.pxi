# The call specification: one call's arguments, each checked (and converted
# as the kernels take it) by its rule in _rules.pxi, in one object that
# _calls.pxi runs.  Included by _core.pyx.
#
# normalize, add_normalize and normalize_backward (_calls.pxi) each build
# one and run it.  The Dask layer (fastnorm/_dask.py) builds one on
# zero-strided stand-ins of its arrays, to check a call before it builds the
# graph, and reads the normalized axes from it: building one allocates no
# output and computes nothing.

@cython.final
@cython.no_gc  # (it holds arrays, tuples and dtypes: nothing that refers back)
@cython.freelist(4)
@cython.auto_pickle(False)  # (a call is run where it is checked)
cdef class Call:
    """A checked call: what the runner needs, nothing computed yet."""
    cdef readonly int op
    cdef cnp.ndarray x            # the input, of a kernel dtype
    cdef readonly tuple axes      # the normalized axes of x, sorted
    cdef bint is_norm[MAX_DIMS]   # their mask
    cdef double eps
    cdef object weight, bias      # as the kernels read them (see normalize_backward_call)
    cdef readonly bint per_sample  # weight or bias varies along a batch axis (AdaLN)
    # the forward and the fused add
    cdef bint return_stats
    cdef object out, y            # the caller's out, and the plain array written through
    cdef readonly object dtype    # the result's dtype (dtype=; x's by default)
    cdef cnp.ndarray residual
    cdef object residual_out, h   # likewise for residual_out
    # the backward
    cdef cnp.ndarray dy
    cdef object rstd              # checked; the runner converts it for the kernels
    cdef object weight_shape, bias_shape, param_dtype
    cdef bint plain               # parameters of the normalized shape, sums in the compute dtype


cdef Call _normalize_call(int op, object x, object normalized_shape, object weight, object bias,
                          object eps, object axis, object out, bint return_stats,
                          object dtype=None):
    cdef Call c = Call.__new__(Call)
    c.op, c.return_stats = op, return_stats
    c.x = _input_array(x)
    c.dtype = _result_dtype(dtype, c.x)
    c.axes = _norm_axes(c.x, normalized_shape, axis, c.is_norm)
    c.weight, c.bias, c.per_sample = _affine_args(weight, bias, c.x, c.axes)
    c.eps = _eps_value(op, eps, cnp.PyArray_TYPE(c.x))
    if out is not None:
        c.out, c.y = out, _checked_out(out, c.x, "out", c.dtype)
    return c


def normalize_call(int op, x, normalized_shape, weight, bias, eps, axis, out,
                   bint return_stats, dtype=None):
    """normalize's arguments checked into a Call, not run."""
    return _normalize_call(op, x, normalized_shape, weight, bias, eps, axis, out, return_stats,
                           dtype)


cdef Call _add_normalize_call(int op, object x, object residual, object normalized_shape,
                              object weight, object bias, object eps, object axis, object out,
                              object residual_out, bint return_stats, object dtype=None):
    cdef Call c = Call.__new__(Call)
    c.op, c.return_stats = op, return_stats
    c.x = _input_array(x)
    c.dtype = _result_dtype(dtype, c.x)
    c.residual = _same_dtype_as(residual, "residual", c.x)
    if residual_out is not None:
        c.residual_out, c.h = residual_out, _checked_out(residual_out, c.x, "residual_out")
        # (out is not checked yet: anything but an ndarray is refused below,
        # and reading one's memory span as an array's would be out of bounds)
        if isinstance(out, np.ndarray) and _overlap(out, c.h):
            raise ValueError("out and residual_out overlap: y and h need separate arrays")
    if out is not None:
        c.out, c.y = out, _checked_out(out, c.x, "out", c.dtype)
    c.axes = _norm_axes(c.x, normalized_shape, axis, c.is_norm)
    c.weight, c.bias, c.per_sample = _affine_args(weight, bias, c.x, c.axes)
    c.eps = _eps_value(op, eps, cnp.PyArray_TYPE(c.x))
    return c


def add_normalize_call(int op, x, residual, normalized_shape, weight, bias, eps, axis, out,
                       residual_out, bint return_stats, dtype=None):
    """add_normalize's arguments checked into a Call, not run."""
    return _add_normalize_call(op, x, residual, normalized_shape, weight, bias, eps, axis, out,
                               residual_out, return_stats, dtype)


cdef Call _normalize_backward_call(int op, object dy, object x, object normalized_shape,
                                   object weight, object mean, object rstd, object eps,
                                   object axis, object bias, object param_dtype,
                                   bint per_sample):
    cdef Call c = Call.__new__(Call)
    c.op, c.param_dtype = op, param_dtype
    # bias first, then x (as layer_norm_backward checked them before the
    # call specification)
    c.bias_shape = None if bias is None else _shape(_real_array(bias, "bias"))
    c.x = _input_array(x)
    c.axes = _norm_axes(c.x, normalized_shape, axis, c.is_norm)
    norm_shape = _norm_shape(c.x, c.axes)
    c.dy = _same_dtype_as(dy, "dy", c.x)
    if mean is not None and rstd is None:
        raise ValueError("mean was given without rstd: pass both statistics the forward "
                         "returned, or neither to recompute them")
    # mean is validated only: the kernel recomputes the mean exactly
    _stats_input(mean, "mean", c.x, c.axes, c.is_norm)
    c.rstd = _stats_input(rstd, "rstd", c.x, c.axes, c.is_norm)
    c.eps = _eps_value(op, eps, cnp.PyArray_TYPE(c.x))
    if weight is not None:
        weight = _real_array(weight, "weight")
        c.weight_shape = _shape(weight)
    # The common case, parameters of the normalized shape: the kernels' sums
    # are the gradients, summed straight into the compute dtype (float32
    # for float16/bfloat16).  Other shapes are shared parameters the sums
    # are reduced to, or per-sample ones (AdaLN).
    c.plain = (param_dtype is None
               and (c.weight_shape is None or c.weight_shape == norm_shape)
               and (c.bias_shape is None or c.bias_shape == norm_shape))
    if not c.plain and (c.bias_shape is not None or (weight is not None and weight.ndim > 1)):
        bias_probe = None if c.bias_shape is None else np.broadcast_to(np.float32(0), c.bias_shape)
        if _affine_kind(weight, bias_probe, c.x, c.axes) or per_sample:
            c.weight, c.per_sample = weight, True  # (as the caller shaped it)
            return c
    c.weight = _affine_args(weight, None, c.x, c.axes)[0]
    return c


def normalize_backward_call(int op, dy, x, normalized_shape, weight, mean, rstd, eps, axis,
                            bias, param_dtype=None, bint per_sample=False):
    """normalize_backward's arguments checked into a Call, not run."""
    return _normalize_backward_call(op, dy, x, normalized_shape, weight, mean, rstd, eps, axis,
                                    bias, param_dtype, per_sample)
