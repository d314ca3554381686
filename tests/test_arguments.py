"""Arguments are taken as a user expects (defaults that match PyTorch, None
meaning the documented default, every spelling of the normalized axes) or
refused with a clear TypeError or ValueError naming the value or shape at
fault, and nothing crashes."""

import ml_dtypes
import numpy as np
import pytest

import fastnorm

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


def _ordered_bits(a):
    """16-bit float bit patterns as integers in the order of the values they
    encode (+0 and -0 both 0), so that a difference is a count of ulps."""
    b = a.view(np.int16).astype(np.int32)
    return np.where(b < 0, -(b & 0x7FFF), b)


# ---- refused arguments: the error names the value or shape at fault ----------
# (argument validation does not depend on the kernel set: each runs once)

AxisError = np.exceptions.AxisError
X = np.ones((4, 8), np.float32)


@pytest.mark.any_isa
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize(
    "x,exc,match",
    [
        (np.ones(3, np.longdouble), TypeError, str(np.dtype(np.longdouble))),
        (np.ones(3, np.complex64), TypeError, "complex64"),
        (np.array(["a", "b"]), TypeError, "dtype"),
        (np.array([object(), object()]), TypeError, "object"),
        (np.float32(3.0), TypeError, "0-d"),
        (np.array(3.0), TypeError, "0-d"),
    ],
)
def test_input_of_an_unsupported_dtype_or_rank_is_a_type_error(op, x, exc, match):
    with pytest.raises(exc, match=match):
        getattr(fastnorm, op)(x)


@pytest.mark.any_isa
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (
            {"normalized_shape": 7},
            ValueError,
            r"normalized_shape \(7,\) does not match the trailing dimensions \(8,\) "
            r"of x with shape \(4, 8\)",
        ),
        ({"normalized_shape": (2, 4, 8)}, ValueError, r"normalized_shape \(2, 4, 8\)"),
        ({"normalized_shape": ()}, ValueError, "at least one"),
        ({"normalized_shape": 8.0}, TypeError, "normalized_shape"),
        ({"normalized_shape": "8"}, TypeError, "normalized_shape"),
        ({"axis": 2}, AxisError, "out of bounds"),
        ({"axis": -3}, AxisError, "out of bounds"),
        ({"axis": (1, -1)}, AxisError, "twice"),
        ({"axis": 1.5}, TypeError, "axis"),
        ({"axis": ()}, ValueError, "at least one"),
        ({"axis": 0, "normalized_shape": 8}, ValueError, "disagree"),
        (
            {"weight": np.ones(5)},
            ValueError,
            r"weight with shape \(5,\) cannot be broadcast to the normalized shape \(8,\)",
        ),
        ({"weight": np.ones((2, 8))}, ValueError, r"weight with shape \(2, 8\)"),
        ({"weight": np.ones(8, complex)}, TypeError, "weight"),
        ({"weight": "abc"}, TypeError, "weight"),
        ({"eps": -1.0}, ValueError, "eps"),
        ({"eps": float("nan")}, ValueError, "eps"),
        ({"eps": float("inf")}, ValueError, "eps"),
        ({"eps": "1e-5"}, TypeError, "eps"),
        ({"eps": 1j}, TypeError, "eps"),
        ({"out": np.empty((4, 8), np.float64)}, TypeError, "out has dtype float64"),
        (
            {"out": np.empty((8, 4), np.float32)},
            ValueError,
            r"out has shape \(8, 4\) but x has shape \(4, 8\)",
        ),
        ({"out": [[0.0] * 8] * 4}, TypeError, "out must be a numpy.ndarray"),
        ({"out": np.broadcast_to(np.float32(0), (4, 8))}, ValueError, "read-only"),
    ],
)
def test_bad_argument_gets_an_error_that_names_it(op, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        getattr(fastnorm, op)(X, **kwargs)


@pytest.mark.any_isa
def test_eps_too_large_for_a_double_is_refused():
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="eps"):
        fastnorm.layer_norm(x, eps=10**400)


@pytest.mark.any_isa
def test_bias_that_does_not_broadcast_is_named_with_its_shape():
    with pytest.raises(ValueError, match=r"bias with shape \(3,\)"):
        fastnorm.layer_norm(X, bias=np.zeros(3))


@pytest.mark.any_isa
def test_weight_errors_name_the_shape_the_caller_passed():
    x = np.ones((4, 5, 6), np.float32)
    with pytest.raises(ValueError, match=r"weight with shape \(1, 1, 7\)"):
        fastnorm.layer_norm(x, weight=np.ones((1, 1, 7), np.float32))
    with pytest.raises(ValueError, match=r"weight with shape \(1, 1, 7\)"):
        fastnorm.layer_norm_backward(x, x, weight=np.ones((1, 1, 7), np.float32))


@pytest.mark.any_isa
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_unknown_keyword_or_extra_positional_is_a_type_error(op):
    with pytest.raises(TypeError):
        getattr(fastnorm, op)(X, axes=1)
    with pytest.raises(TypeError):
        getattr(fastnorm, op)(X, None, None, None, None, None)  # too many positionals


@pytest.mark.any_isa
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_normalized_axis_of_size_zero_is_refused(op):
    with pytest.raises(ValueError, match=r"axis 1 of size 0.*\(3, 0\)"):
        getattr(fastnorm, op)(np.ones((3, 0)))


@pytest.mark.any_isa
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_empty_batch_gives_empty_results(op):
    y = getattr(fastnorm, op)(np.ones((0, 5), np.float32))
    assert y.shape == (0, 5) and y.dtype == np.float32
    res = getattr(fastnorm, op)(np.ones((2, 0, 5)), axis=-1, return_stats=True)
    assert res[0].shape == (2, 0, 5) and res[-1].shape == (2, 0, 1)


@pytest.mark.any_isa
def test_refused_call_leaves_out_untouched():
    out = np.full((4, 8), 5.0, np.float32)
    with pytest.raises(ValueError):
        fastnorm.layer_norm(X, weight=np.ones(3), out=out)
    assert (out == 5.0).all()


# ---- rms_norm's default eps --------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float16, BFLOAT16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("op", ["rms_norm", "add_rms_norm", "module"])
def test_default_rms_eps_of_half_inputs_matches_torch(op, dtype, rng):
    """Small activations (RMS 1e-3): a default eps of the half dtype's own
    epsilon (2**-7 for bfloat16) would swamp the mean square and give RMS
    0.01 instead of about 1; PyTorch uses float32's epsilon."""
    torch = pytest.importorskip("torch")
    tdt = torch.float16 if dtype == np.float16 else torch.bfloat16
    x = (1e-3 * rng.standard_normal((4, 4096))).astype(dtype)
    if op == "rms_norm":
        y = fastnorm.rms_norm(x)
    elif op == "add_rms_norm":
        y, _ = fastnorm.add_rms_norm(x, np.zeros_like(x))
    else:
        y = fastnorm.RMSNorm(4096, dtype=dtype)(x)
    expected = (
        torch.nn.functional.rms_norm(torch.from_numpy(x.astype(np.float32)).to(tdt), (4096,))
        .float()
        .numpy()
        .astype(dtype)
    )
    assert y.dtype == dtype
    assert np.abs(_ordered_bits(y) - _ordered_bits(expected)).max() <= 1


@pytest.mark.any_isa
@pytest.mark.parametrize(
    "dtype,eps",
    [(np.float16, 2.0**-23), (BFLOAT16, 2.0**-23), (np.float32, 2.0**-23), (np.float64, 2.0**-52)],
    ids=["float16", "bfloat16", "float32", "float64"],
)
def test_default_rms_eps_is_the_compute_dtypes_epsilon(dtype, eps):
    """A zero row's rstd is 1/sqrt(eps): it shows the eps in use, in the
    forward and the fused add; the backward and the module show it in dx."""
    x = np.zeros((2, 8), dtype)
    x[0] = 1
    expected_rstd = 1 / np.sqrt(eps)
    _, rstd = fastnorm.rms_norm(x, return_stats=True)
    assert rstd[1, 0] == pytest.approx(expected_rstd, rel=1e-6)
    _, _, rstd = fastnorm.add_rms_norm(x, np.zeros_like(x), return_stats=True)
    assert rstd[1, 0] == pytest.approx(expected_rstd, rel=1e-6)
    assert fastnorm._core.default_eps(fastnorm._core.OP_RMS_NORM, dtype) == eps
    dx_default, _ = fastnorm.rms_norm_backward(np.ones_like(x), x)
    dx_explicit, _ = fastnorm.rms_norm_backward(np.ones_like(x), x, eps=eps)
    assert np.array_equal(dx_default.astype(np.float64), dx_explicit.astype(np.float64))
    module = fastnorm.RMSNorm(8, dtype=dtype)
    _, rstd_explicit = fastnorm.rms_norm(x, weight=module.weight, eps=eps, return_stats=True)
    module(x)
    dx_module = module.backward(np.ones_like(x))
    dx_explicit, _ = fastnorm.rms_norm_backward(
        np.ones_like(x), x, weight=module.weight, rstd=rstd_explicit, eps=eps
    )
    assert np.array_equal(dx_module.astype(np.float64), dx_explicit.astype(np.float64))


# ---- eps=None in the layer_norm family ---------------------------------------


def _constant_rows(shape=(4, 8), dtype=np.float32):
    """Rows whose variance is 0, so rstd = 1/sqrt(eps) shows the eps."""
    return np.broadcast_to(np.arange(shape[0], dtype=dtype)[:, None], shape).copy()


@pytest.mark.parametrize("layout", ["fast", "general"])
def test_layer_norm_eps_none_means_1e_5(layout):
    x = _constant_rows(dtype=np.float32 if layout == "fast" else np.float64)
    kwargs = {} if layout == "fast" else {"axis": -1, "normalized_shape": (8,)}
    _, _, rstd = fastnorm.layer_norm(x, eps=None, return_stats=True, **kwargs)
    _, _, rstd_default = fastnorm.layer_norm(x, return_stats=True, **kwargs)
    assert np.array_equal(rstd, rstd_default)
    assert rstd[0, 0] == pytest.approx(1 / np.sqrt(1e-5), rel=1e-6)


def test_add_layer_norm_eps_none_means_1e_5():
    x = _constant_rows()
    _, _, _, rstd = fastnorm.add_layer_norm(x, np.zeros_like(x), eps=None, return_stats=True)
    assert rstd[0, 0] == pytest.approx(1 / np.sqrt(1e-5), rel=1e-6)


def test_layer_norm_backward_eps_none_means_1e_5(rng):
    x = _constant_rows()
    dy = rng.standard_normal(x.shape).astype(np.float32)
    got = fastnorm.layer_norm_backward(dy, x, eps=None)
    want = fastnorm.layer_norm_backward(dy, x, eps=1e-5)
    other = fastnorm.layer_norm_backward(dy, x, eps=2.0**-23)
    assert not np.array_equal(want[0], other[0])  # dx of these rows shows the eps
    for g, w in zip(got, want):
        assert np.array_equal(g, w)


def test_layer_norm_module_eps_none_means_1e_5():
    m = fastnorm.LayerNorm(8, eps=None)
    assert m.eps == 1e-5
    x = _constant_rows()
    assert np.array_equal(m(x), fastnorm.layer_norm(x, 8, m.weight, m.bias, 1e-5))


# ---- masked arrays are refused, whichever argument they are -------------------


def _masked(shape, dtype=np.float32, fill=1.0):
    return np.ma.masked_array(
        np.full(shape, fill, dtype),
        mask=np.eye(*shape[-2:], dtype=bool) if len(shape) == 2 else False,
    )


X4 = np.arange(32, dtype=np.float32).reshape(4, 8) % 5


def _masked_calls():
    x = X4
    stats = (4, 1)
    return [
        ("x", lambda: fastnorm.layer_norm(_masked((4, 8)))),
        ("weight", lambda: fastnorm.layer_norm(x, weight=_masked((1, 8)))),
        ("weight", lambda: fastnorm.rms_norm(x, weight=np.ma.masked_array(np.ones(8, np.float32)))),
        ("bias", lambda: fastnorm.layer_norm(x, bias=np.ma.masked_array(np.zeros(8, np.float32)))),
        ("out", lambda: fastnorm.layer_norm(x, out=_masked((4, 8)))),
        ("out", lambda: fastnorm.rms_norm(x, out=_masked((4, 8)))),
        ("residual", lambda: fastnorm.add_layer_norm(x, _masked((4, 8)))),
        ("residual_out", lambda: fastnorm.add_rms_norm(x, x, residual_out=_masked((4, 8)))),
        ("out", lambda: fastnorm.add_layer_norm(x, x, out=_masked((4, 8)))),
        ("dy", lambda: fastnorm.layer_norm_backward(_masked((4, 8)), x)),
        ("x", lambda: fastnorm.rms_norm_backward(x, _masked((4, 8)))),
        ("weight", lambda: fastnorm.rms_norm_backward(x, x, weight=np.ma.masked_array(np.ones(8)))),
        ("bias", lambda: fastnorm.layer_norm_backward(x, x, bias=np.ma.masked_array(np.ones(8)))),
        (
            "mean",
            lambda: fastnorm.layer_norm_backward(
                x, x, mean=_masked(stats), rstd=np.ones(stats, np.float32)
            ),
        ),
        ("rstd", lambda: fastnorm.rms_norm_backward(x, x, rstd=_masked(stats))),
        (
            "a state_dict value",
            lambda: fastnorm.LayerNorm(8).load_state_dict(
                {"weight": np.ma.masked_array(np.ones(8)), "bias": np.zeros(8)}
            ),
        ),
    ]


@pytest.mark.any_isa
@pytest.mark.parametrize("case", range(len(_masked_calls())))
def test_masked_array_argument_is_refused_with_a_type_error(case):
    name, call = _masked_calls()[case]
    with pytest.raises(
        TypeError, match=f"^{name} is a masked array; masked arrays are not supported"
    ):
        call()


def test_masked_out_is_left_untouched():
    out = _masked((4, 8), fill=7.0)
    with pytest.raises(TypeError):
        fastnorm.layer_norm(X4, out=out)
    assert (out.data == 7.0).all()


# ---- numpy.matrix is the 2-D array it holds -----------------------------------

pytestmark_matrix = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")


@pytestmark_matrix
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_matrix_weight_acts_as_its_2d_array(op, rng):
    x = rng.standard_normal((4, 8)).astype(np.float32)
    w = rng.normal(1, 0.3, (1, 8)).astype(np.float32)
    fn = getattr(fastnorm, op)
    assert np.array_equal(fn(x, weight=np.matrix(w)), fn(x, weight=w))
    if op == "layer_norm":
        assert np.array_equal(fn(x, bias=np.matrix(w)), fn(x, bias=w))


@pytestmark_matrix
def test_matrix_x_and_residual_act_as_their_2d_arrays(rng):
    x = rng.standard_normal((4, 8))
    r = rng.standard_normal((4, 8))
    y = fastnorm.layer_norm(np.matrix(x))
    assert type(y) is np.ndarray and np.array_equal(y, fastnorm.layer_norm(x))
    got = fastnorm.add_rms_norm(np.matrix(x), np.matrix(r))
    want = fastnorm.add_rms_norm(x, r)
    assert all(type(g) is np.ndarray and np.array_equal(g, w) for g, w in zip(got, want))


@pytestmark_matrix
def test_matrix_out_is_written_and_returned(rng):
    x = rng.standard_normal((4, 8)).astype(np.float32)
    out = np.matrix(np.zeros((4, 8), np.float32))
    h = np.matrix(np.zeros((4, 8), np.float32))
    assert fastnorm.layer_norm(x, out=out) is out
    assert np.array_equal(np.asarray(out), fastnorm.layer_norm(x))
    y, h_ret = fastnorm.add_layer_norm(x, x, out=out, residual_out=h)
    assert y is out and h_ret is h
    assert np.array_equal(np.asarray(h), x + x)


@pytestmark_matrix
def test_matrix_backward_arguments_act_as_their_2d_arrays(rng):
    x = rng.standard_normal((4, 8))
    dy = rng.standard_normal((4, 8))
    w = rng.normal(1, 0.3, (1, 8))
    _, mean, rstd = fastnorm.layer_norm(x, weight=w, return_stats=True)
    got = fastnorm.layer_norm_backward(
        np.matrix(dy),
        np.matrix(x),
        weight=np.matrix(w),
        mean=np.matrix(mean),
        rstd=np.matrix(rstd),
        bias=np.matrix(w),
    )
    want = fastnorm.layer_norm_backward(dy, x, weight=w, mean=mean, rstd=rstd, bias=w)
    for g, v in zip(got, want):
        assert type(g) is np.ndarray and g.shape == v.shape and np.array_equal(g, v)


# ---- modules: normalized_shape is ints, as in the functional API --------------


@pytest.mark.any_isa
@pytest.mark.parametrize("module", ["LayerNorm", "RMSNorm"])
@pytest.mark.parametrize("shape", ["768", (8.9,), 8.0, (8, "4"), [True]])
def test_module_refuses_non_integer_normalized_shape(module, shape):
    with pytest.raises(TypeError, match="normalized_shape must be an int or a tuple of ints"):
        getattr(fastnorm, module)(shape)


@pytest.mark.any_isa
def test_module_takes_numpy_integer_normalized_shape():
    assert fastnorm.LayerNorm(np.int64(8)).normalized_shape == (8,)
    assert fastnorm.RMSNorm([np.int32(2), 4]).normalized_shape == (2, 4)


# ---- load_state_dict ---------------------------------------------------------


@pytest.mark.any_isa
@pytest.mark.parametrize(
    "value",
    [np.ones(5, complex), np.array([object()] * 5), np.array(["a"] * 5), ["1", "2", "3", "4", "5"]],
    ids=["complex", "object", "string", "list-of-str"],
)
def test_load_state_dict_refuses_non_real_values(value):
    m = fastnorm.LayerNorm(5)
    with pytest.raises(TypeError, match="weight in the state_dict must be a real numeric array"):
        m.load_state_dict({"weight": value, "bias": np.zeros(5)})
    assert (m.weight == 1).all() and (m.bias == 0).all()


@pytest.mark.any_isa
def test_load_state_dict_refuses_complex_torch_tensor():
    torch = pytest.importorskip("torch")
    m = fastnorm.RMSNorm(5)
    with pytest.raises(TypeError, match="complex"):
        m.load_state_dict({"weight": torch.ones(5, dtype=torch.complex64)})


@pytest.mark.any_isa
def test_load_state_dict_strict_raises_runtime_error_listing_keys():
    m = fastnorm.LayerNorm(5)
    with pytest.raises(
        RuntimeError,
        match=r"missing key\(s\): \['bias'\], unexpected key\(s\): "
        r"\['running_mean'\]",
    ) as info:
        m.load_state_dict({"weight": np.full(5, 2.0), "running_mean": np.zeros(5)})
    assert isinstance(info.value, KeyError)  # what earlier releases raised
    assert "LayerNorm" in str(info.value)
    assert (m.weight == 1).all()  # nothing loaded


@pytest.mark.any_isa
def test_load_state_dict_not_strict_loads_what_matches_and_reports_the_rest():
    m = fastnorm.LayerNorm(5)
    result = m.load_state_dict({"weight": np.full(5, 2.0), "extra": 1}, strict=False)
    assert result == fastnorm.IncompatibleKeys(missing_keys=["bias"], unexpected_keys=["extra"])
    assert result.missing_keys == ["bias"] and result.unexpected_keys == ["extra"]
    assert (m.weight == 2).all() and (m.bias == 0).all()
    with pytest.raises(ValueError, match=r"shape \(4,\)"):  # shapes are checked either way
        m.load_state_dict({"weight": np.ones(4)}, strict=False)


@pytest.mark.any_isa
def test_load_state_dict_returns_no_incompatible_keys_on_exact_match():
    m = fastnorm.RMSNorm(3)
    assert m.load_state_dict({"weight": [1, 2, 3]}) == ([], [])
    assert m.weight.tolist() == [1, 2, 3]


@pytest.mark.any_isa
def test_load_state_dict_matches_torch_incompatible_keys():
    torch = pytest.importorskip("torch")
    ln_t = torch.nn.LayerNorm(4, bias=False)
    sd = {"weight": torch.ones(4), "bias": torch.zeros(4)}
    expected = ln_t.load_state_dict(sd, strict=False)
    got = fastnorm.LayerNorm(4, bias=False).load_state_dict(sd, strict=False)
    assert (got.missing_keys, got.unexpected_keys) == (
        list(expected.missing_keys),
        list(expected.unexpected_keys),
    )
    with pytest.raises(RuntimeError):
        ln_t.load_state_dict(sd)
    with pytest.raises(RuntimeError):
        fastnorm.LayerNorm(4, bias=False).load_state_dict(sd)


# ---- out whose elements overlap each other -----------------------------------


def _sliding_window(shape, dtype=np.float32):
    """Rows that start one element apart: row i, element j is element i + j."""
    base = np.zeros(shape[0] + shape[1] - 1, dtype)
    st = base.itemsize
    return np.lib.stride_tricks.as_strided(base, shape, (st, st))


@pytest.mark.parametrize(
    "call",
    [
        lambda x, o: fastnorm.layer_norm(x, out=o),
        lambda x, o: fastnorm.rms_norm(x, out=o),
        lambda x, o: fastnorm.layer_norm(x, axis=0, out=o),
        lambda x, o: fastnorm.add_layer_norm(x, x, out=o),
        lambda x, o: fastnorm.add_rms_norm(x, x, residual_out=o),
    ],
    ids=["layer_norm", "rms_norm", "general_path", "add_out", "add_residual_out"],
)
def test_self_overlapping_out_is_refused(call):
    x = np.arange(32, dtype=np.float32).reshape(4, 8) % 3
    out = _sliding_window((4, 8))
    with pytest.raises(ValueError, match="has elements that share memory"):
        call(x, out)
    assert (out == 0).all()


@pytest.mark.any_isa
def test_out_whose_rows_share_memory_is_refused():
    x = np.ones((2, 4), np.float32)
    shared = np.lib.stride_tricks.as_strided(np.zeros(4, np.float32), (2, 4), (0, 4))
    with pytest.raises(ValueError, match="share memory"):
        fastnorm.layer_norm(x, out=shared)


def _views(dtype=np.float32):
    """Layouts whose elements do not overlap, as (name, view of shape (4, 8))."""
    big = np.zeros((8, 16), dtype)
    padded = np.zeros(64, dtype)
    st = padded.itemsize
    return [
        ("contiguous", np.zeros((4, 8), dtype)),
        ("fortran", np.zeros((4, 8), dtype, order="F")),
        ("transpose", np.zeros((8, 4), dtype).T),
        ("reversed", big[:4, :8][::-1, ::-1]),
        ("slice", big[::2, 1::2]),
        ("negative_step_slice", big[7::-2, 15::-2]),
        ("padded_rows", np.lib.stride_tricks.as_strided(padded, (4, 8), (9 * st, st))),
    ]


@pytest.mark.parametrize("name", [n for n, _ in _views()])
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm", "add_layer_norm"])
def test_non_overlapping_out_layouts_are_accepted(name, op, rng):
    out = dict(_views())[name]
    x = rng.standard_normal((4, 8)).astype(np.float32)
    # other layouts may take other store paths: equal within float32 rounding
    if op == "add_layer_norm":
        y, h = fastnorm.add_layer_norm(x, x, out=out)
        assert y is out
        np.testing.assert_allclose(out, fastnorm.layer_norm(x + x), rtol=1e-6, atol=1e-6)
    else:
        assert getattr(fastnorm, op)(x, out=out) is out
        np.testing.assert_allclose(out, getattr(fastnorm, op)(x), rtol=1e-6, atol=1e-6)


def test_interleaved_but_disjoint_out_is_accepted(rng):
    """Shape (3, 2) with strides of 2 and 3 elements: offsets 0, 3, 2, 5, 4,
    7 are distinct, though the column stride is less than the rows' span
    (the quick test fails and the exact check accepts)."""
    base = np.zeros(8, np.float32)
    st = base.itemsize
    out = np.lib.stride_tricks.as_strided(base, (3, 2), (2 * st, 3 * st))
    x = rng.standard_normal((3, 2)).astype(np.float32)
    assert fastnorm.layer_norm(x, out=out) is out
    np.testing.assert_allclose(out, fastnorm.layer_norm(x), rtol=1e-6, atol=1e-6)


def test_interleaved_and_overlapping_out_is_refused():
    """Shape (3, 4) with strides of 3 and 2 elements: elements (0, 3) and
    (2, 0) are both at offset 6."""
    base = np.zeros(16, np.float32)
    st = base.itemsize
    out = np.lib.stride_tricks.as_strided(base, (3, 4), (3 * st, 2 * st))
    with pytest.raises(ValueError, match="has elements that share memory"):
        fastnorm.rms_norm(np.ones((3, 4), np.float32), out=out)
    assert (base == 0).all()


def test_large_interleaved_out_that_cannot_be_checked_is_refused():
    """Offsets 2i and 2i + 3 (shape (n, 2), strides 2 and 3 elements) never
    meet, but beyond 2**22 elements the exact check is not run."""
    n = (1 << 21) + 1
    base = np.zeros(2 * n + 2, np.float32)
    st = base.itemsize
    out = np.lib.stride_tricks.as_strided(base, (n, 2), (2 * st, 3 * st))
    with pytest.raises(ValueError, match="too large to check exactly"):
        fastnorm.layer_norm(np.ones((n, 2), np.float32), out=out)


@pytest.mark.any_isa
def test_internal_overlap_agrees_with_listing_every_byte():
    """Random layouts (strides any multiple of the itemsize, either sign,
    sizes 1-4) against a brute-force list of the bytes each element covers."""
    rng = np.random.default_rng(11)
    base = np.zeros(4096, np.float32)
    st = base.itemsize
    seen = {0: 0, 1: 0}
    for _ in range(3000):
        ndim = int(rng.integers(1, 4))
        shape = tuple(int(s) for s in rng.integers(1, 5, ndim))
        strides = tuple(int(s) * st for s in rng.integers(0, 9, ndim))
        a = np.lib.stride_tricks.as_strided(base, shape, strides)
        for axis in range(ndim):
            if rng.random() < 0.3:
                a = np.flip(a, axis)
        start = a.__array_interface__["data"][0]
        offsets = [
            start + sum(i * s for i, s in zip(idx, a.strides)) for idx in np.ndindex(a.shape)
        ]
        covered = [o + b for o in offsets for b in range(st)]
        expected = int(len(set(covered)) != len(covered))
        assert fastnorm._core.internal_overlap(a) == expected, (shape, a.strides)
        seen[expected] += 1
    assert seen[0] > 100 and seen[1] > 100


@pytest.mark.any_isa
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_every_spelling_of_the_normalized_axis_gives_the_same_bits(op, rng):
    """int or tuple normalized_shape, axis=-1, (-1,), ndim-1, a NumPy
    integer, a list, an eps of float or NumPy type: one call, the same
    result (the early exits of each argument rule and the general rules
    agree)."""
    x = rng.standard_normal((8, 96)).astype(np.float32)
    w = rng.normal(1, 0.3, 96).astype(np.float32)
    fn = getattr(fastnorm, op)
    want = fn(x, 96, w, eps=1e-5)
    spellings = [
        dict(normalized_shape=(96,)),
        dict(axis=-1),
        dict(axis=(-1,)),
        dict(axis=1),
        dict(normalized_shape=np.int64(96)),
        dict(normalized_shape=[96]),
        dict(normalized_shape=96, axis=(1,)),
        dict(axis=np.array([1])),
    ]
    for kw in spellings:
        assert np.array_equal(fn(x, weight=w, eps=1e-5, **kw), want), kw
    for eps in (np.float32(1e-5), np.float64(1e-5)):
        assert np.array_equal(fn(x, 96, w, eps=eps), fn(x, 96, w, eps=float(eps)))
