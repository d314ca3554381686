"""Random calls (hypothesis) of quantize and the quantized norms.

quantize must give test_quantize.quantize_reference's q and scale bit for
bit, for random shapes (1-element rows included), axes, group sizes,
layouts (Fortran, negative strides, stepped views), values (NaN, +-Inf,
huge, subnormal, signed zeros), static scales and out/scale_out; the
quantized norms must be bit for bit the float norm in its compute dtype
followed by quantize (h: the unquantized add_ norm's), and no input may
change.  Each test runs once per kernel set (the conftest fixture), so the
reference pins every set to the same bits.

FASTNORM_QFUZZ_EXAMPLES sets the number of examples per test and kernel set
(default 25, so the normal suite stays fast).
"""

import os

import ml_dtypes
import numpy as np
from _reference import BFLOAT16
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from test_quantize import quantize_reference, same_bits

import fastnorm

EXAMPLES = int(os.environ.get("FASTNORM_QFUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

E4M3 = np.dtype(ml_dtypes.float8_e4m3fn)
QDTYPES = (np.dtype(np.int8), E4M3)
YDTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16), BFLOAT16)
SIZE = st.one_of(
    st.integers(1, 9),
    st.sampled_from([15, 16, 17, 31, 32, 33, 48, 64, 65, 96, 127, 128, 129, 256, 257]),
)
SPECIAL = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 3.0e38, -3.0e38, 1e-40, -1e-45, 1e300]


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def _layout(draw, a):
    """a (C-contiguous) in a random layout, same values."""
    if a.ndim == 0:
        return a
    kind = draw(st.sampled_from(["C", "C", "F", "flip", "step"]))
    if kind == "F":
        return np.asfortranarray(a)
    if kind == "flip":
        ax = draw(st.integers(0, a.ndim - 1))
        return np.flip(np.flip(a, ax).copy(), ax)
    if kind == "step":
        big = np.zeros(tuple(2 * s for s in a.shape), a.dtype)
        view = big[tuple(slice(None, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    return a


def _twin(like, values=None):
    """A fresh array laid out exactly as `like` (same strides, same gaps),
    holding `values` (default: like's): a reference call must see the
    layouts the call under test saw, since a norm's last bits may depend on
    the layout (on the kernel that walks it)."""
    base = like
    while isinstance(base.base, np.ndarray):
        base = base.base
    buf = np.zeros_like(base).ravel(order="K")
    offset = like.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    twin = np.lib.stride_tricks.as_strided(buf[offset // like.itemsize :], like.shape, like.strides)
    twin[...] = like if values is None else values
    return twin


def _values(draw, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["normal", "normal", "wide", "special", "tiny", "zeros"]))
    if kind == "zeros":
        v = np.zeros(shape)
    elif kind == "tiny":
        v = rng.standard_normal(shape) * 1e-39
    elif kind == "wide":
        v = rng.standard_normal(shape) * 10.0 ** rng.uniform(-30, 30, shape)
    else:
        v = rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 3)
    if kind == "special" and v.size:
        flat = v.reshape(-1)
        for _ in range(draw(st.integers(1, 3))):
            flat[rng.integers(flat.size)] = SPECIAL[rng.integers(len(SPECIAL))]
    with np.errstate(over="ignore"):
        return v.astype(dtype)


@st.composite
def quant_cases(draw):
    ydtype = draw(st.sampled_from(YDTYPES))
    qdtype = draw(st.sampled_from(QDTYPES))
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(SIZE, min_size=ndim, max_size=ndim)))
    if np.prod(shape) > 20000:
        shape = shape[-1:]
        ndim = 1
    k = draw(st.integers(1, ndim))
    axes = tuple(sorted(draw(st.permutations(range(ndim)))[:k]))
    axis = axes[0] if len(axes) == 1 and draw(st.booleans()) else axes
    last = shape[axes[-1]]
    group = draw(st.sampled_from([None, None] + _divisors(last)))
    seed = draw(st.integers(0, 2**32 - 1))
    y = _layout(draw, _values(draw, shape, ydtype, seed))
    return ydtype, qdtype, shape, axes, axis, group, y


def _scale_shape(shape, axes, group):
    batch = tuple(s for i, s in enumerate(shape) if i not in axes)
    n = int(np.prod([shape[a] for a in axes]))
    return batch + (() if group is None else (n // group,))


@FUZZ
@given(case=quant_cases(), data=st.data())
def test_quantize_fuzz(case, data):
    ydtype, qdtype, shape, axes, axis, group, y = case
    sshape = _scale_shape(shape, axes, group)
    scale = None
    choice = data.draw(st.sampled_from(["dynamic", "dynamic", "scalar", "array"]))
    if choice == "scalar":
        scale = data.draw(st.sampled_from([2.0**-126, 1e-3, 0.37, 1.0, 1e30]))
    elif choice == "array":
        rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
        scale = np.float32(2.0) ** rng.integers(-126, 100, sshape).astype(np.float32)
        scale = scale * rng.uniform(1, 2, sshape).astype(np.float32)
    kwargs = {}
    if data.draw(st.booleans()):
        kwargs["out"] = _layout(data.draw, np.zeros(shape, qdtype))
    if data.draw(st.booleans()):
        kwargs["scale_out"] = _layout(data.draw, np.zeros(sshape, np.float32))
    note(
        f"{ydtype} -> {qdtype}, shape {shape} strides {y.strides}, axis {axis}, group {group}, "
        f"scale {scale if choice != 'array' else 'array'}, {sorted(kwargs)}"
    )
    y0 = y.copy()
    with np.errstate(all="ignore"):  # (float64 amax / qmax may overflow float32: an Inf scale)
        rq, rs = quantize_reference(y0, qdtype, axis=axes, group_size=group, scale=scale)
    q, s = fastnorm.quantize(y, qdtype, axis=axis, group_size=group, scale=scale, **kwargs)
    assert same_bits(y, y0)
    assert same_bits(q, rq), (q.view(np.uint8), rq.view(np.uint8))
    assert same_bits(s, rs), (s, rs)
    if "out" in kwargs:
        assert q is kwargs["out"]
    if "scale_out" in kwargs:
        assert s is kwargs["scale_out"]


@st.composite
def norm_cases(draw):
    xdtype = draw(st.sampled_from(YDTYPES))
    qdtype = draw(st.sampled_from(QDTYPES))
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(SIZE, min_size=ndim, max_size=ndim)))
    if np.prod(shape) > 20000:
        shape = shape[-1:]
        ndim = 1
    mode = draw(st.sampled_from(["last", "last", "trailing", "first"]))
    if mode == "last":
        axes = (ndim - 1,)
    elif mode == "trailing":
        axes = tuple(range(ndim - draw(st.integers(1, ndim)), ndim))
    else:
        axes = (0,)
    last = shape[axes[-1]]
    group = draw(st.sampled_from([None, None] + _divisors(last)))
    seed = draw(st.integers(0, 2**32 - 1))
    x = _layout(draw, _values(draw, shape, xdtype, seed))
    return xdtype, qdtype, shape, axes, group, seed, x


@FUZZ
@given(case=norm_cases(), data=st.data())
def test_quantized_norms_fuzz(case, data):
    xdtype, qdtype, shape, axes, group, seed, x = case
    which = data.draw(st.sampled_from(["rms", "layer"]))
    add = data.draw(st.booleans())
    rng = np.random.default_rng(seed + 1)
    ct = np.float64 if xdtype == np.float64 else np.float32
    nshape = tuple(shape[a] for a in axes)
    weight = bias = None
    if data.draw(st.booleans()):
        weight = rng.uniform(-2, 2, nshape).astype(ct)
    if which == "layer" and data.draw(st.booleans()):
        bias = rng.uniform(-1, 1, nshape).astype(ct)
    affine = {"weight": weight} if which == "rms" else {"weight": weight, "bias": bias}
    sshape = _scale_shape(shape, axes, group)
    kwargs = {}
    if data.draw(st.booleans()):
        kwargs["scale"] = data.draw(st.sampled_from([0.01, 1.0 / 127]))
    if data.draw(st.booleans()):
        kwargs["out"] = _layout(data.draw, np.zeros(shape, qdtype))
    if data.draw(st.booleans()):
        kwargs["scale_out"] = np.zeros(sshape, np.float32)
    residual = None
    if add:
        residual = _layout(data.draw, rng.standard_normal(shape).astype(xdtype))
        h_mode = data.draw(st.sampled_from(["new", "new", "given", "residual"]))
    x0 = x.copy()
    if add:
        r0 = residual.copy()
    note(
        f"{which} add={add} {xdtype}->{qdtype} shape {shape} strides {x.strides} axes {axes} "
        f"group {group} w {weight is not None} b {bias is not None} {sorted(kwargs)}"
    )
    ref_kwargs = {"axis": axes, **affine}
    quant_kwargs = {k: v for k, v in kwargs.items() if k == "scale"}
    if add:
        fn = fastnorm.add_rms_norm if which == "rms" else fastnorm.add_layer_norm
        fq = fastnorm.add_rms_norm_quant if which == "rms" else fastnorm.add_layer_norm_quant
        # (the reference on x's and residual's own layouts: a norm's last
        # bits may depend on the layout, as the kernel walking it does)
        if h_mode == "given":
            kwargs["residual_out"] = _layout(data.draw, np.zeros(shape, xdtype))
            r_twin, h_twin = residual, _twin(kwargs["residual_out"])
        elif h_mode == "residual":
            kwargs["residual_out"] = residual
            r_twin = h_twin = _twin(residual)
        else:
            r_twin, h_twin = residual, None
        ry, rh = fn(x, r_twin, dtype=ct, residual_out=h_twin, **ref_kwargs)
        rq, rs = fastnorm.quantize(ry, qdtype, axis=axes, group_size=group, **quant_kwargs)
        q, s, h = fq(x, residual, dtype=qdtype, group_size=group, **ref_kwargs, **kwargs)
        assert same_bits(h, rh)
        if h_mode == "residual":
            assert h is residual
        else:
            assert same_bits(residual, r0)
    else:
        fn = fastnorm.rms_norm if which == "rms" else fastnorm.layer_norm
        fq = fastnorm.rms_norm_quant if which == "rms" else fastnorm.layer_norm_quant
        ry = fn(x, dtype=ct, **ref_kwargs)
        rq, rs = fastnorm.quantize(ry, qdtype, axis=axes, group_size=group, **quant_kwargs)
        q, s = fq(x, dtype=qdtype, group_size=group, **ref_kwargs, **kwargs)
    assert same_bits(x, x0)
    assert same_bits(q, rq), (q.view(np.uint8), rq.view(np.uint8))
    assert same_bits(s, rs), (s, rs)
    # and the two-step result is the reference's (ry in the compute dtype)
    with np.errstate(all="ignore"):
        pq, ps = quantize_reference(
            ry, qdtype, axis=axes, group_size=group, scale=kwargs.get("scale")
        )
    assert same_bits(q, pq) and same_bits(s, ps)


@settings(FUZZ, max_examples=max(2, EXAMPLES // 5))
@given(
    rows=st.integers(1, 700),
    n=st.sampled_from([1, 3, 16, 17, 96, 129, 257, 1000, 1025, 4099]),
    xdtype=st.sampled_from(YDTYPES),
    qdtype=st.sampled_from(QDTYPES),
    which=st.sampled_from(["rms", "layer"]),
    add=st.booleans(),
    grouped=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_quantized_norms_many_tiles_and_threads(rows, n, xdtype, qdtype, which, add, grouped, seed):
    """Arrays past the fused path's tile (128 KiB of rows) and the parallel
    threshold: several tiles, on one thread and on every thread."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, n)) * 3).astype(xdtype)
    x[rng.integers(rows), rng.integers(n)] = np.nan
    ct = np.float64 if xdtype == np.float64 else np.float32
    group = _divisors(n)[len(_divisors(n)) // 2] if grouped else None
    args = (x, rng.standard_normal((rows, n)).astype(xdtype)) if add else (x,)
    x0 = x.copy()
    results = []
    for threads in (1, None):
        with threadpool_limits(limits=threads, user_api="openmp"):
            if add:
                fn = fastnorm.add_rms_norm if which == "rms" else fastnorm.add_layer_norm
                fq = (
                    fastnorm.add_rms_norm_quant if which == "rms" else fastnorm.add_layer_norm_quant
                )
                ry, rh = fn(*args, dtype=ct)
                q, s, h = fq(*args, dtype=qdtype, group_size=group)
                assert same_bits(h, rh)
            else:
                fn = fastnorm.rms_norm if which == "rms" else fastnorm.layer_norm
                fq = fastnorm.rms_norm_quant if which == "rms" else fastnorm.layer_norm_quant
                ry = fn(x, dtype=ct)
                q, s = fq(x, dtype=qdtype, group_size=group)
        rq, rs = fastnorm.quantize(ry, qdtype, group_size=group)
        assert same_bits(q, rq) and same_bits(s, rs)
        results.append((q, s))
    assert same_bits(x, x0)
    assert same_bits(results[0][0], results[1][0]) and same_bits(results[0][1], results[1][1])
