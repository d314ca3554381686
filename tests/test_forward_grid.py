"""Every function against the float64+ reference over a generated grid of
dtypes, shapes, ways of naming the axes, affine parameters, layouts and
output modes."""

import itertools

import numpy as np
import pytest
from _reference import BFLOAT16, OPS, assert_close, axes_of, reference, result_dtype

import fastnorm

# (shape, axis spec) pairs: axis spec is a dict of the keyword arguments
SHAPES_AND_AXES = [
    ((1,), {}),
    ((17,), {}),
    ((4097,), {"normalized_shape": 4097}),
    ((3, 17), {}),
    ((3, 17), {"normalized_shape": (17,)}),
    ((3, 17), {"axis": 0}),
    ((3, 17), {"axis": (0, 1)}),
    ((2, 4097), {"axis": -1}),
    ((4, 3, 17), {"normalized_shape": (3, 17)}),
    ((4, 3, 17), {"axis": 1}),
    ((4, 3, 17), {"axis": (0, 2)}),
    ((2, 3, 5, 17), {"axis": 1}),  # channels-first (NCHW)
    ((2, 3, 5, 17), {"normalized_shape": (5, 17), "axis": (-2, -1)}),
    ((2, 3, 5, 17), {"axis": (1, 2, 3)}),
    ((3, 1, 17), {"axis": (1, 2)}),
    ((0, 17), {}),  # empty batch
    ((2, 0, 17), {"axis": 2}),
]

DTYPES = [np.float32, np.float64, np.int32]


def make_affine(kind, norm_shape, dtype, rng):
    if kind == "none":
        return None, None
    if kind == "full":
        return (
            rng.normal(1, 0.5, norm_shape).astype(dtype),
            rng.normal(0, 0.5, norm_shape).astype(dtype),
        )
    if kind == "scalar":
        return 1.5, -0.25
    if kind == "last":  # a vector over the last normalized axis
        return (
            rng.normal(1, 0.5, norm_shape[-1]).astype(dtype),
            rng.normal(0, 0.5, norm_shape[-1]).astype(dtype),
        )
    if kind == "weight_only":
        return rng.normal(1, 0.5, norm_shape).astype(dtype), None
    raise AssertionError(kind)


def with_layout(x, layout):
    """A view with x's values in the requested memory layout."""
    if layout == "C":
        return np.array(x, order="C")  # always a copy: in-place tests write it
    if layout == "F":
        return np.array(x, order="F")
    if layout == "strided":
        big = np.zeros(tuple(2 * s + 1 for s in x.shape), x.dtype)
        view = big[tuple(slice(1, None, 2) for _ in x.shape)]
        view[...] = x
        return view
    if layout == "negative":
        return np.flip(np.flip(x).copy())
    raise AssertionError(layout)


LAYOUTS = ["C", "F", "strided", "negative"]
OUT_MODES = ["alloc", "out", "out_strided", "inplace"]


def run(fn_name, x, kwargs, weight, bias, out_mode):
    fn = getattr(fastnorm, fn_name)
    args = dict(kwargs)
    if weight is not None:
        args["weight"] = weight
    if bias is not None and fn_name == "layer_norm":
        args["bias"] = bias
    rdt = result_dtype(x)
    if out_mode == "alloc":
        return fn(x, **args, return_stats=True), None
    if out_mode == "out":
        out = np.full(x.shape, 7, rdt)
    elif out_mode == "out_strided":
        out = with_layout(np.full(x.shape, 7, rdt), "strided")
    else:  # in place
        out = x
    result = fn(x, **args, out=out, return_stats=True)
    assert result[0] is out
    return result, out


CASES = list(itertools.product(range(len(SHAPES_AND_AXES)), DTYPES, LAYOUTS))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    "case,dtype,layout",
    CASES,
    ids=[
        f"{SHAPES_AND_AXES[i][0]}-{SHAPES_AND_AXES[i][1]}-{np.dtype(d).name}-{layout}"
        for i, d, layout in CASES
    ],
)
def test_matches_reference(op, case, dtype, layout, rng):
    shape, kwargs = SHAPES_AND_AXES[case]
    axes = axes_of(len(shape), kwargs.get("normalized_shape"), kwargs.get("axis"))
    norm_shape = tuple(shape[a] for a in axes)
    base = rng.normal(3, 2, shape)
    x0 = (base * 10).astype(dtype) if np.dtype(dtype).kind == "i" else base.astype(dtype)
    # cycle through affine kinds and output modes so the grid stays small
    affine = ["none", "full", "scalar", "last", "weight_only"][(case + LAYOUTS.index(layout)) % 5]
    out_mode = OUT_MODES[(case + DTYPES.index(dtype)) % len(OUT_MODES)]
    if out_mode == "inplace" and np.dtype(dtype).kind == "i":
        out_mode = "out"
    weight, bias = make_affine(affine, norm_shape, result_dtype(x0), rng)
    x = with_layout(x0, layout)
    x_before = x.copy()

    result, out = run(op, x, kwargs, weight, bias, out_mode)
    y_ref, mean_ref, rstd_ref = reference(
        op, x0, axes, weight, bias if op == "layer_norm" else None
    )
    rdt = result_dtype(x0)
    y = result[0]
    assert y.dtype == rdt and y.shape == x.shape
    assert_close(y, y_ref, rdt)
    stats = result[1:]
    assert len(stats) == (2 if op == "layer_norm" else 1)
    keep = tuple(1 if a in axes else s for a, s in enumerate(shape))
    for s in stats:
        assert s.shape == keep and s.dtype == rdt
    if op == "layer_norm":
        assert_close(stats[0], mean_ref, rdt)
    assert_close(stats[-1] / rstd_ref, np.ones_like(rstd_ref), rdt)
    if out_mode != "inplace":
        assert np.array_equal(x, x_before), "the input was modified"


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_overlapping_input(op, dtype, rng):
    """out that partially overlaps x (a reversed view) still gets the right answer."""
    x = rng.normal(size=(6, 33)).astype(dtype)
    expected = reference(op, x, (1,))[0]
    buf = x.copy()
    fn = getattr(fastnorm, op)
    fn(buf, out=buf[::-1])
    assert_close(buf[::-1], expected, dtype)


def test_weight_inside_out_is_read_before_it_is_overwritten(rng):
    x = rng.normal(size=(4, 16)).astype(np.float32)
    w = rng.normal(size=16).astype(np.float32)
    b = rng.normal(size=16).astype(np.float32)
    expected = reference("layer_norm", x, (1,), w, b)[0]
    o = np.empty_like(x)
    o[0], o[1] = w, b
    fastnorm.layer_norm(x, weight=o[0], bias=o[1], out=o)
    assert_close(o, expected, np.float32)
    xx = x.copy()
    xx[0], xx[1] = w, b
    expected2 = reference("layer_norm", xx, (1,), w, b)[0]
    fastnorm.layer_norm(xx, weight=xx[0], bias=xx[1], out=xx)
    assert_close(xx, expected2, np.float32)
    rr = rng.normal(size=(4, 16)).astype(np.float32)
    h_ref = x + rr
    y_ref = fastnorm.layer_norm(h_ref, weight=rr[0].copy())
    y, h = fastnorm.add_layer_norm(x, rr, weight=rr[0], residual_out=rr)
    assert np.array_equal(h, h_ref) and np.array_equal(y, y_ref)


@pytest.mark.parametrize("op", OPS)
def test_lists_and_ints_become_float64(op):
    y = getattr(fastnorm, op)([[1, 2, 3], [4, 5, 7]])
    assert y.dtype == np.float64
    assert_close(y, reference(op, np.array([[1, 2, 3], [4, 5, 7]]), (1,))[0], np.float64)
    yb = getattr(fastnorm, op)(np.array([True, False, True]))
    assert yb.dtype == np.float64


@pytest.mark.parametrize("op", OPS)
def test_unaligned_input(op, rng):
    raw = np.zeros(4 * 40 + 1, np.uint8)
    x = raw[1:].view(np.float32).reshape(4, 10)
    assert not x.flags.aligned
    x[...] = rng.normal(size=(4, 10))
    assert_close(getattr(fastnorm, op)(x), reference(op, x, (1,))[0], np.float32)


def test_default_eps_of_rms_norm_follows_dtype():
    x = np.zeros((2, 4), np.float32)
    x[0, 0] = 1e-4
    _, rstd = fastnorm.rms_norm(x, return_stats=True)
    assert rstd[1, 0] == np.float32(1 / np.sqrt(np.finfo(np.float32).eps))
    _, rstd64 = fastnorm.rms_norm(x.astype(np.float64), return_stats=True)
    assert rstd64[1, 0] == 1 / np.sqrt(np.finfo(np.float64).eps)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [">f4", ">f8"])
def test_non_native_byte_order(op, dtype, rng):
    x = rng.normal(size=(3, 20)).astype(dtype)
    y = getattr(fastnorm, op)(x, weight=np.linspace(1, 2, 20).astype(dtype))
    assert y.dtype == np.dtype(dtype).newbyteorder("=")
    assert_close(y, reference(op, x.astype(y.dtype), (1,), np.linspace(1, 2, 20))[0], y.dtype)


@pytest.mark.parametrize("op", OPS)
def test_fast_and_general_paths_agree(op, rng):
    """The same call through the fast path (ndarray weight) and the general
    path (list weight) gives bitwise the same result."""
    x = rng.normal(size=(5, 40)).astype(np.float32)
    w = rng.normal(size=40).astype(np.float32)
    fast = getattr(fastnorm, op)(x, 40, w, return_stats=True)
    general = getattr(fastnorm, op)(x, (40,), w.tolist(), return_stats=True)
    for a, b in zip(fast, general):
        assert np.array_equal(a, b)


@pytest.fixture
def always_stream():
    """Take the streaming-store path (normally only for outputs >= 16 MiB)."""
    previous = fastnorm._core.set_stream_min_bytes(0)
    yield
    fastnorm._core.set_stream_min_bytes(previous)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 5, 16, 17, 63, 64, 65, 200, 4097])
@pytest.mark.parametrize("offset", [0, 1, 3])
def test_streaming_stores_any_alignment(op, dtype, n, offset, always_stream, rng):
    """Rows of every length starting at every alignment, written with
    streaming stores, match the reference and leave the neighbours alone."""
    rows = 7
    x = rng.normal(2, 3, (rows, n)).astype(dtype)
    buf = np.full(rows * n + offset + 8, 123, dtype)
    out = buf[offset : offset + rows * n].reshape(rows, n)
    w = rng.normal(1, 0.3, n).astype(dtype)
    y = getattr(fastnorm, op)(x, weight=w, out=out)
    assert_close(y, reference(op, x, (1,), w)[0], dtype)
    assert (buf[:offset] == 123).all() and (buf[offset + rows * n :] == 123).all()


@pytest.mark.parametrize("op", OPS)
def test_large_output_uses_default_streaming(op, rng):
    x = rng.normal(size=(1100, 4001)).astype(np.float32)  # 17.6 MB out
    y, *stats = getattr(fastnorm, op)(x, return_stats=True)
    rows = rng.choice(1100, 40, replace=False)
    assert_close(y[rows], reference(op, x[rows], (1,))[0], np.float32)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_result_does_not_depend_on_output_alignment(op, dtype, always_stream, rng):
    """Streaming stores peel a misaligned head off each row; the statistics
    must not change with it: every alignment gives the same bits."""
    x = rng.normal(3, 2, (9, 777)).astype(dtype)
    results = []
    for offset in range(4):
        buf = np.empty(x.size + 8, dtype)
        out = buf[offset : offset + x.size].reshape(x.shape)
        results.append(getattr(fastnorm, op)(x, out=out, return_stats=True))
    fastnorm._core.set_stream_min_bytes(1 << 40)
    results.append(getattr(fastnorm, op)(x, return_stats=True))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


def _line_placed(shape, dtype, offset, fill):
    """An array of shape whose data starts `offset` items past a 64-byte
    line, inside a buffer whose other bytes hold `fill`; (array, buffer)."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.full(size + 128 + offset * dtype.itemsize, fill, np.uint8)
    start = -raw.ctypes.data % 64 + offset * dtype.itemsize
    return raw[start : start + size].view(dtype).reshape(shape), raw, start, size


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, "bfloat16"])
@pytest.mark.parametrize("fused", [False, True])
def test_streamed_rows_any_offset_in_a_line(dtype, fused, always_stream, rng):
    """Streaming stores cover only a row's whole 64-byte lines (the head up
    to the first line and the tail after the last are ordinary stores): y
    (and h, streamed when it lies like y in its lines, else not) at every
    element offset within a line, rows shorter and longer than the head,
    give the bits of the non-streaming call and write no byte outside."""
    dt = BFLOAT16 if dtype == "bfloat16" else np.dtype(dtype)
    per_line = 64 // dt.itemsize
    ct = np.float64 if dt == np.float64 else np.float32
    for n in (1, 2, per_line - 1, per_line + 1, 3 * per_line + 5, 300):
        x = rng.normal(2, 3, (3, n)).astype(dt)
        r = rng.normal(0, 1, (3, n)).astype(dt)
        w = rng.normal(1, 0.3, n).astype(ct)
        b = rng.normal(0, 0.3, n).astype(ct)
        previous = fastnorm._core.set_stream_min_bytes(1 << 40)
        if fused:
            want = fastnorm.add_layer_norm(x, r, None, w, b)
        else:
            want = (fastnorm.layer_norm(x, None, w, b),)
        fastnorm._core.set_stream_min_bytes(previous)
        for offset in range(per_line):
            y, y_raw, y0, y_size = _line_placed(x.shape, dt, offset, 0xAB)
            if fused:
                # h like y in its lines (streamed), then off by one item (not)
                for h_offset in (offset, (offset + 1) % per_line):
                    h, h_raw, h0, h_size = _line_placed(x.shape, dt, h_offset, 0xAB)
                    fastnorm.add_layer_norm(x, r, None, w, b, out=y, residual_out=h)
                    assert y.tobytes() == want[0].tobytes() and h.tobytes() == want[1].tobytes()
                    assert (h_raw[:h0] == 0xAB).all() and (h_raw[h0 + h_size :] == 0xAB).all()
            else:
                fastnorm.layer_norm(x, None, w, b, out=y)
                assert y.tobytes() == want[0].tobytes(), (n, offset)
            assert (y_raw[:y0] == 0xAB).all() and (y_raw[y0 + y_size :] == 0xAB).all()
