"""The guard-page fuzzer for GroupNorm: random shapes, groups,
layouts (channels-first and channels-last), dtypes and spreads, with x, dy,
weight, bias, out and the outputs flush against PROT_NONE pages, so that any
read or write of the group kernels outside their arrays faults.  The results
must equal the same call on ordinary arrays, bit for bit (with streaming
stores too), and no byte around out may change.  Runs once per kernel set;
FASTNORM_FUZZ_EXAMPLES sets the number of examples."""

import numpy as np
from _guard import Layout, guarded_array, guarded_empty
from _reference import BFLOAT16
from hypothesis import given, note
from hypothesis import strategies as st
from test_fuzz_guard import FUZZ

import fastnorm

DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16), BFLOAT16)


@st.composite
def group_calls(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    groups = draw(st.sampled_from([1, 2, 3, 4, 8, 32]))
    per_group = draw(st.sampled_from([1, 2, 3, 5, 8, 16, 17]))
    channels = groups * per_group
    spatial = tuple(draw(st.lists(st.integers(1, 19), min_size=0, max_size=3)))
    n = draw(st.integers(1, 3))
    while n * channels * int(np.prod(spatial)) > 40000 and spatial:
        spatial = spatial[:-1]
    channel_axis = draw(st.sampled_from([1, -1]))
    shape = (n, channels) + spatial if channel_axis == 1 else (n,) + spatial + (channels,)
    base = draw(st.sampled_from([0.0, 1.0, -3.0, 100.0, 1e3]))
    seed = draw(st.integers(0, 2**31 - 1))
    stream = draw(st.booleans())
    flush = [draw(st.sampled_from(["end", "start"])) for _ in range(5)]
    affine = draw(st.sampled_from(["none", "weight", "both"]))
    return dtype, groups, shape, channel_axis, base, seed, stream, flush, affine


@FUZZ
@given(call=group_calls())
def test_group_norm_guarded(call):
    dtype, groups, shape, channel_axis, base, seed, stream, flush, affine = call
    note(f"dtype={dtype} groups={groups} shape={shape} channel_axis={channel_axis}")
    rng = np.random.default_rng(seed)
    channels = shape[channel_axis]
    x = (base + rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    cdt = np.float64 if dtype == np.float64 else np.float32
    w = rng.normal(1, 0.5, channels).astype(cdt) if affine != "none" else None
    b = rng.normal(0, 0.5, channels).astype(cdt) if affine == "both" else None
    kwargs = {"channel_axis": channel_axis, "return_stats": True}
    want = fastnorm.group_norm(x, groups, w, b, **kwargs)
    want_bwd = fastnorm.group_norm_backward(dy, x, groups, w, channel_axis=channel_axis)

    gx, gdy = guarded_array(x, Layout(flush=flush[0])), guarded_array(dy, Layout(flush=flush[1]))
    gw = None if w is None else guarded_array(w, Layout(flush=flush[2]))
    gb = None if b is None else guarded_array(b, Layout(flush=flush[3]))
    gout = guarded_empty(shape, dtype, Layout(flush=flush[4]))
    previous = fastnorm._core.set_stream_min_bytes(0 if stream else 16 << 20)
    try:
        got = fastnorm.group_norm(
            gx.array,
            groups,
            None if gw is None else gw.array,
            None if gb is None else gb.array,
            out=gout.array,
            **kwargs,
        )
        got_bwd = fastnorm.group_norm_backward(
            gdy.array,
            gx.array,
            groups,
            None if gw is None else gw.array,
            channel_axis=channel_axis,
        )
        inplace = guarded_array(x, Layout(flush=flush[4]))
        fastnorm.group_norm(
            inplace.array, groups, w, b, channel_axis=channel_axis, out=inplace.array
        )
    finally:
        fastnorm._core.set_stream_min_bytes(previous)
    assert gout.outside_intact() and inplace.outside_intact()
    for a, e in zip(got, want):
        assert np.array_equal(a.view(np.uint8), e.view(np.uint8))
    assert np.array_equal(inplace.array.view(np.uint8), want[0].view(np.uint8))
    for a, e in zip(got_bwd, want_bwd):
        assert (a is None) == (e is None)
        if a is not None:
            assert np.array_equal(a.view(np.uint8), e.view(np.uint8))
