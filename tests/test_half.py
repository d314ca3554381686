"""float16 and bfloat16: computed in float32, rounded once on store.

The forward must be within 1 ulp of the output dtype of a float64+ reference
of the same half-precision input, on every ISA (the conftest fixture pins
each in turn); stats are float32; weight and bias may be float32 or the
input's dtype; dweight/dbias are float32 sums accurate to 1e-3 relative."""

import numpy as np
import pytest
from _reference import (
    BFLOAT16,
    HALF_DTYPES,
    OPS,
    assert_close,
    axes_of,
    max_error,
    max_ulp_error,
    reference,
    reference_backward,
)

import fastnorm
import fastnorm._testing

HALF_IDS = ["float16", "bfloat16"]
FN = {"layer_norm": fastnorm.layer_norm, "rms_norm": fastnorm.rms_norm}
BWD = {"layer_norm": fastnorm.layer_norm_backward, "rms_norm": fastnorm.rms_norm_backward}


# ---- the portable conversions, against NumPy's and ml_dtypes' casts -------


@pytest.mark.any_isa
@pytest.mark.parametrize("kind,dtype", [("f16", np.float16), ("bf16", BFLOAT16)])
def test_software_widening_is_exact_for_every_bit_pattern(kind, dtype):
    bits = np.arange(1 << 16, dtype=np.uint16)
    got = fastnorm._testing.software_widen(kind, bits)
    # every bit pattern includes the signalling NaNs, whose cast raises the
    # invalid flag on some CPUs (aarch64's FCVT)
    with np.errstate(invalid="ignore"):
        want = bits.view(dtype).astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


def _narrowing_inputs():
    rng = np.random.default_rng(7)
    random_bits = rng.integers(0, 1 << 32, 400000, dtype=np.uint64).astype(np.uint32)
    # every float16 value and its neighbours, midpoints (ties) and the values
    # either side of them, across normal, subnormal and overflow ranges
    with np.errstate(invalid="ignore"):  # signalling NaNs, as above
        halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
    halves = halves[np.isfinite(halves)]
    mids = ((halves[:-1].astype(np.float64) + halves[1:]) / 2).astype(np.float32)
    near = np.concatenate(
        [mids, np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(-np.inf))]
    )
    special = np.array(
        [
            0.0,
            -0.0,
            np.inf,
            -np.inf,
            np.nan,
            65504,
            65519.996,
            65520,
            65536,
            2.0**-24,
            2.0**-25,
            2.0**-25 * 1.0000001,
            2.0**-14,
            3.4028235e38,
            1.0e-40,
            -1.0e-45,
        ],
        np.float32,
    )
    return np.concatenate([random_bits.view(np.float32), halves, near, special])


@pytest.mark.any_isa
@pytest.mark.parametrize("kind,dtype", [("f16", np.float16), ("bf16", BFLOAT16)])
def test_software_narrowing_rounds_to_nearest_even(kind, dtype):
    values = _narrowing_inputs()
    got = fastnorm._testing.software_narrow(kind, values)
    with np.errstate(over="ignore", invalid="ignore"):
        want = values.astype(dtype).view(np.uint16)
    nan = np.isnan(values)
    assert np.array_equal(got[~nan], want[~nan])
    # a NaN stays a NaN of the same sign
    with np.errstate(invalid="ignore"):
        assert np.isnan(got[nan].view(dtype).astype(np.float32)).all()
    assert np.array_equal(got[nan] >> 15, values[nan].view(np.uint32) >> 31)


# ---- forward accuracy: within 1 ulp ---------------------------------------

CASES = [
    ((5, 1), {}),
    ((3, 7), {}),
    ((4, 17), {}),
    ((6, 64), {}),
    ((3, 100), {}),
    ((2, 4097), {}),
    ((3, 5, 33), {"normalized_shape": (5, 33)}),
    ((2, 40, 3, 5), {"axis": 1}),  # channels-first: rows side by side
    ((4, 40), {"axis": 0}),  # Fortran-like: rows side by side
    ((3, 5, 7), {"axis": (0, 2)}),
]


def _inputs(shape, dtype, rng, base=0.0, spread=1.0):
    return (base + spread * rng.standard_normal(shape)).astype(dtype)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("affine", ["none", "float32", "input dtype"])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_forward_within_one_ulp(op, dtype, case, affine, layout, rng):
    shape, kwargs = CASES[case]
    axes = axes_of(len(shape), kwargs.get("normalized_shape"), kwargs.get("axis"))
    norm_shape = tuple(shape[a] for a in axes)
    x = _inputs(shape, dtype, rng, base=1.5)
    if layout == "F":
        x = np.asfortranarray(x)
    elif layout == "strided":
        big = _inputs(tuple(2 * s for s in shape), dtype, rng, base=1.5)
        big[tuple(slice(None, None, 2) for _ in shape)] = x
        x = big[tuple(slice(None, None, 2) for _ in shape)]
    w = b = None
    if affine != "none":
        wdt = np.float32 if affine == "float32" else dtype
        w = rng.normal(1, 0.5, norm_shape).astype(wdt)
        b = rng.normal(0, 0.5, norm_shape).astype(wdt) if op == "layer_norm" else None
    x_before = x.copy()
    extra = {"bias": b} if op == "layer_norm" else {}
    res = FN[op](x, weight=w, return_stats=True, **extra, **kwargs)
    y, stats = res[0], res[1:]
    assert y.dtype == dtype and y.shape == x.shape
    assert all(s.dtype == np.float32 for s in stats)
    assert np.array_equal(x.view(np.uint16), x_before.view(np.uint16))
    y_ref, mean_ref, rstd_ref = reference(op, x, axes, w, b)
    slack = None
    if b is not None:
        # y = xhat * w + b is computed in float32 (as specified): where
        # the bias cancels xhat * w, the float32 rounding of that product
        # (2^-24 of it, at most twice) can be more than an ulp of the small
        # result.  That allowance only; everything else within 1 ulp.
        scaled = y_ref.astype(np.float64) - reference(op, np.zeros_like(x), axes, None, b)[0]
        slack = 2.0**-23 * np.abs(scaled.astype(np.float64))
    assert max_ulp_error(y, y_ref, dtype, slack) <= 1.0
    assert_close(stats[-1], rstd_ref, np.float32)
    if op == "layer_norm":
        assert_close(stats[0], mean_ref, np.float32)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
@pytest.mark.parametrize("base,spread", [(0.0, 1e-3), (1e2, 1.0), (1e3, 30.0), (-4e3, 100.0)])
def test_large_mean_within_one_ulp(op, dtype, base, spread, rng):
    x = _inputs((4, 1000), dtype, rng, base, spread)
    y = FN[op](x)
    assert max_ulp_error(y, reference(op, x, (1,))[0], dtype) <= 1.0


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
def test_streaming_and_out_and_in_place_agree(op, dtype, rng):
    """out=, in place and the streaming-store path give the same bits."""
    x = _inputs((9, 300), dtype, rng)
    y = FN[op](x)
    out = np.empty_like(x)
    assert FN[op](x, out=out) is out
    previous = fastnorm._core.set_stream_min_bytes(0)
    try:
        streamed = FN[op](x)
        # an output not aligned to a vector: the head goes through masked stores
        odd = np.empty(x.size + 1, dtype)[1:].reshape(x.shape)
        FN[op](x, out=odd)
    finally:
        fastnorm._core.set_stream_min_bytes(previous)
    z = x.copy()
    FN[op](z, out=z)
    for other in (out, streamed, odd, z):
        assert np.array_equal(other.view(np.uint16), y.view(np.uint16))


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
def test_nonfinite_rows_and_overflowing_squares(dtype, rng):
    x = _inputs((4, 40), dtype, rng)
    x[1, 3] = np.nan
    x[2, 5] = np.inf
    big = float(
        np.asarray(65000.0 if dtype == np.float16 else 3e38).astype(dtype).astype(np.float64)
    )
    x[3] = np.where(np.arange(40) % 2, big, -big).astype(dtype)
    for op in OPS:
        y = FN[op](x)
        assert np.isnan(y[1].astype(np.float32)).all() and np.isnan(y[2].astype(np.float32)).all()
        assert max_ulp_error(y[[0, 3]], reference(op, x[[0, 3]], (1,))[0], dtype) <= 1.0


def test_half_center_is_exact_in_every_layout():
    """A row symmetric about its mean normalizes its middle element to
    exactly 0, contiguous or strided (portable kernel)."""
    row = np.array([-3.5, -1.25, 0.375, 2.0, 3.875], np.float32)
    x = (row[None, :] + np.arange(6, dtype=np.float32)[:, None] * 0.0).astype(BFLOAT16)
    x = np.concatenate([x, -x[:, ::-1]], axis=1)  # symmetric rows: mean exactly 0
    x = np.concatenate([x, np.zeros((6, 1), x.dtype)], axis=1)
    big = np.zeros((12, 22), x.dtype)
    big[::2, ::2] = x
    for view in (x, big[::2, ::2]):
        y = fastnorm.layer_norm(view)
        assert y[:, -1].astype(np.float32).tolist() == [0.0] * 6


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
@pytest.mark.parametrize("layout", ["C", "F", "strided", "fused add"])
def test_half_center_is_exact_when_the_row_has_a_tail(dtype, layout):
    """Found by the guard fuzzer: a bfloat16 row of 67 elements, 1000 but
    for one 1004 and one 996, gave -1e-17 (not 0) where x == mean, because
    the SIMD blocks' mean and the tail's were merged by Chan's formula,
    rounding twice.  Every length that leaves a tail after the 4*VL blocks
    of each kernel set, with the outliers in the blocks and in the tail."""
    for n in [3, 17, 33, 35, 65, 67, 97, 129, 131, 200, 259, 515]:
        x = np.full((4, n), 1000.0, np.float32)
        x[0, n // 2], x[0, -1] = 1004.0, 996.0  # one outlier in the tail
        x[1, 0], x[1, -1] = 996.0, 1004.0
        x[2, 1], x[2, 2] = 1004.0, 996.0  # both in the first block
        x[3, -2], x[3, -1] = 996.0, 1004.0  # both in the tail
        x = x.astype(dtype)
        if layout == "F":
            y, mean, _ = fastnorm.layer_norm(np.asfortranarray(x), return_stats=True)
        elif layout == "strided":
            y, mean, _ = fastnorm.layer_norm(np.repeat(x, 2, axis=1)[:, ::2], return_stats=True)
        elif layout == "fused add":
            r = np.zeros_like(x)
            y, _, mean, _ = fastnorm.add_layer_norm(x, r, return_stats=True)
        else:
            y, mean, _ = fastnorm.layer_norm(x, return_stats=True)
        at_mean = x.astype(np.float32) == 1000.0
        assert mean.ravel().tolist() == [1000.0] * 4, (n, mean.ravel())
        assert (y.astype(np.float32)[at_mean] == 0.0).all(), (n, y[~np.isclose(y, 0) & at_mean])
        assert max_ulp_error(y, reference("layer_norm", x, (1,))[0], dtype) <= 1.0


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
def test_half_weight_equals_float32_weight(dtype, rng):
    x = _inputs((5, 70), dtype, rng)
    w = rng.normal(1, 0.5, 70).astype(dtype)
    a = fastnorm.layer_norm(x, weight=w, bias=w)
    b = fastnorm.layer_norm(x, weight=w.astype(np.float32), bias=w.astype(np.float32))
    assert np.array_equal(a.view(np.uint16), b.view(np.uint16))


@pytest.mark.any_isa
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
def test_half_weight_changed_in_place_is_seen(dtype, rng):
    """Widened half weights are reused between calls only while the weight
    holds the same bytes: in-place updates (an optimizer step, a view
    written to) are seen by the next call."""
    x = _inputs((4, 64), dtype, rng)
    w = rng.normal(1, 0.5, 64).astype(dtype)
    first = fastnorm.rms_norm(x, weight=w)
    w[3] = w[3] * 2
    np.asarray(w[10:11]).view(np.uint16)[0] ^= 1  # a change of one bit, through a view
    after = fastnorm.rms_norm(x, weight=w)
    expected = fastnorm.rms_norm(x, weight=w.astype(np.float32))
    assert np.array_equal(after.view(np.uint16), expected.view(np.uint16))
    assert not np.array_equal(after.view(np.uint16), first.view(np.uint16))


@pytest.mark.any_isa
# (NumPy 2.5 deprecates relabelling an array in place, which this test does
# on purpose: a caller on an older NumPy, or one ignoring the notice, can)
@pytest.mark.filterwarnings(
    "ignore:Setting the dtype on a NumPy array has been deprecated:DeprecationWarning"
)
def test_half_weight_whose_dtype_is_reassigned_is_widened_again(rng):
    """The widened-weight cache keys on the weight's bytes and dtype: the
    same bytes relabelled in place (w.dtype = ...) from float16 to bfloat16
    widen to other values."""
    w = rng.normal(1, 0.5, 64).astype(np.float16)
    fastnorm.rms_norm(_inputs((4, 64), np.float16, rng), weight=w)
    w.dtype = BFLOAT16
    x = _inputs((4, 64), BFLOAT16, rng)
    got = fastnorm.rms_norm(x, weight=w)
    expected = fastnorm.rms_norm(x, weight=w.astype(np.float32))
    assert np.array_equal(got.view(np.uint16), expected.view(np.uint16))


@pytest.mark.any_isa
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
def test_default_eps_is_float32s_epsilon(dtype, rng):
    x = _inputs((3, 20), dtype, rng)
    explicit = fastnorm.rms_norm(x, eps=float(np.finfo(np.float32).eps))
    assert np.array_equal(fastnorm.rms_norm(x).view(np.uint16), explicit.view(np.uint16))


@pytest.mark.any_isa
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
def test_out_of_another_dtype_is_refused(dtype):
    x = np.ones((2, 8), dtype)
    with pytest.raises(TypeError, match="out has dtype float32 but the result has dtype"):
        fastnorm.layer_norm(x, out=np.empty((2, 8), np.float32))


# ---- fused residual add -----------------------------------------------------


@pytest.mark.parametrize("op", ["add_layer_norm", "add_rms_norm"])
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
@pytest.mark.parametrize("n", [5, 64, 333])
def test_fused_add_equals_two_steps(op, dtype, n, rng):
    x = _inputs((7, n), dtype, rng)
    r = _inputs((7, n), dtype, rng, spread=3.0)
    w = rng.normal(1, 0.5, n).astype(np.float32)
    y, h = getattr(fastnorm, op)(x, r, weight=w)
    h2 = np.add(x, r)  # NumPy and ml_dtypes add in float32 and round once
    assert h.dtype == dtype
    assert np.array_equal(h.view(np.uint16), h2.view(np.uint16))
    y2 = FN[op[4:]](h2, weight=w)
    assert np.array_equal(y.view(np.uint16), y2.view(np.uint16))


def test_bfloat16_fused_sum_keeps_subnormals():
    """h must be x + residual as NumPy rounds it, subnormals included (the
    AVX512_BF16 instruction would flush them)."""
    x = np.full((2, 40), 3e-39, np.float32).astype(BFLOAT16)
    r = np.full((2, 40), 1e-39, np.float32).astype(BFLOAT16)
    x[1] = np.linspace(-1, 1, 40).astype(BFLOAT16)
    _, h = fastnorm.add_layer_norm(x, r)
    assert np.array_equal(h.view(np.uint16), np.add(x, r).view(np.uint16))


# ---- backward ---------------------------------------------------------------


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
@pytest.mark.parametrize("case", [0, 2, 4, 5, 7, 9])
def test_backward_matches_reference(op, dtype, case, rng):
    shape, kwargs = CASES[case]
    axes = axes_of(len(shape), kwargs.get("normalized_shape"), kwargs.get("axis"))
    norm_shape = tuple(shape[a] for a in axes)
    x = _inputs(shape, dtype, rng, base=1.0)
    dy = _inputs(shape, dtype, rng)
    w = rng.normal(1, 0.5, norm_shape).astype(np.float32)
    out = BWD[op](dy, x, weight=w, **kwargs)
    dx_ref, dw_ref, db_ref = reference_backward(op, dy, x, axes, w)
    assert out[0].dtype == dtype and out[1].dtype == np.float32
    # dx is computed in float32 (with cancellation between its terms) and
    # rounded once: within an ulp plus float32 error relative to the row's
    # largest gradient
    row_max = np.max(np.abs(dx_ref.astype(np.float64)), axis=axes, keepdims=True)
    assert max_ulp_error(out[0], dx_ref, dtype, slack=2.0**-20 * row_max) <= 1.0
    assert max_error(out[1], dw_ref) <= 1e-5 * max(1.0, float(np.abs(dw_ref).max()))
    if op == "layer_norm":
        assert out[2].dtype == np.float32
        assert max_error(out[2], db_ref) <= 1e-5 * max(1.0, float(np.abs(db_ref).max()))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.slow
def test_bfloat16_parameter_sums_at_65536_rows(op, rng):
    """The target: dweight and dbias within 1e-3 relative at
    (65536, 256) bfloat16 (PyTorch 2.13 keeps bf16 partial sums and loses
    18% there)."""
    shape = (65536, 256)
    x = rng.normal(0.5, 2, shape).astype(BFLOAT16)
    dy = rng.normal(0.1, 1, shape).astype(BFLOAT16)
    w = rng.normal(1, 0.5, 256).astype(BFLOAT16)
    out = BWD[op](dy, x, weight=w)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    if op == "layer_norm":
        c = x64 - x64.mean(axis=1, keepdims=True)
        xhat = c / np.sqrt((c * c).mean(axis=1, keepdims=True) + 1e-5)
    else:
        xhat = x64 / np.sqrt(
            (x64 * x64).mean(axis=1, keepdims=True) + float(np.finfo(np.float32).eps)
        )
    dw_ref = (dy64 * xhat).sum(axis=0)
    rel = np.abs(out[1].astype(np.float64) - dw_ref) / np.abs(dw_ref).max()
    assert rel.max() <= 1e-3
    if op == "layer_norm":
        db_ref = dy64.sum(axis=0)
        assert (np.abs(out[2] - db_ref) / np.abs(db_ref).max()).max() <= 1e-3


# ---- against PyTorch's bf16/fp16 CPU kernels ---------------------------------


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
def test_layer_norm_matches_torch_within_one_ulp(dtype, rng):
    torch = pytest.importorskip("torch")
    tdt = torch.bfloat16 if dtype == BFLOAT16 else torch.float16
    x = _inputs((16, 384), dtype, rng, base=0.5)
    w = rng.normal(1, 0.5, 384).astype(dtype)
    b = rng.normal(0, 0.5, 384).astype(dtype)
    tx = torch.from_numpy(x.astype(np.float32)).to(tdt)
    ty = torch.nn.functional.layer_norm(
        tx,
        (384,),
        torch.from_numpy(w.astype(np.float32)).to(tdt),
        torch.from_numpy(b.astype(np.float32)).to(tdt),
    )
    y = fastnorm.layer_norm(x, weight=w, bias=b)
    y_torch = ty.float().numpy()
    assert max_ulp_error(y, y_torch, dtype) <= 1.0


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
def test_modules_in_half_precision(dtype, rng):
    x = _inputs((6, 48), dtype, rng)
    for module, fn in (
        (fastnorm.LayerNorm(48, dtype=dtype), fastnorm.layer_norm),
        (fastnorm.RMSNorm(48, dtype=dtype), fastnorm.rms_norm),
    ):
        module.weight = rng.normal(1, 0.5, 48).astype(dtype)
        y = module(x)
        assert module.weight.dtype == dtype and y.dtype == dtype
        assert np.array_equal(y.view(np.uint16), fn(x, weight=module.weight).view(np.uint16))
        dx = module.backward(np.ones_like(x))
        assert dx.dtype == dtype and module.weight_grad.dtype == np.float32


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
def test_fast_path_equals_general_path(op, dtype, rng):
    """The C-level fast path (last axis, float32 1-D weight) and the general
    path (here forced by a (1, n) weight) give the same bits and stats."""
    x = _inputs((5, 96), dtype, rng)
    w = rng.normal(1, 0.5, 96).astype(np.float32)
    fast = FN[op](x, weight=w, return_stats=True)
    general = FN[op](x, weight=w.reshape(1, 96), return_stats=True)
    assert np.array_equal(fast[0].view(np.uint16), general[0].view(np.uint16))
    for a, b in zip(fast[1:], general[1:]):
        assert a.dtype == np.float32 and np.array_equal(a, b)
