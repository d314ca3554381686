"""fastnorm.torch.group_norm, GroupNorm and patch of nn.GroupNorm:
torch's F.group_norm values and gradients, gradcheck in float64, channels_last
tensors read without a copy, torch.compile(fullgraph=True), and a patched
small UNet-style model in float32 and bfloat16, in both memory formats."""

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import fastnorm.torch as fnt  # noqa: E402

pytestmark = pytest.mark.any_isa


def _case(dtype=torch.float32, channels_last=False, shape=(2, 16, 6, 7)):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 1).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    w = (torch.randn(shape[1], generator=gen) * 0.5 + 1).to(dtype)
    b = torch.randn(shape[1], generator=gen).to(dtype)
    return x, w, b


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_forward_and_gradients_match_torch(dtype, channels_last):
    x, w, b = _case(dtype, channels_last)
    tol = {torch.float32: 1e-5, torch.float64: 1e-12}.get(dtype, 2e-2)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    ws = [w.clone().requires_grad_(True) for _ in range(2)]
    bs = [b.clone().requires_grad_(True) for _ in range(2)]
    got = fnt.group_norm(xs[0], 4, ws[0], bs[0])
    want = F.group_norm(xs[1], 4, ws[1], bs[1])
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    got.backward(g)
    want.backward(g)
    for a, c in ((xs[0], xs[1]), (ws[0], ws[1]), (bs[0], bs[1])):
        scale = float(c.grad.abs().max())
        torch.testing.assert_close(
            a.grad.float() / scale, c.grad.float() / scale, rtol=tol * 10, atol=tol * 10
        )


def test_channels_last_input_is_not_copied(monkeypatch):
    x, w, b = _case(channels_last=True)
    calls = []
    real = torch.Tensor.contiguous

    def spy(self, *args, **kwargs):
        calls.append(self.data_ptr())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "contiguous", spy)
    fnt.group_norm(x, 4, w, b)
    assert x.data_ptr() not in calls


def test_gradcheck_float64():
    x, w, b = _case(torch.float64, shape=(2, 6, 3, 2))
    for args in ((x, w, b), (x.to(memory_format=torch.channels_last), w, b)):
        args = tuple(a.clone().requires_grad_(True) for a in args)
        assert torch.autograd.gradcheck(lambda x, w, b: fnt.group_norm(x, 3, w, b), args)


def test_fake_tensor_and_compile_fullgraph():
    x, w, b = _case()
    torch._dynamo.reset()
    fn = torch.compile(lambda x, w, b: fnt.group_norm(x, 4, w, b) * 2, fullgraph=True)
    torch.testing.assert_close(fn(x, w, b), F.group_norm(x, 4, w, b) * 2, rtol=1e-5, atol=1e-5)
    xg = x.clone().requires_grad_(True)
    fn(xg, w, b).sum().backward()
    xr = x.clone().requires_grad_(True)
    (F.group_norm(xr, 4, w, b) * 2).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad, rtol=1e-4, atol=1e-5)


class _TinyUNet(torch.nn.Module):
    """Down, middle, up with a skip: conv + GroupNorm + SiLU blocks."""

    def __init__(self):
        super().__init__()

        def block(cin, cout):
            return torch.nn.Sequential(
                torch.nn.Conv2d(cin, cout, 3, padding=1),
                torch.nn.GroupNorm(8, cout),
                torch.nn.SiLU(),
            )

        self.down = block(3, 32)
        self.mid = torch.nn.Sequential(torch.nn.AvgPool2d(2), block(32, 64))
        self.up = torch.nn.Upsample(scale_factor=2)
        self.out = torch.nn.Sequential(block(96, 32), torch.nn.Conv2d(32, 3, 1))

    def forward(self, x):
        d = self.down(x)
        return self.out(torch.cat([d, self.up(self.mid(d))], dim=1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_patched_unet_matches_stock(dtype, channels_last):
    torch.manual_seed(0)
    model = _TinyUNet().to(dtype).eval()
    x = torch.randn(2, 3, 16, 16).to(dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    with torch.no_grad():
        want = model(x)
        names = fnt.patch(model)
        assert len(names) == 3 and all(type(model.get_submodule(n)) is fnt.GroupNorm for n in names)
        got = model(x)
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol)
    assert fnt.unpatch(model) == names
