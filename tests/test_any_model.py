"""Recipes on models lowbit did not write: Hugging Face BERT / ViT / GPT-2 (tiny configs, no weights
downloaded), torch's nn.TransformerEncoder (train and eval: the fused fast path must not bypass
quantization) and a bare nn.MultiheadAttention. Every slot set alone to a coarse format (fp2 =
{0, +-2} with a per-tensor scale) changes the output and is measured live; a recipe part that
matches nothing warns, and strict=True raises."""
import copy
import os
import warnings

import pytest
import torch
from torch import nn

from lowbit.nn import (LayerSpec, Recipe, RecipeCoverageError, RecipeWarning, Rule, make_recipe,
                       quantize_model)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SLOTS = ("weights", "inputs", "activations", "softmax", "attention")
COLUMNS = {"weights": ("weight",), "inputs": ("input",), "activations": ("output",), "softmax": ("softmax",),
           "attention": ("attn_qk", "attn_av")}

pytestmark = pytest.mark.usefixtures("eager_single_thread")


def _changes(base, x, slot, out_of=lambda y: y):
    with torch.no_grad():
        ref = out_of(base(x))
    model = copy.deepcopy(base)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RecipeWarning)  # every slot here must take effect
        asg = quantize_model(model, make_recipe(**{slot: "fp2"}))
    with torch.no_grad():
        out = out_of(model(x))
    assert torch._C._len_torch_function_stack() == 0   # every mode pushed during forward was popped
    assert any(asg.formats(c) for c in COLUMNS[slot]), slot
    assert asg.dead_slots() == [], asg.dead_slots()
    live = asg.live()
    assert any(n > 0 for slots in live.values() for s, n in slots.items() if s in COLUMNS[slot])
    rel = ((out - ref).abs().max() / ref.abs().max()).item()
    assert rel > 1e-4, f"{slot}: output unchanged (relative change {rel:.1e})"
    return asg


def _encoder(mode):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    return enc.train() if mode == "train" else enc.eval()


@pytest.mark.parametrize("slot", SLOTS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_transformer_encoder_every_slot(mode, slot):
    _changes(_encoder(mode), torch.randn(2, 5, 16), slot)


def test_transformer_encoder_eval_int4_differs_from_fp32():
    enc = _encoder("eval")
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        ref = enc(x)
        quantize_model(enc, make_recipe(weights="int4", inputs="int4"))
        assert not torch.equal(enc(x), ref)  # the fused eval fast path would return exactly ref


class _Wrap(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2)

    def forward(self, x):
        return self.mha(x, x, x)[0]


@pytest.mark.parametrize("slot", ["weights", "inputs", "softmax", "attention"])
def test_bare_multihead_attention_every_slot(slot):
    torch.manual_seed(0)
    _changes(_Wrap().eval(), torch.randn(4, 3, 8), slot)


@pytest.mark.parametrize("kw", [{}, {"need_weights": False},
                                {"attn_mask": torch.triu(torch.ones(4, 4, dtype=torch.bool), 1)},
                                {"key_padding_mask": torch.tensor([[False] * 3 + [True]] * 3)}])
def test_multihead_attention_decomposition_matches_torch(kw):
    """A grad-only recipe leaves the forward numerics to lowbit's decomposition: equal to torch's."""
    torch.manual_seed(0)
    wrap = _Wrap().eval()
    mha, q = wrap.mha, torch.randn(4, 3, 8)
    ref = mha(q, q, q, **kw)
    quantize_model(wrap, Recipe([Rule(types=["MultiheadAttention"], spec=LayerSpec(grad="fp8_e4m3"))]))
    out = mha(q, q, q, **kw)
    torch.testing.assert_close(out[0], ref[0], rtol=1e-5, atol=1e-6)
    if ref[1] is not None:
        torch.testing.assert_close(out[1], ref[1], rtol=1e-5, atol=1e-6)


def test_rule_matching_nothing_warns_and_strict_raises():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    rec = Recipe([Rule(pattern="encoder.*", spec="int4"), Rule(types=["weight"], spec="int8")])
    with pytest.warns(RecipeWarning, match=r"rule 1 \(pattern=encoder\.\*"):
        quantize_model(copy.deepcopy(model), rec)
    with pytest.raises(RecipeCoverageError, match="matches no layer"):
        quantize_model(model, rec, strict=True)
    assert type(model[0]) is nn.Linear  # strict raised before any surgery


def test_slot_no_layer_takes_warns_and_strict_raises():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())   # no softmax anywhere
    with pytest.warns(RecipeWarning, match="softmax is set by rule"):
        quantize_model(copy.deepcopy(model), make_recipe(weights="int8", softmax="fp8_e4m3"))
    with pytest.raises(RecipeCoverageError, match="softmax"):
        quantize_model(model, make_recipe(weights="int8", softmax="fp8_e4m3"), strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RecipeWarning)
        quantize_model(model, make_recipe(weights="int8", activations="int8"), strict=True)


def test_live_table_marks_dead_slots():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.a(x)                            # b never runs

    model = Branchy()
    asg = quantize_model(model, make_recipe(weights="int4"))
    assert "not yet measured" in asg.table()
    model(torch.randn(2, 4))
    assert asg.dead_slots() == [("b", "weight")]
    assert asg.live()["a"] == {"weight": 1}
    row = [ln for ln in asg.table().splitlines() if ln.startswith("b ")][0]
    assert row.split()[-1] == "weight"
    asg.reset_live()
    assert asg.live()["a"] == {"weight": 0}


# ---- Hugging Face transformers -----------------------------------------------------------------------
def _hf(name, impl):
    tr = pytest.importorskip("transformers")
    torch.manual_seed(0)
    small = dict(num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, hidden_size=32,
                 attn_implementation=impl, initializer_range=0.5)   # peaked attention, not uniform
    if name == "bert":
        return tr.BertModel(tr.BertConfig(vocab_size=50, **small)).eval(), torch.randint(0, 50, (2, 7))
    if name == "vit":
        cfg = tr.ViTConfig(image_size=16, patch_size=4, num_channels=1, **small)
        return tr.ViTModel(cfg).eval(), torch.randn(2, 1, 16, 16)
    cfg = tr.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=16, vocab_size=50, bos_token_id=0,
                        eos_token_id=0, attn_implementation=impl,
                        initializer_range=0.5)
    return tr.GPT2Model(cfg).eval(), torch.randint(0, 50, (2, 7))


HF_SLOTS = [(m, s) for m in ("bert", "vit", "gpt2") for s in SLOTS]


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("name,slot", HF_SLOTS)
def test_hugging_face_every_slot(name, slot, impl):
    model, x = _hf(name, impl)
    asg = _changes(model, x, slot, out_of=lambda y: y.last_hidden_state)
    if slot in ("softmax", "attention"):
        kinds = {r.kind for r in asg.rows if r.format(COLUMNS[slot][0])}
        assert kinds == {"attention"}
    if slot == "activations" and name != "vit":
        assert {r.type for r in asg.rows if r.format("output")} & {"GELUActivation", "NewGELUActivation"}


@pytest.mark.parametrize("fmt", ["int4", "mxfp4"])
def test_gpt2_conv1d_quantizes_as_the_linear_it_is(fmt):
    """HF's Conv1D stores W as (in, out): quantized, it must equal nn.Linear with W^T quantized the
    Linear way (per output channel / blocks along the inputs), and cost must count its MACs."""
    pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    from lowbit.cost import profile_layers
    torch.manual_seed(0)
    conv = nn.Sequential(Conv1D(24, 64))
    lin = nn.Sequential(nn.Linear(64, 24))
    with torch.no_grad():
        conv[0].weight.normal_()
        lin[0].weight.copy_(conv[0].weight.t())
        lin[0].bias.copy_(conv[0].bias)
    x = torch.randn(2, 5, 64)
    rec = make_recipe(weights=fmt, inputs="int8")
    asg = quantize_model(conv, rec)
    quantize_model(lin, rec)
    torch.testing.assert_close(conv(x), lin(x), rtol=1e-5, atol=1e-5)
    assert asg["0"].type == "Conv1D" and asg["0"].format("weight") == fmt
    assert [li.macs for li in profile_layers(conv, (1, 5, 64))] == [5 * 64 * 24]




@pytest.mark.parametrize("name", ["encoder", "gpt2"])
def test_state_dict_deepcopy_and_undo(name):
    model, x = (_encoder("eval"), torch.randn(2, 5, 16)) if name == "encoder" else _hf("gpt2", "eager")
    out_of = (lambda y: y) if name == "encoder" else (lambda y: y.last_hidden_state)
    with torch.no_grad():
        ref = out_of(model(x))
    keys = list(model.state_dict())
    asg = quantize_model(model, make_recipe(weights="int4", inputs="int8", softmax="fp8_e4m3",
                                            attention="fp8_e4m3", activations="int8"))
    assert list(model.state_dict()) == keys
    twin = copy.deepcopy(model)
    with torch.no_grad():
        q = out_of(model(x))
        assert torch.equal(out_of(twin(x)), q) and not torch.equal(q, ref)
    asg.undo()
    with torch.no_grad():
        assert torch.equal(out_of(model(x)), ref)
