"""Regressions from the review of the quantized outputs: out= in a transposed work layout,
and out/scale_out sharing memory with an input or another output."""

import numpy as np
import pytest
from test_quantize import quantize_reference, same_bits

import fastnorm


def test_out_with_a_leading_axis_of_a_square_array_is_not_transposed(rng):
    y = rng.standard_normal((8, 8)).astype(np.float32)
    out = np.zeros((8, 8), np.int8)
    q, s = fastnorm.quantize(y, axis=0, out=out)
    rq, rs = quantize_reference(y, axis=0)
    assert q is out and same_bits(q, rq) and same_bits(s, rs)
    x = rng.standard_normal((6, 6)).astype(np.float32)
    out = np.zeros((6, 6), np.int8)
    q, s = fastnorm.rms_norm_quant(x, axis=0, out=out)
    rq, rs = fastnorm.quantize(fastnorm.rms_norm(x, axis=0, dtype=np.float32), axis=0)
    assert same_bits(q, rq) and same_bits(s, rs)


@pytest.mark.parametrize("static", [False, True])
def test_quantize_scale_out_inside_y(rng, static):
    y = rng.standard_normal((4, 8)).astype(np.float32)
    kw = {"scale": 0.01} if static else {}
    rq, rs = quantize_reference(y.copy(), **kw)
    q, s = fastnorm.quantize(y, scale_out=y.reshape(-1)[-4:], **kw)
    assert same_bits(q, rq) and same_bits(s, rs)


def test_quantize_out_inside_y(rng):
    y = rng.standard_normal((256, 256)).astype(np.float32)
    rq, rs = quantize_reference(y.copy())
    out = y.view(np.int8).reshape(-1)[y.nbytes - y.size :].reshape(y.shape)
    q, s = fastnorm.quantize(y, out=out)
    assert same_bits(q, rq) and same_bits(s, rs)


def test_quantize_out_and_scale_out_must_not_overlap():
    buf = np.zeros(64, np.int8)
    with pytest.raises(ValueError, match="overlap"):
        fastnorm.quantize(
            np.ones((4, 8), np.float32),
            out=buf[:32].reshape(4, 8),
            scale_out=buf[16:32].view(np.float32),
        )


def test_quantized_norm_scale_out_inside_x_or_weight(rng):
    x = rng.standard_normal((4096, 64)).astype(np.float32)
    rq, rs = fastnorm.quantize(fastnorm.rms_norm(x.copy(), dtype=np.float32))
    q, s = fastnorm.rms_norm_quant(x, scale_out=x.reshape(-1)[-4096:])
    assert same_bits(q, rq) and same_bits(s, rs)
    x = rng.standard_normal((4096, 64)).astype(np.float32)
    buf = np.ones(4096, np.float32)
    w = buf[:64]
    rq, rs = fastnorm.quantize(fastnorm.rms_norm(x, None, w.copy(), dtype=np.float32))
    q, s = fastnorm.rms_norm_quant(x, None, w, scale_out=buf)
    assert same_bits(q, rq) and same_bits(s, rs)


def test_quantized_add_norm_outputs_overlapping_residual_out_raise(rng):
    x = rng.standard_normal((64, 32)).astype(np.float32)
    r = rng.standard_normal((64, 32)).astype(np.float32)
    h = np.empty_like(x)
    with pytest.raises(ValueError, match="residual_out"):
        fastnorm.add_rms_norm_quant(x, r, residual_out=h, scale_out=h.reshape(-1)[:64])
    with pytest.raises(ValueError, match="residual_out"):
        fastnorm.add_rms_norm_quant(
            x, r, residual_out=h, out=h.view(np.int8).reshape(-1)[: x.size].reshape(x.shape)
        )
