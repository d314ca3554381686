# Orchestration between the Python API and the C kernels.
#
# The Python layer (fastnorm/_api.py) has already validated the arguments and
# allocated every output; this module maps the layout of NumPy arrays (or,
# for fastnorm.torch, of torch tensors read through their pointers) onto the
# kernels' block description (src/fastnorm_kernels.h), splits the rows
# between OpenMP threads with the GIL released, and calls the kernel chosen
# at import.
#
# Layout mapping: the normalized axes are merged into one "element" dimension
# (ordered by decreasing stride, so Fortran order and views merge too); the
# batch axes are merged the same way.  The batch dimension with the smallest
# stride becomes the kernel's row dimension, the others are enumerated as
# "outer" positions.  When the normalized axes cannot be merged into one
# strided dimension (an irregular view), forward() returns False and the
# caller copies.

import weakref

import ml_dtypes
import numpy as np
cimport numpy as cnp
from fastnorm._kernels cimport *  # the C kernels' interface (src/fastnorm_kernels.h)
from cython.parallel cimport prange
from libc.string cimport memset

cnp.import_array()

# Element types the kernels take (the index into each kernel table row).
# float16 and bfloat16 are computed on in float32: their weight, bias and
# statistics are float32.
cdef int g_bf16_typenum = np.dtype(ml_dtypes.bfloat16).num
cdef int g_f16_typenum = np.dtype(np.float16).num


cdef int _dtype_index(int typenum) except -1:
    if typenum == cnp.NPY_FLOAT32:
        return FN_F32
    if typenum == cnp.NPY_FLOAT64:
        return FN_F64
    if typenum == g_f16_typenum:
        return FN_F16
    if typenum == g_bf16_typenum:
        return FN_BF16
    raise TypeError(f"no kernel for dtype {np.dtype(typenum)}")


def compute_dtype(dtype):
    """The dtype the kernels compute in, and of weight, bias and stats."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)

cdef extern from "_fn_buffers.h" nogil:
    void *fn_buffer_alloc(size_t nbytes)
    void fn_buffer_free(void *p)

cdef extern from "_fn_omp.h" nogil:
    int omp_get_max_threads()
    int omp_get_num_threads()
    int omp_get_thread_num()
    int FN_HAVE_OPENMP
    const char *FN_BUILD_FLAGS
    const char *FN_SOURCE_FINGERPRINT

cdef extern from "_fn_fork.h" nogil:
    int fn_watch_forks()
    int fn_in_forked_child()

if fn_watch_forks() != 0:
    raise ImportError("fastnorm: pthread_atfork failed; cannot make forked children safe")


def in_forked_child():
    """True in a process forked from one that imported fastnorm: every call
    there runs on the calling thread, never in an OpenMP region (whose thread
    team the fork did not copy)."""
    return bool(fn_in_forked_child())


cdef inline int _max_threads() noexcept nogil:
    # in a forked child even omp_get_max_threads is left alone: no OpenMP at all
    return 1 if fn_in_forked_child() else omp_get_max_threads()


cdef enum:
    MAX_DIMS = 64
    # Work below this many elements runs on the calling thread: starting the
    # OpenMP team costs more than it saves.
    PARALLEL_MIN_ELEMENTS = 65536
    # Rows handed to one thread at a time are grouped to about this many elements.
    ITEM_ELEMENTS = 16384
    # Side-by-side rows (channels-first) go to the kernels in multiples of
    # LANE_TILE_ROWS rows, about LANE_ITEM_ELEMENTS elements at a time.
    LANE_TILE_ROWS = 64
    LANE_ITEM_ELEMENTS = 262144
    # Backward items: rows grouped to about this many elements (at most
    # BWD_ITEM_ROWS rows), each with its own dweight/dbias partial sums.
    BWD_ITEM_ELEMENTS = 262144
    BWD_ITEM_ROWS = 256

cpdef enum:
    OP_LAYER_NORM = 0
    OP_RMS_NORM = 1

openmp_enabled = bool(FN_HAVE_OPENMP)
build_flags = FN_BUILD_FLAGS.decode()
source_fingerprint = FN_SOURCE_FINGERPRINT.decode()

# Outputs at least this large are written with streaming stores: they would
# not stay in cache anyway, and skipping the read-for-ownership saves a third
# of the memory traffic.  Tests lower it to cover that path on small arrays.
cdef Py_ssize_t g_stream_min_bytes = 16 << 20


def set_stream_min_bytes(Py_ssize_t nbytes):
    """Set the output size from which streaming stores are used; returns the
    previous value."""
    global g_stream_min_bytes
    previous = g_stream_min_bytes
    g_stream_min_bytes = nbytes
    return previous


# ---- output buffer cache ---------------------------------------------------
# A fresh 64 MB output costs more in first-touch page faults (the kernel
# zeroes every page) than the normalization itself.  Large outputs that
# fastnorm allocates therefore come from a small cache: when such an array
# dies, its memory (already faulted in) is kept for the next output of the
# same size, up to FASTNORM_BUFFER_CACHE_MB in all (default 512; 0 turns the
# cache off).  Arrays hold their buffer through a _Buffer base object, so a
# buffer is never handed out while an array still uses it.
cdef enum:
    POOL_SLOTS = 6
    POOL_MIN_BYTES = 4 << 20

cdef size_t g_pool_cap = 512 << 20
cdef size_t g_pool_total = 0
cdef void *g_pool_ptr[POOL_SLOTS]
cdef size_t g_pool_size[POOL_SLOTS]


cdef void *_pool_take(size_t nbytes) noexcept:
    global g_pool_total
    cdef int i
    cdef void *p
    for i in range(POOL_SLOTS):
        if g_pool_ptr[i] != NULL and g_pool_size[i] == nbytes:
            p = g_pool_ptr[i]
            g_pool_ptr[i] = NULL
            g_pool_total -= nbytes
            return p
    return fn_buffer_alloc(nbytes)


cdef void _pool_give(void *p, size_t nbytes) noexcept:
    global g_pool_total
    cdef int i, victim
    if nbytes > g_pool_cap:
        fn_buffer_free(p)
        return
    # make room: evict other cached buffers (largest first) until it fits
    while True:
        victim = -1
        for i in range(POOL_SLOTS):
            if g_pool_ptr[i] == NULL:
                if g_pool_total + nbytes <= g_pool_cap:
                    g_pool_ptr[i] = p
                    g_pool_size[i] = nbytes
                    g_pool_total += nbytes
                    return
            elif victim < 0 or g_pool_size[i] > g_pool_size[victim]:
                victim = i
        if victim < 0:
            fn_buffer_free(p)
            return
        fn_buffer_free(g_pool_ptr[victim])
        g_pool_total -= g_pool_size[victim]
        g_pool_ptr[victim] = NULL


cdef class _Buffer:
    """Owner of a cached output buffer; gives it back when the array dies."""
    cdef void *ptr
    cdef size_t nbytes

    def __dealloc__(self):
        if self.ptr != NULL:
            _pool_give(self.ptr, self.nbytes)


cdef cnp.ndarray _new_c_array(int ndim, cnp.npy_intp *dims, int typenum,
                              size_t min_bytes=POOL_MIN_BYTES):
    cdef size_t nbytes = cnp.PyArray_DescrFromType(typenum).itemsize
    cdef int d
    cdef _Buffer owner
    for d in range(ndim):
        nbytes *= <size_t>dims[d]
    if nbytes < min_bytes or nbytes == 0 or g_pool_cap == 0:
        return cnp.PyArray_EMPTY(ndim, dims, typenum, 0)
    owner = _Buffer.__new__(_Buffer)
    owner.ptr = _pool_take(nbytes)
    if owner.ptr == NULL:
        raise MemoryError(f"cannot allocate {nbytes} bytes for the output")
    owner.nbytes = nbytes
    arr = cnp.PyArray_SimpleNewFromData(ndim, dims, typenum, owner.ptr)
    cnp.set_array_base(arr, owner)
    return arr


def empty_output(cnp.ndarray x):
    """An uninitialized array like x (C order when x is C-contiguous, from
    the buffer cache when large; else numpy.empty_like's layout)."""
    if cnp.PyArray_IS_C_CONTIGUOUS(x):
        return _new_c_array(cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x), cnp.PyArray_TYPE(x))
    return np.empty_like(x)


def buffer_cache_info():
    """(cached buffers, cached bytes, cap in bytes)."""
    return (sum(1 for i in range(POOL_SLOTS) if g_pool_ptr[i] != NULL), g_pool_total, g_pool_cap)


def set_buffer_cache(Py_ssize_t cap_bytes):
    """Set the cache cap (0 turns it off and frees what is cached)."""
    global g_pool_cap, g_pool_total
    cdef int i
    g_pool_cap = max(cap_bytes, 0)
    for i in range(POOL_SLOTS):
        if g_pool_ptr[i] != NULL and (g_pool_cap == 0 or g_pool_total > g_pool_cap):
            fn_buffer_free(g_pool_ptr[i])
            g_pool_total -= g_pool_size[i]
            g_pool_ptr[i] = NULL


def _read_cache_env():
    import os
    value = os.environ.get("FASTNORM_BUFFER_CACHE_MB")
    if value is not None:
        try:
            set_buffer_cache(int(value) << 20)
        except (ValueError, OverflowError):
            import warnings
            warnings.warn(f"FASTNORM_BUFFER_CACHE_MB={value!r} is not a usable number of MiB; "
                          "ignored",
                          RuntimeWarning, stacklevel=3)


_read_cache_env()


cdef const fn_kernel_table *g_kernels = &fn_kernels_scalar
cdef int g_last_num_threads = 0
cdef const fn_kernel_table *g_usable[8]
cdef int g_n_usable = fn_usable_tables(g_usable, 8)


def available_isas():
    """Kernel sets this build has and this CPU supports, best first."""
    return [g_usable[i].isa.decode() for i in range(g_n_usable)]


def isa():
    """Name of the kernel set in use."""
    return g_kernels.isa.decode()


def set_isa(name):
    """Switch the kernel set (tests pin each ISA in turn); ValueError if the
    name is not one of available_isas()."""
    global g_kernels
    for i in range(g_n_usable):
        if g_usable[i].isa.decode() == name:
            g_kernels = g_usable[i]
            return
    raise ValueError(f"ISA {name!r} is not available here; choose one of {available_isas()}")


def _choose_isa_at_import():
    import os
    import warnings
    forced = os.environ.get("FASTNORM_ISA", "").strip().lower()
    set_isa(available_isas()[0])
    if forced:
        try:
            set_isa(forced)
        except ValueError:
            warnings.warn(f"FASTNORM_ISA={forced!r} is not available on this CPU/build "
                          f"(available: {available_isas()}); using {isa()!r}",
                          RuntimeWarning, stacklevel=3)


_choose_isa_at_import()


def max_threads():
    """Threads a large call would use now (OMP_NUM_THREADS, threadpoolctl;
    1 in a forked child)."""
    return _max_threads()


def last_num_threads():
    """Threads the most recent call actually ran on (for tests)."""
    return g_last_num_threads


cdef enum:
    # operands of a plan: the arrays walked row by row, then the stats
    MAX_OPS = 7
    # forward: x, y, residual, h, per-row weight and bias (AdaLN), stats
    # (mean and rstd share a layout)
    FWD_X = 0
    FWD_Y = 1
    FWD_R = 2
    FWD_H = 3
    FWD_W = 4
    FWD_B = 5
    FWD_STATS = 6
    # backward: x, dy, dx, stats (rstd)
    BWD_X = 0
    BWD_DY = 1
    BWD_DX = 2
    BWD_STATS = 3


cdef struct plan_t:
    int n_ops                 # operands; the last one is the stats
    int itemsize[MAX_OPS]     # bytes per element of each operand
    bint backward
    Py_ssize_t row_len
    Py_ssize_t row_stride[MAX_OPS]
    Py_ssize_t elem_stride[MAX_OPS]
    int n_outer_dims
    Py_ssize_t outer_shape[MAX_DIMS]
    Py_ssize_t outer_stride[MAX_OPS][MAX_DIMS]
    Py_ssize_t inner
    Py_ssize_t rows_per_item
    Py_ssize_t items_per_outer
    Py_ssize_t n_items
    fn_rows fwd               # pointers at element 0 of row 0
    fn_rows_kernel fwd_kernel
    fn_rows_bwd bwd
    fn_rows_bwd_kernel bwd_kernel
    double *dw_parts          # n_items x row_len partial sums, or NULL
    double *db_parts
    bint norm_reordered       # the normalized axes are walked in another order than
                              # increasing axis order (weight/bias must follow)


cdef struct operand_t:
    # One operand as the planner sees it, whatever object holds it (a NumPy
    # array or a torch tensor): element 0, bytes per element, and the stride
    # of each dimension in elements.  An absent operand has data NULL and
    # strides 0; a weight shared by every row has its data and strides 0.
    char *data
    int itemsize
    Py_ssize_t strides[MAX_DIMS]


cdef inline void _absent_operand(operand_t *o, int ndim, const void *data=NULL) noexcept:
    cdef int a
    o.data = <char *>data
    o.itemsize = 1
    for a in range(ndim):
        o.strides[a] = 0


cdef inline void _array_operand(operand_t *o, object arr, int ndim):
    """arr (an ndarray of ndim dimensions, or None) as an operand."""
    cdef int a
    cdef cnp.ndarray a_
    if arr is None:
        _absent_operand(o, ndim)
        return
    a_ = <cnp.ndarray>arr
    o.data = <char *>cnp.PyArray_DATA(a_)
    o.itemsize = cnp.PyArray_ITEMSIZE(a_)
    for a in range(ndim):
        o.strides[a] = cnp.PyArray_STRIDES(a_)[a] // o.itemsize


cdef inline Py_ssize_t _abs(Py_ssize_t v) noexcept nogil:
    return -v if v < 0 else v


cdef inline char *_offset(const void *p, Py_ssize_t elements, int itemsize) noexcept nogil:
    return NULL if p == NULL else <char *>p + elements * itemsize


cdef void run_item(const plan_t *plan, Py_ssize_t item) noexcept nogil:
    cdef Py_ssize_t outer = item // plan.items_per_outer
    cdef Py_ssize_t r0 = (item % plan.items_per_outer) * plan.rows_per_item
    cdef Py_ssize_t off[MAX_OPS]
    cdef Py_ssize_t idx
    cdef int d, k
    cdef fn_rows fb
    cdef fn_rows_bwd bb
    for k in range(plan.n_ops):
        off[k] = r0 * plan.row_stride[k]
    for d in range(plan.n_outer_dims - 1, -1, -1):
        idx = outer % plan.outer_shape[d]
        outer = outer // plan.outer_shape[d]
        for k in range(plan.n_ops):
            off[k] += idx * plan.outer_stride[k][d]
    if not plan.backward:
        fb = plan.fwd
        fb.rows = min(plan.rows_per_item, plan.inner - r0)
        fb.x = _offset(fb.x, off[FWD_X], plan.itemsize[FWD_X])
        fb.y = _offset(fb.y, off[FWD_Y], plan.itemsize[FWD_Y])
        fb.residual = _offset(fb.residual, off[FWD_R], plan.itemsize[FWD_R])
        fb.h = _offset(fb.h, off[FWD_H], plan.itemsize[FWD_H])
        # per-row weight and bias move with the rows (shared ones have
        # zero strides here, so they stay put)
        fb.weight = _offset(fb.weight, off[FWD_W], plan.itemsize[FWD_W])
        fb.bias = _offset(fb.bias, off[FWD_B], plan.itemsize[FWD_B])
        fb.mean = _offset(fb.mean, off[FWD_STATS], plan.itemsize[FWD_STATS])
        fb.rstd = _offset(fb.rstd, off[FWD_STATS], plan.itemsize[FWD_STATS])
        plan.fwd_kernel(&fb)
        return
    bb = plan.bwd
    bb.rows = min(plan.rows_per_item, plan.inner - r0)
    bb.x = _offset(bb.x, off[BWD_X], plan.itemsize[BWD_X])
    bb.dy = _offset(bb.dy, off[BWD_DY], plan.itemsize[BWD_DY])
    bb.dx = _offset(bb.dx, off[BWD_DX], plan.itemsize[BWD_DX])
    bb.rstd = _offset(bb.rstd, off[BWD_STATS], plan.itemsize[BWD_STATS])
    if plan.dw_parts != NULL:
        bb.dweight = plan.dw_parts + item * plan.row_len
    if plan.db_parts != NULL:
        bb.dbias = plan.db_parts + item * plan.row_len
    plan.bwd_kernel(&bb)


cdef void note_team_size() noexcept nogil:
    global g_last_num_threads
    if omp_get_thread_num() == 0:
        g_last_num_threads = omp_get_num_threads()


cdef void run_plan(const plan_t *plan, int n_threads) noexcept nogil:
    global g_last_num_threads
    cdef Py_ssize_t i
    if n_threads <= 1 or fn_in_forked_child():
        g_last_num_threads = 1
        for i in range(plan.n_items):
            run_item(plan, i)
        return
    for i in prange(plan.n_items, num_threads=n_threads, schedule='static'):
        if i == 0:
            note_team_size()
        run_item(plan, i)


cdef inline void _sort_dims_by_stride(int n, Py_ssize_t *order, const Py_ssize_t *key) noexcept:
    # stable insertion sort of order[] by decreasing |key|
    cdef int i, j
    cdef Py_ssize_t v
    for i in range(1, n):
        v = order[i]
        j = i - 1
        while j >= 0 and _abs(key[order[j]]) < _abs(key[v]):
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = v


cdef inline bint _mergeable(Py_ssize_t outer_stride, Py_ssize_t inner_stride,
                            Py_ssize_t inner_len) noexcept:
    return outer_stride == inner_stride * inner_len


cdef int _plan_layout(plan_t *plan, int ndim, const Py_ssize_t *shape, int n_ops,
                      const operand_t *ops, const bint *is_norm) noexcept:
    """Fill the layout part of the plan from the operands' strides (ops: the
    row-walked operands, then the stats).  Returns 1 when the normalized axes
    of some row-walked operand do not merge into one strided dimension."""
    cdef int k, a, d, n_norm = 0, n_batch = 0
    cdef Py_ssize_t norm_order[MAX_DIMS]
    cdef Py_ssize_t batch_order[MAX_DIMS]
    cdef bint mergeable
    plan.n_ops = n_ops
    for k in range(n_ops):
        plan.itemsize[k] = ops[k].itemsize

    # normalized axes: drop size-1 axes, order by decreasing x stride, merge
    plan.row_len = 1
    for a in range(ndim):
        if is_norm[a]:
            plan.row_len *= shape[a]
            if shape[a] != 1:
                norm_order[n_norm] = a
                n_norm += 1
        elif shape[a] != 1:
            batch_order[n_batch] = a
            n_batch += 1
    _sort_dims_by_stride(n_norm, norm_order, ops[0].strides)
    plan.norm_reordered = False
    for d in range(n_norm - 1):
        if norm_order[d] > norm_order[d + 1]:
            plan.norm_reordered = True
    for d in range(n_norm - 1):
        a = norm_order[d]
        for k in range(n_ops - 1):
            if not _mergeable(ops[k].strides[a], ops[k].strides[norm_order[d + 1]], shape[norm_order[d + 1]]):
                return 1
    for k in range(n_ops):
        plan.elem_stride[k] = ops[k].strides[norm_order[n_norm - 1]] if n_norm else 1

    # batch axes: order by decreasing x stride and merge what is contiguous
    # in every operand alike; the last one becomes the kernel's rows
    _sort_dims_by_stride(n_batch, batch_order, ops[0].strides)
    plan.n_outer_dims = 0
    for d in range(n_batch):
        a = batch_order[d]
        mergeable = plan.n_outer_dims > 0
        k = 0
        while mergeable and k < n_ops:
            mergeable = _mergeable(plan.outer_stride[k][plan.n_outer_dims - 1], ops[k].strides[a], shape[a])
            k += 1
        if mergeable:
            plan.outer_shape[plan.n_outer_dims - 1] *= shape[a]
        else:
            plan.outer_shape[plan.n_outer_dims] = shape[a]
            plan.n_outer_dims += 1
        for k in range(n_ops):
            plan.outer_stride[k][plan.n_outer_dims - 1] = ops[k].strides[a]
    if plan.n_outer_dims:
        plan.n_outer_dims -= 1
        plan.inner = plan.outer_shape[plan.n_outer_dims]
        for k in range(n_ops):
            plan.row_stride[k] = plan.outer_stride[k][plan.n_outer_dims]
    else:
        plan.inner = 1
        for k in range(n_ops):
            plan.row_stride[k] = 0
    return 0


cdef Py_ssize_t _n_outer(const plan_t *plan) noexcept:
    cdef Py_ssize_t n = 1
    cdef int d
    for d in range(plan.n_outer_dims):
        n *= plan.outer_shape[d]
    return n


cdef void _plan_items(plan_t *plan, Py_ssize_t rpi) noexcept:
    plan.rows_per_item = max(1, min(rpi, plan.inner))
    plan.items_per_outer = (plan.inner + plan.rows_per_item - 1) // plan.rows_per_item
    plan.n_items = _n_outer(plan) * plan.items_per_outer


cdef int _threads_for(const plan_t *plan) noexcept:
    cdef Py_ssize_t total = _n_outer(plan) * plan.inner * plan.row_len
    return 1 if total < PARALLEL_MIN_ELEMENTS else _max_threads()


def forward(int op, cnp.ndarray x, cnp.ndarray y, weight, bias, mean, rstd,
            double eps, tuple norm_axes, residual=None, h=None, bint per_sample=False):
    """Run one normalization.  Returns False when the normalized axes of x or
    y cannot be walked as one strided dimension (the caller then copies).

    x and y: same shape, same dtype (float32/float64/float16/bfloat16),
    aligned, y writeable.
    weight, bias: None or C-contiguous arrays of the normalized shape, in the
    compute dtype (compute_dtype(x.dtype)).  With per_sample, arrays of
    x.ndim dimensions that broadcast against x instead (AdaLN): each row
    uses its own slice.
    mean, rstd: None or C-contiguous arrays of the keepdims stats shape, in
    the compute dtype.
    norm_axes: sorted, non-negative, unique axes of x.
    residual, h: None, or x's shape and dtype (aligned, h writeable): fuse
    h = x + residual and normalize h.
    """
    cdef bint is_norm[MAX_DIMS]
    _norm_mask(x.ndim, norm_axes, is_norm)
    if per_sample:
        weight = _per_sample_operand(x, norm_axes, weight)
        bias = _per_sample_operand(x, norm_axes, bias)
    else:
        weight, bias = _walk_order_affine(x, norm_axes, weight, bias)
    return _run(op, x, y, weight, bias, mean, rstd, eps, is_norm, residual, h, per_sample) == 0


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
    shape = (<object>x).shape
    full = tuple(shape[a] if (a in norm_axes or w.shape[a] != 1) else 1 for a in range(x.ndim))
    order = batch + walk
    packed = np.ascontiguousarray(np.broadcast_to(w, full).transpose(order))
    return np.broadcast_to(packed.transpose(np.argsort(order)), shape)


cdef void _norm_mask(int ndim, tuple norm_axes, bint *is_norm):
    cdef int a
    for a in range(ndim):
        is_norm[a] = False
    for a in norm_axes:
        is_norm[a] = True


cdef object _walk_perm(cnp.ndarray x, tuple norm_axes):
    """The order in which the kernels walk the normalized axes (decreasing
    stride, as _plan_layout merges them), as a permutation of norm_axes, or
    None when it is the increasing axis order."""
    if len(norm_axes) < 2:
        return None
    strides = x.strides
    perm = sorted(range(len(norm_axes)), key=lambda i: -abs(strides[norm_axes[i]]))
    return None if perm == list(range(len(norm_axes))) else perm


cdef tuple _walk_order_affine(cnp.ndarray x, tuple norm_axes, weight, bias):
    """weight/bias are laid out in increasing axis order; lay them out in the
    kernels' walk order."""
    perm = _walk_perm(x, norm_axes) if (weight is not None or bias is not None) else None
    if perm is not None:
        if weight is not None:
            weight = np.ascontiguousarray(np.transpose(weight, perm))
        if bias is not None:
            bias = np.ascontiguousarray(np.transpose(bias, perm))
    return weight, bias


cdef inline void *_data_or_null(object arr):
    return NULL if arr is None else cnp.PyArray_DATA(<cnp.ndarray>arr)


cdef int _run(int op, cnp.ndarray x, cnp.ndarray y, object weight, object bias, object mean,
              object rstd, double eps, const bint *is_norm, object residual=None,
              object h=None, bint per_sample=False) except -1:
    """Plan and run a forward on arrays; 1 (nothing done) when the normalized
    axes do not merge."""
    cdef operand_t ops[MAX_OPS]
    cdef int ndim = cnp.PyArray_NDIM(x)
    _array_operand(&ops[FWD_X], x, ndim)
    _array_operand(&ops[FWD_Y], y, ndim)
    _array_operand(&ops[FWD_R], residual, ndim)
    _array_operand(&ops[FWD_H], h, ndim)
    if per_sample:  # per-row weight and bias: walked with the rows
        _array_operand(&ops[FWD_W], weight, ndim)
        _array_operand(&ops[FWD_B], bias, ndim)
    else:  # one weight and bias for every row
        _absent_operand(&ops[FWD_W], ndim, _data_or_null(weight))
        _absent_operand(&ops[FWD_B], ndim, _data_or_null(bias))
    _array_operand(&ops[FWD_STATS], mean if mean is not None else rstd, ndim)
    return _run_forward(op, _dtype_index(cnp.PyArray_TYPE(x)), ndim,
                        <const Py_ssize_t *>cnp.PyArray_DIMS(x), ops, is_norm,
                        _data_or_null(mean), _data_or_null(rstd), eps,
                        cnp.PyArray_NBYTES(y), per_sample)


cdef int _run_forward(int op, int dtype_index, int ndim, const Py_ssize_t *shape,
                      const operand_t *ops, const bint *is_norm, void *mean, void *rstd,
                      double eps, Py_ssize_t y_nbytes, bint per_sample) except -1:
    """Plan and run a forward on operands (FWD_X ... FWD_STATS); 1 (nothing
    done) when the normalized axes do not merge."""
    cdef plan_t plan
    cdef Py_ssize_t n_outer, rpi
    cdef int n_threads
    if _plan_layout(&plan, ndim, shape, FWD_STATS + 1, ops, is_norm):
        return 1
    if per_sample and ((ops[FWD_W].data != NULL and plan.elem_stride[FWD_W] != 1) or
                       (ops[FWD_B].data != NULL and plan.elem_stride[FWD_B] != 1)):
        raise AssertionError("per-sample weight/bias not laid out along the rows")
    plan.backward = False
    plan.fwd.row_len = plan.row_len
    plan.fwd.eps = eps
    plan.fwd.stream_stores = y_nbytes >= g_stream_min_bytes
    plan.fwd.x = ops[FWD_X].data
    plan.fwd.y = ops[FWD_Y].data
    plan.fwd.residual = ops[FWD_R].data
    plan.fwd.h = ops[FWD_H].data
    plan.fwd.weight = ops[FWD_W].data
    plan.fwd.bias = ops[FWD_B].data
    plan.fwd.mean = mean
    plan.fwd.rstd = rstd
    plan.fwd.x_row_stride = plan.row_stride[FWD_X]
    plan.fwd.x_elem_stride = plan.elem_stride[FWD_X]
    plan.fwd.y_row_stride = plan.row_stride[FWD_Y]
    plan.fwd.y_elem_stride = plan.elem_stride[FWD_Y]
    plan.fwd.r_row_stride = plan.row_stride[FWD_R]
    plan.fwd.r_elem_stride = plan.elem_stride[FWD_R]
    plan.fwd.h_row_stride = plan.row_stride[FWD_H]
    plan.fwd.h_elem_stride = plan.elem_stride[FWD_H]
    plan.fwd.w_row_stride = plan.row_stride[FWD_W]
    plan.fwd.b_row_stride = plan.row_stride[FWD_B]
    plan.fwd.stat_stride = plan.row_stride[FWD_STATS]
    if op == OP_LAYER_NORM:
        plan.fwd_kernel = g_kernels.layer_norm[dtype_index]
    else:
        plan.fwd_kernel = g_kernels.rms_norm[dtype_index]

    n_outer = _n_outer(&plan)
    n_threads = _threads_for(&plan)
    rpi = max(1, ITEM_ELEMENTS // plan.row_len)
    if n_threads > 1 and n_outer < n_threads:
        # enough items for every thread
        rpi = max(1, min(rpi, (plan.inner * n_outer + n_threads - 1) // n_threads))
    if plan.fwd.x_row_stride == 1 and plan.fwd.y_row_stride == 1 and plan.row_len > 1:
        # rows side by side: the SIMD kernels walk tiles of neighbouring rows
        # element row by element row; give them long runs (whole vectors,
        # up to a page per element row) and enough rows to amortize a tile
        rpi = max(rpi, LANE_ITEM_ELEMENTS // plan.row_len)
        rpi = (rpi + LANE_TILE_ROWS - 1) // LANE_TILE_ROWS * LANE_TILE_ROWS
        if n_threads > 1 and n_outer < n_threads:
            rpi = min(rpi, max(LANE_TILE_ROWS, (plan.inner + n_threads - 1) // n_threads))
    _plan_items(&plan, rpi)
    if n_threads > plan.n_items:
        n_threads = <int>plan.n_items
    with nogil:
        run_plan(&plan, n_threads)
    return 0


def backward(int op, cnp.ndarray x, cnp.ndarray dy, cnp.ndarray dx, weight, rstd,
             bint want_dweight, bint want_dbias, double eps, tuple norm_axes):
    """Run one backward.  Returns None when the normalized axes of x, dy or
    dx cannot be walked as one strided dimension (the caller then copies),
    else (dweight, dbias): float64 arrays of the normalized shape in
    increasing axis order, or None where not wanted.

    Rows are cut into items of a size that depends only on the shapes, each
    item adds into partial sums of its own, and the partials are reduced in
    item order: dweight and dbias are bitwise the same for any thread count.
    """
    cdef bint is_norm[MAX_DIMS]
    cdef operand_t ops[BWD_STATS + 1]
    cdef int ndim = cnp.PyArray_NDIM(x)
    _norm_mask(ndim, norm_axes, is_norm)
    weight, _ = _walk_order_affine(x, norm_axes, weight, None)
    _array_operand(&ops[BWD_X], x, ndim)
    _array_operand(&ops[BWD_DY], dy, ndim)
    _array_operand(&ops[BWD_DX], dx, ndim)
    _array_operand(&ops[BWD_STATS], rstd, ndim)
    parts = _run_backward(op, _dtype_index(cnp.PyArray_TYPE(x)), ndim,
                          <const Py_ssize_t *>cnp.PyArray_DIMS(x), ops, is_norm,
                          _data_or_null(weight), eps, cnp.PyArray_NBYTES(dx),
                          want_dweight, want_dbias)
    if parts is None:
        return None
    norm_shape = tuple(x.shape[a] for a in norm_axes)
    perm = _walk_perm(x, norm_axes)
    sums = []
    for p in parts:
        total = _reduce_parts(p)
        if total is not None:
            if perm is None:
                total = total.reshape(norm_shape)
            else:  # back from the walk order to increasing axis order
                total = total.reshape([norm_shape[i] for i in perm]).transpose(np.argsort(perm))
        sums.append(total)
    return tuple(sums)


cdef object _run_backward(int op, int dtype_index, int ndim, const Py_ssize_t *shape,
                          const operand_t *ops, const bint *is_norm, const void *weight,
                          double eps, Py_ssize_t dx_nbytes, bint want_dweight,
                          bint want_dbias):
    """Plan and run a backward on operands (BWD_X ... BWD_STATS; weight in
    the walk order).  Returns None when the normalized axes do not merge,
    else the items' (dweight, dbias) partial sums (None where not wanted)."""
    cdef plan_t plan
    cdef int n_threads
    cdef _Parts dw_parts = None, db_parts = None
    if _plan_layout(&plan, ndim, shape, BWD_STATS + 1, ops, is_norm):
        return None
    plan.backward = True
    plan.bwd.row_len = plan.row_len
    plan.bwd.eps = eps
    plan.bwd.stream_stores = dx_nbytes >= g_stream_min_bytes
    plan.bwd.x = ops[BWD_X].data
    plan.bwd.dy = ops[BWD_DY].data
    plan.bwd.dx = ops[BWD_DX].data
    plan.bwd.rstd = ops[BWD_STATS].data
    plan.bwd.weight = weight
    plan.bwd.dweight = NULL
    plan.bwd.dbias = NULL
    plan.bwd.x_row_stride = plan.row_stride[BWD_X]
    plan.bwd.x_elem_stride = plan.elem_stride[BWD_X]
    plan.bwd.dy_row_stride = plan.row_stride[BWD_DY]
    plan.bwd.dy_elem_stride = plan.elem_stride[BWD_DY]
    plan.bwd.dx_row_stride = plan.row_stride[BWD_DX]
    plan.bwd.dx_elem_stride = plan.elem_stride[BWD_DX]
    plan.bwd.stat_stride = plan.row_stride[BWD_STATS]
    if op == OP_LAYER_NORM:
        plan.bwd_kernel = g_kernels.layer_norm_backward[dtype_index]
    else:
        plan.bwd_kernel = g_kernels.rms_norm_backward[dtype_index]
    # items: fixed by the shapes alone (never by the thread count)
    _plan_items(&plan, max(1, min(BWD_ITEM_ROWS, BWD_ITEM_ELEMENTS // plan.row_len)))
    plan.dw_parts = plan.db_parts = NULL
    if want_dweight:
        dw_parts = _zeroed_parts(plan.n_items, plan.row_len)
        plan.dw_parts = dw_parts.data
    if want_dbias:
        db_parts = _zeroed_parts(plan.n_items, plan.row_len)
        plan.db_parts = db_parts.data
    n_threads = min(_threads_for(&plan), plan.n_items)
    with nogil:
        run_plan(&plan, n_threads)
    return dw_parts, db_parts


# ---- the backward's partial sums --------------------------------------------
# Each backward item adds into partial sums of its own (items x row_len
# doubles), which are summed in item order before the call returns.  They
# never reach the caller, so they keep one buffer of their own (fresh pages
# cost more than the sums) instead of taking the output cache's slots, which
# are for large results.  The buffer is taken out while a call uses it: a
# second thread's backward, running while the first has released the GIL,
# allocates its own.
cdef void *g_parts_ptr = NULL
cdef size_t g_parts_bytes = 0


cdef class _Parts:
    """Zeroed partial sums of one backward; the buffer goes back on death."""
    cdef double *data
    cdef size_t nbytes
    cdef Py_ssize_t n_items, n

    def __dealloc__(self):
        global g_parts_ptr, g_parts_bytes
        if self.data == NULL:
            return
        if g_parts_ptr == NULL or self.nbytes > g_parts_bytes:  # keep the larger one
            if g_parts_ptr != NULL:
                fn_buffer_free(g_parts_ptr)
            g_parts_ptr, g_parts_bytes = self.data, self.nbytes
        else:
            fn_buffer_free(self.data)


cdef _Parts _zeroed_parts(Py_ssize_t n_items, Py_ssize_t row_len):
    global g_parts_ptr, g_parts_bytes
    cdef _Parts parts = _Parts.__new__(_Parts)
    cdef size_t nbytes = <size_t>n_items * <size_t>row_len * sizeof(double)
    if g_parts_ptr != NULL and g_parts_bytes >= nbytes:
        parts.data, parts.nbytes = <double *>g_parts_ptr, g_parts_bytes
        g_parts_ptr, g_parts_bytes = NULL, 0
    else:
        parts.data = <double *>fn_buffer_alloc(max(nbytes, 1))
        parts.nbytes = max(nbytes, 1)
        if parts.data == NULL:
            raise MemoryError(f"cannot allocate {nbytes} bytes for the backward's partial sums")
    memset(parts.data, 0, nbytes)
    parts.n_items, parts.n = n_items, row_len
    return parts


cdef void _sum_parts(const double *src, Py_ssize_t n_items, Py_ssize_t n,
                     double *dst) noexcept nogil:
    """dst[j] = the items' partial sums of element j, added in item order."""
    cdef Py_ssize_t i, j
    for j in range(n):
        dst[j] = 0.0
    for i in range(n_items):
        for j in range(n):
            dst[j] += src[i * n + j]


cdef object _reduce_parts(object parts):
    """The summed partial sums as a float64 array, or None."""
    if parts is None:
        return None
    cdef _Parts p = <_Parts>parts
    out = np.empty(p.n, np.float64)
    with nogil:
        _sum_parts(p.data, p.n_items, p.n, <double *>cnp.PyArray_DATA(<cnp.ndarray>out))
    return out


# ---- fast path ------------------------------------------------------------
# The common call (an aligned float32/float64/float16/bfloat16 ndarray, last
# axis, 1-D weight and bias of the compute dtype, float eps) is checked and
# run here without Python
# overhead; anything else returns None and takes the general path in _api.py,
# which owns every error message.

cdef inline bint _is_plain(object v, int typenum):
    return (type(v) is np.ndarray and cnp.PyArray_TYPE(<cnp.ndarray>v) == typenum
            and cnp.PyArray_ISALIGNED(<cnp.ndarray>v) and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>v))


cdef inline bint _is_vector(object v, int typenum, Py_ssize_t n):
    return v is None or (_is_plain(v, typenum) and cnp.PyArray_NDIM(<cnp.ndarray>v) == 1
                         and cnp.PyArray_DIMS(<cnp.ndarray>v)[0] == n
                         and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>v))


cdef object _widened_vector(object v, int typenum, Py_ssize_t n):
    """A 1-D weight of the half input's own dtype as float32 (a new array,
    so it never aliases the output); anything else unchanged."""
    if v is not None and _is_vector(v, typenum, n):
        return (<cnp.ndarray>v).astype(np.float32)
    return v


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


cdef bint _overlap(cnp.ndarray a, cnp.ndarray b) noexcept:
    cdef char *alo
    cdef char *ahi
    cdef char *blo
    cdef char *bhi
    _extent(a, &alo, &ahi)
    _extent(b, &blo, &bhi)
    return alo < bhi and blo < ahi


# layer_norm's default eps, as in PyTorch
LAYER_NORM_EPS = 1e-5


def default_eps(int op, dtype):
    """The eps that eps=None means: 1e-5 for the layer_norm family; for the
    rms_norm family the machine epsilon of the compute dtype (float32's for
    float16 and bfloat16), as PyTorch's rms_norm takes it."""
    return _default_eps(op, np.dtype(dtype).num)


cdef double _default_eps(int op, int typenum):
    # rms_norm: float16 and bfloat16 get float32's epsilon (2**-23), not
    # their own coarse 2**-10 / 2**-7, which would swamp the mean square of
    # small activations
    if op == OP_LAYER_NORM:
        return LAYER_NORM_EPS
    if typenum == cnp.NPY_FLOAT64:
        return 2.0 ** -52
    return 2.0 ** -23


# ---- outputs whose elements overlap each other ------------------------------

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


cdef bint _plain_eps(int op, object eps, int typenum, double *value):
    """eps as the fast paths take it (None for the default, or a finite,
    non-negative float) into value; False for anything else, which the
    general path checks and explains."""
    if eps is None:
        value[0] = _default_eps(op, typenum)
        return True
    if type(eps) is not float:
        return False
    value[0] = eps
    return value[0] >= 0.0 and value[0] < float("inf")


def fast_forward(int op, object x, object normalized_shape, object weight, object bias,
                 object eps, object axis, object out, bint return_stats):
    cdef cnp.ndarray xa, y
    cdef int typenum, ctype, ndim, k
    cdef Py_ssize_t n
    cdef double eps_value
    cdef bint is_norm[MAX_DIMS]
    cdef cnp.npy_intp stats_shape[MAX_DIMS]
    if type(x) is not np.ndarray:
        return None
    xa = <cnp.ndarray>x
    typenum = cnp.PyArray_TYPE(xa)
    ndim = cnp.PyArray_NDIM(xa)
    if (typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64 and typenum != g_f16_typenum
            and typenum != g_bf16_typenum) or ndim == 0 \
            or not _is_plain(x, typenum) or cnp.PyArray_SIZE(xa) == 0:
        return None
    n = cnp.PyArray_DIMS(xa)[ndim - 1]
    if normalized_shape is not None and not (type(normalized_shape) is int and normalized_shape == n):
        return None
    if axis is not None and not (type(axis) is int and (axis == -1 or axis == ndim - 1)):
        return None
    if not _plain_eps(op, eps, typenum, &eps_value):
        return None
    # weight, bias and stats are in the compute dtype (float32 for half inputs;
    # half weights, as a half-precision model holds them, are widened here)
    ctype = cnp.NPY_FLOAT64 if typenum == cnp.NPY_FLOAT64 else cnp.NPY_FLOAT32
    if ctype != typenum:
        weight = _widened_vector(weight, typenum, n)
        bias = _widened_vector(bias, typenum, n)
    if not (_is_vector(weight, ctype, n) and _is_vector(bias, ctype, n)):
        return None
    if out is None:
        if cnp.PyArray_IS_C_CONTIGUOUS(xa):
            y = _new_c_array(ndim, cnp.PyArray_DIMS(xa), typenum)
        else:
            y = np.empty_like(xa)
    else:
        if not _is_plain(out, typenum) or cnp.PyArray_NDIM(<cnp.ndarray>out) != ndim \
                or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out):
            return None
        y = <cnp.ndarray>out
        for k in range(ndim):
            if cnp.PyArray_DIMS(y)[k] != cnp.PyArray_DIMS(xa)[k]:
                return None
        if _internal_overlap(y):
            return None  # elements that alias each other: the general path refuses
        if y is not xa and _overlap(xa, y):
            return None
        # weight or bias inside out would be overwritten while in use
        if (weight is not None and _overlap(<cnp.ndarray>weight, y)) or \
                (bias is not None and _overlap(<cnp.ndarray>bias, y)):
            return None
    for k in range(ndim):
        is_norm[k] = k == ndim - 1
        stats_shape[k] = 1 if k == ndim - 1 else cnp.PyArray_DIMS(xa)[k]
    mean = rstd = None
    if return_stats:
        rstd = cnp.PyArray_EMPTY(ndim, stats_shape, ctype, 0)
        if op == OP_LAYER_NORM:
            mean = cnp.PyArray_EMPTY(ndim, stats_shape, ctype, 0)
    _run(op, xa, y, weight, bias, mean, rstd, eps_value, is_norm)
    if not return_stats:
        return y
    return (y, mean, rstd) if op == OP_LAYER_NORM else (y, rstd)


# ---- torch tensors, read through their pointers ---------------------------
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
cdef dict g_widened = {}


def torch_setup(torch):
    """Called once by fastnorm.torch with the torch module."""
    global g_Tensor, g_Parameter, g_empty_like, g_empty, g_is_grad_enabled
    global g_contiguous_format, g_float32, g_float64, g_torch_typenum, g_from_numpy, g_bfloat16
    g_Tensor, g_Parameter = torch.Tensor, torch.nn.Parameter
    g_from_numpy, g_bfloat16 = torch.from_numpy, torch.bfloat16
    g_empty_like, g_empty = torch.empty_like, torch.empty
    g_is_grad_enabled = torch.is_grad_enabled
    g_contiguous_format = torch.contiguous_format
    g_float32, g_float64 = torch.float32, torch.float64
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


cdef object _widened_weight(object w):
    """A half-precision weight as a float32 tensor, widened once per version
    of the weight: the widening costs more than the kernel at small sizes,
    and a module's weight rarely changes.  Entries die with their tensor."""
    key = id(w)
    version = w._version
    ptr = w.data_ptr()
    entry = g_widened.get(key)
    if entry is not None and entry[0]() is w and entry[1] == version and entry[2] == ptr:
        return entry[3]
    ref = weakref.ref(w, lambda _, key=key: g_widened.pop(key, None))
    wide = w.detach().float()
    g_widened[key] = (ref, version, ptr, wide)
    return wide


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
        w = _widened_weight(w)
        d.data = <char *><Py_ssize_t>w.data_ptr()
    data[0] = d.data
    return w


cdef int _norm_dims(object normalized_shape, object dim, const tensor_t *x, bint *is_norm,
                    int *first) except -1:
    """The normalized dims of x as a mask; the number of them (they are
    dims first .. first+n-1), or 0 when this path does not take the
    spelling (dim a tuple, shapes that do not match: the general path
    explains)."""
    cdef int a, n, d
    for a in range(x.ndim):
        is_norm[a] = False
    if dim is not None:
        if type(dim) is not int or not -x.ndim <= dim < x.ndim:
            return 0
        d = dim % x.ndim
        if normalized_shape is not None:
            if type(normalized_shape) is int:
                if normalized_shape != x.shape[d]:
                    return 0
            elif not isinstance(normalized_shape, tuple) or len(normalized_shape) != 1 \
                    or type(normalized_shape[0]) is not int or normalized_shape[0] != x.shape[d]:
                return 0
        is_norm[d] = True
        first[0] = d
        return 1
    if type(normalized_shape) is int:
        if normalized_shape != x.shape[x.ndim - 1]:
            return 0
        n = 1
    else:
        if not isinstance(normalized_shape, tuple):  # torch.Size is a tuple
            return 0
        n = len(normalized_shape)
        if n == 0 or n > x.ndim:
            return 0
        for a in range(n):
            if type(normalized_shape[a]) is not int \
                    or normalized_shape[a] != x.shape[x.ndim - n + a]:
                return 0
    for a in range(x.ndim - n, x.ndim):
        is_norm[a] = True
    first[0] = x.ndim - n
    return n


cdef bint _norm_reordered(const tensor_t *x, const bint *is_norm):
    """Whether the kernels walk x's normalized dims in another order than
    increasing dim order (a permuted view): weight and bias, laid out in dim
    order, would then not match."""
    cdef operand_t o
    cdef plan_t probe
    _tensor_operand(&o, x)
    _plan_layout(&probe, x.ndim, x.shape, 1, &o, is_norm)
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
    n_norm = _norm_dims(normalized_shape, dim, &xd, is_norm, &first)
    if n_norm == 0:
        return None
    if not _plain_eps(op, eps, xd.typenum, &eps_value):
        return None
    if check_grad and g_is_grad_enabled() and _any_requires_grad(x, weight, bias, residual):
        return None
    if residual is not None:
        # the kernels fuse the add for C-order rows over trailing dims only
        # (as _api's fused path); other layouts take the general path's two steps
        if not _is_tensor(residual) or _read_tensor(residual, &rd) or rd.typenum != xd.typenum \
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
    _absent_operand(&ops[FWD_STATS], xd.ndim)
    if want_stats:
        ctype = cnp.NPY_FLOAT64 if xd.typenum == cnp.NPY_FLOAT64 else cnp.NPY_FLOAT32
        rstd = _stats_array(&xd, is_norm, ctype, &ops[FWD_STATS])
        if op == OP_LAYER_NORM:
            mean = _stats_array(&xd, is_norm, ctype, &ops[FWD_STATS])
    if _run_forward(op, _dtype_index(xd.typenum), xd.ndim, xd.shape, ops, is_norm,
                    _data_or_null(mean), _data_or_null(rstd), eps_value,
                    xd.numel * xd.itemsize, False):
        return None  # normalized dims that do not merge (x is an irregular view)
    if not want_stats:
        return y if residual is None else (y, h)
    stats = (mean, rstd) if op == OP_LAYER_NORM else (rstd,)
    return ((y,) if residual is None else (y, h)) + stats


cdef bint _is_stats_of(object a, const tensor_t *x, const bint *is_norm):
    """Whether a is an ndarray of x's keepdims stats shape in the compute dtype."""
    cdef int k
    if not _is_plain(a, cnp.NPY_FLOAT64 if x.typenum == cnp.NPY_FLOAT64 else cnp.NPY_FLOAT32) \
            or cnp.PyArray_NDIM(<cnp.ndarray>a) != x.ndim:
        return False
    for k in range(x.ndim):
        if cnp.PyArray_DIMS(<cnp.ndarray>a)[k] != (1 if is_norm[k] else x.shape[k]):
            return False
    return True


def torch_backward(int op, dy, x, weight, rstd, eps, normalized_shape, dim,
                   bint want_dweight, bint want_dbias):
    """The backward of torch_forward (same x, weight, eps, normalized_shape,
    dim; rstd as it returned) on CPU tensors from their pointers.  Returns
    (dx, dweight, dbias), the parameter gradients as float32/float64 tensors
    of weight's shape summed in float64 (None where not wanted); None when
    the call is not one this path takes."""
    cdef tensor_t xd, dyd, dxd
    cdef bint is_norm[MAX_DIMS]
    cdef operand_t ops[BWD_STATS + 1]
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
    n_norm = _norm_dims(normalized_shape, dim, &xd, is_norm, &first)
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
    _array_operand(&ops[BWD_STATS], rstd, xd.ndim)
    parts = _run_backward(op, _dtype_index(xd.typenum), xd.ndim, xd.shape, ops, is_norm, wdata,
                          eps_value, xd.numel * xd.itemsize, want_dweight, want_dbias)
    if parts is None:
        return None
    norm_shape = tuple([xd.shape[first + a] for a in range(n_norm)])
    grads = [dx]
    for p in parts:
        grads.append(None if p is None else
                     _sum_parts_into(p, norm_shape, g_float64 if xd.typenum == cnp.NPY_FLOAT64
                                     else g_float32))
    return tuple(grads)


cdef object _sum_parts_into(_Parts parts, tuple shape, object dtype):
    """The summed partial sums in a new tensor of the given shape (float32 or
    float64: rounded once)."""
    cdef Py_ssize_t j
    out = g_empty(shape, dtype=dtype)
    cdef char *dst = <char *><Py_ssize_t>out.data_ptr()
    if dtype is g_float64:
        with nogil:
            _sum_parts(parts.data, parts.n_items, parts.n, <double *>dst)
        return out
    total = _reduce_parts(parts)
    cdef double *src = <double *>cnp.PyArray_DATA(<cnp.ndarray>total)
    with nogil:
        for j in range(parts.n):
            (<float *>dst)[j] = <float>src[j]
    return out


# ---- test hooks: the portable float16/bfloat16 conversions -----------------

cdef extern from "half_convert.h" nogil:
    float fn_f16_to_f32(unsigned short h)
    unsigned short fn_f32_to_f16(float f)
    float fn_bf16_to_f32(unsigned short h)
    unsigned short fn_f32_to_bf16(float f)


def software_narrow(str kind, values):
    """float32 values -> uint16 bit patterns of float16 ('f16') or bfloat16
    ('bf16'), by the portable kernels' conversion (for tests)."""
    cdef float[::1] src = np.ascontiguousarray(values, dtype=np.float32).ravel()
    out = np.empty(src.shape[0], np.uint16)
    cdef unsigned short[::1] dst = out
    cdef Py_ssize_t i
    cdef bint bf = kind == "bf16"
    for i in range(src.shape[0]):
        dst[i] = fn_f32_to_bf16(src[i]) if bf else fn_f32_to_f16(src[i])
    return out


def software_widen(str kind, bits):
    """uint16 bit patterns of float16/bfloat16 -> float32 (for tests)."""
    cdef unsigned short[::1] src = np.ascontiguousarray(bits, dtype=np.uint16).ravel()
    out = np.empty(src.shape[0], np.float32)
    cdef float[::1] dst = out
    cdef Py_ssize_t i
    cdef bint bf = kind == "bf16"
    for i in range(src.shape[0]):
        dst[i] = fn_bf16_to_f32(src[i]) if bf else fn_f16_to_f32(src[i])
    return out
