# The argument rules for NumPy arrays.  Included by _core.pyx.
#
# Each public function of fastnorm/_api.py is one call into _calls.pxi
# (normalize, add_normalize, normalize_backward), which checks every argument
# once, by the one rule for it here; each rule raises the user-facing
# message naming the values and shapes involved.  The common spellings (an
# aligned array of a kernel dtype, an int or tuple normalized_shape, axis=-1
# or (-1,), a 1-D weight in the compute dtype or in the input's half dtype, a
# float eps) are each rule's early exit, so every spelling of a small call
# costs about the same.

# ---- arrays ---------------------------------------------------------------

cdef inline tuple _shape(object a):
    """a.shape as a tuple (a typed ndarray's .shape is its C dims pointer)."""
    return (<object>a).shape


cdef inline tuple _strides(object a):
    return (<object>a).strides


cdef inline bint _is_plain(object v, int typenum):
    """v is an aligned, native-order ndarray (not a subclass) of typenum."""
    return (type(v) is cnp.ndarray and cnp.PyArray_TYPE(<cnp.ndarray>v) == typenum
            and cnp.PyArray_ISALIGNED(<cnp.ndarray>v) and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>v))


cdef _refuse_masked(object value, str name):
    """Masked arrays are refused: the kernels would read the masked values."""
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array; masked arrays are not supported: fill "
                        f"the masked values ({name}.filled(...)) or pass {name}.data")


class DaskOperand(TypeError):
    """A Dask collection among a call's arrays.  numpy.asarray would compute
    it here, so the core refuses it; the public functions (fastnorm/_api.py)
    catch this and run the call lazily on Dask (fastnorm/_dask.py) instead.
    The check costs nothing on ndarrays: only other values are converted."""


cdef cnp.ndarray _plain_array(object value, str name):
    """An array argument as a plain ndarray, as numpy.asarray makes it:
    subclasses such as numpy.matrix become the arrays they hold (a matrix is
    its 2-D array); masked arrays are refused, Dask collections
    (duck-typed, dask is not imported) raise DaskOperand."""
    if type(value) is cnp.ndarray:
        return <cnp.ndarray>value
    if hasattr(type(value), "__dask_graph__"):
        raise DaskOperand(
            f"{name} is a Dask collection: fastnorm's public functions take it and return "
            f"lazy Dask arrays; the in-memory core does not compute it")
    _refuse_masked(value, name)
    return np.asarray(value)


cdef bint _is_real(object dt):
    return dt.kind in "fiub" or dt.num == g_bf16_typenum


cdef cnp.ndarray _real_array(object value, str name):
    """value as an ndarray of a real numeric dtype, else TypeError.  Early
    exit: an ndarray of a kernel dtype."""
    if type(value) is cnp.ndarray and _is_kernel_typenum(cnp.PyArray_TYPE(<cnp.ndarray>value)):
        return <cnp.ndarray>value
    cdef cnp.ndarray arr = _plain_array(value, name)
    if not _is_real(arr.dtype):
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return arr


cdef cnp.ndarray _input_array(object x):
    """x as an ndarray of a kernel dtype; integers and bools become float64."""
    cdef cnp.ndarray a
    if type(x) is cnp.ndarray:
        a = <cnp.ndarray>x
        if _is_kernel_typenum(cnp.PyArray_TYPE(a)) and cnp.PyArray_ISNOTSWAPPED(a) \
                and cnp.PyArray_NDIM(a) > 0:
            return a
    a = _plain_array(x, "x")
    dt = a.dtype
    if _is_kernel_typenum(dt.num) and dt.isnative:
        pass
    elif dt.kind == "f" and dt.newbyteorder("=") in KERNEL_DTYPES:
        a = a.astype(dt.newbyteorder("="))  # non-native byte order
    elif dt.kind in "iub":
        a = a.astype(np.float64)
    elif dt.kind == "f":
        raise TypeError(
            f"fastnorm does not support dtype {dt}; convert x to float32 or float64")
    else:
        raise TypeError(
            f"x must be a real numeric array (float16, bfloat16, float32, float64, integer "
            f"or bool), got dtype {dt}")
    if a.ndim == 0:
        raise TypeError("x must have at least one dimension, got a 0-d array (a scalar)")
    return a


cdef cnp.ndarray _same_dtype_as(object value, str name, cnp.ndarray x):
    """dy or residual: x's shape, converted to x's dtype (aligned)."""
    cdef int typenum = cnp.PyArray_TYPE(x)
    cdef cnp.ndarray arr
    if _is_plain(value, typenum) and _same_shape(<cnp.ndarray>value, x):
        return <cnp.ndarray>value
    arr = _real_array(value, name)
    if not _same_shape(arr, x):
        raise ValueError(f"{name} has shape {_shape(arr)} but x has shape {_shape(x)}")
    if arr.dtype != x.dtype or not arr.flags.aligned:
        arr = arr.astype(x.dtype)
    return arr


cdef bint _same_shape(cnp.ndarray a, cnp.ndarray b):
    cdef int k
    if cnp.PyArray_NDIM(a) != cnp.PyArray_NDIM(b):
        return False
    for k in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_DIMS(a)[k] != cnp.PyArray_DIMS(b)[k]:
            return False
    return True


def real_array(value, name):
    """value as an ndarray of a real numeric dtype, else TypeError (the
    modules' state_dict check)."""
    return _real_array(value, name)


def refuse_masked(value, name):
    _refuse_masked(value, name)


# ---- the normalized axes --------------------------------------------------

cdef object g_np_integer = np.integer
cdef object g_np_floating = np.floating


cdef tuple _as_axis_tuple(object value, str name):
    cdef object v
    if type(value) is int:
        return (value,)
    if type(value) is tuple:
        for v in <tuple>value:
            if type(v) is not int:
                break
        else:
            return <tuple>value
    if isinstance(value, g_np_integer):
        return (int(value),)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return (operator.index(value),)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be an int or a tuple of ints, got {value!r}") from None
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (numbers.Integral, np.integer)):
            raise TypeError(f"{name} must be an int or a tuple of ints, got {value!r}")
    return tuple([operator.index(v) for v in items])


def as_axis_tuple(value, name):
    """An int or a tuple of ints as a tuple, else TypeError naming `name`."""
    return _as_axis_tuple(value, name)


cdef tuple _norm_axes(cnp.ndarray x, object normalized_shape, object axis, bint *is_norm):
    """The sorted normalized axes of x (and is_norm, their mask), from
    normalized_shape (trailing sizes, as in torch) and/or axis (NumPy axes)."""
    cdef int ndim = cnp.PyArray_NDIM(x), a, k, n_ns = 0, first = -1
    cdef cnp.npy_intp *shape = cnp.PyArray_DIMS(x)
    cdef tuple ns, raw, axes
    for a in range(ndim):
        is_norm[a] = False
    if normalized_shape is not None:
        ns = _as_axis_tuple(normalized_shape, "normalized_shape")
        n_ns = len(ns)
        if n_ns == 0:
            raise ValueError("normalized_shape must name at least one dimension, got ()")
        first = ndim - n_ns
        matches = n_ns <= ndim
        k = 0
        while matches and k < n_ns:
            matches = ns[k] == shape[first + k]
            k += 1
        if not matches:
            trailing = tuple(_shape(x)[max(first, 0):])
            raise ValueError(
                f"normalized_shape {ns} does not match the trailing dimensions {trailing} "
                f"of x with shape {tuple(_shape(x))}")
    if axis is None:
        if n_ns == 0:
            first = ndim - 1
            n_ns = 1
        for a in range(first, ndim):
            is_norm[a] = True
        axes = tuple(range(first, ndim)) if n_ns > 1 else (first,)
    else:
        raw = _as_axis_tuple(axis, "axis")
        if len(raw) == 0:
            raise ValueError("axis must name at least one axis, got ()")
        for v in raw:
            if not -ndim <= v < ndim:
                raise AxisError(v, ndim)
            a = v % ndim
            if is_norm[a]:
                raise AxisError(f"axis {raw} names axis {a} twice (x has shape {tuple(_shape(x))})")
            is_norm[a] = True
        axes = tuple([a for a in range(ndim) if is_norm[a]])
        if n_ns and (len(axes) != n_ns or axes[0] != first):
            raise ValueError(
                f"axis {raw} and normalized_shape {tuple(_shape(x)[first:])} disagree "
                f"for x with shape {tuple(_shape(x))}: normalized_shape names axes "
                f"{tuple(range(first, ndim))}")
    for a in axes:
        if shape[a] == 0:
            raise ValueError(
                f"cannot normalize over axis {a} of size 0 (x has shape {tuple(_shape(x))})")
    return axes


cdef tuple _norm_shape(cnp.ndarray x, tuple axes):
    if len(axes) == 1:
        return (cnp.PyArray_DIMS(x)[<int>axes[0]],)
    return tuple([_shape(x)[a] for a in axes])


cdef tuple _stats_shape(cnp.ndarray x, tuple axes):
    """Keepdims shape of the statistics: 1 at each normalized axis."""
    return tuple([1 if a in axes else s for a, s in enumerate(_shape(x))])


cdef bint _has_stats_shape(cnp.ndarray a, int ndim, const Py_ssize_t *shape,
                           const bint *is_norm):
    """a has the keepdims statistics shape of an x of that shape (1 at each
    normalized axis of the is_norm mask): the test of _stats_input, and of
    the torch path's stats."""
    cdef int k
    if cnp.PyArray_NDIM(a) != ndim:
        return False
    for k in range(ndim):
        if cnp.PyArray_DIMS(a)[k] != (1 if is_norm[k] else shape[k]):
            return False
    return True


# ---- eps -------------------------------------------------------------------

# layer_norm's default eps, as in PyTorch
LAYER_NORM_EPS = 1e-5


cdef double _default_eps(int op, int typenum):
    # rms_norm: float16 and bfloat16 get float32's epsilon (2**-23), not
    # their own coarse 2**-10 / 2**-7, which would swamp the mean square of
    # small activations
    if op == OP_LAYER_NORM:
        return LAYER_NORM_EPS
    if typenum == cnp.NPY_FLOAT64:
        return 2.0 ** -52
    return 2.0 ** -23


def default_eps(int op, dtype):
    """The eps that eps=None means: 1e-5 for the layer_norm family; for the
    rms_norm family the machine epsilon of the compute dtype (float32's for
    float16 and bfloat16), as PyTorch's rms_norm takes it."""
    return _default_eps(op, np.dtype(dtype).num)


cdef bint _plain_eps(int op, object eps, int typenum, double *value):
    """The rule's early exit: None (the default) or a finite, non-negative
    float into value; False for anything else (which _eps_value checks)."""
    if eps is None:
        value[0] = _default_eps(op, typenum)
        return True
    if not isinstance(eps, float):  # float, and subclasses such as np.float64
        return False
    value[0] = eps
    return value[0] >= 0.0 and value[0] < float("inf")


def check_eps(eps):
    """eps as a float: a real number, finite and >= 0; else TypeError or
    ValueError."""
    if isinstance(eps, bool) or not isinstance(eps, (numbers.Real, np.integer, np.floating)):
        raise TypeError(f"eps must be a real number, got {eps!r}")
    try:
        value = float(eps)
    except OverflowError:
        raise ValueError(f"eps must be finite and >= 0, got {eps!r}") from None
    if not (value >= 0.0 and np.isfinite(value)):
        raise ValueError(f"eps must be finite and >= 0, got {eps!r}")
    return value


cdef double _eps_value(int op, object eps, int typenum) except -1.0:
    cdef double value
    if _plain_eps(op, eps, typenum, &value):
        return value
    if isinstance(eps, g_np_floating):  # np.float32(1e-5): as check_eps, without its ABC tests
        value = float(eps)
        if value >= 0.0 and value < float("inf"):
            return value
    return check_eps(eps)


def resolve_eps(eps, int op, dtype):
    """eps checked, with None meaning the op's default."""
    return _eps_value(op, eps, np.dtype(dtype).num)


# ---- out ---------------------------------------------------------------------

cdef enum:
    # layouts that fail the quick test are checked by listing the offsets of
    # their elements, up to this many; larger ones are refused
    OVERLAP_ENUMERATE_MAX = 1 << 22


cdef int _internal_overlap(cnp.ndarray a) except -1:
    """1 when two elements of a share a byte, 0 when none do, 2 when that
    was not checked (below); -1 with an exception raised.

    Quick test, a sufficient condition that every layout NumPy makes passes
    (contiguous, transposed, sliced, reversed): with the dimensions of size
    > 1 sorted by |stride|, each |stride| reaches past everything the
    smaller dimensions span.  A layout failing it (hand-made interleaved
    strides) may still be free of overlap: its element offsets are then
    listed and compared, up to OVERLAP_ENUMERATE_MAX elements; beyond that
    the answer is 2, which callers treat as overlap."""
    cdef int ndim = cnp.PyArray_NDIM(a), n = 0, i, d
    cdef Py_ssize_t itemsize = cnp.PyArray_ITEMSIZE(a), span
    cdef Py_ssize_t size[MAX_DIMS]
    cdef Py_ssize_t stride[MAX_DIMS]
    cdef Py_ssize_t order[MAX_DIMS]
    if cnp.PyArray_SIZE(a) <= 1 or cnp.PyArray_IS_C_CONTIGUOUS(a) \
            or cnp.PyArray_IS_F_CONTIGUOUS(a):
        return 0
    for i in range(ndim):
        if cnp.PyArray_DIMS(a)[i] > 1:
            stride[n] = _abs(cnp.PyArray_STRIDES(a)[i])
            if stride[n] == 0:
                return 1
            size[n] = cnp.PyArray_DIMS(a)[i]
            order[n] = n
            n += 1
    _sort_dims_by_stride(n, order, stride)  # decreasing: walk it from the end
    span = itemsize
    for i in range(n - 1, -1, -1):
        d = order[i]
        if stride[d] < span:
            break
        span += stride[d] * (size[d] - 1)
    else:
        return 0
    if cnp.PyArray_SIZE(a) > OVERLAP_ENUMERATE_MAX:
        return 2
    offsets = np.zeros(1, np.int64)
    for i in range(n):
        offsets = (offsets[:, None] + np.arange(size[i], dtype=np.int64) * stride[i]).ravel()
    offsets.sort()
    return 1 if bool((np.diff(offsets) < itemsize).any()) else 0


def internal_overlap(cnp.ndarray a):
    """Whether elements of a share memory: 0 no, 1 yes, 2 cannot tell (a
    large array with an interleaved layout)."""
    return _internal_overlap(a)


cdef cnp.ndarray _checked_out(object out, cnp.ndarray x, str name):
    """out (or residual_out) as the plain ndarray the kernels write through
    (a view of the caller's array when that is a subclass such as
    numpy.matrix): x's shape and dtype, writeable, no two elements sharing
    memory."""
    cdef cnp.ndarray o
    cdef int k, overlap
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    o = _plain_array(out, name)
    if not (cnp.PyArray_TYPE(o) == cnp.PyArray_TYPE(x) and cnp.PyArray_ISNOTSWAPPED(o)) \
            and o.dtype != x.dtype:
        raise TypeError(f"{name} has dtype {o.dtype} but the result has dtype {x.dtype}")
    if not _same_shape(o, x):
        raise ValueError(f"{name} has shape {_shape(o)} but x has shape {_shape(x)}")
    if not cnp.PyArray_ISWRITEABLE(o):
        raise ValueError(f"{name} is read-only")
    if cnp.PyArray_SIZE(o):
        for k in range(cnp.PyArray_NDIM(o)):
            if cnp.PyArray_STRIDES(o)[k] == 0 and cnp.PyArray_DIMS(o)[k] > 1:
                raise ValueError(f"{name} has elements that share memory (a zero stride, as "
                                 "from broadcast_to); it cannot hold a result")
    overlap = _internal_overlap(o)
    if overlap == 1:
        raise ValueError(f"{name} has elements that share memory (shape {_shape(o)}, strides "
                         f"{_strides(o)}, as from a sliding-window as_strided view); it cannot "
                         "hold a result")
    if overlap:
        raise ValueError(f"{name} has interleaved strides {_strides(o)} (shape {_shape(o)}) "
                         "whose elements may share memory, and is too large to check "
                         "exactly; pass an array whose elements do not overlap")
    return o


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


# ---- outputs -------------------------------------------------------------------

cdef cnp.ndarray _new_output(cnp.ndarray x):
    """An uninitialized array like x (C order when x is C-contiguous, from
    the buffer cache when large; else numpy.empty_like's layout)."""
    if cnp.PyArray_IS_C_CONTIGUOUS(x):
        return _new_c_array(cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x), cnp.PyArray_TYPE(x))
    return np.empty_like(x)


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


# ---- weight and bias -----------------------------------------------------------

cdef inline bint _is_vector(object v, int typenum, Py_ssize_t n):
    return (_is_plain(v, typenum) and cnp.PyArray_NDIM(<cnp.ndarray>v) == 1
            and cnp.PyArray_DIMS(<cnp.ndarray>v)[0] == n
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>v))


cdef bint _broadcasts(tuple shape, tuple target):
    return len(shape) <= len(target) and all(
        s in (1, t) for s, t in zip(reversed(shape), reversed(target)))


cdef object _kernel_operand(object arr, int typenum, bint contiguous=False):
    """arr in the compute dtype of typenum, aligned (C reads it as FN_T: an
    unaligned view of a byte buffer would be undefined behaviour there), and
    C-contiguous when asked; copied only when it is not so already."""
    requirements = ("A", "C") if contiguous else ("A",)
    return np.require(arr, dtype=cnp.PyArray_DescrFromType(_compute_typenum(typenum)),
                      requirements=requirements)


cdef object _affine_kind(object weight, object bias, cnp.ndarray x, tuple axes):
    """Which rule weight and bias follow: True when one of them has x's
    number of dimensions, broadcasts against x itself and varies along a
    batch axis (per-sample modulation, AdaLN); False when every row shares
    them (a parameter of x's rank that is 1 on every batch axis is shared).
    ValueError for shapes that fit neither rule."""
    norm_shape = _norm_shape(x, axes)
    per_sample = False
    for name, value in (("weight", weight), ("bias", bias)):
        if value is None:
            continue
        shape = np.shape(value)
        if len(shape) <= len(axes) and _broadcasts(shape, norm_shape):
            continue
        if len(shape) == x.ndim and _broadcasts(shape, _shape(x)):
            per_sample |= any(shape[a] != 1 for a in range(x.ndim) if a not in axes)
            continue
        raise ValueError(
            f"{name} with shape {shape} cannot be broadcast to the normalized shape "
            f"{norm_shape}, nor (as a per-sample {name} with x's {x.ndim} dimensions) "
            f"against x with shape {_shape(x)}")
    return per_sample


cdef object _shared_affine(object value, cnp.ndarray x, tuple axes):
    """A shared weight/bias broadcast to the normalized shape, C-contiguous,
    in the compute dtype.  One of x's rank (1 on every batch axis) is first
    taken as one over the normalized axes."""
    if value is None:
        return None
    if np.ndim(value) == x.ndim and x.ndim != len(axes):
        shape = np.shape(value)
        value = np.reshape(value, tuple([shape[a] for a in axes]))
    norm_shape = _norm_shape(x, axes)
    if value.shape != norm_shape:
        value = np.broadcast_to(value, norm_shape)
    return _kernel_operand(value, cnp.PyArray_TYPE(x), contiguous=True)


cdef object _per_sample_affine(object value, cnp.ndarray x, tuple axes):
    """A weight/bias under either rule as an array of x.ndim dimensions that
    broadcasts against x, in the compute dtype."""
    if value is None:
        return None
    if value.ndim < x.ndim:  # the normalized-shape rule: place it on the normalized axes
        value = np.broadcast_to(value, _norm_shape(x, axes)).reshape(
            tuple([_shape(x)[a] if a in axes else 1 for a in range(x.ndim)]))
    return _kernel_operand(value, cnp.PyArray_TYPE(x))


cdef tuple _affine_args(object weight, object bias, cnp.ndarray x, tuple axes):
    """weight and bias checked (errors name the shapes the caller passed)
    and converted for the kernels: (weight, bias, per_sample).  Early exit:
    vectors over a single normalized axis, in the compute dtype or in x's
    half dtype (widened; a new array, so it never aliases an output)."""
    cdef int typenum = cnp.PyArray_TYPE(x), ctype = _compute_typenum(typenum)
    cdef Py_ssize_t n
    if len(axes) == 1:
        n = cnp.PyArray_DIMS(x)[<int>axes[0]]
        if (weight is None or _is_vector(weight, ctype, n)
                or (ctype != typenum and _is_vector(weight, typenum, n))) and \
                (bias is None or _is_vector(bias, ctype, n)
                 or (ctype != typenum and _is_vector(bias, typenum, n))):
            if weight is not None and cnp.PyArray_TYPE(<cnp.ndarray>weight) != ctype:
                weight = _widened_vector(<cnp.ndarray>weight)
            if bias is not None and cnp.PyArray_TYPE(<cnp.ndarray>bias) != ctype:
                bias = _widened_vector(<cnp.ndarray>bias)
            return weight, bias, False
    weight = None if weight is None else _real_array(weight, "weight")
    bias = None if bias is None else _real_array(bias, "bias")
    if _affine_kind(weight, bias, x, axes):
        return (_per_sample_affine(weight, x, axes), _per_sample_affine(bias, x, axes), True)
    return _shared_affine(weight, x, axes), _shared_affine(bias, x, axes), False


cdef object _private_if_overlapping(object w, cnp.ndarray y, object h=None):
    """weight or bias inside an output would be overwritten while in use."""
    if w is not None and (_overlap(w, y) or _overlap(w, h)):
        return (<cnp.ndarray>w).copy()
    return w
