# fastnorm's compiled core: everything between the public functions and the
# C kernels, in one extension module whose parts live in files of one job
# each (compiled together, because they share C-level state: the kernel set
# in use and the buffer cache, which the small-call path reads without a
# function call across modules):
#
#   _buffers.pxi      the output-buffer cache and the backward's partial sums
#   _run.pxi          the kernel set, operand layouts, the plan and its run on
#                     OpenMP threads with the GIL released
#   _rules.pxi        the argument rules for NumPy arrays: every argument
#                     validated once (every user-facing message is here),
#                     and the normalized dimensions' rule for every path
#   _spec.pxi         the call specification: one call's arguments, each
#                     checked by its rule (the Dask layer's check of a call)
#   _calls.pxi        the calls for NumPy arrays: a call specification run,
#                     its outputs allocated, then the plan run
#   _quant.pxi        quantize, and the norms quantized while in cache
#   _torch_calls.pxi  the same for torch tensors read through their pointers
#   _group.pxi        GroupNorm: its rules, layouts and run
#
# A call reads: fastnorm/_api.py (docstring, one call) -> _calls.pxi
# (normalize / normalize_backward / add_normalize: the call specification of
# _spec.pxi built, then run) -> _run.pxi (plan, run) -> the kernel table of
# src/fastnorm_kernels.h.  The test hooks are a module
# of their own (fastnorm/_testing.pyx).

import numbers
import operator

import ml_dtypes
import numpy as np
cimport cython
cimport numpy as cnp
from fastnorm._kernels cimport *  # the C kernels' interface (src/fastnorm_kernels.h)
from cython.parallel cimport prange
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.string cimport memcmp, memcpy, memset

try:  # NumPy >= 1.25
    from numpy.exceptions import AxisError
except ImportError:  # pragma: no cover
    from numpy import AxisError

cnp.import_array()

# The element types with kernels of their own, indexed as the kernel tables'
# dtype index (FN_F32 ... of src/fastnorm_kernels.h): the one list of them.
# float16 and bfloat16 are computed on in float32: their weight, bias and
# statistics are float32.
cdef int g_bf16_typenum = np.dtype(ml_dtypes.bfloat16).num
cdef int g_f16_typenum = np.dtype(np.float16).num
cdef int g_kernel_typenum[FN_N_DTYPES]
g_kernel_typenum[FN_F32] = cnp.NPY_FLOAT32
g_kernel_typenum[FN_F64] = cnp.NPY_FLOAT64
g_kernel_typenum[FN_F16] = g_f16_typenum
g_kernel_typenum[FN_BF16] = g_bf16_typenum
KERNEL_DTYPES = tuple([cnp.PyArray_DescrFromType(g_kernel_typenum[i]) for i in range(FN_N_DTYPES)])


cdef inline int _kernel_index(int typenum) noexcept:
    """The kernel tables' index of a dtype, or -1 for one without kernels."""
    cdef int i
    for i in range(FN_N_DTYPES):
        if g_kernel_typenum[i] == typenum:
            return i
    return -1


cdef inline bint _is_kernel_typenum(int typenum) noexcept:
    return _kernel_index(typenum) >= 0


cdef int _dtype_index(int typenum) except -1:
    cdef int i = _kernel_index(typenum)
    if i < 0:
        raise TypeError(f"no kernel for dtype {cnp.PyArray_DescrFromType(typenum)}")
    return i


cdef inline int _compute_typenum(int typenum) noexcept:
    return cnp.NPY_FLOAT64 if typenum == cnp.NPY_FLOAT64 else cnp.NPY_FLOAT32


def compute_dtype(dtype):
    """The dtype the kernels compute in, and of weight, bias and stats."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


cdef enum:
    MAX_DIMS = 64

cpdef enum:
    OP_LAYER_NORM = 0
    OP_RMS_NORM = 1

include "_buffers.pxi"
include "_run.pxi"
include "_rules.pxi"
include "_spec.pxi"
include "_calls.pxi"
include "_quant.pxi"
include "_torch_calls.pxi"
include "_group.pxi"
