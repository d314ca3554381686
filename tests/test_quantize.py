"""Quantized outputs: quantize, the quantized norms and the norms' dtype=.

One NumPy reference of a few lines (quantize_reference) gives q and scale
bit for bit; every kernel set must reproduce it (the autouse isa fixture
runs each test on each set), and the quantized norms must be bit for bit the
float norm in its compute dtype followed by quantize."""

import ml_dtypes
import numpy as np
import pytest
from _reference import BFLOAT16
from threadpoolctl import threadpool_limits

import fastnorm

E4M3 = np.dtype(ml_dtypes.float8_e4m3fn)
QMAX = {np.dtype(np.int8): 127, E4M3: 448}
FLOOR = np.float32(2.0**-126)


def quantize_reference(y, dtype=np.int8, axis=-1, group_size=None, scale=None):
    """quantize's formula in NumPy: (q, scale), bit for bit."""
    dtype = np.dtype(dtype)
    y = np.asarray(y)
    ct = np.float64 if y.dtype == np.float64 else np.float32
    axes = tuple(sorted(a % y.ndim for a in np.atleast_1d(axis)))
    batch = [a for a in range(y.ndim) if a not in axes]
    rows = np.transpose(y, batch + list(axes)).astype(ct)
    bshape = rows.shape[: len(batch)]
    n = int(np.prod(rows.shape[len(batch) :]))
    g = n if group_size is None else group_size
    v = rows.reshape(bshape + (n // g, g))
    qmax = ct(QMAX[dtype])
    if scale is None:
        wide = np.abs(v).max(axis=-1) / qmax  # (float64 y: in float64)
        with np.errstate(over="ignore", invalid="ignore"):
            s = np.maximum(wide.astype(np.float32), FLOOR)
        # NaN or Inf in the group, or a scale beyond float32 (float64 y)
        s[~np.isfinite(v).all(axis=-1) | ~(wide <= np.finfo(np.float32).max)] = np.nan
    else:
        sshape = bshape + ((n // g,) if group_size is not None else ())
        s = np.broadcast_to(np.asarray(scale, np.float32), sshape).reshape(bshape + (n // g,))
    with np.errstate(invalid="ignore"):
        inv = ct(1) / s[..., None].astype(ct)
        t = np.clip(v * inv, -qmax, qmax)
    if dtype == np.int8:
        q = np.where(np.isnan(t), 0, np.rint(t)).astype(np.int8)
    else:
        q = t.astype(E4M3)  # (NaN keeps its sign: 0x7F or 0xFF)
    if scale is None:  # a group with NaN or Inf: every code 0 or NaN (0x7F)
        bad = np.isnan(s)[..., None] & np.ones(g, bool)
        q = q.view(np.uint8).copy()
        q[bad] = 0 if dtype == np.int8 else 0x7F
        q = q.view(dtype)
    q = q.reshape(rows.shape)
    q = np.transpose(q, np.argsort(batch + list(axes)))
    s = s.reshape(bshape + ((n // g,) if group_size is not None else ()))
    return q, s


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.fixture(params=[np.int8, E4M3], ids=["int8", "e4m3fn"])
def qdtype(request):
    return np.dtype(request.param)


# ---- quantize -------------------------------------------------------------------------------


@pytest.mark.parametrize("ydtype", [np.float32, np.float64, np.float16, BFLOAT16])
@pytest.mark.parametrize("n, group_size", [(1, None), (7, None), (33, None), (96, 32), (4096, 128)])
def test_quantize_gives_the_reference_bits(rng, ydtype, qdtype, n, group_size):
    y = (rng.standard_normal((5, n)) * rng.uniform(1e-3, 1e3, (5, 1))).astype(ydtype)
    q, s = fastnorm.quantize(y, qdtype, group_size=group_size)
    rq, rs = quantize_reference(y, qdtype, group_size=group_size)
    assert same_bits(q, rq) and same_bits(s, rs)


@pytest.mark.parametrize("axis", [0, 1, (1, 2), (0, 2)])
def test_quantize_along_any_axes(rng, qdtype, axis):
    y = rng.standard_normal((4, 6, 8)).astype(np.float32)
    q, s = fastnorm.quantize(y, qdtype, axis=axis)
    rq, rs = quantize_reference(y, qdtype, axis=axis)
    assert same_bits(q, rq) and same_bits(s, rs)
    assert q.flags.c_contiguous


def test_int8_rounds_half_to_even_and_never_truncates():
    # amax 127: scale 1.0 exactly, so y / scale are the values themselves
    y = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -2.5, 3.5, -126.5, 0.49999997]], np.float32)
    q, s = fastnorm.quantize(y)
    assert s.tolist() == [1.0]
    assert q.tolist() == [[127, 0, 2, 2, 0, -2, 4, -126, 0]]


def test_e4m3_rounds_to_nearest_even_and_saturates():
    # amax 448: scale 1.0; 1.0625 is halfway between 1.0 and 1.125 (to even:
    # 1.0), 1.1875 between 1.125 and 1.25 (to 1.25); 2^-10 halfway between
    # 0 and the smallest subnormal 2^-9 (to 0); 3 * 2^-10 to 2^-8
    y = np.array([[448.0, 1.0625, 1.1875, 2.0**-10, 3 * 2.0**-10, -1.0625, 0.0]], np.float32)
    q, s = fastnorm.quantize(y, E4M3)
    assert s.tolist() == [1.0]
    assert q.astype(np.float32).tolist() == [[448.0, 1.0, 1.25, 0.0, 2.0**-8, -1.0, 0.0]]
    q, _ = fastnorm.quantize(np.array([[500.0, -1e30, 1.0]], np.float32), E4M3, scale=1.0)
    assert q.astype(np.float32).tolist() == [[448.0, -448.0, 1.0]]


def test_all_zero_rows_get_the_floor_scale_and_zero_codes(qdtype):
    q, s = fastnorm.quantize(np.zeros((2, 40), np.float32), qdtype)
    assert s.tolist() == [FLOOR, FLOOR]
    assert not q.view(np.uint8).any()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("ydtype", [np.float32, np.float64])
def test_groups_with_nan_or_inf_get_a_nan_scale_and_no_usable_code(ydtype, qdtype, bad):
    y = np.ones((3, 64), ydtype)
    y[1, 37] = bad
    q, s = fastnorm.quantize(y, qdtype, group_size=32)
    assert np.isnan(s[1, 1]) and np.isfinite(np.delete(s.ravel(), 3)).all()
    codes = q.view(np.uint8)[1, 32:]
    assert (codes == (0 if qdtype == np.int8 else 0x7F)).all()
    assert same_bits(q, quantize_reference(y, qdtype, group_size=32)[0])


def test_float64_groups_whose_scale_overflows_float32_are_treated_as_non_finite(qdtype):
    y = np.array([[1e300, 1.0, -2.0, 0.5], [1e38, 1.0, -2.0, 0.5]])
    q, s = fastnorm.quantize(y, qdtype, group_size=2)
    assert np.isnan(s[0, 0]) and np.isfinite(np.delete(s.ravel(), 0)).all()
    assert (q.view(np.uint8)[0, :2] == (0 if qdtype == np.int8 else 0x7F)).all()
    assert same_bits(q, quantize_reference(y, qdtype, group_size=2)[0])


def test_static_scales_saturate_inf_and_zero_or_nan_a_nan(qdtype):
    y = np.array([[np.nan, np.inf, -np.inf, 1.0, -np.nan]], np.float32)
    q, s = fastnorm.quantize(y, qdtype, scale=0.5)
    assert s.tolist() == [0.5]
    if qdtype == np.int8:
        assert q.tolist() == [[0, 127, -127, 2, 0]]
    else:
        assert q.view(np.uint8).tolist() == [[0x7F, 0x7E, 0xFE, 0x40, 0xFF]]


@pytest.mark.parametrize("scale", [0.02, [0.01, 0.02, 0.03], np.float64(0.05)])
def test_static_scales_are_used_as_given_and_returned(rng, qdtype, scale):
    y = rng.standard_normal((3, 64)).astype(np.float32)
    q, s = fastnorm.quantize(y, qdtype, scale=scale)
    assert s.dtype == np.float32 and s.shape == (3,)
    assert same_bits(s, np.broadcast_to(np.asarray(scale, np.float32).reshape(-1), (3,)).copy())
    assert same_bits(q, quantize_reference(y, qdtype, scale=np.asarray(scale).reshape(-1))[0])


def test_quantize_writes_out_and_scale_out(rng, qdtype):
    y = rng.standard_normal((4, 64)).astype(np.float32)
    out, scale_out = np.empty((4, 64), qdtype), np.empty((4, 2), np.float32)
    q, s = fastnorm.quantize(y, qdtype, group_size=32, out=out, scale_out=scale_out)
    assert q is out and s is scale_out
    rq, rs = quantize_reference(y, qdtype, group_size=32)
    assert same_bits(out, rq) and same_bits(scale_out, rs)
    # a strided out is written through
    big = np.zeros((4, 128), qdtype)
    q, _ = fastnorm.quantize(y, qdtype, out=big[:, ::2])
    assert same_bits(big[:, ::2], quantize_reference(y, qdtype)[0])
    assert not big[:, 1::2].view(np.uint8).any()


# ---- the quantized norms ----------------------------------------------------------------------

NORMS = {
    "rms": (fastnorm.rms_norm_quant, fastnorm.rms_norm, False),
    "layer": (fastnorm.layer_norm_quant, fastnorm.layer_norm, True),
}
ADD_NORMS = {
    "rms": (fastnorm.add_rms_norm_quant, fastnorm.add_rms_norm, False),
    "layer": (fastnorm.add_layer_norm_quant, fastnorm.add_layer_norm, True),
}


def compute_dtype(dtype):
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


def layouts(x):
    """x as the fused path takes it, and in layouts that take the two steps."""
    yield "C", x
    yield "F", np.asfortranarray(x)
    yield "strided", np.repeat(x, 2, axis=-1)[..., ::2]


@pytest.mark.parametrize("which", ["rms", "layer"])
@pytest.mark.parametrize("xdtype", [np.float32, np.float64, np.float16, BFLOAT16])
@pytest.mark.parametrize("n, group_size", [(5, None), (130, None), (768, 128), (4096, None)])
def test_quantized_norm_is_the_float_norm_then_quantize(rng, which, xdtype, qdtype, n, group_size):
    quant, norm, has_bias = NORMS[which]
    x = (rng.standard_normal((9, n)) * 3 + 10).astype(xdtype)
    w = rng.standard_normal(n).astype(np.float32)
    kw = {"bias": rng.standard_normal(n).astype(np.float32)} if has_bias else {}
    for name, xl in layouts(x):
        y = norm(xl, weight=w, dtype=compute_dtype(xdtype), **kw)
        rq, rs = fastnorm.quantize(y, qdtype, group_size=group_size)
        q, s = quant(xl, weight=w, dtype=qdtype, group_size=group_size, **kw)
        assert same_bits(q, rq) and same_bits(s, rs), name
        # and the reference's bits
        rq2, rs2 = quantize_reference(y, qdtype, group_size=group_size)
        assert same_bits(q, rq2) and same_bits(s, rs2), name


@pytest.mark.parametrize("which", ["rms", "layer"])
@pytest.mark.parametrize("xdtype", [np.float32, np.float64, BFLOAT16])
def test_quantized_add_norm_is_the_add_norm_then_quantize(rng, which, xdtype, qdtype):
    quant, add_norm, has_bias = ADD_NORMS[which]
    x = rng.standard_normal((17, 256)).astype(xdtype)
    r = rng.standard_normal((17, 256)).astype(xdtype)
    kw = {"bias": np.linspace(-1, 1, 256, dtype=np.float32)} if has_bias else {}
    y, h = add_norm(x, r, weight=np.full(256, 2.0, np.float32), dtype=compute_dtype(xdtype), **kw)
    rq, rs = fastnorm.quantize(y, qdtype, group_size=64)
    q, s, hq = quant(x, r, weight=np.full(256, 2.0, np.float32), dtype=qdtype, group_size=64, **kw)
    assert same_bits(q, rq) and same_bits(s, rs) and same_bits(hq, h)
    # h written into the residual itself (residual_out=residual)
    r2 = r.copy()
    q2, s2, h2 = quant(x, r2, weight=np.full(256, 2.0, np.float32), dtype=qdtype, group_size=64,
                       residual_out=r2, **kw)  # fmt: skip
    assert h2 is r2 and same_bits(r2, h) and same_bits(q2, rq) and same_bits(s2, rs)


def test_quantized_norm_over_leading_or_several_axes(rng, qdtype):
    x = rng.standard_normal((4, 6, 8)).astype(np.float32)
    for kw in ({"axis": 1}, {"normalized_shape": (6, 8)}, {"axis": (0, 2)}):
        y = fastnorm.rms_norm(x, **kw)
        axes = kw.get("axis", (1, 2))
        rq, rs = fastnorm.quantize(y, qdtype, axis=axes)
        q, s = fastnorm.rms_norm_quant(x, dtype=qdtype, **kw)
        assert same_bits(q, rq) and same_bits(s, rs), kw


def test_quantized_norm_with_static_scale(rng, qdtype):
    x = rng.standard_normal((8, 512)).astype(np.float32)
    q, s = fastnorm.rms_norm_quant(x, dtype=qdtype, scale=0.03)
    assert same_bits(s, np.full(8, 0.03, np.float32))
    assert same_bits(q, quantize_reference(fastnorm.rms_norm(x), qdtype, scale=0.03)[0])


def test_quantized_norm_rows_with_nan_are_defined(qdtype):
    x = np.ones((4, 300), np.float32)
    x[2, 5] = np.nan
    x[3, 7] = np.inf
    q, s = fastnorm.rms_norm_quant(x, dtype=qdtype)
    assert np.isnan(s[2:]).all() and np.isfinite(s[:2]).all()
    assert (q.view(np.uint8)[2:] == (0 if qdtype == np.int8 else 0x7F)).all()


def test_quantized_norms_are_the_same_bits_on_one_and_two_threads(rng, qdtype):
    x = rng.standard_normal((512, 1024)).astype(np.float32)
    r = rng.standard_normal((512, 1024)).astype(np.float32)
    with threadpool_limits(1):
        one = fastnorm.add_layer_norm_quant(x, r, dtype=qdtype, group_size=128)
    with threadpool_limits(2):
        two = fastnorm.add_layer_norm_quant(x, r, dtype=qdtype, group_size=128)
    assert all(same_bits(a, b) for a, b in zip(one, two))


def test_quantized_norms_leave_their_inputs_alone(rng):
    x = rng.standard_normal((16, 256)).astype(np.float32)
    r = rng.standard_normal((16, 256)).astype(np.float32)
    w = rng.standard_normal(256).astype(np.float32)
    copies = [a.copy() for a in (x, r, w)]
    fastnorm.add_rms_norm_quant(x, r, weight=w, group_size=64)
    assert all(same_bits(a, b) for a, b in zip((x, r, w), copies))


# ---- dtype= of the float norms ----------------------------------------------------------------


@pytest.mark.parametrize("which", ["rms", "layer"])
@pytest.mark.parametrize("xdtype", [np.float16, BFLOAT16])
def test_float32_results_of_half_inputs_round_to_the_half_results(rng, isa, which, xdtype):
    _, norm, has_bias = NORMS[which]
    x = (rng.standard_normal((33, 200)) * 4 - 3).astype(xdtype)
    kw = {"bias": rng.standard_normal(200).astype(np.float32)} if has_bias else {}
    w = rng.standard_normal(200).astype(np.float32)
    for name, xl in list(layouts(x)) + [("axis0", np.ascontiguousarray(x.T))]:
        axis = 0 if name == "axis0" else -1
        wide = norm(xl, weight=w, dtype=np.float32, axis=axis, **kw)
        narrow = norm(xl, weight=w, axis=axis, **kw)
        assert wide.dtype == np.float32 and narrow.dtype == xdtype
        rounded = wide.astype(xdtype)
        if isa == "avx512_bf16" and xdtype == BFLOAT16:  # (it flushes below 2^-126)
            rounded[np.abs(wide) < 2.0**-126] = 0
        assert same_bits(rounded, narrow), name


@pytest.mark.parametrize("xdtype", [np.float16, BFLOAT16, np.float32])
def test_fused_add_float32_results_round_to_the_half_results(rng, isa, xdtype):
    x = rng.standard_normal((20, 300)).astype(xdtype)
    r = rng.standard_normal((20, 300)).astype(xdtype)
    y, h = fastnorm.add_layer_norm(x, r, dtype=np.float32)
    y0, h0 = fastnorm.add_layer_norm(x, r)
    assert y.dtype == np.float32 and same_bits(h, h0)
    rounded = y.astype(xdtype)
    if isa == "avx512_bf16" and xdtype == BFLOAT16:
        rounded[np.abs(y) < 2.0**-126] = 0
    assert same_bits(rounded, y0)


@pytest.mark.parametrize(
    "xdtype, dtype",
    [
        (np.float32, np.float64),
        (np.float32, np.float16),
        (np.float32, BFLOAT16),
        (np.float64, np.float32),
        (np.float64, np.float16),
        (BFLOAT16, np.float16),
        (np.float16, np.float64),
    ],
)
def test_other_result_dtypes_round_the_compute_dtype_result_once(rng, xdtype, dtype):
    x = rng.standard_normal((6, 100)).astype(xdtype)
    ct = compute_dtype(xdtype)
    for f in (fastnorm.layer_norm, fastnorm.rms_norm):
        y = f(x, dtype=dtype)
        assert y.dtype == np.dtype(dtype)
        assert same_bits(y, f(x, dtype=ct).astype(dtype))
        out = np.empty((6, 100), dtype)
        assert f(x, dtype=dtype, out=out) is out and same_bits(out, y)
    y, h = fastnorm.add_rms_norm(x, x, dtype=dtype)
    assert h.dtype == x.dtype and same_bits(
        y, fastnorm.add_rms_norm(x, x, dtype=ct)[0].astype(dtype)
    )


def test_dtype_none_and_the_input_dtype_are_the_default(rng):
    x = rng.standard_normal((3, 10)).astype(np.float16)
    assert same_bits(fastnorm.layer_norm(x, dtype=np.float16), fastnorm.layer_norm(x))
    assert fastnorm.layer_norm(np.arange(6).reshape(2, 3)).dtype == np.float64


# ---- bad input ----------------------------------------------------------------------------------


@pytest.mark.any_isa
def test_bad_quantization_arguments_get_clear_errors():
    y = np.ones((4, 96), np.float32)
    with pytest.raises(ValueError, match=r"group_size=40 .* size 96"):
        fastnorm.quantize(y, group_size=40)
    with pytest.raises(ValueError, match="positive divisor"):
        fastnorm.quantize(y, group_size=0)
    with pytest.raises(TypeError, match="group_size must be an int"):
        fastnorm.quantize(y, group_size=32.0)
    with pytest.raises(TypeError, match="group_size must be an int"):
        fastnorm.quantize(y, group_size=True)
    for dt in (np.int16, np.uint8, np.float32, "float8_e5m2", "bogus"):
        with pytest.raises(TypeError, match="int8 or ml_dtypes.float8_e4m3fn"):
            fastnorm.quantize(y, dt)
    with pytest.raises(ValueError, match=r"scale has shape \(3,\).*\(4,\)"):
        fastnorm.quantize(y, scale=np.ones(3))
    for s in (0.0, -1.0, np.nan, np.inf, 1e-50, 1e-39):
        with pytest.raises(ValueError, match="finite and at least 2"):
            fastnorm.quantize(y, scale=s)
    with pytest.raises(TypeError, match="scale must be real"):
        fastnorm.quantize(y, scale="big")
    with pytest.raises(TypeError, match="out has dtype float32 but the result has dtype int8"):
        fastnorm.quantize(y, out=np.empty((4, 96), np.float32))
    with pytest.raises(ValueError, match=r"out has shape \(4, 95\)"):
        fastnorm.quantize(y, out=np.empty((4, 95), np.int8))
    with pytest.raises(TypeError, match="scale_out has dtype float64"):
        fastnorm.quantize(y, scale_out=np.empty(4))
    with pytest.raises(ValueError, match=r"scale_out has shape \(4,\) but the scales have shape "
                       r"\(4, 3\)"):  # fmt: skip
        fastnorm.quantize(y, group_size=32, scale_out=np.empty(4, np.float32))
    with pytest.raises(ValueError, match="read-only"):
        fastnorm.quantize(y, scale_out=_readonly(4))
    with pytest.raises(TypeError, match="must be a real numeric array"):
        fastnorm.quantize(np.array([["a", "b"]]))


def _readonly(n):
    a = np.empty(n, np.float32)
    a.flags.writeable = False
    return a


@pytest.mark.any_isa
def test_bad_quantized_norm_arguments_get_clear_errors():
    x = np.ones((4, 96), np.float32)
    with pytest.raises(ValueError, match=r"group_size=64 .* size 96"):
        fastnorm.rms_norm_quant(x, group_size=64)
    with pytest.raises(TypeError, match="int8 or ml_dtypes.float8_e4m3fn"):
        fastnorm.layer_norm_quant(x, dtype=np.float16)
    with pytest.raises(ValueError, match=r"residual has shape \(4, 95\)"):
        fastnorm.add_rms_norm_quant(x, np.ones((4, 95), np.float32))
    with pytest.raises(ValueError, match="weight"):
        fastnorm.rms_norm_quant(x, weight=np.ones(95, np.float32))
    with pytest.raises(TypeError, match="out has dtype int8 but the result has dtype"):
        fastnorm.rms_norm_quant(x, dtype=E4M3, out=np.empty((4, 96), np.int8))


@pytest.mark.any_isa
def test_bad_result_dtypes_get_clear_errors():
    x = np.ones((2, 8), np.float32)
    with pytest.raises(TypeError, match="float32, float64, float16 or bfloat16.*got int8; "
                       "for quantized outputs use rms_norm_quant"):  # fmt: skip
        fastnorm.rms_norm(x, dtype=np.int8)
    with pytest.raises(TypeError, match="got complex64"):
        fastnorm.layer_norm(x, dtype=np.complex64)
    with pytest.raises(TypeError, match="dtype must be a NumPy dtype"):
        fastnorm.layer_norm(x, dtype="nonsense")
    with pytest.raises(TypeError, match="out has dtype float32 but the result has dtype float64"):
        fastnorm.layer_norm(x, dtype=np.float64, out=np.empty((2, 8), np.float32))
    with pytest.raises(TypeError, match="out has dtype float32 but the result has dtype float16"):
        fastnorm.add_layer_norm(x, x, dtype=np.float16, out=np.empty((2, 8), np.float32))
