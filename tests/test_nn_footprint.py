"""Memory footprint: storage formulas per scaling, totals, compression, activation estimates."""
import pytest
import torch
from lowbit import QuantSpec
from lowbit.models import create_model
from lowbit.nn import LSQQuantizer, footprint, make_recipe, quantize_model, recipe_for_precision
from lowbit.nn.footprint import weight_bits


@pytest.fixture(autouse=True)
def _eager(monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("LOWBIT_BACKEND", "eager")
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("spec,shape,elem,scale", [
    (QuantSpec("int8", scaling="channel", axis=0), (32, 64), 2048 * 8, 32 * 32),
    (QuantSpec("int4", scaling="tensor"), (32, 64), 2048 * 4, 32),
    (QuantSpec("int4", scaling="group", group_size=16), (32, 64), 2048 * 4, 32 * 32 * 4),
    (QuantSpec("uint4", scaling="tensor"), (32, 64), 2048 * 4, 64),          # scale + zero point
    (QuantSpec("bf16"), (32, 64), 2048 * 16, 0),
    (QuantSpec("fp8_e4m3", scaling="tensor"), (32, 64), 2048 * 8, 32),
    (QuantSpec("mxfp4"), (32, 64), 2048 * 4, 8 * 64),                          # 0.25 bit per element
    (QuantSpec("nvfp4"), (32, 64), 2048 * 4, 8 * 128 + 32),                    # E4M3 per 16 + fp32
    (QuantSpec("mxfp4", axis=1, pad=True), (8, 3, 3, 3), 216 * 4, 8 * 72),   # ragged axis: 1 block per row
    (QuantSpec("nf4"), (10, 10), 100 * 4, 32),
])
def test_weight_bits_formulas(spec, shape, elem, scale):
    assert weight_bits(shape, spec) == (elem, scale)


def test_learnable_codebook_stores_its_table():
    assert weight_bits((32, 64), QuantSpec("fp2", scaling="tensor"), "codebook") == (2048 * 2, 3 * 32 + 32)


def mlp():
    torch.manual_seed(0)
    return create_model("mlp", in_chans=1, img_size=8, hidden=(32,))    # 64*32+32 + 32*10+10 params


def test_totals_and_compression():
    fp = footprint(mlp(), quantize_model(mlp(), recipe_for_precision("fp32")))
    assert fp.fp32_bytes == 4 * (64 * 32 + 32 + 32 * 10 + 10) and fp.compression == 1.0
    model = mlp()
    asg = quantize_model(model, make_recipe(weights="int8"))
    f8 = footprint(model, asg)
    expect = (64 * 32 * 8 + 32 * 32) + 32 * 32 + (32 * 10 * 8 + 10 * 32) + 10 * 32
    assert f8.weight_bits == expect and f8.weight_bytes == expect / 8
    assert [r["name"] for r in f8.rows] == ["features.1", "head"]
    model4 = mlp()
    f4 = footprint(model4, quantize_model(model4, make_recipe(weights="int4")))
    assert f4.weight_bits < f8.weight_bits and f4.compression > f8.compression > 3
    d = f4.to_dict()
    assert {"weight_bits", "weight_bytes", "fp32_bytes", "compression", "activation_bytes", "rows"} <= set(d)
    assert d["activation_bytes"] is None


def test_unquantized_parameters_count_at_32_bits():
    model = mlp()
    asg = quantize_model(model, make_recipe(weights="int8", keep_first_last=True))
    fp = footprint(model, asg)
    assert fp.weight_bits == 32 * sum(p.numel() for p in model.parameters())
    torch.manual_seed(0)
    vit = create_model("vit", in_chans=1, img_size=8, embed_dim=16, depth=1, num_heads=2)
    fpv = footprint(vit, quantize_model(vit, make_recipe(weights="mxfp4")))
    other = [r for r in fpv.rows if r["name"] == "(other parameters)"][0]
    # biases are in their layer's row; norms, class token and positional embedding are "other"
    n_other = sum(p.numel() for n, p in vit.named_parameters() if "norm" in n or n in ("cls_token", "pos_embed"))
    assert other["params"] == n_other and other["bits"] == 32 * n_other


def test_activation_bytes_follow_formats():
    shape = (4, 1, 8, 8)
    results = {}
    for label, recipe in [("fp32", make_recipe()), ("a8", make_recipe(activations="fp8_e4m3")),
                          ("a4", make_recipe(activations="fp4_e2m1")),
                          ("a4i4", make_recipe(activations="fp4_e2m1", inputs="int4")),
                          ("mx", make_recipe(activations="mxfp4"))]:
        model = mlp()
        results[label] = footprint(model, quantize_model(model, recipe), shape).activation_bytes
    # input 256 elements (Flatten's output is a view of it: counted once), features.1 out 128,
    # ReLU out 128, head out 40
    assert results["fp32"] == 4 * (256 + 128 + 128 + 40)
    assert results["a8"] == 4 * (256 + 128 + 40) + 128
    assert results["a4i4"] == 256 / 2 + 4 * (128 + 40) + 128 / 2   # int4 input of features.1: the image
    assert results["fp32"] > results["a8"] > results["a4"] > results["a4i4"]
    assert results["a4"] < results["mx"] < results["a8"]


def test_footprint_leaves_the_model_alone():
    torch.manual_seed(0)
    model = create_model("cnn", in_chans=1, img_size=8, channels=(8, 16)).train()
    asg = quantize_model(model, make_recipe(weights="int4", activations="int8", learn_act="lsq"))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    fp = footprint(model, asg, (2, 1, 8, 8))
    assert fp.activation_bytes > 0 and model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())   # no BN update, no LSQ init
    assert not any(bool(m.initialized) for m in model.modules() if isinstance(m, LSQQuantizer))
    assert torch.equal(rng, torch.get_rng_state())
