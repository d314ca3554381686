# Test hooks, apart from the product: the portable float16/bfloat16
# conversions of src/half_convert.h (the ones the portable kernels use),
# callable on arrays so that tests can compare them with NumPy's and
# ml_dtypes' over every bit pattern.

import numpy as np

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

