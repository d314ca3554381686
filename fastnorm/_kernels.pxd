# The C kernels' interface for Cython: the declarations of src/fastnorm_kernels.h,
# kept in step with it (the block descriptions, the kernel tables, the dtype
# indices).  The header is the reference; this file only repeats what
# Cython must know to call it.

cdef extern from "fastnorm_kernels.h" nogil:
    enum:
        FN_F32
        FN_F64
        FN_F16
        FN_BF16
        FN_N_DTYPES
    ctypedef struct fn_rows:
        const void *x
        void *y
        const void *weight
        const void *bias
        Py_ssize_t w_row_stride
        Py_ssize_t b_row_stride
        void *mean
        void *rstd
        Py_ssize_t rows
        Py_ssize_t row_len
        Py_ssize_t x_row_stride
        Py_ssize_t x_elem_stride
        Py_ssize_t y_row_stride
        Py_ssize_t y_elem_stride
        Py_ssize_t stat_stride
        double eps
        int stream_stores
        const void *residual
        void *h
        Py_ssize_t r_row_stride
        Py_ssize_t r_elem_stride
        Py_ssize_t h_row_stride
        Py_ssize_t h_elem_stride
    ctypedef void (*fn_rows_kernel)(const fn_rows *block) noexcept nogil
    ctypedef struct fn_rows_bwd:
        const void *x
        const void *dy
        void *dx
        const void *weight
        const void *rstd
        double *dweight
        double *dbias
        Py_ssize_t rows
        Py_ssize_t row_len
        Py_ssize_t x_row_stride
        Py_ssize_t x_elem_stride
        Py_ssize_t dy_row_stride
        Py_ssize_t dy_elem_stride
        Py_ssize_t dx_row_stride
        Py_ssize_t dx_elem_stride
        Py_ssize_t stat_stride
        double eps
        int stream_stores
    ctypedef void (*fn_rows_bwd_kernel)(const fn_rows_bwd *block) noexcept nogil
    enum:
        FN_Q_INT8
        FN_Q_E4M3
    ctypedef struct fn_quant:
        const void *y
        void *q
        float *scale
        Py_ssize_t rows
        Py_ssize_t row_len
        Py_ssize_t group_len
        Py_ssize_t y_row_stride
        Py_ssize_t q_row_stride
        Py_ssize_t scale_row_stride
        int code
        int static_scale
    ctypedef void (*fn_quant_kernel)(const fn_quant *block) noexcept nogil
    # GroupNorm
    ctypedef struct fn_group:
        const void *x
        void *y
        const void *weight
        const void *bias
        void *mean
        void *rstd
        Py_ssize_t channels, groups, g0, g1, spatial
        Py_ssize_t x_c_stride, x_s_stride, y_c_stride, y_s_stride
        double eps
        int stream_stores
        Py_ssize_t samples, x_n_stride, y_n_stride
    ctypedef void (*fn_group_kernel)(const fn_group *block) noexcept nogil
    ctypedef struct fn_group_bwd:
        const void *x
        const void *dy
        void *dx
        const void *weight
        const void *rstd
        double *dweight
        double *dbias
        Py_ssize_t channels, groups, g0, g1, spatial
        Py_ssize_t x_c_stride, x_s_stride, dy_c_stride, dy_s_stride, dx_c_stride, dx_s_stride
        double eps
        int stream_stores
    ctypedef void (*fn_group_bwd_kernel)(const fn_group_bwd *block) noexcept nogil
    ctypedef struct fn_kernel_table:
        const char *isa
        fn_rows_kernel layer_norm[FN_N_DTYPES]
        fn_rows_kernel rms_norm[FN_N_DTYPES]
        fn_rows_bwd_kernel layer_norm_backward[FN_N_DTYPES]
        fn_rows_bwd_kernel rms_norm_backward[FN_N_DTYPES]
        fn_rows_kernel layer_norm_half_to_f32[2]
        fn_rows_kernel rms_norm_half_to_f32[2]
        fn_quant_kernel quantize[2]
        fn_group_kernel group_norm[FN_N_DTYPES]
        fn_group_bwd_kernel group_norm_backward[FN_N_DTYPES]
    const fn_kernel_table fn_kernels_scalar
    int fn_usable_tables(const fn_kernel_table **tables, int max)
