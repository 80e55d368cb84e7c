"""quantize_model / dequantize_model on zoo and hand-written models: keys, sharing, undo, scoping."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lowbit import quantize
from lowbit.models import create_model, list_models
from lowbit.nn import (LayerSpec, MatmulSpec, QConv2d, QEmbedding, QLinear, QuantSoftmax, Recipe, Rule,
                       SoftmaxSpec, dequantize_model, make_recipe, quantize_model, quantized_softmax,
                       recipe_for_precision, resolve)
from lowbit.nn.functional import handle_sdpa
from lowbit.nn.specs import SlotSpec

TINY = {"cnn": dict(channels=(8, 16)), "mlp": dict(hidden=(16,)), "gcn": dict(dim=16, depth=1),
        "mlpmixer": dict(dim=16, depth=1, token_mlp_dim=8, channel_mlp_dim=16),
        "mobilenetv2": dict(width_mult=0.25), "resnet18": dict(layers=(1, 1, 1, 1)),
        "resnet18_imagenet": dict(layers=(1, 1, 1, 1), num_classes=10),
        "vit": dict(embed_dim=16, depth=1, num_heads=2), "deit_tiny": dict(embed_dim=12, depth=1, num_heads=3)}
EVERYTHING = make_recipe(weights="int4", inputs="fp8_e4m3", activations="fp4_e2m1", softmax="fp8_e5m2",
                         attention="fp8_e4m3", grads="fp8_e5m2")


pytestmark = pytest.mark.usefixtures("eager_single_thread")


def tiny(name, in_chans=1, img=8):
    torch.manual_seed(0)
    return create_model(name, in_chans=in_chans, img_size=img, **TINY.get(name, {})).eval()


def no_lowbit_left(model):
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks, type(m).__name__
        assert "lowbit_q" not in m._modules
        assert not type(m).__module__.startswith("lowbit.nn")
    assert torch._C._len_torch_function_stack() == 0


@pytest.mark.parametrize("name", list_models())
def test_keys_sharing_and_exact_undo(name):
    model = tiny(name)
    x = torch.randn(2, 1, 8, 8)
    ref = model(x)
    keys, params = list(model.state_dict()), dict(model.named_parameters())
    modules = dict(model.named_modules())
    asg = quantize_model(model, EVERYTHING)
    assert list(model.state_dict()) == keys
    assert all(p is params[n] for n, p in model.named_parameters())
    out = model(x)
    assert not torch.equal(out, ref) and torch._C._len_torch_function_stack() == 0
    opt = torch.optim.SGD(model.parameters(), lr=0.1)   # the optimizer sees the original parameters
    out.square().mean().backward()
    opt.step()
    asg.undo()
    no_lowbit_left(model)
    assert all(m is modules[n] for n, m in model.named_modules())
    assert all(p is params[n] for n, p in model.named_parameters())
    torch.manual_seed(0)
    fresh = create_model(name, in_chans=1, img_size=8, **TINY.get(name, {})).eval()
    with torch.no_grad():
        for p, q in zip(fresh.parameters(), model.parameters()):
            p.copy_(q)
    assert torch.equal(model(x), fresh(x))              # undo is exact (after a training step too)


def test_inplace_false_leaves_original():
    model = tiny("vit")
    x = torch.randn(2, 1, 8, 8)
    ref = model(x)
    asg = quantize_model(model, EVERYTHING, inplace=False)
    assert asg.model is not model and torch.equal(model(x), ref)
    no_lowbit_left(model)
    assert not torch.equal(asg.model(x), ref)


def test_double_quantize_and_dequantize_errors():
    model = tiny("mlp")
    with pytest.raises(ValueError, match="not quantized"):
        dequantize_model(model)
    quantize_model(model, EVERYTHING)
    with pytest.raises(ValueError, match="already quantized; call lowbit.nn.dequantize_model"):
        quantize_model(model, EVERYTHING)
    dequantize_model(model)
    quantize_model(model, EVERYTHING)                   # fine again after undo
    with pytest.raises(TypeError, match="recipe must be a lowbit.nn.Recipe"):
        quantize_model(tiny("mlp"), "int8")


def test_assignment_rows_and_table():
    model = tiny("cnn")
    asg = quantize_model(model, recipe_for_precision("int8", softmax="fp8_e5m2"))
    rows = asg.to_rows()
    names = [r["name"] for r in rows]
    assert names == ["features.0.0", "features.0.2", "features.2.0", "features.2.2", "head"]
    conv = rows[2]
    assert conv["type"] == "Conv2d" and conv["weight_shape"] == [16, 8, 3, 3] and conv["params"] == 16 * 8 * 9
    assert conv["weight"] == "int8" and conv["weight_scaling"] == "channel" and conv["input"] is None
    assert rows[1]["output"] == "int8" and rows[1]["kind"] == "activation"
    assert asg.formats("softmax") == set()
    assert isinstance(model.features[0][0], QConv2d) and isinstance(model.head, QLinear)
    table = asg.table()
    assert "features.2.0" in table and "16x8x3x3" in table and "5 layers, 5 quantized" in table


def test_keep_first_last_and_patterns():
    model = tiny("mlp")
    r = Recipe([Rule(pattern="features.*", types="Linear", spec={"weight": "int2"}), Rule(spec="int8")],
               keep_first_last=True)
    asg = quantize_model(model, r)
    assert asg["features.1"].format("weight") is None   # first weight layer kept in fp32
    assert asg["head"].format("weight") is None         # last too
    assert asg["features.2"].format("output") == "int8"
    assert isinstance(model.features[1], nn.Linear) and not isinstance(model.features[1], QLinear)


class FunctionalBlock(nn.Module):
    """Own forward: F.gelu, torch.tanh, x.softmax, @ twice; child `inner` calls torch.tanh itself."""

    def __init__(self):
        super().__init__()
        self.inner = Inner()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        h = torch.tanh(F.gelu(self.lin(x)))
        a = (h @ h.transpose(-2, -1)).softmax(dim=-1)
        return self.inner(a @ h)


class Inner(nn.Module):
    def forward(self, x):
        return torch.tanh(x) * 3


def test_functional_interception_is_scoped_to_the_modules_own_forward():
    torch.manual_seed(0)
    blk = FunctionalBlock()
    x = torch.randn(2, 5, 8)
    ref = blk(x)
    asg = quantize_model(blk, Recipe([Rule(pattern="", spec=LayerSpec(output="fp2"))]))
    assert [(r.name, r.kind) for r in asg] == [("", "attention"), ("lin", "weight")]
    q = lambda t: quantize(t, resolve(SlotSpec("fp2"), "act"))  # noqa: E731
    h = q(torch.tanh(q(F.gelu(blk.lin(x)))))
    a = (h @ h.transpose(-2, -1)).softmax(dim=-1)
    expected = torch.tanh(a @ h) * 3                    # Inner's tanh is not the parent's call
    assert torch.equal(blk(x), expected) and not torch.equal(expected, ref)
    dequantize_model(blk)
    assert torch.equal(blk(x), ref)


def test_attention_matmuls_told_apart():
    torch.manual_seed(0)
    blk = FunctionalBlock()
    x = torch.randn(2, 5, 8)
    fp2 = resolve(SlotSpec("fp2"), "act")
    for slot in ("attn_qk", "attn_av"):
        quantize_model(blk, Recipe([Rule(pattern="", spec=LayerSpec(**{slot: MatmulSpec(out="fp2")}))]))
        h = torch.tanh(F.gelu(blk.lin(x)))
        s = h @ h.transpose(-2, -1)
        s = quantize(s, fp2) if slot == "attn_qk" else s
        o = s.softmax(dim=-1) @ h
        o = quantize(o, fp2) if slot == "attn_av" else o
        assert torch.equal(blk(x), torch.tanh(o) * 3), slot
        dequantize_model(blk)


def test_mode_cleanup_on_exceptions():
    model = tiny("vit")
    quantize_model(model, EVERYTHING)
    x = torch.randn(2, 1, 8, 8)
    good = model(x)

    def boom(mod, args):
        raise RuntimeError("boom")
    for target in (model.blocks[0].attn.proj, model.blocks[0].attn.softmax):
        h = target.register_forward_pre_hook(boom)
        with pytest.raises(RuntimeError, match="boom"):
            model(x)
        h.remove()
        assert torch._C._len_torch_function_stack() == 0
        assert torch.equal(model(x), good)


class SDPA(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.kw = kw

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, **self.kw)


class _NoSpecs:
    softmax_specs, attn_specs = {}, {}


@pytest.mark.parametrize("kw", [{}, {"is_causal": True}, {"scale": 0.3}, {"mask": "bool"}, {"mask": "add"},
                                {"enable_gqa": True}])
def test_sdpa_decomposition_matches_torch(kw):
    torch.manual_seed(0)
    q = torch.randn(2, 4, 6, 8)
    kv_heads = 2 if kw.get("enable_gqa") else 4
    k, v = torch.randn(2, kv_heads, 7, 8), torch.randn(2, kv_heads, 7, 8)
    kw = dict(kw)
    mask = kw.pop("mask", None)
    if mask == "bool":
        kw["attn_mask"] = torch.rand(6, 7) > 0.3
        kw["attn_mask"][:, 0] = True
    elif mask == "add":
        kw["attn_mask"] = torch.randn(6, 7)
    if kw.get("is_causal"):
        k, v = k[:, :, :6], v[:, :, :6]
    ref = F.scaled_dot_product_attention(q, k, v, **kw)
    got = handle_sdpa(_NoSpecs(), F.scaled_dot_product_attention, (q, k, v), kw)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_sdpa_additive_mask_and_quantized_slots():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 2, 5, 8).unbind(0)
    mask = torch.randn(5, 5)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    got = handle_sdpa(_NoSpecs(), None, (q, k, v, mask), {})
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    for slot in ("softmax", "attention"):
        wrapped = nn.Sequential(SDPA(is_causal=True))
        asg = quantize_model(wrapped, make_recipe(**{slot: "fp2"}))
        assert asg.rows[0].kind == "attention"
        out = wrapped[0](q, k, v)
        assert not torch.allclose(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-3), slot
        assert torch.isfinite(out).all()


def test_quantized_softmax_contract():
    torch.manual_seed(0)
    x = torch.randn(4, 9)
    torch.testing.assert_close(quantized_softmax(x, -1, {}), torch.softmax(x, -1))
    x[:, 3] = float("-inf")
    specs = {p: resolve(SlotSpec("fp4"), "act", -1) for p in ("input", "exp", "sum", "output")}
    y = QuantSoftmax(-1, **specs)(x)
    assert (y[:, 3] == 0).all() and torch.isfinite(y).all()
    assert not torch.allclose(y, torch.softmax(x, -1), atol=1e-3)
    only_exp = quantized_softmax(x, -1, {"exp": specs["exp"]})
    e = quantize(torch.exp(x - x.amax(-1, keepdim=True)), specs["exp"])
    assert torch.equal(only_exp, e / e.sum(-1, keepdim=True))
    assert quantized_softmax(x.bfloat16(), -1, specs).dtype == torch.bfloat16


def test_embedding_conv1d_depthwise_and_shared_modules():
    shared = nn.Linear(6, 6)
    model = nn.Sequential(nn.Embedding(10, 6), shared, nn.ReLU(), shared)
    conv = nn.Sequential(nn.Conv1d(3, 6, 3), nn.Conv2d(6, 6, 3, groups=6))
    asg = quantize_model(model, make_recipe(weights="int4", inputs="int8"))
    assert isinstance(model[0], QEmbedding) and isinstance(model[1], QLinear) and model[1] is model[3]
    assert asg["0"].format("input") is None and asg["1"].format("input") == "int8"
    idx = torch.tensor([[1, 2, 3]])
    out = model(idx)
    dequantize_model(model)
    assert model[1] is shared and model[3] is shared and not torch.equal(out, model(idx))
    r = Recipe([Rule(types="depthwise", spec={"weight": "int8"}), Rule(types="conv", spec={"weight": "int2"})])
    asg = quantize_model(conv, r)
    assert asg["0"].format("weight") == "int2" and asg["1"].format("weight") == "int8"


def test_grad_slot_changes_only_gradients():
    model = tiny("mlp")
    x = torch.randn(4, 1, 8, 8)
    model2 = copy.deepcopy(model)
    quantize_model(model2, make_recipe(grads="fp2"))
    out, out2 = model(x), model2(x)
    assert torch.equal(out, out2)
    out.square().sum().backward()
    out2.square().sum().backward()
    g, g2 = model.features[1].weight.grad, model2.features[1].weight.grad
    assert not torch.allclose(g, g2)


def test_eval_weight_cache_tracks_updates():
    model = tiny("mlp")
    quantize_model(model, make_recipe(weights="int4"))
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        a, b = model(x), model(x)
        assert torch.equal(a, b)
        model.head.weight.mul_(2)
        assert not torch.equal(model(x), a)


def test_deepcopy_of_quantized_model_is_independent():
    model = tiny("vit")
    quantize_model(model, EVERYTHING)
    x = torch.randn(2, 1, 8, 8)
    twin = copy.deepcopy(model)
    assert torch.equal(twin(x), model(x))
    dequantize_model(twin)
    no_lowbit_left(twin)
    assert not torch.equal(twin(x), model(x))           # the original is still quantized


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_training_step(dtype):
    model = tiny("vit").train()
    quantize_model(model, EVERYTHING)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    before = [p.detach().clone() for p in model.parameters()]
    try:
        with torch.autocast(device_type="cpu", dtype=dtype):
            loss = F.cross_entropy(model(x), y)
    except RuntimeError as e:  # fp16 autocast needs a CPU kernel set that some builds lack
        pytest.skip(f"autocast {dtype} unavailable: {e}")
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_softmax_spec_parts_are_independent():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Softmax(dim=-1))
    x = torch.randn(3, 8) * 3
    ref = model(x)
    outs = {}
    for part in ("input", "exp", "sum", "output"):
        asg = quantize_model(model, Recipe([Rule(types="softmax", spec=LayerSpec(softmax={part: "fp3"}))]))
        assert asg["1"].format("softmax") == "/".join("e2m0" if p == part else "-"
                                                      for p in ("input", "exp", "sum", "output"))
        outs[part] = model(x)
        dequantize_model(model)
    for part, o in outs.items():
        assert not torch.allclose(o, ref, atol=1e-4), part
    assert SoftmaxSpec.all("fp3") != SoftmaxSpec(input="fp3")


def test_activation_blocks_follow_the_channels_of_feature_maps():
    act = nn.Sequential(nn.ReLU())
    quantize_model(act, make_recipe(activations="mxfp4"))
    x4, x3 = torch.randn(2, 64, 4, 4), torch.randn(2, 5, 64)
    mx = resolve(SlotSpec("mxfp4"), "act", -1)
    assert torch.equal(act(x4), quantize(torch.relu(x4), mx.replace(axis=1)))   # blocks along channels
    assert torch.equal(act(x3), quantize(torch.relu(x3), mx))                   # (B, N, C): along C
    pinned = nn.Sequential(nn.ReLU())
    quantize_model(pinned, make_recipe(activations={"format": "mxfp4", "axis": -1}))
    assert torch.equal(pinned(x4), quantize(torch.relu(x4), mx))                # an explicit axis wins
