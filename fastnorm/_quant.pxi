# Quantized outputs: quantize, and the norms whose float result is quantized
# while it is still in cache (rms_norm_quant, layer_norm_quant and their
# fused residual add forms).  Included by _core.pyx.
#
# The contract: a quantized norm gives the bits of the float norm, computed
# with dtype= its compute dtype (float32, or float64 for float64 inputs),
# then quantize.  The fused path runs exactly those two kernels, a tile of
# rows at a time: the norm writes the tile's float rows into a per-thread
# buffer (L2-sized), the quantizer reads them from there.  Layouts the fused
# path does not take run the two calls one after the other.
#
# The formula and what NaN and Inf give: src/quantize_rows.h.

cdef enum:
    # A fused tile's float rows: about this many bytes (in L2 on every
    # x86-64 and Arm core of the last decade; L1 would split rows).
    QUANT_TILE_BYTES = 131072

cdef object g_e4m3 = np.dtype(ml_dtypes.float8_e4m3fn)
# (the codes each output dtype's kernels produce)
QUANT_DTYPES = (np.dtype(np.int8), g_e4m3)


cdef int _quant_code(object dtype) except -1:
    """The kernels' code kind of a quantized dtype, else TypeError."""
    try:
        dt = np.dtype(getattr(ml_dtypes, dtype) if isinstance(dtype, str)
                      and hasattr(ml_dtypes, dtype) else dtype)
    except TypeError:
        dt = None
    if dt == np.int8:
        return FN_Q_INT8
    if dt == g_e4m3:
        return FN_Q_E4M3
    raise TypeError(f"dtype must be numpy.int8 or ml_dtypes.float8_e4m3fn (the quantized "
                    f"outputs), got {dtype!r}")


cdef class _QuantArgs:
    """A quantization's checked arguments for an array of shape `shape`
    whose normalized (quantized) axes are `axes`."""
    cdef int code
    cdef object dtype            # of the codes
    cdef tuple axes
    cdef Py_ssize_t n, group_len, n_groups
    cdef tuple scale_shape       # the batch shape, + (n_groups,) when grouped
    cdef object scale            # float32, scale_shape: the caller's static scales, or None
    cdef object out, q           # the caller's out, and the plain array written through
    cdef object scale_out


cdef _QuantArgs _quant_args(cnp.ndarray x, tuple axes, object dtype, object group_size,
                            object scale, object out, object scale_out):
    cdef _QuantArgs a = _QuantArgs.__new__(_QuantArgs)
    cdef int ax
    a.code = _quant_code(dtype)
    a.dtype = QUANT_DTYPES[a.code]
    a.axes = axes
    shape = _shape(x)
    a.n = 1
    for ax in axes:
        a.n *= shape[ax]
    last = shape[axes[len(axes) - 1]]
    batch = tuple([shape[k] for k in range(len(shape)) if k not in axes])
    if group_size is None:
        a.group_len, a.n_groups, a.scale_shape = a.n, 1, batch
    else:
        if isinstance(group_size, (bool, np.bool_)) or not isinstance(group_size, numbers.Integral):
            raise TypeError(f"group_size must be an int or None, got {group_size!r}")
        gs = operator.index(group_size)
        if gs < 1 or last % gs:
            raise ValueError(f"group_size={gs} must be a positive divisor of the last "
                             f"normalized axis's size {last} (x has shape {shape})")
        a.group_len, a.n_groups = gs, a.n // gs
        a.scale_shape = batch + (a.n_groups,)
    if scale is not None:
        a.scale = _static_scale(scale, a.scale_shape)
    if out is not None:
        a.out, a.q = out, _checked_out(out, x, "out", a.dtype)
    if scale_out is not None:
        if not isinstance(scale_out, np.ndarray):
            raise TypeError(f"scale_out must be a numpy.ndarray, got {type(scale_out).__name__}")
        if scale_out.dtype != np.float32:
            raise TypeError(f"scale_out has dtype {scale_out.dtype} but the scales are float32")
        if scale_out.shape != a.scale_shape:
            raise ValueError(f"scale_out has shape {scale_out.shape} but the scales have shape "
                             f"{a.scale_shape} (x {shape}, normalized axes {axes}"
                             f"{'' if group_size is None else f', group_size {group_size}'})")
        if not scale_out.flags.writeable:
            raise ValueError("scale_out is read-only")
        a.scale_out = scale_out
        if a.q is not None and _overlap(a.q, scale_out):
            raise ValueError("out and scale_out overlap: the codes and the scales need "
                             "separate arrays")
    return a


cdef object _static_scale(object scale, tuple shape):
    """A static scale (a number, or an array broadcasting to the scales'
    shape) as the float32 scales used, of that shape: finite and at least
    2**-126 (float32's smallest normal, the dynamic scales' floor too; the
    kernels multiply by 1 / scale, which is then finite)."""
    try:
        s = _plain_array(scale, "scale")  # (a Dask one: DaskOperand, never computed here)
    except DaskOperand:
        raise
    except Exception as e:
        raise TypeError(f"scale must be a number or an array of them, got {scale!r}") from e
    if not _is_real(s.dtype):
        raise TypeError(f"scale must be real, got dtype {s.dtype}")
    try:
        s = np.broadcast_to(s, shape)
    except ValueError:
        raise ValueError(f"scale has shape {s.shape}, which does not broadcast to the scales' "
                         f"shape {shape}") from None
    s32 = np.array(s, dtype=np.float32)
    bad = ~(np.isfinite(s32) & (s32 >= np.float32(2.0**-126)))
    if bad.any():
        raise ValueError(f"scale must be finite and at least 2**-126 in float32, got "
                         f"{s[bad].flat[0]!r} (as float32: {s32[bad].flat[0]!r})")
    return s32


cdef struct quant_run_t:
    # A quantization of `rows` rows of row_len values, in items of tile_rows
    # rows: the quantizer's block at row 0 and, for a fused norm, the norm's
    # (its y is set per item: the thread's tile buffer).
    fn_rows norm
    fn_rows_kernel norm_kernel  # NULL: the values are in memory (quantize)
    fn_quant quant
    fn_quant_kernel quant_kernel
    Py_ssize_t rows, tile_rows, n_items
    char *tiles                 # one tile buffer a thread, tile_bytes apart
    Py_ssize_t tile_bytes
    int x_size, value_size      # bytes of an element of x, of a value


cdef void _quant_item(const quant_run_t *run, Py_ssize_t item, int thread) noexcept nogil:
    cdef Py_ssize_t r0 = item * run.tile_rows, n = run.quant.row_len
    cdef fn_rows norm = run.norm
    cdef fn_quant quant = run.quant
    quant.rows = min(run.tile_rows, run.rows - r0)
    quant.q = <char *>quant.q + r0 * n
    quant.scale = quant.scale + r0 * quant.scale_row_stride
    if run.norm_kernel == NULL:
        quant.y = <const char *>quant.y + r0 * n * run.value_size
    else:
        norm.rows = quant.rows
        norm.x = <const char *>norm.x + r0 * n * run.x_size
        if norm.residual != NULL:
            norm.residual = <const char *>norm.residual + r0 * n * run.x_size
            norm.h = <char *>norm.h + r0 * n * run.x_size
        norm.y = run.tiles + thread * run.tile_bytes
        run.norm_kernel(&norm)
        quant.y = norm.y
    run.quant_kernel(&quant)


cdef void _quant_run(const quant_run_t *run, int n_threads) noexcept nogil:
    global g_last_num_threads
    cdef Py_ssize_t i
    if n_threads <= 1 or fn_in_forked_child():
        g_last_num_threads = 1
        for i in range(run.n_items):
            _quant_item(run, i, 0)
        return
    for i in prange(run.n_items, num_threads=n_threads, schedule='static'):
        if i == 0:
            note_team_size()
        _quant_item(run, i, omp_get_thread_num())


cdef object _run_quant_rows(quant_run_t *run, _QuantArgs a, cnp.ndarray q, cnp.ndarray scales,
                            Py_ssize_t rows, int value_typenum):
    """Fill run's quantizer part (q and scales: C-contiguous, rows x n and
    rows x n_groups), cut the rows into items and run them.  Returns the
    tile buffers (kept alive for the run)."""
    cdef int n_threads
    cdef Py_ssize_t row_bytes
    run.quant.q = cnp.PyArray_DATA(q)
    run.quant.scale = <float *>cnp.PyArray_DATA(scales)
    run.quant.row_len, run.quant.group_len = a.n, a.group_len
    run.quant.y_row_stride = run.quant.q_row_stride = a.n
    run.quant.scale_row_stride = a.n_groups
    run.quant.code, run.quant.static_scale = a.code, a.scale is not None
    run.quant_kernel = g_kernels.quantize[value_typenum == cnp.NPY_FLOAT64]
    run.value_size = 8 if value_typenum == cnp.NPY_FLOAT64 else 4
    run.rows = rows
    row_bytes = a.n * run.value_size
    # the tile: whole rows, about QUANT_TILE_BYTES of values (at least one
    # row), and enough items for every thread
    run.tile_rows = max(1, min(rows, QUANT_TILE_BYTES // row_bytes))
    n_threads = 1 if rows * a.n < PARALLEL_MIN_ELEMENTS else _max_threads()
    if n_threads > 1:
        run.tile_rows = max(1, min(run.tile_rows, (rows + n_threads - 1) // n_threads))
    run.n_items = (rows + run.tile_rows - 1) // run.tile_rows
    n_threads = <int>min(n_threads, run.n_items)
    tiles = None
    if run.norm_kernel != NULL:
        run.tile_bytes = (run.tile_rows * row_bytes + 63) // 64 * 64
        tiles = np.empty(n_threads * run.tile_bytes + 64, np.uint8)
        # (64-byte aligned, as a fresh row of NumPy's large arrays is not)
        run.tiles = <char *>cnp.PyArray_DATA(tiles)
        run.tiles += (-<size_t>run.tiles) % 64
    if rows * a.n < PARALLEL_MIN_ELEMENTS:
        _quant_run(run, n_threads)
    else:
        with nogil:
            _quant_run(run, n_threads)
    return tiles


cdef tuple _quant_outputs(_QuantArgs a, tuple work_shape, bint same_order):
    """The code array the kernels write (C-contiguous, work_shape: the
    caller's out when it is so and the work layout is x's own axis order,
    same_order; a transposed work shape may equal x's shape, as (n, n) with
    axis=0) and the scale array (scale_out when C-contiguous), holding the
    static scales when given."""
    if same_order and a.q is not None and (<cnp.ndarray>a.q).flags.c_contiguous \
            and (<cnp.ndarray>a.q).flags.aligned and a.q.shape == work_shape:
        q = a.q
    else:
        q = np.empty(work_shape, a.dtype)
    if a.scale_out is not None and a.scale_out.flags.c_contiguous \
            and a.scale_out.flags.aligned:
        scales = a.scale_out
    else:
        scales = np.empty(a.scale_shape, np.float32)
    if a.scale is not None:
        np.copyto(scales, a.scale)
    return q, scales


cdef tuple _quant_results(_QuantArgs a, object q, object scales, tuple order, tuple shape):
    """(q, scale) as returned: in the caller's out and scale_out when given,
    q in x's shape."""
    if a.q is not None and q is not a.q:
        np.copyto(np.transpose(a.q, order), q)
    elif a.q is None and order != tuple(range(len(order))):
        q = np.ascontiguousarray(np.transpose(q, np.argsort(order)))
    if a.scale_out is not None and scales is not a.scale_out:
        np.copyto(a.scale_out, scales)
    return (q if a.out is None else a.out), (scales if a.scale_out is None else a.scale_out)


def quantize(y, dtype, axis, group_size, scale, out, scale_out):
    """fastnorm.quantize: (q, scale)."""
    cdef bint is_norm[MAX_DIMS]
    cdef quant_run_t run
    cdef cnp.ndarray ya = _input_array(y)
    axes = _norm_axes(ya, None, axis, is_norm)
    cdef _QuantArgs a = _quant_args(ya, axes, dtype, group_size, scale, out, scale_out)
    order, _ = _axes_last(ya.ndim, axes)
    ctype = _compute_typenum(cnp.PyArray_TYPE(ya))
    # the values in the compute dtype, the quantized axes last (float16 and
    # bfloat16 widen exactly), C-contiguous and aligned
    values = np.ascontiguousarray(np.transpose(ya, order),
                                  dtype=cnp.PyArray_DescrFromType(ctype))
    if not values.flags.aligned:
        values = values.copy()
    # out or scale_out inside y (values is y itself when already so laid
    # out): codes and scales are written while later rows are still to be
    # read, and static scales before any, so read from a private copy
    if _overlap(values, a.q) or _overlap(values, a.scale_out):
        values = values.copy()
    rows = values.size // a.n if a.n else 0
    q, scales = _quant_outputs(a, values.shape, order == tuple(range(ya.ndim)))
    if values.size:
        memset(&run, 0, sizeof(quant_run_t))
        run.quant.y = cnp.PyArray_DATA(values)
        _run_quant_rows(&run, a, q, scales, rows, ctype)
    return _quant_results(a, q, scales, order, _shape(ya))


def normalize_quant(int op, x, residual, normalized_shape, weight, bias, eps, axis, dtype,
                    group_size, scale, out, scale_out, residual_out):
    """The quantized norms: rms_norm_quant and layer_norm_quant, (q, scale);
    with a residual their add_ forms, (q, scale, h)."""
    cdef Call c
    cdef quant_run_t run
    cdef cnp.ndarray xa, h = None
    cdef bint add = residual is not None
    x_checked = _input_array(x)
    ctype = cnp.PyArray_DescrFromType(_compute_typenum(cnp.PyArray_TYPE(x_checked)))
    if add:
        c = _add_normalize_call(op, x_checked, residual, normalized_shape, weight, bias, eps,
                                axis, None, residual_out, False, ctype)
    else:
        c = _normalize_call(op, x_checked, normalized_shape, weight, bias, eps, axis, None,
                            False, ctype)
    xa = c.x
    cdef _QuantArgs a = _quant_args(xa, c.axes, dtype, group_size, scale, out, scale_out)
    if add:
        h = _new_output(xa) if c.residual_out is None else c.h
        if c.residual_out is not None and (_overlap(a.q, h) or _overlap(a.scale_out, h)):
            raise ValueError("out or scale_out overlaps residual_out: q, scale and h need "
                             "separate arrays")
    trailing = c.axes[0] == xa.ndim - len(c.axes)
    fused = (cnp.PyArray_SIZE(xa) > 0 and trailing and not c.per_sample
             and all([a_.flags.c_contiguous and a_.flags.aligned
                      for a_ in ((xa, c.residual, h) if add else (xa,))]))
    if add and fused:  # as add_normalize fuses: h may be residual itself, nothing else
        fused = not (_clash(h, c.residual) or _overlap(h, xa))
    # out or scale_out inside an input: the fused path writes codes and
    # scales (static ones before it starts) while later rows are still to be
    # read; the two-step path reads every input before quantize writes
    if fused:
        fused = not any([_overlap(o, i) for o in (a.q, a.scale_out)
                         for i in ((xa, c.residual) if add else (xa,))])
    if not fused:  # the definition: the float norm, then quantize
        if add:
            y, h_res = _run_add_normalize(c)
        else:
            y = _run_normalize(c)
        result = quantize(y, a.dtype, c.axes, group_size, a.scale, out, scale_out)
        return result + (h_res,) if add else result

    order = tuple(range(xa.ndim))
    rows = cnp.PyArray_SIZE(xa) // a.n
    q, scales = _quant_outputs(a, _shape(xa), True)
    # (and scales: a scale_out holding weight or bias is written while in use)
    weight = _private_if_overlapping(_private_if_overlapping(c.weight, q, h), scales)
    bias = _private_if_overlapping(_private_if_overlapping(c.bias, q, h), scales)
    memset(&run, 0, sizeof(quant_run_t))
    run.norm.x = cnp.PyArray_DATA(xa)
    run.norm.weight = _data_or_null(weight)
    run.norm.bias = _data_or_null(bias)
    run.norm.row_len = a.n
    run.norm.x_row_stride = run.norm.y_row_stride = a.n
    run.norm.x_elem_stride = run.norm.y_elem_stride = 1
    run.norm.eps = c.eps
    if add:
        run.norm.residual = cnp.PyArray_DATA(c.residual)
        run.norm.h = cnp.PyArray_DATA(h)
        run.norm.r_row_stride = run.norm.h_row_stride = a.n
        run.norm.r_elem_stride = run.norm.h_elem_stride = 1
    run.x_size = cnp.PyArray_ITEMSIZE(xa)
    run.norm_kernel = _forward_kernel(
        op, _forward_kernel_index(xa, np.empty(0, ctype)))
    _run_quant_rows(&run, a, q, scales, rows, ctype.num)
    result = _quant_results(a, q, scales, order, _shape(xa))
    if add:
        return result + ((h if c.residual_out is None else c.residual_out),)
    return result


# ---- the Dask layer's check of a quantization (fastnorm/_dask.py) ----------------

def quantize_call(x, axes, dtype, group_size, scale):
    """quantize's arguments (and a quantized norm's) for x, a zero-strided
    stand-in of the array's shape whose normalized axes are `axes`, checked
    by the core's rules and not run: (the codes' dtype, the scales' shape,
    the static scales as float32 in that shape or None)."""
    cdef _QuantArgs a = _quant_args(_input_array(x), tuple(axes), dtype, group_size, scale,
                                    None, None)
    return a.dtype, a.scale_shape, a.scale
