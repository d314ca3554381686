"""fastnorm on Dask arrays: lazy, blockwise, on the in-memory core.

fastnorm/_api.py routes a call here when any of its arrays (x, residual, dy,
weight, bias, mean, rstd) is a Dask collection: the core raises DaskOperand
rather than compute one.  This module holds no arithmetic of its own: every
argument is checked at call time by the core's own rules, which build the
call's specification (fastnorm/_spec.pxi) on zero-strided stand-ins of the
arrays' shapes and dtypes (no memory, nothing computed), and each
block of the result is one call of the same core function on the blocks of
the inputs.  An in-memory x (or residual, dy) is split like the Dask one
next to it; next to Dask parameters or statistics only, along its leading
batch axes into blocks near dask's ``array.chunk-size`` (the rechunking
rule below), so that its blocks still run in parallel.

Importing this module does not import dask: dask is imported only once a
Dask array has been passed in (so it is already imported).

Bit for bit: a block's rows must get the bits the computed array's rows
get.  The kernels' bits depend on the walk a layout takes (contiguous rows,
rows side by side, strided rows), so
- a row must lie in one block, and every axis from the first normalized axis
  on is one chunk (the normalized axes, and for channels-first layouts such
  as axis=1 of NCHW the batch axes after them: a block 1 wide on the
  trailing batch axes would take the strided row walk instead of the side
  by side lanes); only the batch axes before the first normalized axis are
  split.  When x's chunks break the rule it is rechunked, those axes to one
  chunk and the leading batch axes to blocks near dask's
  ``array.chunk-size``, with a PerformanceWarning;
- every block reaches the core laid out as a C-contiguous array would be
  (_in_c_order), since Dask assembles a computed array in C order whatever
  its blocks' layouts (Fortran-order views of a transposed array, the zero
  strides of a broadcast one).
A row's bits do not depend on which rows share its block (the kernels see
to that), so the results equal the in-memory call on the computed arrays.
"""

import numpy as np

from . import _core

__all__ = [
    "is_dask",
    "normalize",
    "add_normalize",
    "normalize_backward",
    "quantize",
    "normalize_quant",
]

# The fan-in of the tree that adds up the backward's per-block float64
# dweight/dbias partial sums (dask.array.reduction's split_every, per axis).
# Fixed, so that the order of the additions is set by the chunks alone.
SPLIT_EVERY = 4

# dask.config key: fastnorm's OpenMP threads inside a Dask task (None: no limit)
THREADS_KEY = "fastnorm.task-threads"
DEFAULT_TASK_THREADS = 1

_NAMES = {
    ("forward", _core.OP_LAYER_NORM): "layer_norm",
    ("forward", _core.OP_RMS_NORM): "rms_norm",
    ("add", _core.OP_LAYER_NORM): "add_layer_norm",
    ("add", _core.OP_RMS_NORM): "add_rms_norm",
    ("backward", _core.OP_LAYER_NORM): "layer_norm_backward",
    ("backward", _core.OP_RMS_NORM): "rms_norm_backward",
    ("quant", _core.OP_LAYER_NORM): "layer_norm_quant",
    ("quant", _core.OP_RMS_NORM): "rms_norm_quant",
    ("add_quant", _core.OP_LAYER_NORM): "add_layer_norm_quant",
    ("add_quant", _core.OP_RMS_NORM): "add_rms_norm_quant",
}


def is_dask(*values):
    """Whether any of values is a Dask collection (duck-typed: dask is not
    imported)."""
    for v in values:
        if v is not None and hasattr(type(v), "__dask_graph__"):
            return True
    return False


# ---- the threads of a task ---------------------------------------------------------

_openmp: list = []  # threadpoolctl's controllers of the OpenMP runtimes, once per process


def _openmp_controllers():
    if not _openmp:
        from threadpoolctl import ThreadpoolController

        _openmp.append(ThreadpoolController().select(user_api="openmp").lib_controllers)
    return _openmp[0]


class _TaskThreads:
    """Limit OpenMP to `n` threads on the calling thread (OpenMP's thread
    count is per calling thread, so other Dask worker threads are not
    affected) for the duration of a block, then restore it."""

    def __init__(self, n):
        self.n = n
        self.previous = None

    def __enter__(self):
        if self.n is not None:
            controllers = _openmp_controllers()
            self.previous = [c.get_num_threads() for c in controllers]
            for c in controllers:
                c.set_num_threads(self.n)

    def __exit__(self, *exc):
        if self.previous is not None:
            for c, n in zip(_openmp_controllers(), self.previous):
                c.set_num_threads(n)


def _task_threads():
    """The thread limit baked into the graph at call time (the client's
    dask config, not the worker's)."""
    import dask

    n = dask.config.get(THREADS_KEY, DEFAULT_TASK_THREADS)
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"dask config {THREADS_KEY!r} must be a positive int or None, got {n!r}")
    return n


# ---- the tasks: one core call per block (module level: pickled by reference) ----------


def _in_c_order(block, first):
    """block, or a C-contiguous copy of it when the kernels would not walk
    it as a C-contiguous array of its shape (first: the first normalized
    axis).

    The kernels' last bits depend on the layout they are handed (a row
    whose elements are contiguous, rows side by side, or strided rows take
    different walks), and Dask assembles a computed array in C order,
    whatever its blocks' layouts (Fortran-order views of a transposed
    array, zero strides of a broadcast one, negative ones of a reversed
    one).  Blocks handed over in C order get the bits of the computed
    arrays.  Kept as they are: blocks whose axes from `first` on are
    C-contiguous and whose leading axes each step over all that follows,
    in order, such as Dask's slices of a C-contiguous array: the kernels
    walk them (and the core lays out their outputs) as C-contiguous ones."""
    need = block.itemsize
    for a in range(block.ndim - 1, -1, -1):
        n, stride = block.shape[a], block.strides[a]
        if n == 0:
            return block
        if n == 1:
            continue
        if stride != need and (a >= first or stride < need):
            return np.ascontiguousarray(block)
        need = stride * n
    return block


def _forward_block(x, weight, bias, *, op, eps, axes, return_stats, threads, out_dtype=None):
    x = _in_c_order(x, axes[0])
    with _TaskThreads(threads):
        return _core.normalize(op, x, None, weight, bias, eps, axes, None, return_stats, out_dtype)


def _add_block(x, residual, weight, bias, *, op, eps, axes, return_stats, threads, out_dtype=None):
    x, residual = _in_c_order(x, axes[0]), _in_c_order(residual, axes[0])
    with _TaskThreads(threads):
        return _core.add_normalize(
            op, x, residual, None, weight, bias, eps, axes, None, None, return_stats, out_dtype
        )


def _backward_block(
    dy, x, weight, rstd, *, op, eps, axes, bias_shape, x_shape, per_sample, threads
):
    dy, x = _in_c_order(dy, axes[0]), _in_c_order(x, axes[0])
    bias = None
    if bias_shape is not None:  # only its shape is used: this block's part of it
        if len(bias_shape) == x.ndim:
            bias_shape = tuple(
                n if b == full else 1 for n, b, full in zip(x.shape, bias_shape, x_shape)
            )
        bias = np.broadcast_to(np.float32(0), bias_shape)
    with _TaskThreads(threads):
        return _core.normalize_backward(
            op, dy, x, None, weight, None, rstd, eps, axes, bias, np.float64,
            per_sample=per_sample,
        )  # fmt: skip


def _pick(result, k):
    return result[k]


def _pick_lifted(result, k, ndim):
    """A shared parameter's partial sum with ndim leading axes of size 1
    (the position of its block)."""
    part = result[k]
    return part.reshape((1,) * ndim + part.shape)


# ---- arguments -------------------------------------------------------------------------


def _refuse_out(name, value):
    if value is not None:
        raise TypeError(
            f"{name}= cannot be used with a Dask input: the result is a lazy Dask array. "
            f"Write it where it should go with dask.array.store(result, target) or "
            f"result.to_zarr(url)"
        )


def _dask_array(value, name):
    """value as a Dask array when it is a Dask collection, else None."""
    import dask.array as da

    if not is_dask(value):
        return None
    if not isinstance(value, da.Array):
        raise TypeError(
            f"{name} is a Dask collection of type {type(value).__module__}."
            f"{type(value).__name__}, not a Dask array; convert it with .to_dask_array() "
            "(dask.dataframe) or dask.array.from_delayed"
        )
    _core.refuse_masked(value._meta, name)
    if not isinstance(value._meta, np.ndarray):
        raise TypeError(
            f"{name} is a Dask array of {type(value._meta).__module__}."
            f"{type(value._meta).__name__} blocks; fastnorm runs on NumPy blocks"
        )
    if any(np.isnan(c) for chunks in value.chunks for c in chunks):
        raise ValueError(
            f"{name} has unknown chunk sizes (shape {value.shape}); call "
            f"{name}.compute_chunk_sizes() first"
        )
    return value


def _stand_in(shape, dtype):
    """A read-only array of shape and dtype on one element of memory: the
    core checks its shape and dtype without anything being computed."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def _operand_stand_in(value, name, dtype, in_memory_too=False):
    """What the core checks in place of an operand (dy, residual, weight,
    bias, mean, rstd): a stand-in of its shape in `dtype`, once the core's
    dtype rule has seen its own dtype, for a Dask array (and, with
    in_memory_too, for any other value: the core would convert an operand of
    x's size to x's dtype to check it); None and other values themselves."""
    if value is None:
        return None
    arr = _dask_array(value, name)
    if arr is None:
        if not in_memory_too:
            return value
        return _stand_in(np.shape(_core.real_array(value, name)), dtype)
    _core.real_array(np.zeros(0, arr.dtype), name)
    return _stand_in(arr.shape, dtype)


def _kernel_dtype(op, dtype):
    """The result dtype the core gives an input of dtype (float64 for
    integers), with its TypeErrors for the others."""
    one = np.zeros(1, dtype)
    return _core.normalize(op, one, None, None, None, None, None, None, False).dtype


def _in_memory(value, name):
    """A NumPy operand for da.from_array: refused when masked (as the core
    refuses it), else as numpy.asarray makes it."""
    _core.refuse_masked(value, name)
    return np.asarray(value)


def _template(x, other=None, other_name=None):
    """(the Dask operand whose chunks the blocks follow, its name, x's dtype,
    x's shape) for a call: x when it is a Dask array, else `other` (the
    fused add's residual or the backward's dy) when it is one, else None (x
    and `other` in memory, next to a Dask weight, bias or statistic)."""
    template = _dask_array(x, "x")
    if template is not None:
        return template, "x", template.dtype, template.shape
    x_probe = _in_memory(x, "x")
    return _dask_array(other, other_name), other_name, x_probe.dtype, x_probe.shape


# ---- chunks ------------------------------------------------------------------------------


def _auto_chunks(shape, dtype, axes, previous=None):
    """Chunks that keep every axis from the first normalized axis on whole
    and cut the batch axes before it into blocks near dask's
    ``array.chunk-size``."""
    from dask.array.core import normalize_chunks

    spec = tuple(-1 if a >= axes[0] else "auto" for a in range(len(shape)))
    return normalize_chunks(spec, shape, dtype=dtype, previous_chunks=previous)


def _block_chunks(template, axes, what, name, shape, dtype):
    """The chunks of the blocks: the template's (the Dask operand they
    follow, called `name`), or those it is rechunked to (with a
    PerformanceWarning) when an axis from the first normalized axis on is
    split; with no template (x in memory), _auto_chunks of x's shape and
    dtype."""
    if template is None:
        return _auto_chunks(shape, dtype, axes)
    x = template
    whole = range(axes[0], x.ndim)
    split = [a for a in whole if len(x.chunks[a]) > 1]
    if not split:
        return x.chunks
    import warnings

    import dask.array as da

    chunks = _auto_chunks(x.shape, x.dtype, axes, x.chunks)
    reason = (
        "the normalized axes"
        if axes == tuple(whole)
        else "the normalized axes and the batch axes after the first of them"
    )
    warnings.warn(
        f"fastnorm.{what}: {name} with shape {x.shape} in chunks {x.chunksize} is split along "
        f"axes {tuple(split)}, but {reason} (axes {tuple(whole)}) must be one chunk each, so "
        f"that every block's rows are normalized as in the whole array; rechunking to "
        f"{tuple(max(c) for c in chunks)}. Chunk {name} along axes before axis {axes[0]} only "
        "to avoid this.",
        da.PerformanceWarning,
        stacklevel=4,
    )
    return chunks


def _aligned(value, name, chunks):
    """An operand of x's shape (Dask or NumPy) as a Dask array in chunks."""
    import dask.array as da

    arr = _dask_array(value, name)
    if arr is None:
        return da.from_array(_in_memory(value, name), chunks=chunks)
    return arr if arr.chunks == chunks else arr.rechunk(chunks)


def _stats_chunks(chunks, axes):
    return tuple((1,) if a in axes else c for a, c in enumerate(chunks))


def _param_chunks(shape, chunks):
    """A per-sample parameter's (x's number of dimensions) chunks: x's along
    the axes where it has x's size, one chunk of 1 where it broadcasts."""
    return tuple(c if s == sum(c) and s != 1 else (s,) for s, c in zip(shape, chunks))


def _param_operand(value, name, x, axes, chunks, ind, letters):
    """A weight/bias as a blockwise operand: (array or literal, index).
    Per-sample parameters (x's number of dimensions, not 1 on every batch
    axis) follow x's chunks; shared ones reach every block whole."""
    import dask.array as da

    if value is None:
        return None, None
    arr = _dask_array(value, name)
    shape = np.shape(value) if arr is None else arr.shape
    per_sample = len(shape) == x.ndim and any(shape[a] != 1 for a in range(x.ndim) if a not in axes)
    if per_sample:
        target = _param_chunks(shape, chunks)
        if arr is None:
            return da.from_array(_in_memory(value, name), chunks=target), ind
        return (arr if arr.chunks == target else arr.rechunk(target)), ind
    if arr is None:
        return _in_memory(value, name), None
    whole = arr if arr.numblocks == (1,) * arr.ndim else arr.rechunk(arr.shape)
    return whole, "".join(next(letters) for _ in range(arr.ndim))


def _indices(ndim):
    """blockwise index letters: x's, then a supply of fresh ones."""
    import itertools
    import string

    pool = iter(string.ascii_letters)
    ind = "".join(next(pool) for _ in range(ndim))
    return ind, itertools.chain(pool, (chr(c) for c in itertools.count(0x100)))


def _meta(ndim, dtype):
    return np.empty((0,) * ndim, dtype)


def _outputs(result, name, ind, specs):
    """The arrays of a multi-output blockwise result: specs are (dtype,
    stats) pairs, stats outputs 1 wide on the normalized axes' indices."""
    import dask.array as da

    ndim = len(ind)
    arrays = []
    for k, (dtype, one_at) in enumerate(specs):
        adjust = {ind[a]: 1 for a in one_at}
        arrays.append(
            da.blockwise(
                _pick,
                ind,
                result,
                ind,
                k=k,
                token=f"{name}-{k}",
                adjust_chunks=adjust or None,
                dtype=dtype,
                meta=_meta(ndim, dtype),
            )
        )
    return tuple(arrays)


def _stats_specs(op, cdt, axes):
    return [(cdt, axes), (cdt, axes)] if op == _core.OP_LAYER_NORM else [(cdt, axes)]


# ---- the forward ---------------------------------------------------------------------------


def normalize(op, x, normalized_shape, weight, bias, eps, axis, out, return_stats, dtype=None):
    """layer_norm and rms_norm of a Dask array (the core's normalize)."""
    import dask.array as da

    what = _NAMES["forward", op]
    _refuse_out("out", out)
    template, name, x_dtype, x_shape = _template(x)
    kdt = _kernel_dtype(op, x_dtype)
    cdt = _core.compute_dtype(kdt)
    axes = _core.normalize_call(
        op,
        _stand_in(x_shape, kdt),
        normalized_shape,
        _operand_stand_in(weight, "weight", cdt),
        _operand_stand_in(bias, "bias", cdt),
        eps,
        axis,
        None,
        bool(return_stats),
        dtype,
    ).axes
    eps = _core.resolve_eps(eps, op, kdt)
    chunks = _block_chunks(template, axes, what, name, x_shape, x_dtype)
    x = _aligned(x, "x", chunks)
    ind, letters = _indices(x.ndim)
    w, w_ind = _param_operand(weight, "weight", x, axes, chunks, ind, letters)
    b, b_ind = _param_operand(bias, "bias", x, axes, chunks, ind, letters)
    kwargs = dict(op=op, eps=eps, axes=axes, threads=_task_threads(), out_dtype=dtype)
    if dtype is not None:  # (checked by normalize_call)
        kdt = np.dtype(dtype)
    if not return_stats:
        return da.blockwise(
            _forward_block, ind, x, ind, w, w_ind, b, b_ind, return_stats=False,
            token=what, dtype=kdt, meta=_meta(x.ndim, kdt), concatenate=True, **kwargs,
        )  # fmt: skip
    result = da.blockwise(
        _forward_block, ind, x, ind, w, w_ind, b, b_ind, return_stats=True,
        token=f"{what}-blocks", dtype=object, meta=_meta(x.ndim, object), concatenate=True,
        **kwargs,
    )  # fmt: skip
    return _outputs(result, what, ind, [(kdt, ())] + _stats_specs(op, cdt, axes))


def add_normalize(
    op, x, residual, normalized_shape, weight, bias, eps, axis, out, residual_out, return_stats,
    dtype=None,
):  # fmt: skip
    """add_layer_norm and add_rms_norm with a Dask x or residual."""
    import dask.array as da

    what = _NAMES["add", op]
    _refuse_out("out", out)
    _refuse_out("residual_out", residual_out)
    template, name, x_dtype, x_shape = _template(x, residual, "residual")
    kdt = _kernel_dtype(op, x_dtype)
    cdt = _core.compute_dtype(kdt)
    axes = _core.add_normalize_call(
        op,
        _stand_in(x_shape, kdt),
        _operand_stand_in(residual, "residual", kdt, True),
        normalized_shape,
        _operand_stand_in(weight, "weight", cdt),
        _operand_stand_in(bias, "bias", cdt),
        eps,
        axis,
        None,
        None,
        bool(return_stats),
        dtype,
    ).axes
    eps = _core.resolve_eps(eps, op, kdt)
    chunks = _block_chunks(template, axes, what, name, x_shape, x_dtype)
    x = _aligned(x, "x", chunks)
    residual = _aligned(residual, "residual", chunks)
    ind, letters = _indices(x.ndim)
    w, w_ind = _param_operand(weight, "weight", x, axes, chunks, ind, letters)
    b, b_ind = _param_operand(bias, "bias", x, axes, chunks, ind, letters)
    result = da.blockwise(
        _add_block, ind, x, ind, residual, ind, w, w_ind, b, b_ind, op=op, eps=eps, axes=axes,
        return_stats=bool(return_stats), threads=_task_threads(), out_dtype=dtype,
        token=f"{what}-blocks", dtype=object, meta=_meta(x.ndim, object), concatenate=True,
    )  # fmt: skip
    specs = [(kdt if dtype is None else np.dtype(dtype), ()), (kdt, ())]
    if return_stats:
        specs += _stats_specs(op, cdt, axes)
    return _outputs(result, what, ind, specs)


# ---- the backward --------------------------------------------------------------------------


def _param_grad_sum(result, k, shape, x, ind, letters, dtype, what):
    """A parameter's gradient: each block's float64 partial sum (the core's,
    of the block's part of the parameter), added up over the blocks in a
    fixed tree (dask.array.reduction, SPLIT_EVERY per axis), then rounded to
    dtype.  Per-sample parameters keep x's chunks along the axes where they
    have x's size."""
    import dask.array as da

    ndim = x.ndim
    if len(shape) == ndim:
        grid = tuple(a for a in range(ndim) if shape[a] == 1)
        parts = da.blockwise(
            _pick, ind, result, ind, k=k, token=f"{what}-part{k}",
            adjust_chunks={ind[a]: 1 for a in grid} or None,
            dtype=np.float64, meta=_meta(ndim, np.float64),
        )  # fmt: skip
        keepdims = True
    else:
        extra = "".join(next(letters) for _ in shape)
        parts = da.blockwise(
            _pick_lifted, ind + extra, result, ind, k=k, ndim=ndim, token=f"{what}-part{k}",
            new_axes=dict(zip(extra, shape)), adjust_chunks=dict.fromkeys(ind, 1),
            dtype=np.float64, meta=_meta(ndim + len(shape), np.float64),
        )  # fmt: skip
        grid = tuple(range(ndim))
        keepdims = False
    total = parts.sum(
        axis=grid, split_every=dict.fromkeys(grid, SPLIT_EVERY), keepdims=keepdims, dtype=np.float64
    )
    return total.astype(dtype)


def normalize_backward(op, dy, x, normalized_shape, weight, mean, rstd, eps, axis, bias):
    """layer_norm_backward and rms_norm_backward with a Dask dy or x."""
    import dask.array as da

    what = _NAMES["backward", op]
    template, name, x_dtype, x_shape = _template(x, dy, "dy")
    kdt = _kernel_dtype(op, x_dtype)
    cdt = _core.compute_dtype(kdt)
    bias_stand_in = _operand_stand_in(bias, "bias", cdt)
    call = _core.normalize_backward_call(
        op,
        _operand_stand_in(dy, "dy", kdt, True),
        _stand_in(x_shape, kdt),
        normalized_shape,
        _operand_stand_in(weight, "weight", cdt),
        _operand_stand_in(mean, "mean", cdt, True),
        _operand_stand_in(rstd, "rstd", cdt, True),
        eps,
        axis,
        bias_stand_in,
    )
    axes, per_sample = call.axes, call.per_sample
    eps = _core.resolve_eps(eps, op, kdt)
    chunks = _block_chunks(template, axes, what, name, x_shape, x_dtype)
    x = _aligned(x, "x", chunks)
    dy = _aligned(dy, "dy", chunks)
    ind, letters = _indices(x.ndim)
    w, w_ind = _param_operand(weight, "weight", x, axes, chunks, ind, letters)
    stats_chunks = _stats_chunks(chunks, axes)
    r = None if rstd is None else _aligned(rstd, "rstd", stats_chunks)
    bias_shape = None if bias is None else tuple(np.shape(bias_stand_in))
    result = da.blockwise(
        _backward_block, ind, dy, ind, x, ind, w, w_ind, r, None if r is None else ind,
        op=op, eps=eps, axes=axes, bias_shape=bias_shape, x_shape=x.shape,
        per_sample=per_sample, threads=_task_threads(), token=f"{what}-blocks", dtype=object,
        meta=_meta(x.ndim, object), concatenate=True,
    )  # fmt: skip
    (dx,) = _outputs(result, what, ind, [(kdt, ())])
    dweight = None
    if weight is not None:
        dweight = _param_grad_sum(result, 1, w.shape, x, ind, letters, cdt, what)
    if op == _core.OP_RMS_NORM:
        return dx, dweight
    norm_shape = tuple(x.shape[a] for a in axes)
    db_shape = norm_shape if bias_shape is None else bias_shape
    dbias = _param_grad_sum(result, 2, db_shape, x, ind, letters, cdt, what)
    return dx, dweight, dbias


# ---- quantized outputs -----------------------------------------------------------
# quantize and the quantized norms, blockwise as the float forward: every
# axis from the first normalized axis on whole in a block, one core call per
# block.  A block's scales are the core's (its batch shape, + (n_groups,)
# when grouped); they travel as x's number of axes, 1 on the normalized
# ones, plus a trailing axis of n_groups (1 when not grouped), which is
# dropped at the end.


def _keepdims_scales(scales, block_shape, axes, n_groups):
    """A block's scales (its batch shape, + (n_groups,) when grouped) as
    the block's shape with the normalized axes 1, + (n_groups,)."""
    shape = tuple(1 if a in axes else n for a, n in enumerate(block_shape)) + (n_groups,)
    return scales.reshape(shape)


def _block_static_scale(scale, block_scale, axes, grouped):
    """A block's static scales for the core: its part of the caller's scale
    array (keepdims layout, as _keepdims_scales), reshaped to the block's
    scales' shape, or the one number given for every block."""
    if block_scale is None:
        return scale
    shape = tuple(n for a, n in enumerate(block_scale.shape[:-1]) if a not in axes)
    return block_scale.reshape(shape + ((block_scale.shape[-1],) if grouped else ()))


def _quantize_block(y, block_scale, *, code_dtype, axes, group_size, scale, n_groups, threads):
    y = _in_c_order(y, axes[0])
    scale = _block_static_scale(scale, block_scale, axes, group_size is not None)
    with _TaskThreads(threads):
        q, s = _core.quantize(y, code_dtype, axes, group_size, scale, None, None)
    return q, _keepdims_scales(s, y.shape, axes, n_groups)


def _norm_quant_block(
    x, residual, weight, bias, block_scale, *, op, eps, axes, code_dtype, group_size, scale,
    n_groups, threads,
):  # fmt: skip
    x = _in_c_order(x, axes[0])
    if residual is not None:
        residual = _in_c_order(residual, axes[0])
    scale = _block_static_scale(scale, block_scale, axes, group_size is not None)
    with _TaskThreads(threads):
        result = _core.normalize_quant(
            op, x, residual, None, weight, bias, eps, axes, code_dtype, group_size, scale, None,
            None, None,
        )  # fmt: skip
    return (result[0], _keepdims_scales(result[1], x.shape, axes, n_groups)) + result[2:]


def _refuse_dask_scale(scale):
    """Static scales are checked when the function is called, in memory: a
    Dask one is refused (with a NumPy x too, whose call comes here because
    of it), never computed behind the caller's back."""
    if scale is not None and _dask_array(scale, "scale") is not None:
        raise TypeError(
            "scale is a Dask array: pass static scales as a number or a NumPy array (they are "
            "checked when the function is called); compute it first"
        )


def _static_scale_operand(scale, scales32, x_shape, axes, chunks, n_groups, letters, ind):
    """The static scale as blockwise takes it: (the number for every block,
    None, None) for a number, else (None, a Dask array of the float32
    scales in the keepdims layout chunked like the blocks, its index)."""
    import dask.array as da

    if scale is None:
        return None, None, None
    if np.ndim(scale) == 0:
        return scale, None, None
    keep = _keepdims_scales(scales32, x_shape, axes, n_groups)
    extra = next(letters)
    part = da.from_array(keep, chunks=_stats_chunks(chunks, axes) + ((n_groups,),))
    return None, part, ind + extra


def _quant_outputs(result, what, ind, letters, axes, qdt, n_groups, grouped, h_dtype=None):
    """(q, scale[, h]) of a blockwise quantization whose blocks return
    (q, keepdims scales[, h])."""
    import dask.array as da

    ndim = len(ind)
    q = da.blockwise(
        _pick, ind, result, ind, k=0, token=f"{what}-0", dtype=qdt, meta=_meta(ndim, qdt)
    )
    extra = next(letters)
    s = da.blockwise(
        _pick, ind + extra, result, ind, k=1, token=f"{what}-1", new_axes={extra: n_groups},
        adjust_chunks={ind[a]: 1 for a in axes}, dtype=np.float32,
        meta=_meta(ndim + 1, np.float32),
    )  # fmt: skip
    s = s[tuple(0 if a in axes else slice(None) for a in range(ndim)) + (slice(None),)]
    if not grouped:
        s = s[..., 0]
    if h_dtype is None:
        return q, s
    h = da.blockwise(
        _pick, ind, result, ind, k=2, token=f"{what}-2", dtype=h_dtype, meta=_meta(ndim, h_dtype)
    )
    return q, s, h


def quantize(y, dtype, axis, group_size, scale, out, scale_out):
    """fastnorm.quantize of a Dask array."""
    import dask.array as da

    what = "quantize"
    _refuse_dask_scale(scale)
    _refuse_out("out", out)
    _refuse_out("scale_out", scale_out)
    template, name, y_dtype, y_shape = _template(y)
    kdt = _kernel_dtype(_core.OP_RMS_NORM, y_dtype)
    stand_in = _stand_in(y_shape, kdt)
    axes = _core.normalize_call(
        _core.OP_RMS_NORM, stand_in, None, None, None, None, axis, None, False
    ).axes
    qdt, scale_shape, scales32 = _core.quantize_call(stand_in, axes, dtype, group_size, scale)
    grouped = group_size is not None
    n_groups = scale_shape[-1] if grouped else 1
    chunks = _block_chunks(template, axes, what, name, y_shape, y_dtype)
    y = _aligned(y, "y", chunks)
    ind, letters = _indices(y.ndim)
    number, part, part_ind = _static_scale_operand(
        scale, scales32, y.shape, axes, chunks, n_groups, letters, ind
    )
    result = da.blockwise(
        _quantize_block, ind, y, ind, part, part_ind, code_dtype=qdt, axes=axes,
        group_size=group_size, scale=number, n_groups=n_groups, threads=_task_threads(),
        token=f"{what}-blocks", dtype=object, meta=_meta(y.ndim, object), concatenate=True,
    )  # fmt: skip
    return _quant_outputs(result, what, ind, letters, axes, qdt, n_groups, grouped)


def normalize_quant(
    op, x, residual, normalized_shape, weight, bias, eps, axis, dtype, group_size, scale, out,
    scale_out, residual_out,
):  # fmt: skip
    """The quantized norms (and their add_ forms, with a residual) with a
    Dask operand: (q, scale[, h])."""
    import dask.array as da

    add = residual is not None
    what = _NAMES["add_quant" if add else "quant", op]
    _refuse_dask_scale(scale)
    _refuse_out("out", out)
    _refuse_out("scale_out", scale_out)
    _refuse_out("residual_out", residual_out)
    template, name, x_dtype, x_shape = _template(x, residual, "residual")
    kdt = _kernel_dtype(op, x_dtype)
    cdt = _core.compute_dtype(kdt)
    stand_in = _stand_in(x_shape, kdt)
    weight_in, bias_in = (
        _operand_stand_in(weight, "weight", cdt),
        _operand_stand_in(bias, "bias", cdt),
    )
    if add:
        call = _core.add_normalize_call(
            op, stand_in, _operand_stand_in(residual, "residual", kdt, True), normalized_shape,
            weight_in, bias_in, eps, axis, None, None, False, cdt,
        )  # fmt: skip
    else:
        call = _core.normalize_call(
            op, stand_in, normalized_shape, weight_in, bias_in, eps, axis, None, False, cdt
        )
    axes = call.axes
    qdt, scale_shape, scales32 = _core.quantize_call(stand_in, axes, dtype, group_size, scale)
    grouped = group_size is not None
    n_groups = scale_shape[-1] if grouped else 1
    eps = _core.resolve_eps(eps, op, kdt)
    chunks = _block_chunks(template, axes, what, name, x_shape, x_dtype)
    x = _aligned(x, "x", chunks)
    r = _aligned(residual, "residual", chunks) if add else None
    ind, letters = _indices(x.ndim)
    w, w_ind = _param_operand(weight, "weight", x, axes, chunks, ind, letters)
    b, b_ind = _param_operand(bias, "bias", x, axes, chunks, ind, letters)
    number, part, part_ind = _static_scale_operand(
        scale, scales32, x.shape, axes, chunks, n_groups, letters, ind
    )
    result = da.blockwise(
        _norm_quant_block, ind, x, ind, r, None if r is None else ind, w, w_ind, b, b_ind,
        part, part_ind, op=op, eps=eps, axes=axes, code_dtype=qdt, group_size=group_size,
        scale=number, n_groups=n_groups, threads=_task_threads(), token=f"{what}-blocks",
        dtype=object, meta=_meta(x.ndim, object), concatenate=True,
    )  # fmt: skip
    return _quant_outputs(
        result, what, ind, letters, axes, qdt, n_groups, grouped, kdt if add else None
    )
