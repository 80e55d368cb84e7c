"""One size computation: footprint = PTQ packed size = cost storage = packed checkpoint, for every
weight format family, on zoo models (weights quantized by recipe and by PTQ's calibrated scales)."""
import pytest
import torch

from lowbit.cost import model_cost, plan_from_assignment, profile_layers
from lowbit.export.packed import save_packed
from lowbit.models import create_model
from lowbit.nn import footprint, make_recipe, quantize_model
from lowbit.nn.packing import pack_weights, packed_bytes, weight_storage
from lowbit.ptq import packed_size
from lowbit.ptq.calibrate import PTQConfig, quantize_ptq

FORMATS = ["int2", "int4", "int8", "uint4", "fp4_e2m1", "fp8_e4m3", "mxfp4", "nvfp4", "nf4", "codebook:-1,0,1,4"]
# zoo models whose weight tensors all hold a multiple of 8 bits at every width above (sizes in bytes
# then agree exactly; the rounding of ragged tensors is checked separately below)
MODELS = [("cnn", dict(channels=[8, 16])), ("mlp", dict(hidden=[32, 16])),
          ("vit", dict(embed_dim=32, depth=1, num_heads=2, patch_size=4))]


def _four_sizes(model, assignment, shape, tmp_path):
    fp = footprint(model, assignment).weight_bytes
    ptq = packed_size(model)["bytes"]
    cost = model_cost(profile_layers(model, shape), plan_from_assignment(assignment)).total["weight_bytes"]
    ckpt = save_packed(model, tmp_path / "m.lowbit.safetensors").params_bytes
    return fp, ptq, cost, ckpt


@pytest.mark.parametrize("name, kw", MODELS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_footprint_ptq_cost_and_checkpoint_agree(name, kw, fmt, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=1, img_size=8, **kw)
    asg = quantize_model(model, make_recipe(weights=fmt))
    fp, ptq, cost, ckpt = _four_sizes(model, asg, (1, 1, 8, 8), tmp_path)
    assert fp == ptq == cost == ckpt
    fp32 = 4 * sum(p.numel() for p in model.parameters())
    assert fp < fp32                                     # the format really changed the size


@pytest.mark.parametrize("fmt, per_channel", [("int4", True), ("int8", False), ("uint4", True), ("fp8_e4m3", False)])
def test_calibrated_ptq_models_agree_too(fmt, per_channel, tmp_path):
    torch.manual_seed(0)
    model = create_model("cnn", num_classes=10, in_chans=1, img_size=8, channels=[8, 16])
    res = quantize_ptq(model, fmt, None, torch.randn(32, 1, 8, 8), PTQConfig(per_channel=per_channel))
    fp, ptq, cost, ckpt = _four_sizes(res.model, res.assignment, (1, 1, 8, 8), tmp_path)
    assert fp == ptq == cost == ckpt


def test_ragged_tensors_differ_only_by_the_byte_padding(tmp_path):
    """3-bit codes of a 7x5 weight: 105 bits are 14 bytes packed; footprint / cost count 13.125."""
    model = torch.nn.Sequential(torch.nn.Linear(5, 7, bias=False))
    asg = quantize_model(model, make_recipe(weights="e2m0"))
    fp, ptq, cost, ckpt = _four_sizes(model, asg, (1, 5), tmp_path)
    eb, sb = weight_storage((7, 5), asg["0"].specs["weight"])
    assert (eb, sb) == (105, 32) and fp == cost == (eb + sb) / 8
    assert ptq == ckpt == packed_bytes(eb) + sb // 8 == 14 + 4
    (pw,) = pack_weights(model)
    assert pw.data.numel() == 14 and pw.scale_bytes == 4
