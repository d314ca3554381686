# The call specification for NumPy arrays.  Included by _core.pyx.
#
# Each public function of fastnorm/_api.py is one call into here
# (normalize, add_normalize, normalize_backward).  Every argument is checked
# once, by the one rule for it below, which raises the user-facing message
# naming the values and shapes involved; the common spellings (an aligned
# array of a kernel dtype, an int or tuple normalized_shape, axis=-1 or
# (-1,), a 1-D weight in the compute dtype or in the input's half dtype, a
# float eps) are each rule's early exit, so every spelling of a small call
# costs about the same.  Then outputs are allocated and _run.pxi plans and
# runs the kernels; layouts the planner cannot walk are copied to ones it can.

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


def empty_output(cnp.ndarray x):
    return _new_output(x)


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


# Values derived from a parameter vector and kept while the vector's bytes
# stay the same: half-precision weights widened to float32 (widening costs
# more than a small call's kernel, and weights rarely change), and
# fastnorm.torch's Gemma scale (1 + weight).  An entry is reused only when
# the vector holds, byte for byte and read as the same dtype, what the value
# was derived from: the bytes are compared in full on every call (cheaper
# than the widening).  Nothing else can make an entry stale: no write to the
# vector escapes the comparison, whether or not it bumps a version counter
# (torch's fused optimizers do not) or moves the data.  The key (the
# object's id and a tag) only says which entry to compare with, so an id
# reused by a new object is harmless.  Objects get no weak reference (a
# weakref on a tensor breaks torch.utils.swap_tensors); the cache is bounded
# instead, and drops its oldest entries first.  Derived values are private
# copies, so they never alias an output.
cdef dict g_derived = {}
cdef Py_ssize_t g_derived_bytes = 0
cdef Py_ssize_t DERIVED_MAX_ENTRIES = 4096
cdef Py_ssize_t DERIVED_MAX_BYTES = 64 << 20


cdef object _derived_from_bytes(object key, const char *data, Py_ssize_t n, int typenum,
                                object make):
    """make(a copy of the n contiguous values of typenum at data), cached
    under key while the values there stay the same."""
    global g_derived_bytes
    cdef cnp.npy_intp dims[1]
    cdef Py_ssize_t nbytes
    entry = g_derived.get(key)
    if entry is not None:
        seen = <cnp.ndarray>entry[0]
        nbytes = cnp.PyArray_NBYTES(seen)
        if cnp.PyArray_TYPE(seen) == typenum and cnp.PyArray_DIMS(seen)[0] == n and \
                memcmp(cnp.PyArray_DATA(seen), data, nbytes) == 0:
            return entry[1]
    dims[0] = n
    seen = cnp.PyArray_EMPTY(1, dims, typenum, 0)
    nbytes = cnp.PyArray_NBYTES(seen)
    memcpy(cnp.PyArray_DATA(seen), data, nbytes)
    value = make(seen)  # (may release the GIL: the dict is updated only below)
    entry = g_derived.pop(key, None)
    if entry is not None:
        g_derived_bytes -= entry[2]
    while g_derived and (len(g_derived) >= DERIVED_MAX_ENTRIES
                         or g_derived_bytes + 3 * nbytes > DERIVED_MAX_BYTES):
        g_derived_bytes -= g_derived.pop(next(iter(g_derived)))[2]
    g_derived[key] = (seen, value, 3 * nbytes)  # about the copy and a float32 value
    g_derived_bytes += 3 * nbytes
    return value


def derived_cache_info():
    """(entries, bytes counted) of the derived-value cache, for the tests."""
    return len(g_derived), g_derived_bytes


def _as_float32(a):
    """A half-precision vector's values widened (exactly) to float32."""
    return a.astype(np.float32)


cdef cnp.ndarray _widened_vector(cnp.ndarray v):
    """A contiguous half-precision vector as float32, widened once while its bytes stay."""
    return _derived_from_bytes(id(v), cnp.PyArray_BYTES(v), cnp.PyArray_SIZE(v),
                               cnp.PyArray_TYPE(v), _as_float32)


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
    return _run_forward(op, _dtype_index(cnp.PyArray_TYPE(x)), ndim,
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
    y_work = np.empty_like(x_work)
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
              bint check_only=False):
    """layer_norm (op OP_LAYER_NORM, with bias) and rms_norm (bias None).

    check_only: check the arguments and return (axes, per_sample), the
    sorted normalized axes and whether weight or bias is per-sample, without
    allocating or computing anything (the Dask layer checks a call on
    zero-strided stand-ins of x's shape with it)."""
    cdef bint is_norm[MAX_DIMS]
    cdef cnp.ndarray xa = _input_array(x), y, y_work
    cdef tuple axes = _norm_axes(xa, normalized_shape, axis, is_norm)
    weight, bias, per_sample = _affine_args(weight, bias, xa, axes)
    cdef double eps_value = _eps_value(op, eps, cnp.PyArray_TYPE(xa))
    if check_only:
        return axes, per_sample
    y = _new_output(xa) if out is None else _checked_out(out, xa, "out")
    mean, rstd = _new_stats(op, xa, is_norm, return_stats)
    if cnp.PyArray_SIZE(xa) == 0:
        return _result(op, y if out is None else out, None, mean, rstd, return_stats)

    if out is not None:
        if out is not x and _clash(xa, y):
            xa = xa.copy()  # partial overlap: read from a private copy
        weight = _private_if_overlapping(weight, y)
        bias = _private_if_overlapping(bias, y)
    if not cnp.PyArray_ISALIGNED(xa):
        xa = xa.copy()
    y_work = y if cnp.PyArray_ISALIGNED(y) else np.empty_like(xa)
    if _forward_arrays(op, xa, y_work, weight, bias, mean, rstd, eps_value, axes, is_norm,
                       None, None, per_sample):
        _forward_on_copies(op, xa, y, weight, bias, mean, rstd, eps_value, axes, per_sample)
    elif y_work is not y:
        np.copyto(y, y_work)
    return _result(op, y if out is None else out, None, mean, rstd, return_stats)


# ---- the fused residual add ---------------------------------------------------------

def add_normalize(int op, x, residual, normalized_shape, weight, bias, eps, axis, out,
                  residual_out, bint return_stats, bint check_only=False):
    """h = x + residual, then y = normalize(h), in one pass where the layout
    allows: add_layer_norm and add_rms_norm.  check_only: as for normalize."""
    cdef bint is_norm[MAX_DIMS]
    cdef cnp.ndarray xa = _input_array(x), r, y = None, h = None
    r = _same_dtype_as(residual, "residual", xa)
    if residual_out is not None:
        h = _checked_out(residual_out, xa, "residual_out")
        # (out is not checked yet: anything but an ndarray is refused below,
        # and reading one's memory span as an array's would be out of bounds)
        if isinstance(out, np.ndarray) and _overlap(out, h):
            raise ValueError("out and residual_out overlap: y and h need separate arrays")
    elif not check_only:
        h = _new_output(xa)
    if out is not None:
        y = _checked_out(out, xa, "out")
    elif not check_only:
        y = _new_output(xa)
    cdef tuple axes = _norm_axes(xa, normalized_shape, axis, is_norm)
    weight, bias, per_sample = _affine_args(weight, bias, xa, axes)
    cdef double eps_value = _eps_value(op, eps, cnp.PyArray_TYPE(xa))
    if check_only:
        return axes, per_sample
    weight = _private_if_overlapping(weight, y, h)
    bias = _private_if_overlapping(bias, y, h)
    mean, rstd = _new_stats(op, xa, is_norm, return_stats)

    # The kernels fuse the add for rows with contiguous elements: they read
    # a row of x and residual, write it to h, then write y from h, exactly as
    # the norm of the stored h would.  That covers C-contiguous arrays
    # normalized over trailing axes; other layouts (whose norm may run on
    # another kernel) and overlaps other than h is residual or y is x take
    # the two-step path, which is the reference the fused path must match.
    trailing = axes[0] == xa.ndim - len(axes)
    fused = (cnp.PyArray_SIZE(xa) > 0 and trailing
             and all([cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a)
                      for a in (xa, r, h, y)])
             and not (_clash(h, r) or _clash(y, xa) or _overlap(h, xa) or _overlap(y, r)
                      or _overlap(y, h)))
    if not (fused and _forward_arrays(op, xa, y, weight, bias, mean, rstd, eps_value, axes,
                                      is_norm, r, h, per_sample) == 0):
        np.add(xa, r, out=h)
        stats = normalize(op, h, None, weight, bias, eps_value, axes, y, return_stats)
        if return_stats:
            mean, rstd = (stats[1:] if op == OP_LAYER_NORM else (None, stats[1]))
    return _result(op, y if out is None else out, h if residual_out is None else residual_out,
                   mean, rstd, return_stats)


# ---- the backward -------------------------------------------------------------------

cdef object _stats_input(object value, str name, cnp.ndarray x, tuple axes,
                         const bint *is_norm, bint check_only=False):
    """mean or rstd as the forward returned them: the keepdims stats shape,
    in the compute dtype, C-contiguous (check_only: checked, not converted)."""
    if value is None:
        return None
    cdef int ctype = _compute_typenum(cnp.PyArray_TYPE(x))
    cdef int ndim = cnp.PyArray_NDIM(x)
    cdef const Py_ssize_t *shape = <const Py_ssize_t *>cnp.PyArray_DIMS(x)
    if _is_plain(value, ctype) and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>value) \
            and _has_stats_shape(<cnp.ndarray>value, ndim, shape, is_norm):
        return value
    arr = _real_array(value, name)
    if not _has_stats_shape(arr, ndim, shape, is_norm):
        raise ValueError(
            f"{name} has shape {_shape(arr)} but the statistics of x with shape {_shape(x)} "
            f"over axes {axes} have shape {_stats_shape(x, axes)} (as the forward returns them)")
    if check_only:
        return arr
    return _kernel_operand(arr, cnp.PyArray_TYPE(x), contiguous=True)


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
                       param_dtype=None, bint check_only=False, bint per_sample=False):
    """layer_norm_backward (bias: only its shape is used) and
    rms_norm_backward: (dx, dweight, dbias) or (dx, dweight).

    param_dtype: the dtype of dweight and dbias, instead of the compute
    dtype (the Dask layer takes each block's float64 sums before they are
    rounded, to add them up across blocks).  check_only: as for normalize.
    per_sample: take a weight or bias of x's number of dimensions as
    per-sample even when it is 1 on every batch axis of this x (a Dask
    block 1 wide where the whole array's parameter varies: dx must take
    the whole array's path, whose bits differ from the shared weight's)."""
    cdef bint is_norm[MAX_DIMS]
    # bias first, then x (as layer_norm_backward checked them before the
    # call specification)
    bias_shape = None if bias is None else _shape(_real_array(bias, "bias"))
    cdef cnp.ndarray xa = _input_array(x), dya, dx
    cdef tuple axes = _norm_axes(xa, normalized_shape, axis, is_norm)
    norm_shape = _norm_shape(xa, axes)
    dya = _same_dtype_as(dy, "dy", xa)
    if mean is not None and rstd is None:
        raise ValueError("mean was given without rstd: pass both statistics the forward "
                         "returned, or neither to recompute them")
    # mean is validated only: the kernel recomputes the mean exactly
    _stats_input(mean, "mean", xa, axes, is_norm, True)
    rstd = _stats_input(rstd, "rstd", xa, axes, is_norm, check_only)
    cdef double eps_value = _eps_value(op, eps, cnp.PyArray_TYPE(xa))
    cdef int ctype = _compute_typenum(cnp.PyArray_TYPE(xa))
    weight_shape = None
    if weight is not None:
        weight = _real_array(weight, "weight")
        weight_shape = _shape(weight)
    # The common case, parameters of the normalized shape: the kernels' sums
    # are the gradients, summed straight into the compute dtype (float32
    # for float16/bfloat16).  Other shapes are shared parameters the sums
    # are reduced to, or per-sample ones (AdaLN).
    cdef bint plain = (param_dtype is None
                       and (weight_shape is None or weight_shape == norm_shape)
                       and (bias_shape is None or bias_shape == norm_shape))
    if not plain and (bias_shape is not None or (weight is not None and weight.ndim > 1)):
        bias_probe = None if bias_shape is None else np.broadcast_to(np.float32(0), bias_shape)
        if _affine_kind(weight, bias_probe, xa, axes) or per_sample:
            if check_only:
                return axes, True
            return _per_sample_backward(op, dya, xa, axes, weight, weight_shape, bias_shape,
                                        rstd, eps_value, param_dtype)
    weight = _affine_args(weight, None, xa, axes)[0]
    if check_only:
        return axes, False
    if not cnp.PyArray_ISALIGNED(xa):
        xa = xa.copy()
    dx = _new_output(xa)
    want_db = op == OP_LAYER_NORM
    if cnp.PyArray_SIZE(xa) == 0:
        plain = False
        sums = (np.zeros(norm_shape) if weight is not None else None,
                np.zeros(norm_shape) if want_db else None)
    else:
        sum_typenum = ctype if plain else cnp.NPY_FLOAT64
        sums = _backward_arrays(op, xa, dya, dx, weight, rstd, want_db, eps_value, axes,
                                is_norm, sum_typenum)
        if sums is None:
            sums = _backward_on_copies(op, xa, dya, dx, weight, rstd, want_db, eps_value, axes,
                                       sum_typenum)
    if plain:
        dweight, dbias = sums
    else:
        # float32 for float16/bfloat16; float64 sums unrounded with param_dtype
        dtype = cnp.PyArray_DescrFromType(ctype) if param_dtype is None else param_dtype
        dweight = _param_grad(sums[0], weight_shape, xa, axes, dtype)
        dbias = None if not want_db else _param_grad(
            sums[1], norm_shape if bias_shape is None else bias_shape, xa, axes, dtype)
    if op == OP_RMS_NORM:
        return dx, dweight
    return dx, dweight, dbias
