"""Knob liveness: every recipe slot changes the numerics of every zoo model that has it.

The MobileNet compression tool stored activation bits but never applied them (A8/A4/A2 gave the
same accuracy). Here, for EVERY registered model and every slot, a coarse format (fp2 = {0, +-2}
with a per-tensor scale) must change the output (or, for gradients, the gradients) against the same
model in fp32; a slot the model lacks must be absent from its Assignment and change nothing.
"""
import copy

import pytest
import torch

from lowbit.models import create_model, list_models
from lowbit.nn import make_recipe, quantize_model, recipe_for_precision

TINY = {"cnn": dict(channels=(8, 16)), "mlp": dict(hidden=(16,)), "gcn": dict(dim=16, depth=1),
        "mlpmixer": dict(dim=16, depth=1, token_mlp_dim=8, channel_mlp_dim=16),
        "mobilenetv2": dict(width_mult=0.25), "resnet18": dict(layers=(1, 1, 1, 1)),
        "resnet18_imagenet": dict(layers=(1, 1, 1, 1), num_classes=10),
        "vit": dict(embed_dim=16, depth=1, num_heads=2), "deit_tiny": dict(embed_dim=12, depth=1, num_heads=3)}

# recipe target -> the Assignment columns it fills
SLOTS = {"weights": ("weight",), "inputs": ("input",), "activations": ("output",), "softmax": ("softmax",),
         "attention": ("attn_qk", "attn_av"), "grads": ("grad",)}
# slots some zoo models must have (guards against a classifier that silently finds nothing)
MUST_HAVE = {"vit": {"softmax", "attention"}, "deit_tiny": {"softmax", "attention"}}


pytestmark = pytest.mark.usefixtures("eager_single_thread")


def tiny(name):
    torch.manual_seed(0)
    return create_model(name, in_chans=1, img_size=8, **TINY.get(name, {})).eval()


def run(model, x):
    """Output and the parameter gradients of a fixed loss."""
    model.zero_grad(set_to_none=True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", list_models())
def test_every_slot_is_live(name):
    base = tiny(name)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    ref_out, ref_grads = run(base, x)
    present = set()
    for slot, columns in SLOTS.items():
        model = copy.deepcopy(base)
        asg = quantize_model(model, make_recipe(**{slot: "fp2"}))
        out, grads = run(model, x)
        has = any(asg.formats(c) for c in columns)
        if not has:
            assert torch.equal(out, ref_out), f"{name}: {slot} absent from the Assignment but changed the output"
            continue
        present.add(slot)
        assert asg.dead_slots() == [], f"{name}: {slot} assigned but never ran: {asg.dead_slots()}"
        assert all(f == "e1m0" or set(f.split("/")) <= {"e1m0", "-"} for c in columns for f in asg.formats(c))
        if slot == "grads":
            assert torch.equal(out, ref_out), f"{name}: grads must not change the forward"
            changed = [n for n in grads if not torch.allclose(grads[n], ref_grads[n])]
            assert changed, f"{name}: grads slot did not change any gradient"
        else:
            rel = ((out - ref_out).abs().max() / ref_out.abs().max()).item()
            assert rel > 1e-5, f"{name}: {slot} slot did not change the output (relative change {rel:.1e})"
    assert {"weights", "inputs", "activations", "grads"} | MUST_HAVE.get(name, set()) <= present, (name, present)


RECIPES = {
    "fp8+e5m2_softmax": recipe_for_precision("fp8_e4m3", softmax="fp8_e5m2"),
    "int4_all_targets": recipe_for_precision("int4", targets=("weights", "inputs", "activations", "attention",
                                                              "grads")),
    "mxfp4": recipe_for_precision("mxfp4", targets=("weights", "inputs")),
    "nvfp4_first_last_fp32": recipe_for_precision("nvfp4", keep_first_last=True),
    "fp3_lsq": make_recipe(weights="fp3", activations="int8", learn_weight="lsq", learn_act="lsq"),
    "nf4_codebook": make_recipe(weights="nf4", learn_weight="codebook", softmax="fp6_e2m3"),
}


@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("name", list_models())
def test_forward_backward_zoo_x_recipes(name, recipe):
    model = tiny(name).train()
    asg = quantize_model(model, RECIPES[recipe])
    x = torch.randn(2, 1, 8, 8)
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.square().mean().backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert any(r.is_quantized for r in asg.rows)
