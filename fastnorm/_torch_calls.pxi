# The call specification for torch tensors, read through their pointers.
# Included by _core.pyx; fastnorm.torch's eager calls come here.
#
# fastnorm.torch's eager calls come here with the tensors themselves: a NumPy
# view of a tensor costs more (about 1.5 us each) than the kernel at small
# sizes.  The tensors' pointers, sizes and strides go straight to the
# planner; outputs come from torch's allocator (torch.empty_like).  Any call
# this path does not take returns None, and fastnorm.torch goes the general
# way (NumPy views and _api), which owns every error message.
# torch is never imported here: fastnorm.torch hands its objects over once.

cdef object g_Tensor = None
cdef object g_Parameter = None
cdef object g_empty_like = None
cdef object g_empty = None
cdef object g_is_grad_enabled = None
cdef object g_contiguous_format = None
cdef object g_float32 = None
cdef object g_float64 = None
cdef object g_from_numpy = None
cdef object g_bfloat16 = None
cdef dict g_torch_typenum = {}
cdef object g_is_tracing = None
cdef object g_forward_ad = None


def torch_setup(torch):
    """Called once by fastnorm.torch with the torch module."""
    global g_Tensor, g_Parameter, g_empty_like, g_empty, g_is_grad_enabled
    global g_contiguous_format, g_float32, g_float64, g_torch_typenum, g_from_numpy, g_bfloat16
    global g_is_tracing, g_forward_ad, g_SymInt
    g_Tensor, g_Parameter, g_SymInt = torch.Tensor, torch.nn.Parameter, torch.SymInt
    g_from_numpy, g_bfloat16 = torch.from_numpy, torch.bfloat16
    g_empty_like, g_empty = torch.empty_like, torch.empty
    g_is_grad_enabled = torch.is_grad_enabled
    g_contiguous_format = torch.contiguous_format
    g_float32, g_float64 = torch.float32, torch.float64
    g_is_tracing = torch._C._is_tracing
    g_forward_ad = torch.autograd.forward_ad
    g_torch_typenum = {torch.float32: cnp.NPY_FLOAT32, torch.float64: cnp.NPY_FLOAT64,
                       torch.float16: g_f16_typenum, torch.bfloat16: g_bf16_typenum}


cdef struct tensor_t:
    char *data
    int typenum
    int itemsize
    int ndim
    bint c_contiguous
    Py_ssize_t numel
    Py_ssize_t shape[MAX_DIMS]
    Py_ssize_t strides[MAX_DIMS]   # in elements


cdef int _read_tensor(object t, tensor_t *d) except -1:
    """Fill d from a plain CPU tensor of a kernel dtype; 1 when t is anything
    else (another type or device, a sparse or lazily negated tensor, no
    elements, a misaligned pointer).  Types are checked by the caller."""
    cdef object typenum = g_torch_typenum.get(t.dtype)
    cdef Py_ssize_t ptr, expect
    cdef int a
    if typenum is None or not t.is_cpu or t.is_neg():
        return 1
    try:
        sizes = t.shape
        strides = t.stride()  # raises for sparse, mkldnn and nested layouts
        ptr = t.data_ptr()    # raises for torch.func's wrappers (vmap, grad)
    except RuntimeError:
        return 1
    if ptr == 0:  # no data allocated (a freed storage, functionalization)
        return 1
    d.ndim = len(sizes)
    if d.ndim == 0 or d.ndim > MAX_DIMS:
        return 1
    d.typenum = typenum
    d.itemsize = 8 if d.typenum == cnp.NPY_FLOAT64 else (4 if d.typenum == cnp.NPY_FLOAT32 else 2)
    d.numel = 1
    for a in range(d.ndim):
        d.shape[a] = sizes[a]
        d.strides[a] = strides[a]
        d.numel *= d.shape[a]
    if d.numel == 0:
        return 1
    d.c_contiguous = True
    expect = 1
    for a in range(d.ndim - 1, -1, -1):
        if d.shape[a] != 1:
            if d.strides[a] != expect:
                d.c_contiguous = False
            expect *= d.shape[a]
    if ptr % d.itemsize:
        return 1
    d.data = <char *>ptr
    return 0


cdef inline bint _is_tensor(object t):
    return type(t) is g_Tensor or type(t) is g_Parameter


cdef object _new_tensor_like(object t, const tensor_t *d, tensor_t *out):
    """A fresh C-order tensor of t's shape and dtype; out describes it.

    Large ones come from fastnorm's buffer cache, as the NumPy API's outputs
    do: a fresh 64 MB block from torch's allocator costs more in first-touch
    page faults than the normalization.  The tensor holds the buffer (through
    the array torch.from_numpy keeps alive), so the memory is reused only
    after the tensor and every view of it are gone.  Such a tensor's storage
    is not resizable; small outputs come from torch.empty_like."""
    cdef Py_ssize_t expect = 1
    cdef int a
    cdef cnp.npy_intp dims[MAX_DIMS]
    if d.numel * d.itemsize >= POOL_MIN_BYTES and g_pool_cap != 0:
        for a in range(d.ndim):
            dims[a] = d.shape[a]
        if d.typenum == g_bf16_typenum:
            y = g_from_numpy(_new_c_array(d.ndim, dims, cnp.NPY_INT16)).view(g_bfloat16)
        else:
            y = g_from_numpy(_new_c_array(d.ndim, dims, d.typenum))
    elif d.c_contiguous:
        y = g_empty_like(t)
    else:
        y = g_empty_like(t, memory_format=g_contiguous_format)
    out[0] = d[0]
    out.c_contiguous = True
    for a in range(d.ndim - 1, -1, -1):
        out.strides[a] = expect
        expect *= d.shape[a]
    out.data = <char *><Py_ssize_t>y.data_ptr()
    return y


cdef inline void _tensor_operand(operand_t *o, const tensor_t *d) noexcept:
    cdef int a
    o.data = d.data
    o.itemsize = d.itemsize
    for a in range(d.ndim):
        o.strides[a] = d.strides[a]


cdef bint _context_declines() except -1:
    """Whether torch's own ops must run whatever the tensors: torch.jit.trace
    (and the TorchScript-based ONNX export) records only the ops it sees, and
    the pointer path's kernels are invisible to it; inside a forward-mode AD
    level (torch.autograd.forward_ad.dual_level) tangents flow only through
    torch's ops."""
    return g_is_tracing() or g_forward_ad._current_level >= 0


def torch_context_declines():
    """_context_declines, for fastnorm.torch's general path."""
    return _context_declines()


def torch_derived(w, tag, make):
    """make(a NumPy copy of w), cached under (id(w), tag) while w's bytes stay
    the same (see _derived_from_bytes); None when w is not a plain, C-order
    CPU tensor of a kernel dtype, which the caller then handles uncached."""
    cdef tensor_t d
    if not _is_tensor(w) or _read_tensor(w, &d) or not d.c_contiguous:
        return None
    return _derived_from_bytes((id(w), tag), d.data, d.numel, d.typenum, make)


cdef object _DECLINE = object()


cdef object _affine_data(object w, const tensor_t *x, int first, int n_norm,
                         bint norm_reordered, int typenum, char **data):
    """Point data at a weight or bias laid out as the kernels read it: the
    normalized sizes of x (dims first .. first+n_norm-1), contiguous, in the
    compute dtype (half ones of x's own dtype are widened).  Returns the
    tensor data points into, which the caller keeps until the kernel is done
    (a widened copy may otherwise die when another thread updates the
    weight), or _DECLINE when w is not such a tensor."""
    cdef tensor_t d
    cdef int a
    cdef int ctype = cnp.NPY_FLOAT64 if typenum == cnp.NPY_FLOAT64 else cnp.NPY_FLOAT32
    data[0] = NULL
    if w is None:
        return None
    if not _is_tensor(w) or _read_tensor(w, &d) or d.ndim != n_norm or not d.c_contiguous:
        return _DECLINE
    if n_norm > 1 and norm_reordered:
        return _DECLINE
    for a in range(n_norm):
        if d.shape[a] != x.shape[first + a]:
            return _DECLINE
    if d.typenum != ctype:
        if d.typenum != typenum:
            return _DECLINE
        w = _derived_from_bytes(id(w), d.data, d.numel, d.typenum, _as_float32)
        d.data = cnp.PyArray_BYTES(<cnp.ndarray>w)
    data[0] = d.data
    return w


cdef int _tensor_dims(object normalized_shape, object dim, const tensor_t *x, bint *is_norm,
                      int *first) except -1:
    """The normalized dims of x by the one rule (_normalized_dims): how many
    (they are dims first .. first+n-1), or 0 when this path does not take
    the call: dim a tuple (whose dims need not be side by side), or
    arguments the rule refuses (the general path raises its error, after
    the checks it makes first)."""
    if dim is not None and type(dim) is not int:
        return 0
    try:
        return _normalized_dims(x.ndim, x.shape, None, normalized_shape, dim, True, is_norm, first)
    except (TypeError, ValueError):
        return 0


def torch_dims(shape, normalized_shape, dim):
    """fastnorm.torch's normalized dims of a tensor, sorted, by the one rule
    (_normalized_dims, in the dim= spelling), for its general path and its
    torch.library ops.  shape: the tensor's sizes (symbolic ones too, under
    tracing), or its rank alone where the sizes are not known (dynamo's
    trace of fastnorm.torch, with normalized_shape None)."""
    cdef int ndim, first, a
    cdef bint *is_norm
    if type(shape) is int:
        ndim, sizes = shape, None
        if normalized_shape is not None:
            raise TypeError("torch_dims: with the rank alone, normalized_shape must be None")
    else:
        sizes = tuple(shape)
        ndim = len(sizes)
    # (torch tensors may have more than MAX_DIMS dims)
    is_norm = <bint *>PyMem_Malloc(max(ndim, 1) * sizeof(bint))
    if is_norm == NULL:
        raise MemoryError()
    try:
        _normalized_dims(ndim, NULL, sizes, normalized_shape, dim, True, is_norm, &first)
        return tuple([a for a in range(ndim) if is_norm[a]])
    finally:
        PyMem_Free(is_norm)


cdef bint _norm_reordered(const tensor_t *x, const bint *is_norm):
    """Whether the kernels walk x's normalized dims in another order than
    increasing dim order (a permuted view): weight and bias, laid out in dim
    order, would then not match."""
    cdef operand_t o
    cdef plan_t probe
    _tensor_operand(&o, x)
    _plan_layout(&probe, x.ndim, x.shape, 1, 1, &o, g_fwd_fields, is_norm)
    return probe.norm_reordered


cdef inline bint _any_requires_grad(object a, object b, object c, object d):
    return ((a is not None and a.requires_grad) or (b is not None and b.requires_grad)
            or (c is not None and c.requires_grad) or (d is not None and d.requires_grad))


cdef object _stats_array(const tensor_t *x, const bint *is_norm, int ctype, operand_t *o):
    """Keepdims stats (1 along the normalized dims), C order, as an ndarray."""
    cdef cnp.npy_intp dims[MAX_DIMS]
    cdef int a
    for a in range(x.ndim):
        dims[a] = 1 if is_norm[a] else x.shape[a]
    arr = cnp.PyArray_EMPTY(x.ndim, dims, ctype, 0)
    _array_operand(o, arr, x.ndim)
    return arr


def torch_forward(int op, x, normalized_shape, weight, bias, eps, dim, residual,
                  bint check_grad, bint want_stats):
    """A forward on CPU tensors straight from their pointers.

    Returns y, or (y, h) with a residual (h = x + residual), followed by the
    (mean, rstd) or (rstd,) stats as NumPy arrays when want_stats; None when
    the call is not one this path takes.  With check_grad, a call in which a
    tensor requires grad (with grad mode on) is not taken either."""
    cdef tensor_t xd, yd, rd, hd
    cdef bint is_norm[MAX_DIMS]
    cdef operand_t ops[MAX_OPS]
    cdef char *wdata
    cdef char *bdata
    cdef int n_norm, first = 0, a, ctype
    cdef double eps_value
    cdef bint reordered
    if not _is_tensor(x) or _read_tensor(x, &xd):
        return None
    if (weight is not None and not _is_tensor(weight)) or \
            (bias is not None and not _is_tensor(bias)):
        return None
    n_norm = _tensor_dims(normalized_shape, dim, &xd, is_norm, &first)
    if n_norm == 0:
        return None
    if not _plain_eps(op, eps, xd.typenum, &eps_value):
        return None
    if residual is not None and not _is_tensor(residual):
        return None
    if check_grad and g_is_grad_enabled() and _any_requires_grad(x, weight, bias, residual):
        return None
    if _context_declines():
        return None
    if residual is not None:
        # the kernels fuse the add for C-order rows over trailing dims only
        # (as _api's fused path); other layouts take the general path's two steps
        if _read_tensor(residual, &rd) or rd.typenum != xd.typenum \
                or rd.ndim != xd.ndim or first + n_norm != xd.ndim or not xd.c_contiguous \
                or not rd.c_contiguous:
            return None
        for a in range(xd.ndim):
            if rd.shape[a] != xd.shape[a]:
                return None
    reordered = n_norm > 1 and (weight is not None or bias is not None) \
        and _norm_reordered(&xd, is_norm)
    w_keep = _affine_data(weight, &xd, first, n_norm, reordered, xd.typenum, &wdata)
    b_keep = _affine_data(bias, &xd, first, n_norm, reordered, xd.typenum, &bdata)
    if w_keep is _DECLINE or b_keep is _DECLINE:
        return None

    y = _new_tensor_like(x, &xd, &yd)
    _tensor_operand(&ops[FWD_X], &xd)
    _tensor_operand(&ops[FWD_Y], &yd)
    h = None
    if residual is not None:
        h = _new_tensor_like(x, &xd, &hd)
        _tensor_operand(&ops[FWD_R], &rd)
        _tensor_operand(&ops[FWD_H], &hd)
    else:
        _absent_operand(&ops[FWD_R], xd.ndim)
        _absent_operand(&ops[FWD_H], xd.ndim)
    _absent_operand(&ops[FWD_W], xd.ndim, wdata)
    _absent_operand(&ops[FWD_B], xd.ndim, bdata)
    mean = rstd = None
    _absent_operand(&ops[FWD_MEAN], xd.ndim)
    _absent_operand(&ops[FWD_RSTD], xd.ndim)
    if want_stats:
        ctype = _compute_typenum(xd.typenum)
        rstd = _stats_array(&xd, is_norm, ctype, &ops[FWD_RSTD])
        if op == OP_LAYER_NORM:
            mean = _stats_array(&xd, is_norm, ctype, &ops[FWD_MEAN])
    if _run_forward(op, _dtype_index(xd.typenum), xd.ndim, xd.shape, ops, is_norm, eps_value,
                    xd.numel * xd.itemsize, False):
        return None  # normalized dims that do not merge (x is an irregular view)
    if not want_stats:
        return y if residual is None else (y, h)
    stats = (mean, rstd) if op == OP_LAYER_NORM else (rstd,)
    return ((y,) if residual is None else (y, h)) + stats


cdef bint _is_stats_of(object a, const tensor_t *x, const bint *is_norm):
    """Whether a is an ndarray of x's keepdims stats shape in the compute dtype."""
    return _is_plain(a, _compute_typenum(x.typenum)) \
        and _has_stats_shape(<cnp.ndarray>a, x.ndim, x.shape, is_norm)


def torch_backward(int op, dy, x, weight, rstd, eps, normalized_shape, dim,
                   bint want_dweight, bint want_dbias):
    """The backward of torch_forward (same x, weight, eps, normalized_shape,
    dim; rstd as it returned) on CPU tensors from their pointers.  Returns
    (dx, dweight, dbias), the parameter gradients as float32/float64 tensors
    of weight's shape summed in float64 (None where not wanted); None when
    the call is not one this path takes."""
    cdef tensor_t xd, dyd, dxd
    cdef bint is_norm[MAX_DIMS]
    cdef operand_t ops[N_BWD_OPS]
    cdef bint reordered
    cdef char *wdata
    cdef int n_norm, first = 0, a
    cdef double eps_value
    if not _is_tensor(x) or _read_tensor(x, &xd) or not _is_tensor(dy) or _read_tensor(dy, &dyd):
        return None
    if dyd.typenum != xd.typenum or dyd.ndim != xd.ndim:
        return None
    for a in range(xd.ndim):
        if dyd.shape[a] != xd.shape[a]:
            return None
    n_norm = _tensor_dims(normalized_shape, dim, &xd, is_norm, &first)
    if n_norm == 0:
        return None
    eps_value = _default_eps(op, xd.typenum) if eps is None else eps
    reordered = n_norm > 1 and weight is not None and _norm_reordered(&xd, is_norm)
    w_keep = _affine_data(weight, &xd, first, n_norm, reordered, xd.typenum, &wdata)
    if w_keep is _DECLINE:
        return None
    if rstd is not None and not _is_stats_of(rstd, &xd, is_norm):
        return None  # stats of another shape: the general path checks them
    dx = _new_tensor_like(x, &xd, &dxd)
    _tensor_operand(&ops[BWD_X], &xd)
    _tensor_operand(&ops[BWD_DY], &dyd)
    _tensor_operand(&ops[BWD_DX], &dxd)
    _array_operand(&ops[BWD_RSTD], rstd, xd.ndim)
    parts = _run_backward(op, _dtype_index(xd.typenum), xd.ndim, xd.shape, ops, is_norm, wdata,
                          eps_value, xd.numel * xd.itemsize, want_dweight, want_dbias)
    if parts is None:
        return None
    norm_shape = tuple([xd.shape[first + a] for a in range(n_norm)])
    dtype = g_float64 if xd.typenum == cnp.NPY_FLOAT64 else g_float32
    return (dx,
            _sum_parts_into(parts, 0, norm_shape, dtype) if want_dweight else None,
            _sum_parts_into(parts, want_dweight, norm_shape, dtype) if want_dbias else None)


cdef object _sum_parts_into(_Parts parts, int k, tuple shape, object dtype):
    """Sum k of the parts in a new tensor of the given shape (float32 or
    float64: summed in float64, rounded once)."""
    out = g_empty(shape, dtype=dtype)
    cdef void *dst = <void *><Py_ssize_t>out.data_ptr()
    cdef bint to_float = dtype is not g_float64
    cdef const double *src = _part(parts, k)
    with nogil:
        _sum_parts(src, parts.n_items, parts.n, dst, to_float)
    return out
