# The kernel set in use, operand layouts, and the run of a plan on OpenMP
# threads.  Included by _core.pyx; knows nothing of argument checking (the
# callers in _calls.pxi and _torch_calls.pxi hand over checked operands).
#
# Layout mapping: the normalized axes are merged into one "element" dimension
# (ordered by decreasing stride, so Fortran order and views merge too); the
# batch axes are merged the same way.  The batch dimension with the smallest
# stride becomes the kernel's row dimension, the others are enumerated as
# "outer" positions.  When the normalized axes cannot be merged into one
# strided dimension (an irregular view), _run_forward/_run_backward report it
# and the caller copies.

cdef extern from "cython_omp.h" nogil:
    int omp_get_max_threads()
    int omp_get_num_threads()
    int omp_get_thread_num()
    int FN_HAVE_OPENMP
    const char *FN_BUILD_FLAGS
    const char *FN_SOURCE_FINGERPRINT

cdef extern from "cython_fork.h" nogil:
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
    # Work below this many elements runs on the calling thread: starting the
    # OpenMP team costs more than it saves (and a small backward keeps the
    # GIL: releasing and taking it back costs a tenth of such a call).
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
    # operands of a plan: the arrays walked row by row, then the stats (one
    # value per row)
    MAX_OPS = 8
    # forward: x, y, residual, h, per-row weight and bias (AdaLN), mean, rstd
    FWD_X = 0
    FWD_Y = 1
    FWD_R = 2
    FWD_H = 3
    FWD_W = 4
    FWD_B = 5
    FWD_MEAN = 6
    FWD_RSTD = 7
    N_FWD_OPS = 8
    N_FWD_ROW_OPS = 6
    # backward: x, dy, dx, rstd
    BWD_X = 0
    BWD_DY = 1
    BWD_DX = 2
    BWD_RSTD = 3
    N_BWD_OPS = 4
    N_BWD_ROW_OPS = 3


# Where each operand's description goes in the kernels' block struct
# (fn_rows, fn_rows_bwd of src/fastnorm_kernels.h): the byte offsets of its
# pointer, row stride and element stride (-1: the block has none).  With
# them the planner fills, and each item moves, every operand in one loop.
cdef struct field_t:
    Py_ssize_t data
    Py_ssize_t row_stride
    Py_ssize_t elem_stride

cdef union block_t:
    fn_rows fwd
    fn_rows_bwd bwd

cdef field_t g_fwd_fields[N_FWD_OPS]
cdef field_t g_bwd_fields[N_BWD_OPS]


cdef inline void _field(field_t *f, const block_t *b, const void *data, const void *row_stride,
                        const void *elem_stride) noexcept:
    f.data = <const char *>data - <const char *>b
    f.row_stride = -1 if row_stride == NULL else <const char *>row_stride - <const char *>b
    f.elem_stride = -1 if elem_stride == NULL else <const char *>elem_stride - <const char *>b


cdef void _describe_blocks() noexcept:
    cdef block_t b
    _field(&g_fwd_fields[FWD_X], &b, &b.fwd.x, &b.fwd.x_row_stride, &b.fwd.x_elem_stride)
    _field(&g_fwd_fields[FWD_Y], &b, &b.fwd.y, &b.fwd.y_row_stride, &b.fwd.y_elem_stride)
    _field(&g_fwd_fields[FWD_R], &b, &b.fwd.residual, &b.fwd.r_row_stride, &b.fwd.r_elem_stride)
    _field(&g_fwd_fields[FWD_H], &b, &b.fwd.h, &b.fwd.h_row_stride, &b.fwd.h_elem_stride)
    _field(&g_fwd_fields[FWD_W], &b, &b.fwd.weight, &b.fwd.w_row_stride, NULL)
    _field(&g_fwd_fields[FWD_B], &b, &b.fwd.bias, &b.fwd.b_row_stride, NULL)
    _field(&g_fwd_fields[FWD_MEAN], &b, &b.fwd.mean, &b.fwd.stat_stride, NULL)
    _field(&g_fwd_fields[FWD_RSTD], &b, &b.fwd.rstd, &b.fwd.stat_stride, NULL)
    _field(&g_bwd_fields[BWD_X], &b, &b.bwd.x, &b.bwd.x_row_stride, &b.bwd.x_elem_stride)
    _field(&g_bwd_fields[BWD_DY], &b, &b.bwd.dy, &b.bwd.dy_row_stride, &b.bwd.dy_elem_stride)
    _field(&g_bwd_fields[BWD_DX], &b, &b.bwd.dx, &b.bwd.dx_row_stride, &b.bwd.dx_elem_stride)
    _field(&g_bwd_fields[BWD_RSTD], &b, &b.bwd.rstd, &b.bwd.stat_stride, NULL)


_describe_blocks()


cdef inline char *_get_pointer(const block_t *b, Py_ssize_t at) noexcept nogil:
    cdef char *p
    memcpy(&p, <const char *>b + at, sizeof(char *))
    return p


cdef inline void _put_pointer(block_t *b, Py_ssize_t at, const char *p) noexcept nogil:
    memcpy(<char *>b + at, &p, sizeof(char *))


cdef inline void _put_stride(block_t *b, Py_ssize_t at, Py_ssize_t v) noexcept nogil:
    if at >= 0:
        memcpy(<char *>b + at, &v, sizeof(Py_ssize_t))


cdef struct plan_t:
    int n_ops                 # operands: n_row_ops walked row by row, then the stats
    int n_row_ops
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
    const field_t *fields     # where each operand goes in the block
    block_t block             # the kernels' block description (pointers at
    #                           element 0 of row 0)
    fn_rows_kernel fwd_kernel
    fn_rows_bwd_kernel bwd_kernel
    double *dw_parts          # n_items x row_len partial sums, or NULL
    double *db_parts
    # the normalized axes are walked in another order than increasing axis
    # order (weight/bias must follow)
    bint norm_reordered


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
    cdef block_t block = plan.block
    cdef char *p
    for k in range(plan.n_ops):
        off[k] = r0 * plan.row_stride[k]
    for d in range(plan.n_outer_dims - 1, -1, -1):
        idx = outer % plan.outer_shape[d]
        outer = outer // plan.outer_shape[d]
        for k in range(plan.n_ops):
            off[k] += idx * plan.outer_stride[k][d]
    # every present operand moves to this item's first row (a weight and
    # bias shared by all rows have zero strides, so they stay put)
    for k in range(plan.n_ops):
        p = _get_pointer(&block, plan.fields[k].data)
        if p != NULL:
            _put_pointer(&block, plan.fields[k].data, p + off[k] * plan.itemsize[k])
    if plan.backward:
        block.bwd.rows = min(plan.rows_per_item, plan.inner - r0)
        if plan.dw_parts != NULL:
            block.bwd.dweight = plan.dw_parts + item * plan.row_len
        if plan.db_parts != NULL:
            block.bwd.dbias = plan.db_parts + item * plan.row_len
        plan.bwd_kernel(&block.bwd)
    else:
        block.fwd.rows = min(plan.rows_per_item, plan.inner - r0)
        plan.fwd_kernel(&block.fwd)


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
                      int n_row_ops, const operand_t *ops, const field_t *fields,
                      const bint *is_norm) noexcept:
    """Fill the layout part of the plan, and the operands' part of its
    block, from the operands' strides (ops: n_row_ops operands walked row by
    row, then the stats).  Returns 1 when the normalized axes of some
    row-walked operand do not merge into one strided dimension."""
    cdef int k, a, d, n_norm = 0, n_batch = 0
    cdef Py_ssize_t norm_order[MAX_DIMS]
    cdef Py_ssize_t batch_order[MAX_DIMS]
    cdef bint mergeable
    plan.n_ops = n_ops
    plan.n_row_ops = n_row_ops
    plan.fields = fields
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
        for k in range(n_row_ops):
            if not _mergeable(ops[k].strides[a], ops[k].strides[norm_order[d + 1]],
                              shape[norm_order[d + 1]]):
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
            mergeable = _mergeable(plan.outer_stride[k][plan.n_outer_dims - 1],
                                   ops[k].strides[a], shape[a])
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
    memset(&plan.block, 0, sizeof(block_t))
    for k in range(n_ops):
        _put_pointer(&plan.block, fields[k].data, ops[k].data)
        _put_stride(&plan.block, fields[k].row_stride, plan.row_stride[k])
        _put_stride(&plan.block, fields[k].elem_stride, plan.elem_stride[k])
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


cdef inline bint _is_small(const plan_t *plan) noexcept:
    return _n_outer(plan) * plan.inner * plan.row_len < PARALLEL_MIN_ELEMENTS


cdef int _threads_for(const plan_t *plan) noexcept:
    return 1 if _is_small(plan) else _max_threads()


cdef void _norm_mask(int ndim, tuple norm_axes, bint *is_norm):
    cdef int a
    for a in range(ndim):
        is_norm[a] = False
    for a in norm_axes:
        is_norm[a] = True


cdef inline void *_data_or_null(object arr):
    return NULL if arr is None else cnp.PyArray_DATA(<cnp.ndarray>arr)


cdef inline fn_rows_kernel _forward_kernel(int op, int index) noexcept nogil:
    """The forward kernel of the set in use: index is a dtype index, or
    FN_N_DTYPES + 0/1 for float16/bfloat16 inputs with float32 results."""
    if index >= FN_N_DTYPES:
        if op == OP_LAYER_NORM:
            return g_kernels.layer_norm_half_to_f32[index - FN_N_DTYPES]
        return g_kernels.rms_norm_half_to_f32[index - FN_N_DTYPES]
    if op == OP_LAYER_NORM:
        return g_kernels.layer_norm[index]
    return g_kernels.rms_norm[index]


cdef int _run_forward(int op, int dtype_index, int ndim, const Py_ssize_t *shape,
                      const operand_t *ops, const bint *is_norm, double eps,
                      Py_ssize_t y_nbytes, bint per_sample) except -1:
    """Plan and run a forward on operands (FWD_X ... FWD_RSTD); 1 (nothing
    done) when the normalized axes do not merge."""
    cdef plan_t plan
    cdef Py_ssize_t n_outer, rpi
    cdef int n_threads
    if _plan_layout(&plan, ndim, shape, N_FWD_OPS, N_FWD_ROW_OPS, ops, g_fwd_fields, is_norm):
        return 1
    if per_sample and ((ops[FWD_W].data != NULL and plan.elem_stride[FWD_W] != 1) or
                       (ops[FWD_B].data != NULL and plan.elem_stride[FWD_B] != 1)):
        raise AssertionError("per-sample weight/bias not laid out along the rows")
    plan.backward = False
    plan.block.fwd.row_len = plan.row_len
    plan.block.fwd.eps = eps
    plan.block.fwd.stream_stores = y_nbytes >= g_stream_min_bytes
    plan.fwd_kernel = _forward_kernel(op, dtype_index)

    n_outer = _n_outer(&plan)
    n_threads = _threads_for(&plan)
    rpi = max(1, ITEM_ELEMENTS // plan.row_len)
    if n_threads > 1 and n_outer < n_threads:
        # enough items for every thread
        rpi = max(1, min(rpi, (plan.inner * n_outer + n_threads - 1) // n_threads))
    if plan.row_stride[FWD_X] == 1 and plan.row_stride[FWD_Y] == 1 and plan.row_len > 1:
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


cdef object _run_backward(int op, int dtype_index, int ndim, const Py_ssize_t *shape,
                          const operand_t *ops, const bint *is_norm, const void *weight,
                          double eps, Py_ssize_t dx_nbytes, bint want_dweight,
                          bint want_dbias):
    """Plan and run a backward on operands (BWD_X ... BWD_RSTD; weight in
    the walk order).  Returns None when the normalized axes do not merge,
    else the items' partial sums: those of dweight first when wanted, then
    those of dbias when wanted."""
    cdef plan_t plan
    cdef int n_threads
    cdef _Parts parts
    if _plan_layout(&plan, ndim, shape, N_BWD_OPS, N_BWD_ROW_OPS, ops, g_bwd_fields, is_norm):
        return None
    plan.backward = True
    plan.block.bwd.row_len = plan.row_len
    plan.block.bwd.eps = eps
    plan.block.bwd.stream_stores = dx_nbytes >= g_stream_min_bytes
    plan.block.bwd.weight = weight
    if op == OP_LAYER_NORM:
        plan.bwd_kernel = g_kernels.layer_norm_backward[dtype_index]
    else:
        plan.bwd_kernel = g_kernels.rms_norm_backward[dtype_index]
    # items: fixed by the shapes alone (never by the thread count)
    _plan_items(&plan, max(1, min(BWD_ITEM_ROWS, BWD_ITEM_ELEMENTS // plan.row_len)))
    parts = _zeroed_parts(plan.n_items, plan.row_len, <int>want_dweight + <int>want_dbias)
    plan.dw_parts = _part(parts, 0) if want_dweight else NULL
    plan.db_parts = _part(parts, <int>want_dweight) if want_dbias else NULL
    n_threads = min(_threads_for(&plan), plan.n_items)
    if _is_small(&plan):  # releasing the GIL would cost more than the run
        run_plan(&plan, n_threads)
    else:
        with nogil:
            run_plan(&plan, n_threads)
    return parts
