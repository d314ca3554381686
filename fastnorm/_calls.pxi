# The calls for NumPy arrays: normalize, add_normalize and normalize_backward
# (each public function of fastnorm/_api.py is one call into here).
# Included by _core.pyx.
#
# Each builds the call's specification (_spec.pxi: every argument checked
# once, by its rule in _rules.pxi) and runs it: outputs are allocated and
# _run.pxi plans and runs the kernels; layouts the planner cannot walk are
# copied to ones it can.

# ---- outputs -------------------------------------------------------------------

cdef cnp.ndarray _new_output(cnp.ndarray x, object dtype=None):
    """An uninitialized array like x, of x's dtype or the one given (C order
    when x is C-contiguous, from the buffer cache when large; else
    numpy.empty_like's layout)."""
    cdef int typenum = cnp.PyArray_TYPE(x) if dtype is None else (<cnp.dtype>dtype).type_num
    if cnp.PyArray_IS_C_CONTIGUOUS(x):
        return _new_c_array(cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x), typenum)
    return np.empty_like(x, dtype=dtype)


cdef object _kernel_result_dtype(cnp.ndarray x, object dtype):
    """The result dtype the kernels write for x when asked for dtype: dtype
    itself when they can (x's own, or float32 from a float16/bfloat16 x:
    the wide-output kernels), else the compute dtype, whose result is then
    cast to dtype: the computation is the same, only the final rounding
    differs (it rounds the compute dtype's value once)."""
    cdef int xt = cnp.PyArray_TYPE(x), yt = (<cnp.dtype>dtype).type_num
    if yt == xt or (yt == cnp.NPY_FLOAT32 and (xt == g_f16_typenum or xt == g_bf16_typenum)):
        return dtype
    return cnp.PyArray_DescrFromType(_compute_typenum(xt))


cdef int _forward_kernel_index(cnp.ndarray x, cnp.ndarray y) except -1:
    """The forward tables' index for x and its result y: the dtype index,
    or FN_N_DTYPES + 0/1 for the wide-output kernels of float16/bfloat16."""
    cdef int i = _dtype_index(cnp.PyArray_TYPE(x))
    if cnp.PyArray_TYPE(y) == cnp.PyArray_TYPE(x):
        return i
    if cnp.PyArray_TYPE(y) == cnp.NPY_FLOAT32 and (i == FN_F16 or i == FN_BF16):
        return FN_N_DTYPES + (i == FN_BF16)
    raise AssertionError(f"no forward kernel from {x.dtype} to {y.dtype}")


cdef tuple _new_stats(int op, cnp.ndarray x, const bint *is_norm, bint return_stats):
    """(mean, rstd) arrays in keepdims shape to be filled, or Nones."""
    cdef cnp.npy_intp dims[MAX_DIMS]
    cdef int a, ctype = _compute_typenum(cnp.PyArray_TYPE(x))
    if not return_stats:
        return None, None
    for a in range(cnp.PyArray_NDIM(x)):
        dims[a] = 1 if is_norm[a] else cnp.PyArray_DIMS(x)[a]
    rstd = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(x), dims, ctype, 0)
    mean = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(x), dims, ctype, 0) if op == OP_LAYER_NORM else None
    return mean, rstd


cdef object _result(int op, object y, object h, object mean, object rstd, bint return_stats):
    """y, or (y, h), followed by the stats the op has when asked for."""
    if not return_stats and h is None:
        return y
    head = (y,) if h is None else (y, h)
    if not return_stats:
        return head
    return head + ((mean, rstd) if op == OP_LAYER_NORM else (rstd,))


# ---- memory the arrays share ---------------------------------------------------

cdef void _extent(cnp.ndarray a, char **lo, char **hi) noexcept:
    cdef int d
    cdef cnp.npy_intp ext
    lo[0] = hi[0] = <char *>cnp.PyArray_DATA(a)
    for d in range(cnp.PyArray_NDIM(a)):
        ext = (cnp.PyArray_DIMS(a)[d] - 1) * cnp.PyArray_STRIDES(a)[d]
        if ext > 0:
            hi[0] += ext
        else:
            lo[0] += ext
    hi[0] += cnp.PyArray_ITEMSIZE(a)


cdef bint _overlap(object a, object b) noexcept:
    """Whether the memory spans of two arrays (None: no array) overlap (as
    numpy.may_share_memory)."""
    cdef char *alo
    cdef char *ahi
    cdef char *blo
    cdef char *bhi
    if a is None or b is None or cnp.PyArray_SIZE(<cnp.ndarray>a) == 0 \
            or cnp.PyArray_SIZE(<cnp.ndarray>b) == 0:
        return False
    _extent(<cnp.ndarray>a, &alo, &ahi)
    _extent(<cnp.ndarray>b, &blo, &bhi)
    return alo < bhi and blo < ahi


cdef bint _same_view(cnp.ndarray a, cnp.ndarray b):
    cdef int k
    if cnp.PyArray_DATA(a) != cnp.PyArray_DATA(b) or not _same_shape(a, b):
        return False
    for k in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_STRIDES(a)[k] != cnp.PyArray_STRIDES(b)[k]:
            return False
    return True


cdef inline bint _clash(cnp.ndarray a, cnp.ndarray b):
    """a and b share memory other than by being the same view."""
    return _overlap(a, b) and not _same_view(a, b)


cdef object _private_if_overlapping(object w, cnp.ndarray y, object h=None):
    """weight or bias inside an output would be overwritten while in use."""
    if w is not None and (_overlap(w, y) or _overlap(w, h)):
        return (<cnp.ndarray>w).copy()
    return w


# ---- running on arrays ----------------------------------------------------------

cdef object _walk_perm(cnp.ndarray x, tuple norm_axes):
    """The order in which the kernels walk the normalized axes (decreasing
    stride, as _plan_layout merges them), as a permutation of norm_axes, or
    None when it is the increasing axis order."""
    if len(norm_axes) < 2:
        return None
    strides = _strides(x)
    perm = sorted(range(len(norm_axes)), key=lambda i: -abs(strides[norm_axes[i]]))
    return None if perm == list(range(len(norm_axes))) else perm


cdef object _walk_order(object w, object perm):
    """A shared weight/bias (laid out in increasing axis order) in the
    kernels' walk order."""
    if w is None or perm is None:
        return w
    return np.ascontiguousarray(np.transpose(w, perm))


cdef object _per_sample_operand(cnp.ndarray x, tuple norm_axes, object w):
    """A per-sample weight or bias (x.ndim dimensions, broadcastable to x) as
    a view of x's shape whose normalized axes are contiguous in the kernels'
    walk order, so each row's slice is row_len contiguous values; batch axes
    it is broadcast along get stride 0."""
    if w is None:
        return None
    perm = _walk_perm(x, norm_axes)
    walk = list(norm_axes) if perm is None else [norm_axes[i] for i in perm]
    batch = [a for a in range(x.ndim) if a not in norm_axes]
    shape = _shape(x)
    full = tuple(shape[a] if (a in norm_axes or w.shape[a] != 1) else 1 for a in range(x.ndim))
    order = batch + walk
    packed = np.ascontiguousarray(np.broadcast_to(w, full).transpose(order))
    return np.broadcast_to(packed.transpose(np.argsort(order)), shape)


cdef int _forward_arrays(int op, cnp.ndarray x, cnp.ndarray y, object weight, object bias,
                         object mean, object rstd, double eps, tuple axes, const bint *is_norm,
                         object residual=None, object h=None, bint per_sample=False) except -1:
    """Plan and run a forward on checked arrays; 1 (nothing done) when the
    normalized axes of x or y do not merge into one strided dimension."""
    cdef operand_t ops[MAX_OPS]
    cdef int ndim = cnp.PyArray_NDIM(x)
    _array_operand(&ops[FWD_X], x, ndim)
    _array_operand(&ops[FWD_Y], y, ndim)
    _array_operand(&ops[FWD_R], residual, ndim)
    _array_operand(&ops[FWD_H], h, ndim)
    # (weight and bias are rebound to the arrays the kernels read, which must
    # outlive the run)
    if per_sample:  # per-row weight and bias: walked with the rows
        weight, bias = _per_sample_operand(x, axes, weight), _per_sample_operand(x, axes, bias)
        _array_operand(&ops[FWD_W], weight, ndim)
        _array_operand(&ops[FWD_B], bias, ndim)
    else:  # one weight and bias for every row, in the walk order
        perm = _walk_perm(x, axes) if (weight is not None or bias is not None) else None
        weight, bias = _walk_order(weight, perm), _walk_order(bias, perm)
        _absent_operand(&ops[FWD_W], ndim, _data_or_null(weight))
        _absent_operand(&ops[FWD_B], ndim, _data_or_null(bias))
    _array_operand(&ops[FWD_MEAN], mean, ndim)
    _array_operand(&ops[FWD_RSTD], rstd, ndim)
    return _run_forward(op, _forward_kernel_index(x, y), ndim,
                        <const Py_ssize_t *>cnp.PyArray_DIMS(x), ops, is_norm, eps,
                        cnp.PyArray_NBYTES(y), per_sample)


cdef tuple _axes_last(int ndim, tuple axes):
    """The transpose order that moves the normalized axes to the end (for
    work copies of layouts the kernels cannot walk), and their new positions."""
    batch = tuple([a for a in range(ndim) if a not in axes])
    return batch + axes, tuple(range(len(batch), ndim))


cdef _forward_on_copies(int op, cnp.ndarray x, cnp.ndarray y, object weight, object bias,
                        object mean, object rstd, double eps, tuple axes, bint per_sample):
    """The forward for normalized axes that are not one strided run: on
    contiguous work copies with them moved to the end."""
    cdef bint is_norm[MAX_DIMS]
    order, tail = _axes_last(x.ndim, axes)
    x_work = np.ascontiguousarray(np.transpose(x, order))
    y_work = np.empty_like(x_work, dtype=y.dtype)
    stats_w = [None if st is None else np.empty(np.transpose(st, order).shape, st.dtype)
               for st in (mean, rstd)]
    if per_sample:
        weight, bias = (None if w is None else np.transpose(w, order) for w in (weight, bias))
    _norm_mask(x.ndim, tail, is_norm)
    _forward_arrays(op, x_work, y_work, weight, bias, stats_w[0], stats_w[1], eps, tail,
                    is_norm, None, None, per_sample)
    np.copyto(np.transpose(y, order), y_work)
    for st, st_w in zip((mean, rstd), stats_w):
        if st is not None:
            np.copyto(np.transpose(st, order), st_w)


# ---- the forward --------------------------------------------------------------------

def normalize(int op, x, normalized_shape, weight, bias, eps, axis, out, bint return_stats,
              dtype=None):
    """layer_norm (op OP_LAYER_NORM, with bias) and rms_norm (bias None)."""
    return _run_normalize(_normalize_call(op, x, normalized_shape, weight, bias, eps, axis, out,
                                          return_stats, dtype))


cdef tuple _rounded_result(Call c, tuple computed):
    """A result tuple computed in the kernels' result dtype with its y
    rounded once to the call's dtype: into out when given, else a new
    array; the other results as they are."""
    if c.out is None:
        return (computed[0].astype(c.dtype),) + computed[1:]
    np.copyto(c.y, computed[0], casting="unsafe")
    return (c.out,) + computed[1:]


cdef object _run_normalize(Call c):
    cdef cnp.ndarray xa = c.x, y, y_work
    weight, bias = c.weight, c.bias
    kernel_dtype = _kernel_result_dtype(xa, c.dtype)
    if kernel_dtype != c.dtype:  # computed in the compute dtype, then rounded
        computed = normalize(c.op, xa, None, weight, bias, c.eps, c.axes, None,
                             c.return_stats, kernel_dtype)
        if not c.return_stats:
            return _rounded_result(c, (computed,))[0]
        return _rounded_result(c, computed)
    y = _new_output(xa, c.dtype) if c.out is None else c.y
    mean, rstd = _new_stats(c.op, xa, c.is_norm, c.return_stats)
    result = y if c.out is None else c.out
    if cnp.PyArray_SIZE(xa) == 0:
        return _result(c.op, result, None, mean, rstd, c.return_stats)

    if c.out is not None:
        if c.out is not xa and _clash(xa, y):
            xa = xa.copy()  # partial overlap: read from a private copy
        weight = _private_if_overlapping(weight, y)
        bias = _private_if_overlapping(bias, y)
    if not cnp.PyArray_ISALIGNED(xa):
        xa = xa.copy()
    y_work = y if cnp.PyArray_ISALIGNED(y) else np.empty_like(xa, dtype=y.dtype)
    if _forward_arrays(c.op, xa, y_work, weight, bias, mean, rstd, c.eps, c.axes, c.is_norm,
                       None, None, c.per_sample):
        _forward_on_copies(c.op, xa, y, weight, bias, mean, rstd, c.eps, c.axes, c.per_sample)
    elif y_work is not y:
        np.copyto(y, y_work)
    return _result(c.op, result, None, mean, rstd, c.return_stats)


# ---- the fused residual add ---------------------------------------------------------

def add_normalize(int op, x, residual, normalized_shape, weight, bias, eps, axis, out,
                  residual_out, bint return_stats, dtype=None):
    """h = x + residual, then y = normalize(h), in one pass where the layout
    allows: add_layer_norm and add_rms_norm."""
    return _run_add_normalize(_add_normalize_call(op, x, residual, normalized_shape, weight,
                                                  bias, eps, axis, out, residual_out,
                                                  return_stats, dtype))


cdef object _run_add_normalize(Call c):
    cdef cnp.ndarray xa = c.x, r = c.residual
    kernel_dtype = _kernel_result_dtype(xa, c.dtype)
    if kernel_dtype != c.dtype:  # computed in the compute dtype, then rounded
        computed = add_normalize(c.op, xa, r, None, c.weight, c.bias, c.eps, c.axes, None,
                                 c.residual_out, c.return_stats, kernel_dtype)
        return _rounded_result(c, computed)
    cdef cnp.ndarray y = _new_output(xa, c.dtype) if c.out is None else c.y
    cdef cnp.ndarray h = _new_output(xa) if c.residual_out is None else c.h
    weight = _private_if_overlapping(c.weight, y, h)
    bias = _private_if_overlapping(c.bias, y, h)
    mean, rstd = _new_stats(c.op, xa, c.is_norm, c.return_stats)

    # The kernels fuse the add for rows with contiguous elements: they read
    # a row of x and residual, write it to h, then write y from h, exactly as
    # the norm of the stored h would.  That covers C-contiguous arrays
    # normalized over trailing axes; other layouts (whose norm may run on
    # another kernel) and overlaps other than h is residual or y is x take
    # the two-step path, which is the reference the fused path must match.
    trailing = c.axes[0] == xa.ndim - len(c.axes)
    fused = (cnp.PyArray_SIZE(xa) > 0 and trailing
             and all([cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a)
                      for a in (xa, r, h, y)])
             and not (_clash(h, r) or _clash(y, xa) or _overlap(h, xa) or _overlap(y, r)
                      or _overlap(y, h)))
    if not (fused and _forward_arrays(c.op, xa, y, weight, bias, mean, rstd, c.eps, c.axes,
                                      c.is_norm, r, h, c.per_sample) == 0):
        np.add(xa, r, out=h)
        stats = normalize(c.op, h, None, weight, bias, c.eps, c.axes, y, c.return_stats,
                          c.dtype)
        if c.return_stats:
            mean, rstd = (stats[1:] if c.op == OP_LAYER_NORM else (None, stats[1]))
    return _result(c.op, y if c.out is None else c.out,
                   h if c.residual_out is None else c.residual_out, mean, rstd, c.return_stats)


# ---- the backward -------------------------------------------------------------------

cdef object _sum_to_shape(object full, tuple shape):
    """Sum a gradient over the normalized shape down to a broadcast parameter's shape."""
    lead = full.ndim - len(shape)
    if lead:
        full = full.sum(axis=tuple(range(lead)))
    keep = tuple([i for i, s in enumerate(shape) if s == 1 and full.shape[i] != 1])
    if keep:
        full = full.sum(axis=keep, keepdims=True)
    return full.reshape(shape)


cdef object _sum_over_broadcast(object full, tuple shape, cnp.ndarray x, tuple axes):
    """A gradient of x's shape (float64) summed down to a parameter's own
    shape, under either broadcasting rule."""
    if len(shape) == x.ndim:  # per-sample: broadcast against x
        over = tuple([a for a in range(x.ndim) if shape[a] == 1 and _shape(x)[a] != 1])
        return full.sum(axis=over, keepdims=True).reshape(shape)
    batch = tuple([a for a in range(x.ndim) if a not in axes])
    return _sum_to_shape(full.sum(axis=batch), shape)


cdef object _param_grad(object g, tuple shape, cnp.ndarray x, tuple axes, object dtype):
    """A parameter gradient over the normalized shape (float64) summed down
    to the parameter's own shape (which may have x's number of dimensions,
    all 1 on the batch axes), in dtype."""
    if g is None:
        return None
    if g.shape == shape:
        return g.astype(dtype)
    if len(shape) == x.ndim and len(shape) != len(axes):
        g = g.reshape(tuple([_shape(x)[a] if a in axes else 1 for a in range(x.ndim)]))
        return _sum_over_broadcast(g, shape, x, axes).astype(dtype)
    return _sum_to_shape(g, shape).astype(dtype)


cdef tuple _backward_arrays(int op, cnp.ndarray x, cnp.ndarray dy, cnp.ndarray dx,
                            object weight, object rstd, bint want_dbias, double eps,
                            tuple axes, const bint *is_norm, int sum_typenum):
    """Plan and run a backward on checked arrays: (dweight, dbias) as new
    arrays of the normalized shape in increasing axis order (None where not
    wanted), or None when the normalized axes do not merge.  The sums are
    taken in float64 and come back in sum_typenum (float64, or the compute
    dtype: rounded once).

    Rows are cut into items of a size that depends only on the shapes, each
    item adds into partial sums of its own, and the partials are reduced in
    item order: dweight and dbias are bitwise the same for any thread count."""
    cdef operand_t ops[N_BWD_OPS]
    cdef int ndim = cnp.PyArray_NDIM(x), k = 0
    perm = _walk_perm(x, axes)  # weight in, and the sums back out of, the walk order
    weight = _walk_order(weight, perm)
    _array_operand(&ops[BWD_X], x, ndim)
    _array_operand(&ops[BWD_DY], dy, ndim)
    _array_operand(&ops[BWD_DX], dx, ndim)
    _array_operand(&ops[BWD_RSTD], rstd, ndim)
    parts = _run_backward(op, _dtype_index(cnp.PyArray_TYPE(x)), ndim,
                          <const Py_ssize_t *>cnp.PyArray_DIMS(x), ops, is_norm,
                          _data_or_null(weight), eps, cnp.PyArray_NBYTES(dx),
                          weight is not None, want_dbias)
    if parts is None:
        return None
    norm_shape = _norm_shape(x, axes)
    sums = [None, None]
    for k in range((<_Parts>parts).n_sums):
        if perm is None:
            total = _reduce_parts(<_Parts>parts, k, sum_typenum)
            if len(norm_shape) > 1:
                total = total.reshape(norm_shape)
        else:  # back from the walk order to increasing axis order
            total = _reduce_parts(<_Parts>parts, k, cnp.NPY_FLOAT64)
            total = total.reshape([norm_shape[i] for i in perm]).transpose(np.argsort(perm))
            total = total.astype(cnp.PyArray_DescrFromType(sum_typenum))
        sums[k + (weight is None)] = total
    return tuple(sums)


cdef tuple _backward_on_copies(int op, cnp.ndarray x, cnp.ndarray dy, cnp.ndarray dx,
                               object weight, object rstd, bint want_dbias, double eps,
                               tuple axes, int sum_typenum):
    """The backward for normalized axes that are not one strided run: on
    copies with them moved to the end."""
    cdef bint is_norm[MAX_DIMS]
    order, tail = _axes_last(x.ndim, axes)
    x_w = np.ascontiguousarray(np.transpose(x, order))
    dy_w = np.ascontiguousarray(np.transpose(dy, order))
    dx_w = np.empty_like(x_w)
    rstd_w = None if rstd is None else np.ascontiguousarray(np.transpose(rstd, order))
    _norm_mask(x.ndim, tail, is_norm)
    sums = _backward_arrays(op, x_w, dy_w, dx_w, weight, rstd_w, want_dbias, eps, tail, is_norm,
                            sum_typenum)
    np.copyto(np.transpose(dx, order), dx_w)
    return sums


cdef tuple _per_sample_backward(int op, cnp.ndarray dy, cnp.ndarray x, tuple axes,
                                object weight, object weight_shape, object bias_shape,
                                object rstd, double eps, object param_dtype):
    """Backward with a per-sample weight or bias (AdaLN).  With g = dy * w,
    dx is the backward of an unweighted norm at g, so the fused kernel
    computes it; dweight = sum(dy * xhat) and dbias = sum(dy) are summed in
    float64 over the axes each parameter was broadcast along."""
    dtype = compute_dtype(x.dtype)
    # In short rows dx can cancel to a small fraction of g (two elements:
    # dx = rstd * g' * eps / (var + eps)), so a float32 rounding of g would
    # show in dx; as the kernels do for shared weights (rows shorter than two
    # vectors take the portable kernel, which forms g in double), such rows
    # are computed in float64 here.
    n = int(np.prod(_norm_shape(x, axes)))
    work = np.float64 if n < 32 else dtype
    x_c, dy_c = x.astype(work, copy=False), dy.astype(work, copy=False)
    w = _per_sample_affine(weight, x_c, axes)
    g = dy_c if w is None else dy_c * w
    dx = normalize_backward(op, g, x_c, None, None, None, rstd, eps, axes, None)[0]
    result = [dx.astype(x.dtype, copy=False)]
    if param_dtype is None:
        param_dtype = dtype
    if weight is not None:
        fwd = normalize(op, x_c, None, None, None, eps, axes, None, True)
        xhat, rstd_fwd = fwd[0], fwd[len(fwd) - 1]
        if rstd is not None:  # the caller's rstd, where it differs from eps's
            xhat = xhat * np.where(rstd == rstd_fwd, 1, rstd / rstd_fwd)
        full = np.multiply(dy_c, xhat, dtype=np.float64)
        result.append(_sum_over_broadcast(full, weight_shape, x, axes).astype(param_dtype))
    else:
        result.append(None)
    if op == OP_LAYER_NORM:
        dbias = np.asarray(dy_c, dtype=np.float64)
        shape = bias_shape if bias_shape is not None else _norm_shape(x, axes)
        result.append(_sum_over_broadcast(dbias, shape, x, axes).astype(param_dtype))
    return tuple(result)


def normalize_backward(int op, dy, x, normalized_shape, weight, mean, rstd, eps, axis, bias,
                       param_dtype=None, bint per_sample=False):
    """layer_norm_backward (bias: only its shape is used) and
    rms_norm_backward: (dx, dweight, dbias) or (dx, dweight).

    param_dtype: the dtype of dweight and dbias, instead of the compute
    dtype (the Dask layer takes each block's float64 sums before they are
    rounded, to add them up across blocks).  per_sample: take a weight or
    bias of x's number of dimensions as per-sample even when it is 1 on
    every batch axis of this x (a Dask block 1 wide where the whole array's
    parameter varies: dx must take the whole array's path, whose bits
    differ from the shared weight's)."""
    return _run_normalize_backward(_normalize_backward_call(
        op, dy, x, normalized_shape, weight, mean, rstd, eps, axis, bias, param_dtype,
        per_sample))


cdef object _run_normalize_backward(Call c):
    cdef cnp.ndarray xa = c.x, dx
    cdef int ctype = _compute_typenum(cnp.PyArray_TYPE(xa))
    cdef bint plain = c.plain
    rstd = None if c.rstd is None else _kernel_operand(c.rstd, cnp.PyArray_TYPE(xa), True)
    if c.per_sample:
        return _per_sample_backward(c.op, c.dy, xa, c.axes, c.weight, c.weight_shape,
                                    c.bias_shape, rstd, c.eps, c.param_dtype)
    if not cnp.PyArray_ISALIGNED(xa):
        xa = xa.copy()
    dx = _new_output(xa)
    norm_shape = _norm_shape(xa, c.axes)
    want_db = c.op == OP_LAYER_NORM
    if cnp.PyArray_SIZE(xa) == 0:
        plain = False
        sums = (np.zeros(norm_shape) if c.weight is not None else None,
                np.zeros(norm_shape) if want_db else None)
    else:
        sum_typenum = ctype if plain else cnp.NPY_FLOAT64
        sums = _backward_arrays(c.op, xa, c.dy, dx, c.weight, rstd, want_db, c.eps, c.axes,
                                c.is_norm, sum_typenum)
        if sums is None:
            sums = _backward_on_copies(c.op, xa, c.dy, dx, c.weight, rstd, want_db, c.eps,
                                       c.axes, sum_typenum)
    if plain:
        dweight, dbias = sums
    else:
        # float32 for float16/bfloat16; float64 sums unrounded with param_dtype
        dtype = cnp.PyArray_DescrFromType(ctype) if c.param_dtype is None else c.param_dtype
        dweight = _param_grad(sums[0], c.weight_shape, xa, c.axes, dtype)
        dbias = None if not want_db else _param_grad(
            sums[1], norm_shape if c.bias_shape is None else c.bias_shape, xa, c.axes, dtype)
    if c.op == OP_RMS_NORM:
        return dx, dweight
    return dx, dweight, dbias
