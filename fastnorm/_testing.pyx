# Test and benchmark hooks, apart from the product:
# - the portable float16/bfloat16 conversions of src/half_convert.h (the
#   ones the portable kernels use), callable on arrays so that tests can
#   compare them with NumPy's and ml_dtypes' over every bit pattern;
# - the benchmarks' memory roof, src/stream_copy.c, on 1 or more threads;
# - the benchmarks' in-cache yardstick, src/plain_norm.h: textbook two-pass
#   AVX2 norms without the library's accuracy machinery.

import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange

cnp.import_array()

cdef extern from "stream_copy.h" nogil:
    void fn_stream_copy(void *dst, const void *src, size_t n)
    const char *fn_stream_copy_isa()


def stream_copy_isa():
    """The instruction set of the streaming copy on this CPU."""
    return fn_stream_copy_isa().decode()


def stream_copy(cnp.ndarray dst not None, cnp.ndarray src not None, int threads=1):
    """Copy src's bytes into dst with streaming stores, on `threads`
    OpenMP threads (each copies one contiguous share, split at 4 KiB
    boundaries of dst).  Both C-contiguous, the same number of bytes, dst
    writeable and not overlapping src."""
    if not (cnp.PyArray_IS_C_CONTIGUOUS(dst) and cnp.PyArray_IS_C_CONTIGUOUS(src)):
        raise ValueError("stream_copy needs C-contiguous arrays")
    if cnp.PyArray_NBYTES(dst) != cnp.PyArray_NBYTES(src):
        raise ValueError(f"stream_copy: dst has {cnp.PyArray_NBYTES(dst)} bytes, src "
                         f"{cnp.PyArray_NBYTES(src)}")
    if not cnp.PyArray_ISWRITEABLE(dst):
        raise ValueError("stream_copy: dst is read-only")
    if np.may_share_memory(dst, src):
        raise ValueError("stream_copy: dst and src overlap")
    cdef char *d = <char *>cnp.PyArray_DATA(dst)
    cdef const char *s = <const char *>cnp.PyArray_DATA(src)
    cdef Py_ssize_t n = cnp.PyArray_NBYTES(dst), share, lo, hi
    cdef int t, n_threads = max(1, threads)
    share = ((n + n_threads - 1) // n_threads + 4095) // 4096 * 4096
    if n_threads == 1 or share >= n:
        with nogil:
            fn_stream_copy(d, s, n)
        return
    for t in prange(n_threads, nogil=True, num_threads=n_threads, schedule="static"):
        lo = min(t * share, n)
        hi = min(lo + share, n)
        if hi > lo:
            fn_stream_copy(d + lo, s + lo, hi - lo)


cdef extern from "plain_norm.h" nogil:
    int fn_plain_layer_norm(const void *x, void *y, const float *w, const float *b,
                            Py_ssize_t rows, Py_ssize_t n, double eps, int dtype)
    int fn_plain_rms_norm(const void *x, void *y, const float *w, Py_ssize_t rows,
                          Py_ssize_t n, double eps, int dtype)


def plain_norm(str op, cnp.ndarray x not None, cnp.ndarray y not None,
               cnp.ndarray weight not None, bias=None, double eps=1e-5):
    """The yardstick: y = op(x) by a textbook two-pass AVX2 kernel, one
    thread.  op 'layer_norm' (needs bias) or 'rms_norm'; x and y 2-D,
    C-contiguous, float32 or bfloat16, rows a multiple of 32 elements long;
    weight (and bias) float32 of the row length.  Not accurate on long rows
    or large means.  Raises RuntimeError where there is no AVX2 loop."""
    import ml_dtypes

    if op not in ("layer_norm", "rms_norm"):
        raise ValueError(f"plain_norm: op must be 'layer_norm' or 'rms_norm', not {op!r}")
    if x.dtype not in (np.float32, ml_dtypes.bfloat16) or y.dtype != x.dtype:
        raise ValueError(f"plain_norm: x and y must both be float32 or bfloat16, not "
                         f"{x.dtype} and {y.dtype}")
    if x.ndim != 2 or (<object>y).shape != (<object>x).shape or x.shape[1] % 32:
        raise ValueError(f"plain_norm: x and y must be 2-D of one shape with rows a multiple "
                         f"of 32 long, not {(<object>x).shape} and {(<object>y).shape}")
    if not (cnp.PyArray_IS_C_CONTIGUOUS(x) and cnp.PyArray_IS_C_CONTIGUOUS(y)):
        raise ValueError("plain_norm needs C-contiguous x and y")
    if not cnp.PyArray_ISWRITEABLE(y) or np.may_share_memory(x, y):
        raise ValueError("plain_norm: y must be writeable and apart from x")
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1]
    cdef float[::1] w = np.ascontiguousarray(weight, dtype=np.float32)
    cdef float[::1] b
    if w.shape[0] != n:
        raise ValueError(f"plain_norm: weight has {w.shape[0]} elements, rows {n}")
    if op == "layer_norm":
        if bias is None:
            raise ValueError("plain_norm: layer_norm needs a bias")
        b = np.ascontiguousarray(bias, dtype=np.float32)
        if b.shape[0] != n:
            raise ValueError(f"plain_norm: bias has {b.shape[0]} elements, rows {n}")
    cdef const void *xp = cnp.PyArray_DATA(x)
    cdef void *yp = cnp.PyArray_DATA(y)
    cdef int bf16 = x.dtype != np.float32, rc
    cdef bint layer = op == "layer_norm"
    with nogil:
        if layer:
            rc = fn_plain_layer_norm(xp, yp, &w[0], &b[0], rows, n, eps, bf16)
        else:
            rc = fn_plain_rms_norm(xp, yp, &w[0], rows, n, eps, bf16)
    if rc != 0:
        raise RuntimeError("plain_norm: no AVX2 loop on this machine")


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
