"""The benchmarks' memory roof (src/stream_copy.c): a streaming copy must
copy every byte, at any alignment and length, on any number of threads,
and touch nothing outside the destination."""

import numpy as np
import pytest

import fastnorm._testing as hooks


@pytest.mark.any_isa
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 127, 128, 129, 4095, 4096, 4097, 100_003])
def test_copies_every_byte_at_every_alignment(n, threads):
    rng = np.random.default_rng(n)
    for src_off in (0, 1, 16, 33):
        for dst_off in (0, 1, 16, 40):
            src_buf = rng.integers(0, 256, n + 64, dtype=np.uint8)
            dst_buf = np.zeros(n + 128, np.uint8)
            src = src_buf[src_off : src_off + n]
            dst = dst_buf[dst_off + 32 : dst_off + 32 + n]
            hooks.stream_copy(dst, src, threads)
            assert np.array_equal(dst, src)
            # nothing before or after the destination was written
            assert not dst_buf[: dst_off + 32].any() and not dst_buf[dst_off + 32 + n :].any()


@pytest.mark.any_isa
def test_refuses_what_it_cannot_copy():
    a = np.zeros(16, np.float32)
    with pytest.raises(ValueError, match="bytes"):
        hooks.stream_copy(a, np.zeros(8, np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        hooks.stream_copy(a[::2], np.zeros(8, np.float32))
    with pytest.raises(ValueError, match="overlap"):
        hooks.stream_copy(a[4:12], a[:8])
    a.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        hooks.stream_copy(a, np.zeros(16, np.float32))


@pytest.mark.any_isa
def test_refuses_none_for_an_array():
    """None is refused before its memory is read as an array's flags."""
    a = np.zeros(16, np.float32)
    with pytest.raises(TypeError):
        hooks.stream_copy(None, a)
    with pytest.raises(TypeError):
        hooks.stream_copy(a, None)
