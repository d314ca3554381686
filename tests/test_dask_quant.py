"""Quantized outputs on Dask arrays: `quantize`, the quantized
norms and their add_ forms return lazy Dask arrays (q, scale[, h]) equal bit
for bit to the in-memory call on the computed arrays, for int8 and float8
e4m3fn, per-row, grouped and static scales, every chunking; `dtype=` on the
float norms with a Dask input; arguments checked at call time with the
in-memory messages, nothing of x's size allocated."""

import ml_dtypes
import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

import fastnorm  # noqa: E402
from fastnorm import _dask as fd  # noqa: E402

E4M3 = ml_dtypes.float8_e4m3fn
CODES = [np.int8, E4M3]
NORMS = ["rms_norm_quant", "layer_norm_quant", "add_rms_norm_quant", "add_layer_norm_quant"]


def compute(*arrays, scheduler="synchronous"):
    return dask.compute(*arrays, scheduler=scheduler)


def assert_all_equal(got, want):
    """Bitwise, element for element, of tuples of arrays; dtype and shape too."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, w.dtype, g.shape, w.shape)
        np.testing.assert_array_equal(g.view(np.uint8), w.view(np.uint8), strict=True)


def call(name, x, residual, **kwargs):
    fn = getattr(fastnorm, name)
    return fn(x, residual, **kwargs) if name.startswith("add_") else fn(x, **kwargs)


def data(rng, shape=(50, 3, 64), dtype=np.float32):
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    r = rng.standard_normal(shape).astype(dtype)
    return x, r


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
@pytest.mark.parametrize("code", CODES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", NORMS)
def test_quantized_norms_equal_in_memory_bitwise(rng, scheduler, code, name):
    x, r = data(rng)
    w, b = rng.standard_normal(64).astype(np.float32), rng.standard_normal(64).astype(np.float32)
    params = {"weight": w} | ({"bias": b} if "layer" in name else {})
    dx, dr = da.from_array(x, chunks=(7, 3, 64)), da.from_array(r, chunks=(9, 3, 64))
    for kwargs in ({}, {"group_size": 16}, {"axis": (1, 2)}, {"axis": (1, 2), "group_size": 32}):
        p = {} if "axis" in kwargs else params
        got = call(name, dx, dr, dtype=code, **p, **kwargs)
        assert all(isinstance(a, da.Array) for a in got)
        want = call(name, x, r, dtype=code, **p, **kwargs)
        assert got[0].chunks[0] == dx.chunks[0] and got[1].shape == want[1].shape
        assert_all_equal(compute(*got, scheduler=scheduler), want)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, ml_dtypes.bfloat16, np.int32])
def test_other_input_dtypes_and_channels_first(rng, dtype):
    x, r = data(rng, (6, 8, 5, 4), dtype)
    dx = da.from_array(x, chunks=(2, 8, 5, 4))
    for name in NORMS:
        for kwargs in ({"axis": 1}, {"axis": 1, "group_size": 4}, {}):
            got = call(name, dx, r, dtype=E4M3, **kwargs)
            assert_all_equal(compute(*got), call(name, x, r, dtype=E4M3, **kwargs))


@pytest.mark.parametrize("code", CODES, ids=lambda d: np.dtype(d).name)
def test_quantize_equals_in_memory_bitwise(rng, code):
    y = (rng.standard_normal((30, 4, 48)) * 5).astype(np.float32)
    y[3, 1, 7] = np.nan  # a NaN group: its defined result, as in memory
    y[5] = 0  # all-zero rows: the floor scale
    dy = da.from_array(y, chunks=(4, 2, 48))
    for kwargs in ({}, {"group_size": 8}, {"axis": 1}, {"axis": (0, 2)}):
        with pytest.warns(da.PerformanceWarning) if kwargs.get("axis") in (1, (0, 2)) else _no():
            got = fastnorm.quantize(dy, code, **kwargs)
        assert_all_equal(compute(*got), fastnorm.quantize(y, code, **kwargs))


def _no():
    import contextlib

    return contextlib.nullcontext()


@pytest.mark.parametrize("name", NORMS + ["quantize"])
def test_static_scales_reach_each_block_as_its_part(rng, name):
    """A number, an array of the scales' shape, one broadcasting to it, and
    grouped scales: each block gets its rows' scales, as in memory."""
    x, r = data(rng, (40, 3, 64))
    dx, dr = da.from_array(x, chunks=(6, 3, 64)), da.from_array(r, chunks=(6, 3, 64))
    per_row = rng.uniform(0.005, 0.05, (40, 3)).astype(np.float32)
    per_group = rng.uniform(0.005, 0.05, (40, 3, 4)).astype(np.float64)
    cases = [
        {"scale": 0.02},
        {"scale": per_row},
        {"scale": per_row[:, :1]},
        {"scale": per_row[0]},
        {"scale": per_group, "group_size": 16},
        {"scale": per_group[:1, :, :], "group_size": 16},
    ]
    for kwargs in cases:
        for code in CODES:
            if name == "quantize":
                got, want = (
                    fastnorm.quantize(dx, code, **kwargs),
                    fastnorm.quantize(x, code, **kwargs),
                )
            else:
                got, want = (
                    call(name, dx, dr, dtype=code, **kwargs),
                    call(name, x, r, dtype=code, **kwargs),
                )
            assert_all_equal(compute(*got), want)
            np.testing.assert_array_equal(
                compute(got[1])[0], np.broadcast_to(np.float32(kwargs["scale"]), want[1].shape)
            )


def test_numpy_x_next_to_a_dask_weight_and_dask_residual(rng):
    x, r = data(rng)
    w = rng.standard_normal(64).astype(np.float32)
    got = fastnorm.rms_norm_quant(x, weight=da.from_array(w), group_size=32)
    assert isinstance(got[0], da.Array)
    assert_all_equal(compute(*got), fastnorm.rms_norm_quant(x, weight=w, group_size=32))
    got = fastnorm.add_layer_norm_quant(x, da.from_array(r, chunks=(10, 3, 64)))
    assert_all_equal(compute(*got), fastnorm.add_layer_norm_quant(x, r))


def test_split_normalized_axes_are_rechunked_with_a_performance_warning(rng):
    x, r = data(rng)
    dx = da.from_array(x, chunks=(10, 3, 16))
    with pytest.warns(da.PerformanceWarning, match=r"rms_norm_quant.*split along axes \(2,\)"):
        got = fastnorm.rms_norm_quant(dx, group_size=16)
    assert_all_equal(compute(*got), fastnorm.rms_norm_quant(x, group_size=16))


@pytest.mark.parametrize("code", CODES, ids=lambda d: np.dtype(d).name)
def test_one_task_per_block_and_nothing_computed_before_compute(rng, code):
    x, r = data(rng)
    reads = []

    def counted(block):
        reads.append(block.shape)
        return block

    dx = da.from_array(x, chunks=(10, 3, 64)).map_blocks(counted, dtype=x.dtype)
    reads.clear()
    q, s, h = fastnorm.add_rms_norm_quant(dx, r, dtype=code)
    assert reads == []
    compute(q, s, h)
    assert len(reads) == 5  # each block of x read once: one core call per block
    graph = dict(q.__dask_graph__())
    assert len([k for k in graph if isinstance(k, tuple) and "-blocks" in k[0]]) == 5


@pytest.mark.parametrize("name", ["rms_norm", "layer_norm", "add_rms_norm", "add_layer_norm"])
@pytest.mark.parametrize("out_dtype", [np.float32, np.float64, np.float16, ml_dtypes.bfloat16])
def test_dtype_of_the_float_norms_on_dask(rng, name, out_dtype):
    x, r = data(rng, dtype=ml_dtypes.bfloat16)
    dx = da.from_array(x, chunks=(7, 3, 64))
    got = call(name, dx, r, dtype=out_dtype)
    want = call(name, x, r, dtype=out_dtype)
    got, want = (got, want) if isinstance(want, tuple) else ((got,), (want,))
    assert got[0].dtype == np.dtype(out_dtype)
    assert_all_equal(compute(*got), want)
    stats = call(name, dx, r, dtype=out_dtype, return_stats=True)
    assert_all_equal(compute(*stats), call(name, x, r, dtype=out_dtype, return_stats=True))


# ---- bad input: refused at call time, with the in-memory call's message -------------------


def same_error(dask_call, numpy_call, kind):
    with pytest.raises(kind) as in_memory:
        numpy_call()
    with pytest.raises(kind) as lazy:
        dask_call()
    assert str(lazy.value) == str(in_memory.value)


def test_bad_arguments_raise_at_call_time_as_in_memory(rng):
    x, r = data(rng)
    dx, dr = da.from_array(x, chunks=(10, 3, 64)), da.from_array(r, chunks=(10, 3, 64))
    cases = [
        (lambda a, d: fastnorm.quantize(a, np.int16), TypeError),
        (lambda a, d: fastnorm.quantize(a, group_size=10), ValueError),
        (lambda a, d: fastnorm.quantize(a, group_size=1.5), TypeError),
        (lambda a, d: fastnorm.quantize(a, scale=np.ones((50, 2))), ValueError),
        (lambda a, d: fastnorm.quantize(a, scale=0.0), ValueError),
        (lambda a, d: fastnorm.quantize(a, axis=3), np.exceptions.AxisError),
        (lambda a, d: fastnorm.quantize(a.astype(np.complex64)), TypeError),
        (lambda a, d: fastnorm.rms_norm_quant(a, dtype="float8_e5m2"), TypeError),
        (lambda a, d: fastnorm.rms_norm_quant(a, weight=np.ones(7)), ValueError),
        (lambda a, d: fastnorm.layer_norm_quant(a, group_size=48), ValueError),
        (lambda a, d: fastnorm.layer_norm_quant(a, scale=np.inf), ValueError),
        (
            lambda a, d: fastnorm.rms_norm_quant(a, scale=np.ones((50, 3, 2)), group_size=16),
            ValueError,
        ),  # fmt: skip
        (lambda a, d: fastnorm.add_rms_norm_quant(a, d[:, :2]), ValueError),
        (lambda a, d: fastnorm.add_layer_norm_quant(a, d, eps=-1.0), ValueError),
        (lambda a, d: fastnorm.rms_norm(a, dtype=np.int8), TypeError),
    ]
    for fn, kind in cases:
        same_error(lambda fn=fn: fn(dx, dr), lambda fn=fn: fn(x, r), kind)


@pytest.mark.parametrize("x_is_dask", [False, True])
def test_a_dask_static_scale_is_refused_never_computed(rng, x_is_dask):
    x = rng.standard_normal((4, 8)).astype(np.float32)
    xa = da.from_array(x, chunks=(2, 8)) if x_is_dask else x
    computed = []
    scale = da.full((4,), 0.01, chunks=2, dtype=np.float32).map_blocks(
        lambda b: computed.append(1) or b, dtype=np.float32
    )
    computed.clear()  # (map_blocks called it once on a meta array)
    for call in (
        lambda: fastnorm.rms_norm_quant(xa, scale=scale),
        lambda: fastnorm.quantize(xa, scale=scale),
    ):
        with pytest.raises(TypeError, match="scale is a Dask array.*compute it first"):
            call()
    assert not computed


def test_outputs_with_a_dask_input_are_a_type_error_pointing_to_store(rng):
    x, r = data(rng)
    dx = da.from_array(x)
    q, s = fastnorm.quantize(x)
    for fn in (
        lambda: fastnorm.quantize(dx, out=q),
        lambda: fastnorm.quantize(dx, scale_out=s),
        lambda: fastnorm.rms_norm_quant(dx, out=q),
        lambda: fastnorm.layer_norm_quant(dx, scale_out=s),
        lambda: fastnorm.add_rms_norm_quant(dx, r, residual_out=np.empty_like(x)),
    ):
        with pytest.raises(TypeError, match=r"dask\.array\.store.*to_zarr"):
            fn()
    with pytest.raises(TypeError, match="scale is a Dask array"):
        fastnorm.rms_norm_quant(dx, scale=da.ones((50, 3)))


def test_checking_a_call_allocates_no_array_of_its_size():
    import tracemalloc

    shape = (1 << 22, 16)  # 128 MiB of float16, 16 MiB of per-row scales
    x = da.zeros(shape, np.float16, chunks=(1 << 20, 16))
    tracemalloc.start()
    try:
        fastnorm.quantize(x, group_size=8)
        fastnorm.add_rms_norm_quant(x, x, weight=np.ones(16, np.float32), dtype=E4M3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak


def test_tasks_pickle_by_reference():
    import pickle

    for task in (fd._quantize_block, fd._norm_quant_block):
        data_ = pickle.dumps(task)
        assert pickle.loads(data_) is task and b"fastnorm._dask" in data_
