"""fastnorm.torch's quantized norms: rms_norm_quant,
layer_norm_quant and their add_ forms on tensors are bit for bit the NumPy
functions on the same data (float32 and bfloat16 inputs, int8 and float8
e4m3fn codes, grouped and static scales, the fused add's h); they refuse
inputs that require grad and bad dtypes; their torch.library ops pass
opcheck, give meta/fake shapes, and run under torch.compile(fullgraph=True)."""

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastnorm  # noqa: E402
import fastnorm.torch as fnt  # noqa: E402

CODES = {torch.int8: np.int8, torch.float8_e4m3fn: ml_dtypes.float8_e4m3fn}
INPUTS = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
NAMES = ["rms_norm_quant", "layer_norm_quant", "add_rms_norm_quant", "add_layer_norm_quant"]


def as_numpy(t):
    """A tensor's values as the NumPy array of the same bits (bfloat16 and
    float8 e4m3fn through their integer views)."""
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    if t.dtype == torch.float8_e4m3fn:
        return t.view(torch.uint8).numpy().view(ml_dtypes.float8_e4m3fn)
    return t.numpy()


def assert_same_bits(tensors, arrays):
    assert len(tensors) == len(arrays)
    for t, a in zip(tensors, arrays):
        got = as_numpy(t)
        assert got.dtype == a.dtype and got.shape == a.shape, (got.dtype, a.dtype, got.shape)
        np.testing.assert_array_equal(got.view(np.uint8), a.view(np.uint8), strict=True)


def data(dtype, shape=(12, 5, 64), seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen) * 3 + 0.5).to(dtype)
    r = torch.randn(shape, generator=gen).to(dtype)
    w = torch.randn(shape[-1], generator=gen)
    b = torch.randn(shape[-1], generator=gen)
    return x, r, w, b


def both(name, x, r, w, b, **kwargs):
    """(fastnorm.torch's result, the NumPy function's on the same data)."""
    code = kwargs.pop("dtype", torch.int8)
    params = {"weight": w} | ({"bias": b} if "layer" in name else {})
    np_kwargs = {k: (as_numpy(v) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    if "dim" in np_kwargs:
        np_kwargs["axis"] = np_kwargs.pop("dim")
    args = (x, r) if name.startswith("add_") else (x,)
    np_args = tuple(as_numpy(a) for a in args)
    shape = kwargs.pop("normalized_shape", x.shape[-1])
    np_kwargs.pop("normalized_shape", None)
    got = getattr(fnt, name)(*args, shape, **params, dtype=code, **kwargs)
    want = getattr(fastnorm, name)(
        *np_args,
        None if "axis" in np_kwargs else shape,
        **{k: as_numpy(v) for k, v in params.items()},
        dtype=CODES[code],
        **np_kwargs,
    )
    return got, want


@pytest.mark.parametrize("code", list(CODES), ids=str)
@pytest.mark.parametrize("dtype", INPUTS, ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_bitwise_the_numpy_functions(name, dtype, code):
    x, r, w, b = data(dtype)
    for kwargs in ({}, {"group_size": 16}, {"eps": 1e-3}):
        got, want = both(name, x, r, w, b, dtype=code, **kwargs)
        assert got[0].dtype == code and got[1].dtype == torch.float32
        assert all(t.is_contiguous() for t in got)
        assert got[1].shape == ((12, 5, 4) if "group_size" in kwargs else (12, 5))
        if name.startswith("add_"):
            assert got[2].dtype == dtype
            # h is fastnorm.torch.add_*_norm's h
            norm = getattr(fnt, name[: -len("_quant")])
            assert torch.equal(norm(x, r, 64)[1].view(torch.uint8), got[2].view(torch.uint8))
        assert_same_bits(got, want)


@pytest.mark.parametrize("name", NAMES)
def test_static_scales_strided_inputs_and_dim(name):
    x, r, w, b = data(torch.bfloat16, (6, 8, 4, 4))
    for kwargs in (
        {"scale": 0.03},
        {"scale": torch.full((6, 8, 4), 0.02)},
        {"scale": torch.rand(6, 1, 1, 2) * 0.05 + 0.01, "group_size": 2},
        {"dim": 1, "normalized_shape": 8},
        {"dim": 1, "normalized_shape": 8, "group_size": 2},
    ):
        w8, b8 = w.new_ones(8), b.new_zeros(8) + 0.25
        wk, bk = (w8, b8) if "dim" in kwargs else (w[:4], b[:4])
        if "dim" not in kwargs:
            kwargs = kwargs | {"normalized_shape": 4}
        got, want = both(name, x, r, wk, bk, **kwargs)
        assert_same_bits(got, want)
    # a transposed (non-contiguous) input: the bits of its NumPy view
    xt, rt = x.transpose(0, 1), r.transpose(0, 1)
    got, want = both(name, xt, rt, w[:4], b[:4], normalized_shape=4)
    assert_same_bits(got, want)


def test_callers_tensors_are_not_modified():
    x, r, w, b = data(torch.float32)
    before = [t.clone() for t in (x, r, w, b)]
    fnt.add_layer_norm_quant(x, r, 64, w, b, dtype=torch.float8_e4m3fn)
    assert all(torch.equal(t, c) for t, c in zip((x, r, w, b), before))


# ---- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("argument", ["input", "residual", "weight", "bias"])
def test_an_argument_that_requires_grad_is_refused_under_grad_mode(argument):
    x, r, w, b = data(torch.float32)
    args = {"input": x, "residual": r, "weight": w, "bias": b}
    args[argument] = args[argument].clone().requires_grad_(True)
    with pytest.raises(RuntimeError, match=f"inference.*{argument} requires grad"):
        fnt.add_layer_norm_quant(args["input"], args["residual"], 64, args["weight"], args["bias"])
    with torch.no_grad():  # fine without grad mode
        got = fnt.add_layer_norm_quant(args["input"], args["residual"], 64, args["weight"],
                                       args["bias"])  # fmt: skip
    assert got[0].dtype == torch.int8 and not got[2].requires_grad
    with torch.inference_mode():
        fnt.rms_norm_quant(args["input"], 64, args["weight"])


def test_bad_arguments():
    x, r, w, b = data(torch.float32)
    with pytest.raises(TypeError, match="dtype must be torch.int8 or torch.float8_e4m3fn"):
        fnt.rms_norm_quant(x, 64, dtype=torch.float16)
    with pytest.raises(TypeError, match="dtype must be torch.int8"):
        fnt.rms_norm_quant(x, 64, dtype=np.int8)
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        fnt.rms_norm_quant(x.numpy(), 64)
    with pytest.raises(TypeError, match="residual must be a torch.Tensor"):
        fnt.add_rms_norm_quant(x, None, 64)
    with pytest.raises(TypeError, match="input must be a CPU tensor of float32"):
        fnt.rms_norm_quant(x.to(torch.int32), 64)
    with pytest.raises(TypeError, match="residual has dtype torch.bfloat16"):
        fnt.add_rms_norm_quant(x, r.bfloat16(), 64)
    with pytest.raises(ValueError, match="group_size=48 must be a positive divisor"):
        fnt.layer_norm_quant(x, 64, group_size=48)
    with pytest.raises(ValueError, match="does not broadcast to the scales' shape"):
        fnt.rms_norm_quant(x, 64, scale=torch.ones(3))
    with pytest.raises(ValueError, match="finite and at least"):
        fnt.rms_norm_quant(x, 64, scale=0.0)
    with pytest.raises(TypeError, match="scale must be a number"):
        fnt.rms_norm_quant(x, 64, scale="0.1")
    with pytest.raises(ValueError, match="weight"):
        fnt.rms_norm_quant(x, 64, w[:7])
    with pytest.raises(ValueError):
        fnt.rms_norm_quant(x, 63)


# ---- the ops: opcheck, meta and fake tensors, torch.compile ---------------------------------


def op_calls():
    x, r, w, b = data(torch.float32, (4, 3, 32))
    ops = torch.ops.fastnorm
    e4m3 = torch.float8_e4m3fn
    return [
        (ops.rms_norm_quant, (x, [32], w, None, None, torch.int8, None, None)),
        (ops.rms_norm_quant, (x, [32], None, 1e-6, None, e4m3, 8, None)),
        (ops.layer_norm_quant, (x, [32], w, b, 1e-5, None, torch.int8, 16, None)),
        (ops.layer_norm_quant, (x, [3], None, None, 1e-5, [1], e4m3, None, None)),
        (ops.add_rms_norm_quant, (x, r, [32], w, None, None, torch.int8, None, None)),
        (
            ops.add_layer_norm_quant,
            (x, r, [32], w, b, 1e-5, None, e4m3, 8, torch.tensor(0.05)),
        ),  # fmt: skip
    ]


@pytest.mark.parametrize("index", range(6))
def test_opcheck(index):
    op, args = op_calls()[index]
    torch.library.opcheck(
        op, args, test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static")
    )


def test_meta_tensors_give_the_shapes_and_dtypes():
    m = torch.empty(4, 3, 64, device="meta", dtype=torch.bfloat16)
    q, s = fnt.layer_norm_quant(m, 64, group_size=16)
    assert (q.shape, q.dtype, s.shape, s.dtype) == (
        (4, 3, 64),
        torch.int8,
        (4, 3, 4),
        torch.float32,
    )
    q, s, h = fnt.add_rms_norm_quant(m, m, 64, dtype=torch.float8_e4m3fn)
    assert (q.dtype, s.shape, h.shape, h.dtype) == (torch.float8_e4m3fn, (4, 3), m.shape, m.dtype)
    q, s = fnt.rms_norm_quant(m, None, dim=1)
    assert q.shape == m.shape and s.shape == (4, 64) and q.device.type == "meta"
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        f = mode.from_tensor(torch.empty(8, 128))
        q, s, h = fnt.add_layer_norm_quant(f, f, 128, group_size=32)
        assert q.shape == (8, 128) and s.shape == (8, 4) and h.dtype == torch.float32


@pytest.mark.slow  # compiles
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_bitwise_eager(backend):
    x, r, w, b = data(torch.bfloat16, (16, 64))

    def block(x, r, w, b):
        q, s, h = fnt.add_rms_norm_quant(x, r, (64,), w, dtype=torch.int8)
        q8, s8 = fnt.layer_norm_quant(h, (64,), w, b, dtype=torch.float8_e4m3fn, group_size=32)
        qs, ss = fnt.rms_norm_quant(h, 64, w, scale=0.02)
        return q, s, h, q8, s8, qs, ss

    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True, backend=backend)
    got = compiled(x, r, w, b)
    want = block(x, r, w, b)
    for g, e in zip(got, want):
        assert g.dtype == e.dtype and g.shape == e.shape
        assert torch.equal(g.view(torch.uint8), e.view(torch.uint8))


@pytest.mark.slow
def test_compile_records_the_fastnorm_ops():
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    x, r, w, _ = data(torch.float32, (8, 32))
    f = torch.compile(lambda x, r: fnt.add_rms_norm_quant(x, r, 32, w), fullgraph=True,
                      backend=counter)  # fmt: skip
    f(x, r)
    targets = {str(n.target) for g in counter.graphs for n in g.graph.nodes}
    assert "fastnorm.add_rms_norm_quant" in targets, targets
