# The argument rules for NumPy arrays, and the one rule for the normalized
# dimensions that fastnorm.torch's paths use too.  Included by _core.pyx.
#
# Each public function of fastnorm/_api.py is one call into _calls.pxi, whose
# call specification (_spec.pxi) checks every argument once, by the one
# rule for it here; each rule raises the user-facing
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


cdef object _result_dtype(object dtype, cnp.ndarray x):
    """The dtype= of the norms: the result's dtype, one of the kernel dtypes
    (None: x's)."""
    if dtype is None:
        return x.dtype
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a NumPy dtype (float32, float64, float16 or bfloat16), "
                        f"got {dtype!r}") from None
    if dt.isnative and _is_kernel_typenum(dt.num):
        return dt
    hint = ("; for quantized outputs use rms_norm_quant, layer_norm_quant or quantize"
            if dt.kind in "iu" or dt.name.startswith("float8") else "")
    raise TypeError(f"dtype must be float32, float64, float16 or bfloat16 (the result's "
                    f"dtype), got {dt}{hint}")


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


# ---- the normalized dimensions ------------------------------------------------
# The one rule for which dimensions a call normalizes, for every path: the
# NumPy functions (normalized_shape, axis), and fastnorm.torch's functions
# (normalized_shape, dim) on its pointer path (_torch_calls.pxi), its
# general path and its torch.library ops (torch_dims, there).

cdef object g_np_integer = np.integer
# torch.SymInt once fastnorm.torch is imported (torch_setup): a symbolic size
# under torch.compile's tracing, kept as it is (converting one to an int
# would fix the traced graph to that size)
cdef object g_SymInt = None


cdef tuple _as_axis_tuple(object value, str name, str kinds="an int or a tuple of ints"):
    """An int or a sequence of ints as a tuple; else TypeError naming `name`
    and the `kinds` it takes.  Early exits: an int, a tuple or list of ints."""
    cdef object v
    if type(value) is int:
        return (value,)
    if isinstance(value, (tuple, list)):  # (torch.Size is a tuple)
        for v in value:
            if type(v) is not int:
                break
        else:
            return <tuple>value if type(value) is tuple else tuple(value)
    if isinstance(value, g_np_integer):
        return (int(value),)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return (operator.index(value),)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be {kinds}, got {value!r}") from None
    for v in items:
        if type(v) is not g_SymInt and (
                isinstance(v, bool) or not isinstance(v, (numbers.Integral, np.integer))):
            raise TypeError(f"{name} must be {kinds}, got {value!r}")
    return tuple([v if type(v) is g_SymInt else operator.index(v) for v in items])


def as_axis_tuple(value, name):
    """An int or a tuple of ints as a tuple, else TypeError naming `name`."""
    return _as_axis_tuple(value, name)


cdef inline object _size(const Py_ssize_t *shape, object sizes, int a):
    return shape[a] if shape != NULL else sizes[a]


cdef inline bint _is_size(object n, const Py_ssize_t *shape, object sizes, int a) except -1:
    """Whether n (an int, or torch's symbolic size) is the size of dimension a."""
    cdef Py_ssize_t value
    if shape == NULL:
        return n == sizes[a]
    try:
        value = n
    except OverflowError:
        return False
    return value == shape[a]


cdef str _shape_text(int ndim, const Py_ssize_t *shape, object sizes):
    """'shape (4, 8)' for messages, or '3 dimensions' when only the rank is known."""
    if shape == NULL and sizes is None:
        return f"{ndim} dimensions"
    return f"shape {tuple([_size(shape, sizes, a) for a in range(ndim)])}"


cdef int _normalized_dims(int ndim, const Py_ssize_t *shape, object sizes,
                          object normalized_shape, object axis, bint torch, bint *is_norm,
                          int *first) except -1:
    """Which dimensions of an array of ndim dimensions a call normalizes:
    fills the is_norm mask, sets first (the lowest) and returns how many.

    normalized_shape gives the sizes of the trailing dimensions (as in
    torch.nn.functional); axis names dimensions, negative ones counting from
    the end: NumPy's axis= or, with torch, fastnorm.torch's dim=.  Given
    both, NumPy's spelling needs them to name the same dimensions, while
    fastnorm.torch's takes normalized_shape as the sizes of the dimensions
    dim names.  With neither, the last dimension.  Messages name the
    arguments as the caller's API does (x and axis, or input and dim).

    The sizes are read from shape or else from the sequence sizes (Python
    objects: torch's symbolic sizes are compared as they are); with neither,
    only the rank is known (dynamo's trace of fastnorm.torch) and
    normalized_shape must be None."""
    cdef int a, k, n = 0, lead
    cdef tuple ns = None, raw
    cdef str x_name = "input" if torch else "x", axis_name = "dim" if torch else "axis"
    cdef str word = "dimension" if torch else "axis"
    if ndim == 0:  # (fastnorm.torch's; NumPy's x is refused as 0-d before)
        raise TypeError(f"{x_name} must have at least one dimension, got a 0-d tensor")
    memset(is_norm, 0, ndim * sizeof(bint))
    if type(normalized_shape) is int:  # the early exit: one size, compared as it is
        n = 1
    elif normalized_shape is not None:
        ns = _as_axis_tuple(normalized_shape, "normalized_shape",
                            "an int, a tuple of ints or a torch.Size" if torch
                            else "an int or a tuple of ints")
        n = len(ns)
        if n == 0:
            raise ValueError("normalized_shape must name at least one dimension, got ()")
    if n and (axis is None or not torch):  # it names the trailing dimensions
        lead = ndim - n
        k = 0
        while lead >= 0 and k < n and _is_size(normalized_shape if ns is None else ns[k],
                                               shape, sizes, lead + k):
            k += 1
        if k < n:
            trailing = tuple([_size(shape, sizes, a) for a in range(max(lead, 0), ndim)])
            raise ValueError(
                f"normalized_shape {ns or (normalized_shape,)} does not match the trailing "
                f"dimensions {trailing} of {x_name} with {_shape_text(ndim, shape, sizes)}")
    if axis is None:
        n = max(n, 1)
        first[0] = ndim - n
        for a in range(first[0], ndim):
            is_norm[a] = True
        return n
    if n and ns is None:
        ns = (normalized_shape,)
    raw = _as_axis_tuple(axis, axis_name)
    if len(raw) == 0:
        raise ValueError(f"{axis_name} must name at least one {word}, got ()")
    first[0] = ndim
    for v in raw:
        if not -ndim <= v < ndim:
            raise AxisError(v, ndim)
        a = v % ndim
        if is_norm[a]:
            raise AxisError(f"{axis_name} {raw} names {word} {a} twice "
                            f"({x_name} has {_shape_text(ndim, shape, sizes)})")
        is_norm[a] = True
        first[0] = min(first[0], a)
    k = len(raw)
    if ns is None:
        return k
    dims = tuple([a for a in range(ndim) if is_norm[a]])
    if torch:  # normalized_shape: the sizes of the dims named
        named = tuple([_size(shape, sizes, a) for a in dims])
        if ns != named:
            raise ValueError(
                f"normalized_shape {ns} does not match the sizes {named} of dims {dims} "
                f"of {x_name} with {_shape_text(ndim, shape, sizes)}")
    elif k != n or first[0] != ndim - n:
        raise ValueError(
            f"axis {raw} and normalized_shape {ns} disagree for "
            f"{x_name} with {_shape_text(ndim, shape, sizes)}: normalized_shape names axes "
            f"{tuple(range(ndim - n, ndim))}")
    return k


cdef tuple _norm_axes(cnp.ndarray x, object normalized_shape, object axis, bint *is_norm):
    """The sorted normalized axes of x (and is_norm, their mask), by the one
    rule (_normalized_dims); the kernels take no axis of size 0."""
    cdef int ndim = cnp.PyArray_NDIM(x), first, n, a
    cdef const Py_ssize_t *shape = <const Py_ssize_t *>cnp.PyArray_DIMS(x)
    n = _normalized_dims(ndim, shape, None, normalized_shape, axis, False, is_norm, &first)
    axes = (first,) if n == 1 else tuple([a for a in range(ndim) if is_norm[a]])
    for a in axes:
        if shape[a] == 0:
            raise ValueError(
                f"cannot normalize over axis {a} of size 0 (x has shape {_shape(x)})")
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


cdef object _stats_input(object value, str name, cnp.ndarray x, tuple axes,
                         const bint *is_norm):
    """mean or rstd as the forward returned them: the keepdims stats shape,
    a real dtype (the runner converts it for the kernels)."""
    if value is None:
        return None
    arr = _real_array(value, name)
    if not _has_stats_shape(arr, cnp.PyArray_NDIM(x), <const Py_ssize_t *>cnp.PyArray_DIMS(x),
                            is_norm):
        raise ValueError(
            f"{name} has shape {_shape(arr)} but the statistics of x with shape {_shape(x)} "
            f"over axes {axes} have shape {_stats_shape(x, axes)} (as the forward returns them)")
    return arr


# ---- eps -------------------------------------------------------------------

cdef object g_np_floating = np.floating

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


cdef cnp.ndarray _checked_out(object out, cnp.ndarray x, str name, object dtype=None):
    """out (or residual_out) as the plain ndarray the kernels write through
    (a view of the caller's array when that is a subclass such as
    numpy.matrix): x's shape and the result dtype (x's unless given),
    writeable, no two elements sharing memory."""
    cdef cnp.ndarray o
    cdef int k, overlap
    if dtype is None:
        dtype = x.dtype
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    o = _plain_array(out, name)
    if not (cnp.PyArray_TYPE(o) == (<cnp.dtype>dtype).type_num and cnp.PyArray_ISNOTSWAPPED(o)) \
            and o.dtype != dtype:
        raise TypeError(f"{name} has dtype {o.dtype} but the result has dtype {dtype}")
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
    if _is_plain(arr, _compute_typenum(typenum)) and (
            not contiguous or cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>arr)):
        return arr
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
