# GroupNorm for NumPy arrays: the argument rules, the layout
# (channels-first (N, C, *spatial) or channels-last (N, *spatial, C), viewed
# as (N, C, S) or (N, S, C) C-contiguous), and the run of the group kernels
# of src/walk_group.h on OpenMP threads.  Included by _core.pyx; reuses the
# rules of _rules.pxi for x, dy, out and eps.
#
# Work items are (sample, groups [g0, g1)): a group is never split, so the
# results are the same bits for any thread count.  The backward's dweight
# and dbias shares are written per sample into an (N, C) float64 array and
# summed over the samples in a fixed order.


cdef int _group_channel_axis(object channel_axis, tuple shape) except -2:
    """1 for channels-first, ndim - 1 for channels-last (-1), else an error."""
    cdef int ndim = len(shape)
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
        raise TypeError(f"channel_axis must be an int (1 or -1), got {channel_axis!r}")
    ax = int(channel_axis)
    if ax == 1 or ax == 1 - ndim:
        return 1
    if ax == -1 or ax == ndim - 1:
        return ndim - 1
    raise ValueError(f"channel_axis must be 1 (channels-first, (N, C, *spatial)) or -1 "
                     f"(channels-last, (N, *spatial, C)), got {channel_axis!r} for x of shape "
                     f"{shape}")


cdef Py_ssize_t _group_count(object num_groups, Py_ssize_t channels, tuple shape) except -1:
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)):
        raise TypeError(f"num_groups must be an int, got {num_groups!r}")
    cdef Py_ssize_t g = int(num_groups)
    if g < 1:
        raise ValueError(f"num_groups must be >= 1, got {g}")
    if channels % g != 0:
        raise ValueError(f"the number of channels, {channels} (x of shape {shape}), is not "
                         f"divisible by num_groups={g}")
    return g


cdef object _group_param(object value, str name, Py_ssize_t channels, int typenum):
    """weight or bias: None, or C values, in the compute dtype, contiguous."""
    if value is None:
        return None
    cdef object arr = _real_array(value, name)
    if arr.shape != (channels,):
        raise ValueError(f"{name} must have shape ({channels},), one value per channel, "
                         f"got shape {arr.shape}")
    return _kernel_operand(arr, typenum, contiguous=True)


cdef object _group_stat(object value, str name, Py_ssize_t n, Py_ssize_t groups, int typenum):
    if value is None:
        return None
    cdef object arr = _real_array(value, name)
    if arr.shape != (n, groups):
        raise ValueError(f"{name} must have shape ({n}, {groups}), (N, num_groups), got "
                         f"shape {arr.shape}")
    return _kernel_operand(arr, typenum, contiguous=True)


@cython.auto_pickle(False)  # (a call is run where it is checked)
cdef class GroupCall:
    """One GroupNorm call's checked arguments."""
    cdef public object x, weight, bias, out
    cdef public Py_ssize_t n, channels, groups, spatial
    cdef public bint last
    cdef public double eps


cdef GroupCall _group_call(object x, object num_groups, object weight, object bias, object eps,
                           object channel_axis):
    cdef GroupCall c = GroupCall()
    cdef cnp.ndarray xa = _input_array(x)
    cdef int ndim = xa.ndim, ax
    if ndim < 2:
        raise ValueError(f"x must have at least 2 dimensions (N, C, *spatial) for group_norm, "
                         f"got shape {_shape(xa)}")
    ax = _group_channel_axis(channel_axis, _shape(xa))
    c.last = ax == ndim - 1 and ndim > 2
    c.n = cnp.PyArray_DIMS(xa)[0]
    c.channels = cnp.PyArray_DIMS(xa)[ax]
    c.spatial = 1
    for k in range(1, ndim):
        if k != ax:
            c.spatial *= cnp.PyArray_DIMS(xa)[k]
    c.groups = _group_count(num_groups, c.channels, _shape(xa))
    c.eps = check_eps(eps)
    typenum = cnp.PyArray_TYPE(xa)
    c.weight = _group_param(weight, "weight", c.channels, typenum)
    c.bias = _group_param(bias, "bias", c.channels, typenum)
    c.x = xa
    return c


cdef cnp.ndarray _group_view(cnp.ndarray a, GroupCall c):
    """a as its (N, C, S) or (N, S, C) C-contiguous view, copied if it has
    no such view."""
    shape = (c.n, c.spatial, c.channels) if c.last else (c.n, c.channels, c.spatial)
    return np.ascontiguousarray(a).reshape(shape)


cdef inline int _group_threads(Py_ssize_t size) noexcept nogil:
    return _max_threads() if size >= PARALLEL_MIN_ELEMENTS else 1


cdef Py_ssize_t _group_items_per_sample(GroupCall c, int threads, bint forward):
    """How many items each sample's groups are split into.  The forward
    walks measure the next group (channels-first) or sample (channels-last)
    while writing one, so its items keep whole samples when there are
    enough of them to share out (else slices of at least 64 channels); the
    backward's groups are independent: items of about ITEM_ELEMENTS."""
    cdef Py_ssize_t cg = c.channels // c.groups, per_group = cg * c.spatial
    if forward or c.last:
        if c.n >= 2 * threads:
            return 1
        return max(1, min(c.groups, c.channels // 64, -(-2 * threads // c.n)))
    return max(1, min(c.groups, (c.groups * per_group) // ITEM_ELEMENTS))


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, channel_axis=1, out=None,
               bint return_stats=False):
    """fastnorm.group_norm's core (fastnorm/_group.py documents it)."""
    cdef GroupCall c = _group_call(x, num_groups, weight, bias, eps, channel_axis)
    cdef cnp.ndarray xa = c.x, x3, y3, mean, rstd
    cdef int typenum = cnp.PyArray_TYPE(xa)
    cdef fn_group blk
    cdef fn_group_kernel kernel = g_kernels.group_norm[_dtype_index(typenum)]
    cdef Py_ssize_t per, spi, n_items, i, sample_size, itemsize = xa.itemsize
    cdef int threads
    cdef char *xp
    cdef char *yp
    cdef char *mp = NULL
    cdef char *rp = NULL
    cdef const char *wp = NULL
    cdef const char *bp = NULL
    cdef bint in_place = False
    if out is not None:
        out = _checked_out(out, xa, "out")
    stat_dtype = compute_dtype(xa.dtype)
    mean = np.empty((c.n, c.groups), stat_dtype)
    rstd = np.empty((c.n, c.groups), stat_dtype)
    x3 = _group_view(xa, c)
    if out is None:
        y3 = _new_output(x3)  # from the buffer cache when large
    elif out is xa and cnp.PyArray_DATA(x3) == cnp.PyArray_DATA(xa) \
            and cnp.PyArray_ISALIGNED(xa):
        y3 = x3  # in place: the same elements, read before they are written
        in_place = True
    elif cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>out) \
            and cnp.PyArray_ISALIGNED(<cnp.ndarray>out) and not np.may_share_memory(out, xa):
        y3 = (<cnp.ndarray>out).reshape(_shape(x3))
        in_place = True  # written through
    else:
        y3 = _new_output(x3)  # then copied into out
    if not cnp.PyArray_ISALIGNED(x3):
        x3 = x3.copy()
    if cnp.PyArray_SIZE(x3) > 0:
        threads = _group_threads(cnp.PyArray_SIZE(x3))
        per = _group_items_per_sample(c, threads, True)
        # channels-last blocks of whole samples: each measures its next
        # sample while writing one (walk_group.h), so one block per thread
        spi = -(-c.n // threads) if c.last and per == 1 else 1
        n_items = (-(-c.n // spi)) * per
        sample_size = c.channels * c.spatial
        memset(&blk, 0, sizeof(blk))
        blk.channels = c.channels
        blk.groups = c.groups
        blk.spatial = c.spatial
        blk.samples = c.n  # the block's count is set per item
        blk.x_n_stride = blk.y_n_stride = sample_size
        if c.last:
            blk.x_c_stride = blk.y_c_stride = 1
            blk.x_s_stride = blk.y_s_stride = c.channels
        else:
            blk.x_c_stride = blk.y_c_stride = c.spatial
            blk.x_s_stride = blk.y_s_stride = 1
        blk.eps = c.eps
        blk.stream_stores = cnp.PyArray_NBYTES(y3) >= g_stream_min_bytes
        if c.weight is not None:
            wp = <const char *>cnp.PyArray_DATA(<cnp.ndarray>c.weight)
        if c.bias is not None:
            bp = <const char *>cnp.PyArray_DATA(<cnp.ndarray>c.bias)
        blk.weight = wp
        blk.bias = bp
        xp = <char *>cnp.PyArray_DATA(x3)
        yp = <char *>cnp.PyArray_DATA(y3)
        mp = <char *>cnp.PyArray_DATA(mean)
        rp = <char *>cnp.PyArray_DATA(rstd)
        with nogil:
            if threads <= 1 or fn_in_forked_child():
                for i in range(n_items):
                    _group_item(&blk, kernel, xp, yp, mp, rp, i, per, spi, sample_size, itemsize)
            else:
                for i in prange(n_items, num_threads=threads, schedule='static'):
                    _group_item(&blk, kernel, xp, yp, mp, rp, i, per, spi, sample_size, itemsize)
    else:
        mean[...] = np.nan
        rstd[...] = np.nan
    if out is not None:
        if not in_place:
            np.copyto(out, y3.reshape(_shape(xa)))
        y = out
    else:
        y = y3.reshape(_shape(xa))
    if return_stats:
        return y, mean, rstd
    return y


cdef void _group_item(const fn_group *proto, fn_group_kernel kernel, char *xp, char *yp, char *mp,
                      char *rp, Py_ssize_t item, Py_ssize_t per, Py_ssize_t spi,
                      Py_ssize_t sample_size, Py_ssize_t itemsize) noexcept nogil:
    """Item `item`: samples [n0, n0 + spi) (fewer at the end), the part'th
    of `per` slices of their groups."""
    cdef fn_group blk = proto[0]
    cdef Py_ssize_t n0 = (item // per) * spi, part = item % per
    cdef Py_ssize_t stat_itemsize = 8 if itemsize == 8 else 4
    blk.samples = min(spi, proto.samples - n0)
    blk.g0 = part * proto.groups // per
    blk.g1 = (part + 1) * proto.groups // per
    blk.x = xp + n0 * sample_size * itemsize
    blk.y = yp + n0 * sample_size * itemsize
    blk.mean = mp + n0 * proto.groups * stat_itemsize
    blk.rstd = rp + n0 * proto.groups * stat_itemsize
    kernel(&blk)


def group_norm_backward(dy, x, num_groups, weight=None, mean=None, rstd=None, eps=1e-5,
                        channel_axis=1, bint float64_sums=False):
    """fastnorm.group_norm_backward's core (fastnorm/_group.py documents it).
    float64_sums: dweight and dbias as float64 sums, not rounded (the Dask
    layer adds the blocks' sums, then rounds once)."""
    cdef GroupCall c = _group_call(x, num_groups, weight, None, eps, channel_axis)
    cdef cnp.ndarray xa = c.x, x3, dy3, dx3, dw_parts, db_parts
    cdef int typenum = cnp.PyArray_TYPE(xa)
    cdef fn_group_bwd blk
    cdef fn_group_bwd_kernel kernel = g_kernels.group_norm_backward[_dtype_index(typenum)]
    cdef Py_ssize_t per, n_items, i, sample_size, itemsize = xa.itemsize
    cdef int threads
    cdef char *xp
    cdef char *dyp
    cdef char *dxp
    cdef double *dwp = NULL
    cdef double *dbp = NULL
    cdef cnp.ndarray dya = _same_dtype_as(dy, "dy", xa)
    _group_stat(mean, "mean", c.n, c.groups, typenum)
    rstd_a = _group_stat(rstd, "rstd", c.n, c.groups, typenum)
    x3 = _group_view(xa, c)
    dy3 = _group_view(dya, c)
    if not cnp.PyArray_ISALIGNED(x3):
        x3 = x3.copy()
    if not cnp.PyArray_ISALIGNED(dy3):
        dy3 = dy3.copy()
    dx3 = _new_output(x3)
    dw_parts = np.zeros((c.n, c.channels), np.float64)
    db_parts = np.zeros((c.n, c.channels), np.float64)
    if cnp.PyArray_SIZE(x3) > 0:
        threads = _group_threads(cnp.PyArray_SIZE(x3))
        per = _group_items_per_sample(c, threads, False)
        n_items = c.n * per
        sample_size = c.channels * c.spatial
        memset(&blk, 0, sizeof(blk))
        blk.channels = c.channels
        blk.groups = c.groups
        blk.spatial = c.spatial
        if c.last:
            blk.x_c_stride = blk.dy_c_stride = blk.dx_c_stride = 1
            blk.x_s_stride = blk.dy_s_stride = blk.dx_s_stride = c.channels
        else:
            blk.x_c_stride = blk.dy_c_stride = blk.dx_c_stride = c.spatial
            blk.x_s_stride = blk.dy_s_stride = blk.dx_s_stride = 1
        blk.eps = c.eps
        blk.stream_stores = cnp.PyArray_NBYTES(dx3) >= g_stream_min_bytes
        if c.weight is not None:
            blk.weight = cnp.PyArray_DATA(<cnp.ndarray>c.weight)
        if rstd_a is not None:
            blk.rstd = cnp.PyArray_DATA(<cnp.ndarray>rstd_a)
        xp = <char *>cnp.PyArray_DATA(x3)
        dyp = <char *>cnp.PyArray_DATA(dy3)
        dxp = <char *>cnp.PyArray_DATA(dx3)
        dwp = <double *>cnp.PyArray_DATA(dw_parts)
        dbp = <double *>cnp.PyArray_DATA(db_parts)
        with nogil:
            if threads <= 1 or fn_in_forked_child():
                for i in range(n_items):
                    _group_bwd_item(&blk, kernel, xp, dyp, dxp, dwp, dbp, i, per, sample_size,
                                    itemsize)
            else:
                for i in prange(n_items, num_threads=threads, schedule='static'):
                    _group_bwd_item(&blk, kernel, xp, dyp, dxp, dwp, dbp, i, per, sample_size,
                                    itemsize)
    stat_dtype = np.float64 if float64_sums else compute_dtype(xa.dtype)
    dweight = None if c.weight is None else dw_parts.sum(axis=0).astype(stat_dtype)
    dbias = db_parts.sum(axis=0).astype(stat_dtype)
    return dx3.reshape(_shape(xa)), dweight, dbias


cdef void _group_bwd_item(const fn_group_bwd *proto, fn_group_bwd_kernel kernel, char *xp,
                          char *dyp, char *dxp, double *dwp, double *dbp, Py_ssize_t item,
                          Py_ssize_t per, Py_ssize_t sample_size,
                          Py_ssize_t itemsize) noexcept nogil:
    cdef fn_group_bwd blk = proto[0]
    cdef Py_ssize_t n_idx = item // per, part = item % per
    cdef Py_ssize_t stat_itemsize = 8 if itemsize == 8 else 4
    blk.g0 = part * proto.groups // per
    blk.g1 = (part + 1) * proto.groups // per
    blk.x = xp + n_idx * sample_size * itemsize
    blk.dy = dyp + n_idx * sample_size * itemsize
    blk.dx = dxp + n_idx * sample_size * itemsize
    if proto.rstd != NULL:
        blk.rstd = <const char *>proto.rstd + n_idx * proto.groups * stat_itemsize
    blk.dweight = dwp + n_idx * proto.channels
    blk.dbias = dbp + n_idx * proto.channels
    kernel(&blk)
