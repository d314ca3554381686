# The memory fastnorm allocates for its callers' results, and the scratch of
# the backward's parameter sums.  Included by _core.pyx.
#
# Relies on the GIL: every function here runs with it held (the take/give of
# a buffer is not atomic), and nothing here is called from a nogil region.
#
# The API the rest of the core uses:
#   _new_c_array(ndim, dims, typenum)   a C-order array, large ones cached
#   _zeroed_parts(n_items, row_len, n_sums)  zeroed float64 partial sums
#   _reduce_parts(parts, k, typenum)    sum k over items, in item order
# and for Python: empty_output, buffer_cache_info, set_buffer_cache.

cdef extern from "cython_buffers.h" nogil:
    void *fn_buffer_alloc(size_t nbytes)
    void fn_buffer_free(void *p)

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
# ---- the backward's partial sums --------------------------------------------
# Each backward item adds into partial sums of its own (items x row_len
# doubles for each of dweight and dbias), which are summed in item order
# before the call returns.  They never reach the caller, so they keep one
# buffer of their own (fresh pages cost more than the sums; a small call's
# sums fit the buffer the last call left) instead of taking the output
# cache's slots, which are for large results.  The buffer is taken out while
# a call uses it: a second thread's backward, running while the first has
# released the GIL, allocates its own.
cdef void *g_parts_ptr = NULL
cdef size_t g_parts_bytes = 0


cdef class _Parts:
    """Zeroed partial sums of one backward: n_sums sums, each n_items x n
    doubles, one after the other; the buffer goes back on death."""
    cdef double *data
    cdef size_t nbytes
    cdef Py_ssize_t n_items, n
    cdef int n_sums

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


cdef _Parts _zeroed_parts(Py_ssize_t n_items, Py_ssize_t row_len, int n_sums):
    global g_parts_ptr, g_parts_bytes
    cdef _Parts parts = _Parts.__new__(_Parts)
    cdef size_t nbytes = <size_t>n_sums * <size_t>n_items * <size_t>row_len * sizeof(double)
    parts.n_items, parts.n, parts.n_sums = n_items, row_len, n_sums
    if nbytes == 0:
        return parts  # no sums wanted
    if g_parts_ptr != NULL and g_parts_bytes >= nbytes:
        parts.data, parts.nbytes = <double *>g_parts_ptr, g_parts_bytes
        g_parts_ptr, g_parts_bytes = NULL, 0
    else:
        parts.data = <double *>fn_buffer_alloc(nbytes)
        parts.nbytes = nbytes
        if parts.data == NULL:
            raise MemoryError(f"cannot allocate {nbytes} bytes for the backward's partial sums")
    memset(parts.data, 0, nbytes)
    return parts


cdef inline double *_part(_Parts parts, int k) noexcept:
    """The items' partial sums of sum k (n_items x n)."""
    return parts.data + <Py_ssize_t>k * parts.n_items * parts.n


cdef enum:
    SUM_BLOCK = 512  # elements summed at a time (their double sums stay in L1)
    # parts of fewer doubles are summed with the GIL held (a small call's:
    # releasing and taking it back would cost more than the sum)
    SUM_NOGIL_MIN = 65536


cdef void _sum_parts(const double *src, Py_ssize_t n_items, Py_ssize_t n, void *dst,
                     bint to_float) noexcept nogil:
    """dst[j] = the items' partial sums of element j, added in item order in
    double, stored as double or (to_float) rounded once to float."""
    cdef double acc[SUM_BLOCK]
    cdef Py_ssize_t i, j, j0 = 0, m
    if n_items == 1:  # a small call's one item: in one pass
        if to_float:
            for j in range(n):
                (<float *>dst)[j] = <float>(0.0 + src[j])
        else:
            for j in range(n):
                (<double *>dst)[j] = 0.0 + src[j]
        return
    while j0 < n:
        m = min(<Py_ssize_t>SUM_BLOCK, n - j0)
        for j in range(m):
            acc[j] = 0.0
        for i in range(n_items):
            for j in range(m):
                acc[j] += src[i * n + j0 + j]
        if to_float:
            for j in range(m):
                (<float *>dst)[j0 + j] = <float>acc[j]
        else:
            for j in range(m):
                (<double *>dst)[j0 + j] = acc[j]
        j0 += m


cdef cnp.ndarray _reduce_parts(_Parts parts, int k, int typenum):
    """Sum k of the parts as a new 1-D array of typenum (float64, or float32:
    summed in float64 and rounded once)."""
    cdef cnp.npy_intp n = parts.n
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &n, typenum, 0)
    cdef const double *src = _part(parts, k)
    cdef void *dst = cnp.PyArray_DATA(out)
    if parts.n_items * parts.n < SUM_NOGIL_MIN:
        _sum_parts(src, parts.n_items, parts.n, dst, typenum != cnp.NPY_FLOAT64)
    else:
        with nogil:
            _sum_parts(src, parts.n_items, parts.n, dst, typenum != cnp.NPY_FLOAT64)
    return out


# ---- values derived from parameter vectors ----------------------------------------

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
