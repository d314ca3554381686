"""fastnorm on Dask arrays (fastnorm/_dask.py): every public function returns
a lazy Dask array whose blocks are the in-memory core's results, equal bit
for bit to fastnorm in memory on the computed arrays (in C order), whatever
the blocks' layouts; any Dask argument makes the result lazy; arguments are
checked at call time with the in-memory call's messages; the backward's
parameter gradients are the same bits on every scheduler, a real
multi-process cluster included."""

import os
import pickle
import subprocess
import sys
import warnings

import ml_dtypes
import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

import fastnorm  # noqa: E402
from fastnorm import _core  # noqa: E402
from fastnorm import _dask as fd  # noqa: E402

SCHEDULERS = ["synchronous", "threads"]
FUNCTIONS = list(fastnorm._api.__all__)  # every public function


def compute(*arrays, scheduler="synchronous"):
    out = dask.compute(*arrays, scheduler=scheduler)
    return out if len(arrays) > 1 else out[0]


def inputs(rng, shape=(48, 3, 40), dtype=np.float32):
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return x, dy


def assert_all_equal(got, want):
    """Bitwise, element for element, of (tuples of) arrays; dtype too."""
    if not isinstance(want, tuple):
        got, want = (got,), (want,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if w is None:
            assert g is None
            continue
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(
            np.asarray(g).view(np.uint8), np.asarray(w).view(np.uint8), strict=True
        )


# ---- dispatch and laziness ---------------------------------------------------------


@pytest.mark.any_isa
def test_import_fastnorm_does_not_import_dask():
    code = "import sys, fastnorm; print('dask' in sys.modules, 'dask.array' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr


@pytest.mark.any_isa
def test_numpy_calls_never_reach_the_dask_layer(rng, monkeypatch):
    def boom(*args):
        raise AssertionError("the Dask layer was consulted for a NumPy call")

    monkeypatch.setattr(fd, "is_dask", boom)
    x, dy = inputs(rng)
    fastnorm.layer_norm(x)
    fastnorm.add_rms_norm(x, dy)
    fastnorm.rms_norm_backward(dy, x)


def call(name, x, dy, **kwargs):
    fn = getattr(fastnorm, name)
    if name.endswith("backward"):
        return fn(dy, x, **kwargs)
    if name.startswith("add_"):
        return fn(x, dy, **kwargs)
    return fn(x, **kwargs)


@pytest.mark.any_isa
@pytest.mark.parametrize("name", FUNCTIONS)
def test_every_function_returns_lazy_dask_arrays_of_the_chunks_and_dtype(rng, name):
    x, dy = inputs(rng)
    dx, ddy = da.from_array(x, chunks=(16, 3, 40)), da.from_array(dy, chunks=(16, 3, 40))
    w = np.ones(40, np.float32)
    result = call(name, dx, ddy, weight=w)
    results = result if isinstance(result, tuple) else (result,)
    assert all(isinstance(r, da.Array) for r in results)
    assert results[0].chunks == dx.chunks and results[0].dtype == np.float32
    assert_all_equal(compute(*results), call(name, x, dy, weight=w))


@pytest.mark.any_isa
@pytest.mark.parametrize("name", FUNCTIONS)
def test_nothing_is_computed_until_compute(rng, name):
    x, dy = inputs(rng)
    reads = []

    def counted(block):
        reads.append(block.shape)
        return block

    dx = da.from_array(x, chunks=(8, 3, 40)).map_blocks(counted, dtype=x.dtype)
    ddy = da.from_array(dy, chunks=(8, 3, 40)).map_blocks(counted, dtype=dy.dtype)
    kwargs = {"return_stats": True} if not name.endswith("backward") else {}
    reads.clear()  # (map_blocks ran `counted` on empty meta arrays)
    result = call(name, dx, ddy, weight=np.ones(40, np.float32), **kwargs)
    assert reads == []
    compute(*result)
    assert len(reads) == (12 if name.endswith("backward") or name.startswith("add_") else 6)


@pytest.mark.any_isa
@pytest.mark.parametrize("name", FUNCTIONS)
def test_checking_a_call_allocates_no_array_of_its_size(name):
    """The call is checked at call time on stand-ins of the arrays' shapes
    (the core's call specification, never run): nothing of x's size, nor
    of its statistics' size, is allocated, whatever the dtype."""
    import tracemalloc

    shape = (1 << 22, 16)  # 256 MiB of float32, 16 MiB of statistics
    x = da.zeros(shape, np.float16, chunks=(1 << 20, 16))
    stats = da.ones((shape[0], 1), np.float32, chunks=(1 << 20, 1))
    kwargs = {}
    if name.endswith("backward"):
        kwargs = {"rstd": stats} | ({"mean": stats} if name.startswith("layer") else {})
    tracemalloc.start()
    try:
        call(name, x, x, weight=np.ones(16, np.float32), **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak


@pytest.mark.any_isa
def test_graph_is_one_kernel_task_per_block(rng):
    x, _ = inputs(rng)
    dx = da.from_array(x, chunks=(8, 3, 40))
    for y in (fastnorm.layer_norm(dx), fastnorm.layer_norm(dx, return_stats=True)[2]):
        graph = dict(y.__dask_graph__())
        kernel_tasks = [k for k in graph if isinstance(k, tuple) and k[0].startswith("layer_norm")]
        runs = [k for k in kernel_tasks if "-blocks" in k[0] or k[0].count("-") == 1]
        assert len(runs) == dx.npartitions == 6, kernel_tasks


@pytest.mark.any_isa
def test_functions_and_tasks_pickle_by_reference():
    for name in FUNCTIONS:
        fn = getattr(fastnorm, name)
        data = pickle.dumps(fn)
        assert pickle.loads(data) is fn
        assert len(data) < 200 and b"fastnorm._api" in data
    for task in (fd._forward_block, fd._add_block, fd._backward_block, fd._pick):
        data = pickle.dumps(task)
        assert pickle.loads(data) is task and b"fastnorm._dask" in data


# ---- bit for bit the in-memory result ----------------------------------------------------

DTYPES = [np.float32, np.float64, np.float16, ml_dtypes.bfloat16, np.int32]


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_forward_equals_in_memory_bitwise(rng, scheduler, dtype):
    x = (rng.standard_normal((50, 2, 64)) * 4).astype(dtype)
    w, b = rng.standard_normal(64).astype(np.float32), rng.standard_normal(64).astype(np.float32)
    dx = da.from_array(x, chunks=(7, 1, 64))
    for kwargs in ({}, {"weight": w, "bias": b}, {"weight": da.from_array(w), "bias": b}):
        for stats in (False, True):
            got = fastnorm.layer_norm(dx, return_stats=stats, **kwargs)
            want = fastnorm.layer_norm(
                x, return_stats=stats, **{k: np.asarray(v) for k, v in kwargs.items()}
            )
            assert_all_equal(
                compute(*(got if stats else (got,)), scheduler=scheduler)
                if stats
                else compute(got, scheduler=scheduler),
                want,
            )
    got = fastnorm.rms_norm(dx, weight=w, eps=1e-6, return_stats=True)
    assert_all_equal(
        compute(*got, scheduler=scheduler),
        fastnorm.rms_norm(x, weight=w, eps=1e-6, return_stats=True),
    )


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("op", ["add_layer_norm", "add_rms_norm"])
def test_fused_add_equals_in_memory_bitwise(rng, scheduler, op):
    x, r = inputs(rng, (40, 5, 96))
    w = rng.standard_normal(96).astype(np.float32)
    fn = getattr(fastnorm, op)
    want = fn(x, r, weight=w, return_stats=True)
    chunks = (9, 2, 96)
    for xs, rs in [
        (da.from_array(x, chunks=chunks), da.from_array(r, chunks=chunks)),
        (x, da.from_array(r, chunks=chunks)),  # a NumPy x follows the Dask residual
        (da.from_array(x, chunks=chunks), r.astype(np.float64)),  # residual in x's dtype
    ]:
        got = fn(xs, rs, weight=w, return_stats=True)
        assert got[0].chunks == da.from_array(x, chunks=chunks).chunks
        assert_all_equal(compute(*got, scheduler=scheduler), want)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_backward_dx_equals_in_memory_bitwise(rng, scheduler, op):
    x, dy = inputs(rng, (60, 4, 80))
    w = rng.standard_normal(80).astype(np.float32)
    fwd = getattr(fastnorm, op)(x, weight=w, return_stats=True)
    bwd = getattr(fastnorm, f"{op}_backward")
    stats = {"mean": fwd[1], "rstd": fwd[2]} if op == "layer_norm" else {"rstd": fwd[1]}
    for given in ({}, stats):
        want = bwd(dy, x, weight=w, **given)
        ddx = da.from_array(x, chunks=(13, 4, 80))
        got = bwd(da.from_array(dy, chunks=(20, 2, 80)), ddx, weight=w, **given)
        assert got[0].chunks == ddx.chunks
        res = compute(*got, scheduler=scheduler)
        assert_all_equal(res[0], want[0])
        for g, r in zip(res[1:], want[1:]):  # float64 sums in another order than in memory
            assert g.dtype == r.dtype == np.float32 and g.shape == r.shape
            np.testing.assert_allclose(g, r, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_channels_first_blocks_keep_the_trailing_batch_axes_whole(rng, scheduler):
    """axis=1 of (N, C, W): a block 1 wide along W would take the strided
    row walk instead of the whole array's side-by-side lanes (other last
    bits), so W is merged into one chunk, with a PerformanceWarning."""
    x = (rng.standard_normal((8, 300, 70)) * 3 + 5).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx = da.from_array(x, chunks=(3, 300, 1))
    with pytest.warns(da.PerformanceWarning, match=r"axes \(2,\)"):
        y = fastnorm.layer_norm(dx, axis=1)
    assert y.chunks[2] == (70,) and y.chunks[1] == (300,)
    assert_all_equal(compute(y, scheduler=scheduler), fastnorm.layer_norm(x, axis=1))
    with pytest.warns(da.PerformanceWarning):
        g = fastnorm.layer_norm_backward(da.from_array(dy, chunks=(3, 300, 1)), dx, axis=1)
    assert_all_equal(
        compute(g[0], scheduler=scheduler), fastnorm.layer_norm_backward(dy, x, axis=1)[0]
    )


@pytest.mark.any_isa
def test_split_normalized_axes_are_rechunked_with_a_performance_warning(rng):
    x, _ = inputs(rng, (64, 4, 96))
    dx = da.from_array(x, chunks=(16, 2, 32))
    with pytest.warns(da.PerformanceWarning, match=r"split along axes \(1, 2\)") as record:
        y = fastnorm.rms_norm(dx, normalized_shape=(4, 96))
    assert record[0].filename == __file__  # points at the caller
    assert y.chunks[1:] == ((4,), (96,))
    assert_all_equal(compute(y), fastnorm.rms_norm(x, normalized_shape=(4, 96)))
    big = da.zeros((1 << 16, 1024), chunks=(1024, 256), dtype=np.float32)
    with pytest.warns(da.PerformanceWarning):
        y = fastnorm.layer_norm(big)
    limit = dask.utils.parse_bytes(dask.config.get("array.chunk-size"))
    assert y.chunks[1] == (1024,) and 0.25 * limit <= y.chunksize[0] * 1024 * 4 <= limit


@pytest.mark.any_isa
def test_chunks_that_fit_are_kept_and_warn_nothing(rng):
    x, dy = inputs(rng)
    dx = da.from_array(x, chunks=(5, 3, 40))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fastnorm.layer_norm(dx).chunks == dx.chunks
        assert fastnorm.layer_norm(dx, axis=1).chunks == dx.chunks
        assert fastnorm.add_layer_norm(dx, dy)[1].chunks == dx.chunks
        # another operand's chunks follow x's, silently
        assert (
            fastnorm.rms_norm_backward(da.from_array(dy, chunks=(48, 1, 40)), dx)[0].chunks
            == dx.chunks
        )


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_per_sample_parameters_follow_the_batch_chunks(rng, scheduler):
    x, dy = inputs(rng, (6, 10, 64))
    w = rng.standard_normal((6, 1, 64)).astype(np.float32)
    b = rng.standard_normal((6, 1, 64)).astype(np.float32)
    dx = da.from_array(x, chunks=(2, 5, 64))
    for wd, bd in ((w, b), (da.from_array(w, chunks=(3, 1, 64)), da.from_array(b))):
        y = fastnorm.layer_norm(dx, weight=wd, bias=bd)
        assert_all_equal(compute(y, scheduler=scheduler), fastnorm.layer_norm(x, weight=w, bias=b))
    got = fastnorm.layer_norm_backward(dy, dx, weight=w, bias=b)
    want = fastnorm.layer_norm_backward(dy, x, weight=w, bias=b)
    assert got[1].shape == w.shape and got[1].chunks == ((2, 2, 2), (1,), (64,))
    res = compute(*got, scheduler=scheduler)
    assert_all_equal(res[0], want[0])
    for g, r in zip(res[1:], want[1:]):
        np.testing.assert_allclose(g, r, rtol=2e-6, atol=2e-6)


# ---- the reference: the in-memory call on the computed arguments ----------------------


def c_ordered(value):
    """An argument as the reference call takes it: a Dask array computed (Dask
    assembles it in C order, which the README's promise names), a NumPy
    array in C order."""
    if isinstance(value, da.Array):
        value = compute(value)
        assert value.flags.c_contiguous
        return value
    return np.ascontiguousarray(value) if isinstance(value, np.ndarray) else value


def assert_lazy_equals_computed(name, x, dy, scheduler="synchronous", **kwargs):
    """The lazy call's results (dx only for a backward: its parameter sums
    are added in another order) bitwise those of the in-memory call on the
    computed arguments."""
    got = call(name, x, dy, **kwargs)
    got = got if isinstance(got, tuple) else (got,)
    assert all(isinstance(g, da.Array) for g in got if g is not None)
    want = call(name, c_ordered(x), c_ordered(dy), **{k: c_ordered(v) for k, v in kwargs.items()})
    want = want if isinstance(want, tuple) else (want,)
    n = 1 if name.endswith("backward") else len(want)
    assert_all_equal(dask.compute(*got[:n], scheduler=scheduler), want[:n])


# ---- a row's bits do not depend on the rows that share its block --------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_a_nan_or_extreme_row_leaves_the_dx_of_its_neighbours_as_in_memory(rng, op, dtype):
    """The SIMD backward sent every block of 8 rows holding a NaN row, or a
    row whose rstd does not fit the compute type, to the portable kernel
    whole; Dask's blocks group the rows otherwise, so the rows next to such
    a row got other bits than in memory.  Such rows now go alone."""
    x, dy = inputs(rng, (40, 64), dtype)
    x[12] = np.nan
    x[29] = rng.standard_normal(64) * (1e-41 if dtype == np.float32 else 1e-315)
    chunks = (5, 64)
    for eps in (0.0, None):
        assert_lazy_equals_computed(
            f"{op}_backward",
            da.from_array(x, chunks=chunks),
            da.from_array(dy, chunks=chunks),
            eps=eps,
        )


@pytest.mark.skipif(not _core.openmp_enabled, reason="needs an OpenMP build")
@pytest.mark.parametrize("extreme", ["one row", "every other row"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_a_row_of_extreme_scale_leaves_its_lane_neighbours_as_in_memory(rng, dtype, extreme):
    """Channels-first rows are normalized side by side in tiles, which the
    thread count cuts; a tile holding a row whose scale does not fit the
    compute type went to the portable kernel whole, so its neighbours' bits
    depended on the tiling: Dask's one-thread tasks and a two-thread call
    in memory disagreed.  Such rows now go alone, the runs between them as
    tiles of their own."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x = (rng.standard_normal((1, 64, 1500)) + 4).astype(dtype)
    rows = slice(760, 761) if extreme == "one row" else slice(1, None, 2)
    tiny = rng.standard_normal(x[0, :, rows].shape) * (1e-41 if dtype == np.float32 else 1e-315)
    x[0, :, rows] = tiny
    with threadpoolctl.threadpool_limits(limits=2, user_api="openmp"):
        want = fastnorm.layer_norm(x, axis=1, eps=0.0, return_stats=True)
        assert _core.last_num_threads() == 2
    got = fastnorm.layer_norm(da.from_array(x), axis=1, eps=0.0, return_stats=True)
    assert_all_equal(dask.compute(*got, scheduler="synchronous"), want)


# ---- any block layout: the bits of the computed arrays ------------------------------------


@pytest.mark.parametrize("name", FUNCTIONS)
def test_transposed_array_gives_the_bits_of_its_computed_array(rng, name):
    """The blocks of a transposed Dask array are Fortran-order views, which
    the kernels walk otherwise than the C-order computed array (rows side
    by side, or strided rows, for rows one by one): last bits up to 1.4e-6
    apart in float32, before the blocks were handed over in C order."""
    X = rng.standard_normal((256, 300)).astype(np.float32)
    DY = rng.standard_normal((256, 300)).astype(np.float32)
    x, dy = da.from_array(X, chunks=(300, 64)).T, da.from_array(DY, chunks=(300, 64)).T
    w = rng.standard_normal(256).astype(np.float32)
    stats = {} if name.endswith("backward") else {"return_stats": True}
    assert_lazy_equals_computed(name, x, dy, weight=w, **stats)


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_broadcast_dy_gives_the_bits_of_its_computed_array(rng, op):
    """da.ones has zero-stride blocks, which the backward walked with the
    portable kernel where the computed (C-order) dy takes the SIMD rows."""
    x, _ = inputs(rng, (64, 3, 80))
    dy = da.ones(x.shape, chunks=(16, 3, 80), dtype=np.float32)
    assert_lazy_equals_computed(f"{op}_backward", da.from_array(x, chunks=(16, 3, 80)), dy)
    assert_lazy_equals_computed(f"{op}_backward", x, dy)  # a NumPy x next to it


def block_layouts(values, chunks):
    """Dask arrays of `values` whose blocks are laid out otherwise than C
    order, by name."""
    nd = values.ndim
    flip = (slice(None),) * (nd - 1) + (slice(None, None, -1),)
    spaced = np.zeros(values.shape[:-1] + (2 * values.shape[-1],), values.dtype)
    spaced[..., ::2] = values
    perm = tuple(reversed(range(nd)))
    return {
        "fortran blocks": da.from_array(values, chunks=chunks).map_blocks(
            np.asfortranarray, dtype=values.dtype
        ),
        "transposed": da.from_array(
            np.ascontiguousarray(values.transpose(perm)), chunks=tuple(reversed(chunks))
        ).transpose(perm),
        "reversed": da.from_array(np.ascontiguousarray(values[flip]), chunks=chunks)[flip],
        "strided": da.from_array(spaced, chunks=chunks[:-1] + (2 * chunks[-1],))[..., ::2],
        "broadcast": da.broadcast_to(
            da.from_array(values[:1], chunks=(1,) + chunks[1:]), values.shape, chunks=chunks
        ),
    }


LAYOUTS = ["fortran blocks", "transposed", "reversed", "strided", "broadcast"]


@pytest.mark.parametrize("dtype", DTYPES[:4], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_block_layout_gives_the_bits_of_the_computed_arrays(rng, layout, dtype):
    """Blocks in any layout (Fortran order, negative, doubled or zero
    strides) reach the kernels as C-order ones would: every function, the
    last axis and channels-first, x and the other operand (residual, dy)
    laid out alike, or only one of them."""
    shape, chunks = (12, 24, 40), (5, 24, 40)
    x_values = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    other_values = rng.standard_normal(shape).astype(dtype)
    if layout == "broadcast":
        x_values = np.ascontiguousarray(np.broadcast_to(x_values[:1], shape))
        other_values = np.ascontiguousarray(np.broadcast_to(other_values[:1], shape))
    x = block_layouts(x_values, chunks)[layout]
    other = block_layouts(other_values, chunks)[layout]
    x_c, other_c = da.from_array(x_values, chunks=chunks), da.from_array(other_values, chunks)
    for name in FUNCTIONS:
        for axis in (-1, 1):
            w = rng.standard_normal(shape[axis]).astype(_core.compute_dtype(dtype))
            stats = {} if name.endswith("backward") else {"return_stats": True}
            for xs, others in ((x, other), (x, other_c), (x_c, other)):
                assert_lazy_equals_computed(name, xs, others, weight=w, axis=axis, **stats)


@pytest.mark.any_isa
def test_blocks_laid_out_as_c_order_slices_are_not_copied(rng):
    """Dask's slices of a C-order array (along the batch axes before the
    first normalized axis) are walked as C-contiguous arrays: handed over
    as they are; anything else is copied to C order."""
    x = rng.standard_normal((8, 6, 40))
    for block, first in [(x, 2), (x[2:5], 2), (x[:, 1:4], 2), (x[::2], 1), (x[:, ::2], 2)]:
        assert fd._in_c_order(block, first) is block
    for block, first in [
        (np.asfortranarray(x), 2),
        (x[..., ::2], 2),
        (x[:, ::2], 1),
        (x[::-1], 2),
        (np.broadcast_to(x[:1], x.shape), 2),
        (x.transpose(1, 0, 2), 2),
    ]:
        copy = fd._in_c_order(block, first)
        assert copy.flags.c_contiguous and np.array_equal(copy, block)


@pytest.mark.parametrize("n", [8, 40])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_blocks_one_sample_wide_keep_the_per_sample_backward_of_the_whole(rng, op, dtype, n):
    """A per-sample weight or bias (B, 1, D) has, in a block one sample wide,
    the shape of a shared one, (1, 1, D): the block took the shared weight's
    backward, whose dx bits differ (g = dy * w formed in the kernel rather
    than rounded first; short rows in float64), unless told the whole
    array's rule."""
    x, dy = inputs(rng, (6, 5, n), dtype)
    w = rng.standard_normal((6, 1, n)).astype(dtype)
    chunks = (1, 5, n)
    params = [{"weight": w}]
    if op == "layer_norm":
        params.append({"weight": w[0, 0], "bias": w})
    for kw in params:
        for lazy_w in (False, True):
            if lazy_w:
                kw = {k: da.from_array(v) for k, v in kw.items()}
            assert_lazy_equals_computed(
                f"{op}_backward",
                da.from_array(x, chunks=chunks),
                da.from_array(dy, chunks=chunks),
                **kw,
            )


# ---- any Dask argument makes the result lazy -------------------------------------------


@pytest.mark.parametrize("name", FUNCTIONS)
def test_a_dask_parameter_next_to_numpy_arrays_makes_the_result_lazy(rng, name):
    """Dask's own convention (numpy.add of a NumPy and a Dask array is a Dask
    array): a Dask weight, bias or statistic next to NumPy x (and dy,
    residual) gives lazy results, computed only on compute(), with the bits
    of the in-memory call on the computed arguments."""
    x, dy = inputs(rng)
    w = rng.standard_normal(40).astype(np.float32)
    reads = []

    def counted(block):
        reads.append(block.shape)
        return block

    lazy_w = da.from_array(w).map_blocks(counted, dtype=w.dtype)
    reads.clear()  # (map_blocks ran `counted` on an empty meta array)
    kwargs = [{"weight": lazy_w}]
    if name in ("layer_norm", "add_layer_norm", "layer_norm_backward"):
        kwargs.append({"weight": w, "bias": da.from_array(w)})
    if name.endswith("backward"):
        forward = getattr(fastnorm, name[: -len("_backward")])(x, return_stats=True)
        kwargs.append({"weight": w, "rstd": da.from_array(forward[-1])})
    for kw in kwargs:
        call(name, x, dy, **kw)
        assert reads == []  # nothing computed yet
        assert_lazy_equals_computed(name, x, dy, **kw)
        reads.clear()


@pytest.mark.any_isa
def test_numpy_x_next_to_a_dask_weight_is_split_along_its_leading_batch_axes(rng):
    x = rng.standard_normal((4096, 2, 32)).astype(np.float32)  # 1 MiB
    with dask.config.set({"array.chunk-size": "128KiB"}):
        y = fastnorm.layer_norm(x, weight=da.ones(32, dtype=np.float32))
    assert y.chunks[1:] == ((2,), (32,)) and len(y.chunks[0]) >= 4
    assert_all_equal(compute(y, scheduler="threads"), fastnorm.layer_norm(x))


# ---- the backward's parameter sums: one set of bits per chunking ---------------------------


def backward_case(rng):
    x, dy = inputs(rng, (96, 2, 128))
    w = rng.standard_normal(128).astype(np.float32)
    pw = rng.standard_normal((96, 1, 128)).astype(np.float32)
    return x, dy, w, pw


def backward_results(x, dy, w, pw, scheduler):
    dx, ddy = da.from_array(x, chunks=(10, 1, 128)), da.from_array(dy, chunks=(10, 1, 128))
    shared = fastnorm.layer_norm_backward(ddy, dx, weight=w)
    per_sample = fastnorm.layer_norm_backward(ddy, dx, weight=pw, bias=pw)
    rms = fastnorm.rms_norm_backward(ddy, dx, weight=w[None, None])
    return compute(*shared[1:], *per_sample[1:], rms[1], scheduler=scheduler)


def test_parameter_gradients_are_float64_block_sums_rounded_once(rng):
    x, dy, w, _ = backward_case(rng)
    got = fastnorm.layer_norm_backward(da.from_array(dy, chunks=(48, 2, 128)), x, weight=w)
    # two blocks: the graph adds the blocks' float64 partial sums, then rounds once
    parts = [
        _core.normalize_backward(
            _core.OP_LAYER_NORM, dy[s], x[s], None, w, None, None, None, None, None, np.float64
        )
        for s in (slice(0, 48), slice(48, 96))
    ]
    assert parts[0][1].dtype == np.float64
    for k in (1, 2):
        assert_all_equal(compute(got[k]), (parts[0][k] + parts[1][k]).astype(np.float32))
    assert any("sum" in name for name in got[1].__dask_graph__().layers)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_parameter_gradients_are_bitwise_the_same_on_every_scheduler(rng, scheduler):
    case = backward_case(rng)
    reference = backward_results(*case, "synchronous")
    for _ in range(3):
        assert_all_equal(tuple(backward_results(*case, scheduler)), tuple(reference))


# ---- a real cluster: two worker processes ------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    psutil = pytest.importorskip("psutil")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # port and dashboard chatter
        cl = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = distributed.Client(cl)
    try:
        yield client
    finally:
        client.close()
        cl.close()
        deadline = 30
        import time

        start = time.monotonic()
        while time.monotonic() - start < deadline:
            # (multiprocessing's resource tracker, which the spawned workers
            # started, belongs to this interpreter and ends with it)
            left = {
                p.pid
                for p in psutil.Process().children(recursive=True)
                if "multiprocessing.resource_tracker" not in " ".join(p.cmdline())
            } - before
            if not left:
                break
            time.sleep(0.2)
        names = {pid: psutil.Process(pid).cmdline() for pid in left}
        assert not left, f"cluster processes left behind: {names}"


@pytest.mark.any_isa
def test_cluster_runs_every_function_bitwise_like_in_memory(cluster, rng):
    assert len(cluster.scheduler_info()["workers"]) == 2
    x, dy = inputs(rng, (64, 2, 96))
    w = rng.standard_normal(96).astype(np.float32)
    dx, ddy = da.from_array(x, chunks=(8, 2, 96)), da.from_array(dy, chunks=(8, 2, 96))
    for name in FUNCTIONS:
        kwargs = {} if name.endswith("backward") else {"return_stats": True}
        got = call(name, dx, ddy, weight=w, **kwargs)
        want = call(name, x, dy, weight=w, **kwargs)
        res = cluster.compute(list(got), sync=True)
        if name.endswith("backward"):
            assert_all_equal(res[0], want[0])
            for g, r in zip(res[1:], want[1:]):
                np.testing.assert_allclose(g, r, rtol=2e-6, atol=2e-6)
        else:
            assert_all_equal(tuple(res), want)
    pids = cluster.run(os.getpid)
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()


@pytest.mark.any_isa
def test_cluster_parameter_gradients_bitwise_equal_local_schedulers(cluster, rng):
    case = backward_case(rng)
    reference = backward_results(*case, "threads")
    for _ in range(2):
        assert_all_equal(tuple(backward_results(*case, cluster)), tuple(reference))


@pytest.mark.any_isa
def test_cluster_tasks_run_fastnorm_on_one_thread(cluster, rng):
    x = da.from_array(np.ones((256, 4096), np.float32), chunks=(128, 4096))

    def threads_after(block):
        return np.array([[_core.last_num_threads()]])

    y = fastnorm.layer_norm(x).map_blocks(threads_after, chunks=(1, 1), dtype=int)
    assert (cluster.compute(y, sync=True) == 1).all()


# ---- threads inside a task ---------------------------------------------------------------


@pytest.mark.any_isa
def test_tasks_limit_fastnorm_to_one_thread_and_restore_it(rng):
    x = rng.standard_normal((512, 1024)).astype(np.float32)  # large enough for threads
    before = _core.max_threads()
    y = fastnorm.layer_norm(da.from_array(x, chunks=(256, 1024)))
    compute(y, scheduler="synchronous")
    assert _core.last_num_threads() == 1
    assert _core.max_threads() == before
    with dask.config.set({fd.THREADS_KEY: None}):
        y = fastnorm.layer_norm(da.from_array(x, chunks=(256, 1024)))
    compute(y, scheduler="synchronous")
    assert _core.last_num_threads() == min(before, _core.max_threads())
    with dask.config.set({fd.THREADS_KEY: 0}), pytest.raises(ValueError, match="task-threads"):
        fastnorm.layer_norm(da.from_array(x))


# ---- bad input: refused at call time, with the in-memory call's message -------------------


def same_error(dask_call, numpy_call, kind):
    with pytest.raises(kind) as in_memory:
        numpy_call()
    with pytest.raises(kind) as lazy:
        dask_call()
    assert str(lazy.value) == str(in_memory.value)


@pytest.mark.any_isa
def test_bad_arguments_raise_at_call_time_as_in_memory(rng):
    x, dy = inputs(rng)
    dx, ddy = da.from_array(x, chunks=(16, 3, 40)), da.from_array(dy, chunks=(16, 3, 40))
    cases = [
        (lambda a, d: fastnorm.layer_norm(a, weight=np.ones(7)), ValueError),
        (lambda a, d: fastnorm.layer_norm(a, weight=da.ones(7)), ValueError),
        (lambda a, d: fastnorm.layer_norm(a, normalized_shape=(4, 40)), ValueError),
        (lambda a, d: fastnorm.layer_norm(a, axis=5), np.exceptions.AxisError),
        (lambda a, d: fastnorm.layer_norm(a, axis=(1, -2)), np.exceptions.AxisError),
        (lambda a, d: fastnorm.layer_norm(a, eps=-1.0), ValueError),
        (lambda a, d: fastnorm.rms_norm(a, eps="small"), TypeError),
        (lambda a, d: fastnorm.layer_norm(a.astype(np.complex64)), TypeError),
        (lambda a, d: fastnorm.layer_norm(a[0, 0, 0]), TypeError),
        (lambda a, d: fastnorm.add_layer_norm(a, d[:, :2]), ValueError),
        (lambda a, d: fastnorm.add_rms_norm(a, d.astype(np.complex128)), TypeError),
        (lambda a, d: fastnorm.layer_norm_backward(d[:5], a), ValueError),
        (lambda a, d: fastnorm.layer_norm_backward(d, a, rstd=np.ones((48, 3, 40))), ValueError),
        (lambda a, d: fastnorm.layer_norm_backward(d, a, mean=np.ones((48, 3, 1))), ValueError),
        (lambda a, d: fastnorm.rms_norm_backward(d, a, weight=np.ones((2, 40))), ValueError),
        (lambda a, d: fastnorm.layer_norm(a, bias=np.ma.masked_array(np.ones(40))), TypeError),
    ]
    for fn, kind in cases:
        same_error(lambda fn=fn: fn(dx, ddy), lambda fn=fn: fn(x, dy), kind)


@pytest.mark.any_isa
def test_out_with_a_dask_input_is_a_type_error_pointing_to_store(rng):
    x, dy = inputs(rng)
    dx = da.from_array(x)
    for fn in (
        lambda: fastnorm.layer_norm(dx, out=np.empty_like(x)),
        lambda: fastnorm.rms_norm(dx, out=da.empty_like(dx)),
        lambda: fastnorm.add_layer_norm(dx, dy, out=np.empty_like(x)),
        lambda: fastnorm.add_rms_norm(x, da.from_array(dy), residual_out=np.empty_like(x)),
    ):
        with pytest.raises(TypeError, match=r"dask\.array\.store.*to_zarr"):
            fn()


@pytest.mark.any_isa
def test_unknown_chunk_sizes_and_other_collections_are_refused(rng):
    x, _ = inputs(rng)
    dx = da.from_array(x, chunks=(16, 3, 40))
    unknown = dx[dx[:, 0, 0] > -100]
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        fastnorm.layer_norm(unknown)
    delayed = dask.delayed(x)
    with pytest.raises(TypeError, match="not a Dask array"):
        fastnorm.layer_norm(delayed)


@pytest.mark.any_isa
def test_zero_size_batch_and_single_block(rng):
    x = np.zeros((0, 16), np.float32)
    assert_all_equal(compute(fastnorm.layer_norm(da.from_array(x))), fastnorm.layer_norm(x))
    g = fastnorm.layer_norm_backward(da.from_array(x), da.from_array(x), weight=np.ones(16))
    assert_all_equal(compute(*g), fastnorm.layer_norm_backward(x, x, weight=np.ones(16)))


# ---- the benchmark's competitors ----------------------------------------------------------


@pytest.mark.any_isa
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_bench_competitors_compute_the_same_normalization(op):
    from fastnorm.bench import dask_cases

    fns = dask_cases.dask_competitors(op, (64, 256), (16, 256), threads_variant=True)
    with dask.config.set(scheduler="synchronous"):
        results = {name: fn() for name, fn in fns.items()}
    np.testing.assert_allclose(results["dask"], results["fastnorm"], rtol=1e-4, atol=1e-4)
    assert_all_equal(results["fastnorm, task threads=default"], results["fastnorm"])
    assert_all_equal(results["identity"], results["gather"])
    times = dask_cases.time_warm_interleaved({"a": fns["gather"]}, 2)
    assert set(times) == {"a"} and times["a"] > 0
