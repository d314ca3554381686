"""Seeded differential fuzzer for fastnorm.torch's eager functions.

Each case draws a shape (1-5 dims, with size-0 and size-1 dims), a dtype, a
layout (permutes, transposes, stepped slices, expand, as_strided, storage
offsets, channels_last), the normalized dims (normalized_shape as int / tuple
/ list / torch.Size, or dim= as int / tuple), weight and bias (absent, compute
dtype, x's half dtype, non-contiguous, Parameters, requires_grad), a residual
for add_*, and eps.  It checks, on the pointer path and on the NumPy-view
path (the pointer path, _direct, patched to return None):

* results against a float64 reference (torch's own ops on float64 copies,
  dims moved to the end for dim=), within a few eps (about 1 ulp for half);
* the two paths against each other;
* errors are TypeError/ValueError, and the two paths agree on raising;
* inputs are not modified, outputs are fresh C-order tensors that overlap
  no input and no other output;
* autograd on float64: gradients against torch's, and gradcheck on small
  cases; no_grad against grad mode.

FASTNORM_TORCH_FUZZ_CASES (default 400) sets the number of cases per test.
"""

import math
import os
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import fastnorm.torch as fnt  # noqa: E402
from fastnorm.torch import _functions, _tensors  # noqa: E402

N_CASES = int(os.environ.get("FASTNORM_TORCH_FUZZ_CASES", "400"))
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
HALF = (torch.float16, torch.bfloat16)
SIZES = (0, 1, 1, 2, 3, 4, 5, 7, 8, 16, 17)


# ---- drawing ----------------------------------------------------------------------


def _strided_like(r, shape, dtype, gen):
    """A tensor of `shape` in a random layout (a view of a larger buffer)."""
    nd = len(shape)
    kind = r.choice(
        [
            "contig",
            "contig",
            "permute",
            "slice",
            "expand",
            "as_strided",
            "offset",
            "channels_last",
            "transpose",
        ]
    )

    def fill(s):
        return (
            torch.randn(s, generator=gen, dtype=torch.float64) * r.choice([1, 3, 0.01])
            + r.choice([0, 0.5, 100])
        ).to(dtype)

    if kind == "permute" and nd > 1:
        perm = list(range(nd))
        r.shuffle(perm)
        inv = [perm.index(i) for i in range(nd)]
        base = fill([shape[p] for p in perm])
        return base.permute(inv), kind
    if kind == "transpose" and nd > 1:
        a, b = r.sample(range(nd), 2)
        s = list(shape)
        s[a], s[b] = s[b], s[a]
        return fill(s).transpose(a, b), kind
    if kind == "slice":
        steps = [r.choice([1, 1, 2, 3]) for _ in shape]
        base = fill([max(1, n * st + r.choice([0, 1])) if n else 0 for n, st in zip(shape, steps)])
        idx = tuple(slice(0, n * st, st) if n else slice(0, 0) for n, st in zip(shape, steps))
        t = base[idx]
        return t, kind
    if kind == "expand":
        s = [1 if (n > 0 and r.random() < 0.5) else n for n in shape]
        return fill(s).expand(*shape), kind
    if kind == "as_strided":
        # a non-overlapping hand-made layout: C strides with padding
        strides, acc = [0] * nd, 1
        for d in range(nd - 1, -1, -1):
            strides[d] = acc
            acc *= max(shape[d], 1) + r.choice([0, 0, 1, 3])
        off = r.choice([0, 1, 5])
        base = fill([acc + off + 8])
        return base.as_strided(shape, strides, off), kind
    if kind == "offset":
        n = math.prod(shape)
        base = fill([n + 3])
        return base[r.choice([1, 2, 3]) :][:n].view(shape), kind
    if kind == "channels_last" and nd == 4:
        return fill(shape).contiguous(memory_format=torch.channels_last), kind
    return fill(shape), "contig"


def _draw_case(r, gen, with_residual=False, op="ln"):
    nd = r.randint(1, 5)
    shape = [r.choice(SIZES) for _ in range(nd)]
    while math.prod(shape) > 3000:
        shape[r.randrange(nd)] = r.choice((1, 2, 3))
    dtype = r.choice(DTYPES)
    x, layout = _strided_like(r, shape, dtype, gen)
    # normalized dims
    mode = r.choice(
        [
            "ns_int",
            "ns_int",
            "ns_tuple",
            "ns_tuple",
            "ns_size",
            "ns_list",
            "dim_int",
            "dim_int",
            "dim_tuple",
            "dim_trailing",
        ]
    )
    k = r.randint(1, min(3, nd))
    kw = {}
    if mode.startswith("ns"):
        dims = tuple(range(nd - k, nd))
        sizes = tuple(shape[d] for d in dims)
        if mode == "ns_int":
            dims = (nd - 1,)
            sizes = (shape[-1],)
            ns = shape[-1]
        elif mode == "ns_tuple":
            ns = sizes
        elif mode == "ns_size":
            ns = torch.Size(sizes)
        else:
            ns = list(sizes)
    else:
        if mode == "dim_int":
            d = r.randrange(-nd, nd)
            dims = (d % nd,)
            kw["dim"] = d
        elif mode == "dim_trailing":
            dims = tuple(range(nd - k, nd))
            kw["dim"] = dims
        else:
            dims = tuple(sorted(r.sample(range(nd), k)))
            kw["dim"] = tuple(r.sample(dims, len(dims)))  # any order
        sizes = tuple(shape[d] for d in dims)
        ns = r.choice([None, sizes, sizes[0] if len(sizes) == 1 else sizes])
    compute = torch.float64 if dtype == torch.float64 else torch.float32

    def affine(allow):
        if not allow or r.random() < 0.3:
            return None
        wdt = r.choice([compute, compute, dtype])
        if r.random() < 0.05:
            wdt = r.choice(DTYPES)
        kind = r.choice(["plain", "plain", "plain", "noncontig", "param", "grad"])
        w = (torch.randn(sizes, generator=gen, dtype=torch.float64) * 0.5 + 1).to(wdt)
        if kind == "noncontig" and len(sizes) and math.prod(sizes) > 1:
            w = torch.stack([w, w], -1)[..., 0]
        elif kind == "param":
            w = torch.nn.Parameter(w, requires_grad=False)
        elif kind == "grad":
            w = torch.nn.Parameter(w)
        return w

    weight = affine(True)
    bias = affine(op == "ln")
    residual = None
    if with_residual:
        residual, _ = _strided_like(r, shape, dtype, gen)
    eps = r.choice([None, 1e-5, 1e-3, 0.0, 1e-6, None, 1e-5, 0.25])
    if r.random() < 0.05:
        eps = r.choice([1, 0])
    if r.random() < 0.03:
        eps = r.choice([-1e-5, float("nan")])
    return dict(
        x=x,
        layout=layout,
        ns=ns,
        kw=kw,
        dims=dims,
        sizes=sizes,
        weight=weight,
        bias=bias,
        residual=residual,
        eps=eps,
        dtype=dtype,
    )


# ---- reference ----------------------------------------------------------------------


def _reference(op, c):
    """float64 result (y, h) by torch's ops on float64 copies."""
    x = c["x"].detach().double()
    h = x if c["residual"] is None else x + c["residual"].detach().double()
    hr = h if c["residual"] is None else h.to(c["dtype"]).double()  # h is rounded to dtype
    dims = c["dims"]
    nd = x.dim()
    tail = tuple(range(nd - len(dims), nd))
    moved = hr.movedim(dims, tail)
    w = None if c["weight"] is None else c["weight"].detach().double()
    b = None if c["bias"] is None else c["bias"].detach().double()
    eps = c["eps"]
    if op == "ln":
        y = F.layer_norm(moved, c["sizes"], w, b, 1e-5 if eps is None else float(eps))
    else:
        e = eps
        if e is None:
            e = 2.0**-52 if c["dtype"] == torch.float64 else 2.0**-23
        y = F.rms_norm(moved, c["sizes"], w, float(e))
    return y.movedim(tail, dims), h


def _tol(dtype, c):
    if dtype == torch.float64:
        return 1e-9, 1e-9
    if dtype == torch.float32:
        return 2e-5, 2e-5
    # one rounding of a float32 result to half: 1 ulp, plus slack for float32 math
    return float(torch.finfo(dtype).eps) * 1.01, 1e-4


def _close(got, want, dtype, what, zero_eps=False):
    assert got.dtype == dtype, (what, got.dtype, dtype)
    assert tuple(got.shape) == tuple(want.shape), (what, got.shape, want.shape)
    g = got.detach().double()
    if zero_eps:  # a constant row with eps=0: torch's 0/0 is NaN, fastnorm gives bias (README)
        want = torch.where(torch.isnan(want) & ~torch.isnan(g), g, want)
    rtol, atol = _tol(dtype, None)
    nan_g, nan_w = torch.isnan(g), torch.isnan(want)
    assert torch.equal(nan_g, nan_w), f"{what}: NaN positions differ"
    ok = ~nan_w
    diff = (g[ok] - want[ok]).abs()
    bound = atol + rtol * want[ok].abs()
    if diff.numel():
        bad = diff > bound
        assert not bool(bad.any()), f"{what}: max diff {float(diff.max()):.3g} (dtype {dtype})"


def _call(op, add, c, x=None, residual=None):
    x = c["x"] if x is None else x
    args = [x]
    if add:
        args.append(c["residual"] if residual is None else residual)
    args.append(c["ns"])
    args.append(c["weight"])
    if op == "ln":
        args.append(c["bias"])
    args.append(c["eps"])
    fn = {
        ("ln", False): fnt.layer_norm,
        ("rms", False): fnt.rms_norm,
        ("ln", True): fnt.add_layer_norm,
        ("rms", True): fnt.add_rms_norm,
    }[op, add]
    return fn(*args, **c["kw"])


def _run(op, add, c):
    try:
        return _call(op, add, c), None
    except (TypeError, ValueError) as exc:
        return None, exc
    except Exception as exc:
        raise AssertionError(f"unexpected {type(exc).__name__}: {exc}") from exc


def _extent(t):
    if t.numel() == 0:
        return None
    lo = hi = t.data_ptr()
    for n, s in zip(t.shape, t.stride()):
        hi += (n - 1) * s * t.element_size()
    return lo, hi + t.element_size()


def _overlap(a, b):
    ea, eb = _extent(a), _extent(b)
    return ea is not None and eb is not None and ea[0] < eb[1] and eb[0] < ea[1]


def _snapshot(c):
    return [
        None if t is None else t.detach().clone()
        for t in (c["x"], c["weight"], c["bias"], c["residual"])
    ]


def _unchanged(c, snap):
    for t, s in zip((c["x"], c["weight"], c["bias"], c["residual"]), snap):
        if t is not None:
            assert torch.equal(
                torch.nan_to_num(t.detach().double(), 7.0), torch.nan_to_num(s.double(), 7.0)
            ), "an input was modified"


def _describe(c):
    return {
        k: (
            tuple(v.shape),
            v.stride(),
            v.dtype,
            v.storage_offset(),
            type(v).__name__,
            v.requires_grad,
        )
        if isinstance(v, torch.Tensor)
        else v
        for k, v in c.items()
    }


def _expected_error(c):
    """Errors fastnorm raises by design where torch would not."""
    eps = c["eps"]
    return eps is not None and (eps != eps or eps < 0)


def _check_case(op, add, c, monkeypatch):
    snap = _snapshot(c)
    got, err = _run(op, add, c)
    _unchanged(c, snap)
    with monkeypatch.context() as m:
        for module in (_functions, _tensors):  # the NumPy-view path
            m.setattr(module, "_direct", lambda *a: None)
        got_np, err_np = _run(op, add, c)
    _unchanged(c, snap)
    assert (err is None) == (err_np is None), f"pointer path: {err!r}, NumPy path: {err_np!r}"
    if err is not None:
        if c["x"].numel() == 0:
            return
        # an error: torch's own op (on float64 copies) must fail too, or it is one by design
        try:
            _reference(op, c)
        except Exception:
            return
        assert _expected_error(c) or _mixed_dtypes(c), f"fastnorm raised {err!r}; torch did not"
        return
    want_y, want_h = _reference(op, c)
    outs = (got,) if not add else got
    outs_np = (got_np,) if not add else got_np
    for o in outs:
        assert o.is_contiguous(), "output not in C order"
        for t in (c["x"], c["weight"], c["bias"], c["residual"]):
            if t is not None:
                assert not _overlap(o, t), "output overlaps an input"
    if add:
        assert not _overlap(outs[0], outs[1]), "y and h overlap"
    z = c["eps"] == 0
    _close(outs[0], want_y, c["dtype"], "y", z)
    _close(outs_np[0], want_y, c["dtype"], "y (NumPy path)", z)
    if add:
        _close(outs[1], want_h, c["dtype"], "h")
        assert torch.equal(outs[1], outs_np[1]), "h differs between the paths"


def _mixed_dtypes(c):
    d = c["dtype"]
    compute = torch.float64 if d == torch.float64 else torch.float32
    return any(t is not None and t.dtype not in (d, compute) for t in (c["weight"], c["bias"]))


@pytest.mark.parametrize("op", ["ln", "rms"])
@pytest.mark.parametrize("add", [False, True])
def test_fuzz_forward(op, add, monkeypatch, isa):
    """Runs on every kernel set."""
    r = random.Random(f"fwd-{op}-{add}-{isa}")
    gen = torch.Generator().manual_seed(1234 + add + 2 * (op == "ln"))
    for i in range(max(1, N_CASES // 2)):
        c = _draw_case(r, gen, add, op)
        ctx = torch.no_grad() if r.random() < 0.5 else torch.enable_grad()
        try:
            with ctx:
                _check_case(op, add, c, monkeypatch)
        except AssertionError as exc:
            raise AssertionError(f"case {i}: {_describe(c)}: {exc}") from exc


# ---- autograd -----------------------------------------------------------------------


def _grads_case(r, gen, op, add):
    while True:
        c = _draw_case(r, gen, add, op)
        if c["x"].numel() == 0 or _expected_error(c) or c["eps"] == 0:
            continue
        # float64 throughout for the comparison with torch's autograd
        c["dtype"] = torch.float64
        for k in ("x", "residual"):
            if c[k] is not None:
                c[k] = c[k].detach().double().requires_grad_(r.random() < 0.8 or k == "x")
        for k in ("weight", "bias"):
            if c[k] is not None:
                t = c[k].detach().double()
                c[k] = torch.nn.Parameter(t) if r.random() < 0.7 else t
        return c


def _grad_inputs(c):
    return [
        c[k] for k in ("x", "residual", "weight", "bias") if c[k] is not None and c[k].requires_grad
    ]


def _ref_forward(op, add, c, x, residual, weight, bias):
    h = x if not add else x + residual
    dims = c["dims"]
    nd = x.dim()
    tail = tuple(range(nd - len(dims), nd))
    moved = h.movedim(dims, tail)
    eps = c["eps"]
    if op == "ln":
        y = F.layer_norm(moved, c["sizes"], weight, bias, 1e-5 if eps is None else float(eps))
    else:
        y = F.rms_norm(moved, c["sizes"], weight, 2.0**-52 if eps is None else float(eps))
    y = y.movedim(tail, dims)
    return (y,) if not add else (y, h)


@pytest.mark.parametrize("op", ["ln", "rms"])
@pytest.mark.parametrize("add", [False, True])
@pytest.mark.any_isa
def test_fuzz_autograd(op, add):
    r = random.Random(f"bwd-{op}-{add}")
    gen = torch.Generator().manual_seed(99 + add + 2 * (op == "ln"))
    for i in range(max(1, N_CASES // 4)):
        c = _grads_case(r, gen, op, add)
        ins = _grad_inputs(c)
        try:
            outs = _call(op, add, c)
        except (TypeError, ValueError):
            continue
        outs = (outs,) if not add else outs
        # a cotangent in a random layout (permuted, expanded)
        cots = []
        for o in outs:
            ct, _ = _strided_like(r, list(o.shape), torch.float64, gen)
            cots.append(ct)
        use_h = add and r.random() < 0.5
        used = [(o, ct) for j, (o, ct) in enumerate(zip(outs, cots)) if j == 0 or use_h]
        got = torch.autograd.grad(
            [o for o, _ in used], ins, [ct for _, ct in used], allow_unused=True
        )
        ref_ins = [t.detach().clone().requires_grad_(True) for t in ins]
        m = dict(zip([id(t) for t in ins], ref_ins))
        args = [
            m.get(id(c[k]), c[k] if c[k] is None else c[k].detach())
            for k in ("x", "residual", "weight", "bias")
        ]
        routs = _ref_forward(op, add, c, *args)
        rused = [(routs[j], cots[j]) for j in range(len(routs)) if j == 0 or use_h]
        want = torch.autograd.grad(
            [o for o, _ in rused], ref_ins, [ct for _, ct in rused], allow_unused=True
        )
        # the float64 reference itself loses |x| * eps64 per element in x - mean,
        # magnified by rstd (up to 1/sqrt(eps)) and summed over the cotangent
        e = c["eps"] if c["eps"] is not None else (1e-5 if op == "ln" else 2.0**-52)
        xs = c["x"].detach().abs().max().item() + (
            0 if c["residual"] is None else c["residual"].detach().abs().max().item()
        )
        slack = (
            0.0
            if op != "ln"
            else 64
            * 2.0**-52
            * xs
            / math.sqrt(max(float(e), 1e-300))
            * sum(float(ct.abs().sum()) for ct in cots)
            * (
                1
                + max(
                    (float(c[k].detach().abs().max()) for k in ("weight",) if c[k] is not None),
                    default=0,
                )
            )
        )
        for g, w, t in zip(got, want, ins):
            if w is None:
                assert g is None or not bool(g.any()), f"case {i}: unexpected gradient"
                continue
            assert g is not None, f"case {i}: {_describe(c)}: missing gradient"
            assert g.shape == t.shape and g.dtype == t.dtype, (i, g.shape, t.shape, g.dtype)
            err = (g - w).abs().max().item()
            scale = 1 + w.abs().max().item()
            assert err <= 1e-8 * scale + slack, (
                f"case {i}: {_describe(c)}: gradient off by {err:.3g}"
            )


@pytest.mark.parametrize("op", ["ln", "rms"])
@pytest.mark.parametrize("add", [False, True])
@pytest.mark.any_isa
def test_gradcheck_small(op, add):
    r = random.Random(f"gc-{op}-{add}")
    gen = torch.Generator().manual_seed(7)
    done = 0
    while done < 6:
        c = _grads_case(r, gen, op, add)
        if c["x"].numel() > 64:
            continue
        ins = _grad_inputs(c)
        if not ins:
            continue
        keys = [
            k
            for k in ("x", "residual", "weight", "bias")
            if c[k] is not None and c[k].requires_grad
        ]

        def f(*vals, c=c, keys=keys):
            cc = dict(c)
            for k, v in zip(keys, vals):
                cc[k] = v
            return _call(op, add, cc)

        try:
            f(*ins)
        except (TypeError, ValueError):
            continue
        assert torch.autograd.gradcheck(f, tuple(ins), eps=1e-6, atol=1e-6), _describe(c)
        done += 1


@pytest.mark.any_isa
def test_no_grad_matches_grad_mode():
    r = random.Random("nograd")
    gen = torch.Generator().manual_seed(5)
    for _ in range(max(1, N_CASES // 4)):
        op = r.choice(["ln", "rms"])
        c = _draw_case(r, gen, False, op)
        try:
            with torch.no_grad():
                a = _call(op, False, c)
            b = _call(op, False, c)
        except (TypeError, ValueError):
            continue
        assert torch.equal(torch.nan_to_num(a, 3.0), torch.nan_to_num(b.detach(), 3.0)), _describe(
            c
        )


# ---- parameter updates and torch's modes --------------------------------------------


def _update_in_place(r, params):
    """One in-place update of the parameters, of a kind torch's version
    counter may not see: a fused optimizer step (no version bump, same
    address), a write through .data, or a write through a NumPy view."""
    kind = r.choice(["Adam", "AdamW", "Adagrad", "data", "numpy"])
    if kind in ("Adam", "AdamW", "Adagrad"):
        for p in params:
            p.grad = torch.randn(p.shape, dtype=torch.float64).to(p.dtype)
        getattr(torch.optim, kind)(params, lr=r.choice([0.01, 0.1, 0.5]), fused=True).step()
    elif kind == "data":
        for p in params:
            p.data.mul_(1.5).add_(0.125)
    else:
        for p in params:
            if p.numel():
                flat = p.detach().view(-1)
                view = flat.view(torch.int16) if p.element_size() == 2 else flat
                view.numpy()[r.randrange(p.numel())] += 1 << 9 if p.element_size() == 2 else 1
    return kind


def _dual_check(op, add, c, gen):
    """In a forward-mode AD level, a dual x: fastnorm's primal and tangent
    against torch's ops (float64 cases)."""
    import torch.autograd.forward_ad as fwAD

    x = c["x"].detach()
    if 0 in x.stride():  # make_dual refuses an expanded primal
        x = x.contiguous()
    t = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    res, w, b = (None if c[k] is None else c[k].detach() for k in ("residual", "weight", "bias"))
    with fwAD.dual_level():
        got = _call(op, add, c, x=fwAD.make_dual(x, t))
        got = got[0] if add else got
        got_p, got_t = fwAD.unpack_dual(got)
    assert got_t is not None, "forward-mode AD: the tangent was dropped"
    want_p, want_t = torch.func.jvp(
        lambda xx: _ref_forward(op, add, c, xx, res, w, b)[0], (x.double(),), (t.double(),)
    )
    _close(got_p, want_p, x.dtype, "primal")
    _close(got_t, want_t, x.dtype, "tangent")


@pytest.mark.parametrize("op", ["ln", "rms"])
@pytest.mark.parametrize("add", [False, True])
def test_fuzz_parameter_updates_and_modes(op, add, isa):
    """Cases as above with weight and bias as Parameters, called once (which
    fills the widened-weight cache), updated in place (fused optimizers,
    .data, NumPy views), and called again in grad mode, no_grad, inference
    mode (on inference tensors too) or, for float64 cases, with a dual x
    inside a forward-mode AD level.  Every result is checked against the
    float64 reference with the parameters as they are then."""
    r = random.Random(f"upd-{op}-{add}-{isa}")
    gen = torch.Generator().manual_seed(4321 + add + 2 * (op == "ln"))
    done = 0
    while done < max(1, N_CASES // 8):
        c = _draw_case(r, gen, add, op)
        if c["x"].numel() == 0 or _expected_error(c) or _mixed_dtypes(c) or c["eps"] == 0:
            continue
        for k in ("weight", "bias"):
            if c[k] is not None:
                c[k] = torch.nn.Parameter(c[k].detach().clone())
        params = [c[k] for k in ("weight", "bias") if c[k] is not None]
        if not params:
            continue
        with torch.no_grad():
            _, err = _run(op, add, c)
        if err is not None:
            continue
        kind = _update_in_place(r, params)
        mode = r.choice(["grad", "no_grad", "inference", "inference tensors", "dual"])
        if mode == "dual" and c["dtype"] != torch.float64:
            mode = "no_grad"
        try:
            if mode == "dual":
                _dual_check(op, add, c, gen)
            else:
                cc = c
                if mode == "inference tensors":
                    with torch.inference_mode():
                        cc = {
                            k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in c.items()
                        }
                ctx = {"grad": torch.enable_grad, "no_grad": torch.no_grad}.get(
                    mode, torch.inference_mode
                )
                with ctx():
                    got = _call(op, add, cc)
                want_y, _ = _reference(op, c)
                _close(got[0] if add else got, want_y, c["dtype"], "y")
        except AssertionError as exc:
            raise AssertionError(f"{kind} update, {mode}: {_describe(c)}: {exc}") from exc
        done += 1


# ---- large outputs (the buffer cache) ---------------------------------------------


@pytest.mark.any_isa
def test_large_outputs_never_shared():
    """Outputs from the buffer cache: none is handed out while a tensor, view,
    NumPy array, DLPack capsule or storage of an earlier one is alive."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1024, 1024, generator=gen)  # 4 MiB: from the buffer cache
    keep = []
    for k in range(8):
        y = fnt.layer_norm(x, 1024)
        holders = [
            y[1:],
            y.numpy(),
            torch.utils.dlpack.to_dlpack(y),
            y.untyped_storage(),
            y.view(-1),
            y.T,
        ]
        h = holders[k % len(holders)]
        ptr, val = y.data_ptr(), y[0, :4].clone()
        del y
        keep.append((h, ptr, val))
        for _h2, ptr2, _val2 in keep[:-1]:
            assert ptr2 != keep[-1][1], "a buffer was handed out while still referenced"
    for h, _ptr, val in keep:
        t = torch.from_numpy(h) if isinstance(h, np.ndarray) else None
        if t is not None:
            assert torch.equal(t[0, :4], val)
