"""fastnorm.torch.patch on whole Hugging Face models (tiny Llama and GPT-2
built from configs, random weights, nothing downloaded): every norm module is
switched, logits agree with the stock model through prefill and a cached
decode step, unpatch restores the original exactly, and checkpoints move
between patched and stock models."""

import copy
import io
import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
import fastnorm.torch as fnt  # noqa: E402

pytestmark = pytest.mark.slow  # whole Hugging Face models

VOCAB = 97
DTYPES = [torch.float32, torch.bfloat16]


def tiny(kind, dtype, seed=0):
    torch.manual_seed(seed)
    if kind == "llama":
        config = transformers.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            bos_token_id=0,
            eos_token_id=1,
            attn_implementation="sdpa",
        )
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.GPT2Config(
            vocab_size=VOCAB,
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=1,
            attn_implementation="sdpa",
        )
        model = transformers.GPT2LMHeadModel(config)
    return model.to(dtype).eval()


def norm_names(model):
    return sorted(
        name
        for name, m in model.named_modules()
        if isinstance(m, (torch.nn.LayerNorm, torch.nn.RMSNorm))
        or type(m).__name__.endswith("RMSNorm")
    )


def logits(model, ids):
    """Full prefill logits and one cached decode step's, flattened in float32:
    the decode step goes through the cache path a generate() loop uses."""
    with torch.inference_mode():
        out = model(ids, use_cache=True)
        step = model(ids[:, -1:], cache=out.cache, use_cache=True)
    return torch.cat([out.logits.float().flatten(), step.logits.float().flatten()])


def ids_for(batch=2, length=11):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(5))


def check_close(got, want, ref, dtype):
    """float32: a few ulps per norm, mildly amplified by the layers, so 1e-4 of
    the logits' scale.  bfloat16: one norm element rounded the other way
    travels through every later layer, so allow 16 bf16 ulps of the scale,
    and require the patched model to be no further than the stock one from
    the same weights computed in float32 (`ref`)."""
    scale = max(1.0, float(want.abs().max()))
    diff = float((got - want).abs().max())
    if dtype == torch.float32:
        assert diff <= 1e-4 * scale, diff
    else:
        assert diff <= 16 * 2.0**-8 * scale, diff
        stock_err = float((want - ref).abs().max())
        patched_err = float((got - ref).abs().max())
        assert patched_err <= 1.25 * stock_err + 1e-6, (patched_err, stock_err)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_patch_whole_model(kind, dtype):
    stock = tiny(kind, dtype)
    model = copy.deepcopy(stock)
    ids = ids_for()
    want = logits(stock, ids)
    ref = logits(copy.deepcopy(stock).float(), ids) if dtype != torch.float32 else None
    original = {name: type(m) for name, m in model.named_modules()}

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # verify=True must accept every norm of these models
        names = fnt.patch(model)
    assert sorted(names) == norm_names(stock)
    assert len(names) == 2 * 2 + 1  # two per layer and the final norm
    for name in names:
        assert type(model.get_submodule(name)) is not original[name]
    check_close(logits(model, ids), want, ref, dtype)

    assert sorted(fnt.unpatch(model)) == sorted(names)
    assert {name: type(m) for name, m in model.named_modules()} == original
    assert torch.equal(logits(model, ids), want)  # the stock forward again, bit for bit


@pytest.mark.any_isa
@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_checkpoints_load_either_way(kind):
    """A state_dict saved from a patched model loads strictly into a stock one
    and the reverse: patching changes classes, never parameter names."""
    ids = ids_for(1, 7)
    patched = tiny(kind, torch.float32, seed=1)
    fnt.patch(patched)
    stock = tiny(kind, torch.float32, seed=2)  # different weights, so the load is visible
    assert list(patched.state_dict()) == list(stock.state_dict())

    buf = io.BytesIO()
    torch.save(patched.state_dict(), buf)
    buf.seek(0)
    stock.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    check_close(logits(patched, ids), logits(stock, ids), None, torch.float32)

    fresh = tiny(kind, torch.float32, seed=3)
    fnt.patch(fresh)
    fresh.load_state_dict(stock.state_dict(), strict=True)
    for a, b in zip(fresh.state_dict().values(), patched.state_dict().values()):
        assert torch.equal(a, b)
