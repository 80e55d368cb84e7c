"""Learnable quantization: STE over formats, LSQ scale gradients, learnable codebooks that learn."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lowbit import QuantSpec, quantize
from lowbit.nn import (LearnableCodebook, LSQQuantizer, dequantize_model, make_recipe, quantize_model)
from lowbit.nn.learnable import codebook_values


pytestmark = pytest.mark.usefixtures("eager_single_thread")


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    d = load_digits()  # bundled with scikit-learn; 600 of its 1797 images keep the test fast
    return torch.tensor(d.data[:600], dtype=torch.float32) / 16.0, torch.tensor(d.target[:600])


@pytest.mark.parametrize("fmt,kw", [
    ("int4", {}), ("int4", {"scaling": "group", "group_size": 8}), ("uint4", {}), ("fp8_e4m3", {}),
    ("fp4_e2m1", {}), ("fp3", {}), ("fp2", {}), ("nf4", {}), ("mxfp4", {}), ("nvfp4", {}), ("mxint8", {}),
    ("int8", {"grad": "clipped"}), ("fp4", {"rounding": "stochastic"}),
])
def test_ste_training_step_every_format(fmt, kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    quantize_model(model, make_recipe(weights={"format": fmt, **kw}, inputs={"format": fmt, **kw}))
    x = torch.randn(8, 32)
    loss = model(x).square().mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def _lsq_reference(x, s, fmt, lo, hi, w, n_per_scale):
    """dL/dx and dL/ds of L = sum(w * q) from LSQ's formulas, written out with the format's cast."""
    y = x / s
    if fmt.startswith(("int", "uint")):
        c = torch.round(y).clamp(lo, hi)
    else:
        c = quantize(y, QuantSpec(fmt, scaling="none"))
    inside = (y >= lo) & (y <= hi)
    g = 1 / math.sqrt(n_per_scale * hi)
    gx = torch.where(inside, w, 0.0)
    gs_el = w * torch.where(inside, c - y, c) * g
    return gx, gs_el


@pytest.mark.parametrize("fmt,lo,hi", [("int4", -8, 7), ("uint4", 0, 15), ("fp4_e2m1", -6, 6), ("fp3", -4, 4)])
def test_lsq_gradients_per_tensor(fmt, lo, hi):
    torch.manual_seed(0)
    x = (torch.randn(6, 10) * 2).requires_grad_()
    lsq = LSQQuantizer(QuantSpec(fmt, scaling="tensor"))
    with torch.no_grad():
        lsq(x)                                          # initialise from this batch
        lsq.scale.fill_(0.37)
    w = torch.randn(6, 10)
    q = lsq(x)
    (q * w).sum().backward()
    gx, gs_el = _lsq_reference(x.detach(), torch.tensor(0.37), fmt, lo, hi, w, x.numel())
    assert torch.equal(q, quantize(x.detach(), QuantSpec(fmt, scaling="tensor"),
                                   scale=torch.tensor(0.37) if fmt != "uint4" else (torch.tensor(0.37), torch.tensor(0.0))))
    torch.testing.assert_close(x.grad, gx)
    torch.testing.assert_close(lsq.scale.grad, gs_el.sum(), rtol=1e-5, atol=1e-6)
    assert (gx == 0).any() and (gx != 0).any()          # both sides of the clip are exercised


def test_lsq_per_channel_weight_and_init():
    torch.manual_seed(0)
    w = torch.randn(5, 3, 3, 3)
    spec = QuantSpec("int3", scaling="channel", axis=0)
    lsq = LSQQuantizer(spec, (5, 1, 1, 1))
    lsq(w)
    expect = 2 * w.abs().mean(dim=(1, 2, 3), keepdim=True) / math.sqrt(3)
    torch.testing.assert_close(lsq.scale.detach(), expect)
    amax = LSQQuantizer(spec, (5, 1, 1, 1), init="amax")
    amax(w)
    torch.testing.assert_close(amax.scale.detach(), w.abs().amax(dim=(1, 2, 3), keepdim=True) / 3)
    wq = w.clone().requires_grad_()
    g = torch.randn_like(w)
    (lsq(wq) * g).sum().backward()
    assert lsq.scale.grad.shape == (5, 1, 1, 1)
    s = lsq.scale.detach()
    y = w / s
    c = torch.round(y).clamp(-4, 3)
    ref = (g * torch.where((y >= -4) & (y <= 3), c - y, c)).sum(dim=(1, 2, 3), keepdim=True) / math.sqrt(27 * 3)
    torch.testing.assert_close(lsq.scale.grad, ref, rtol=1e-5, atol=1e-6)


def test_lsq_rejects_block_formats_and_keeps_state():
    with pytest.raises(ValueError, match="LSQ needs scaling 'tensor' or 'channel'"):
        LSQQuantizer(QuantSpec("mxfp4"))
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    asg = quantize_model(model, make_recipe(weights="int4", inputs="int8", learn_weight="lsq", learn_act="lsq"))
    keys = set(model.state_dict())
    assert {"0.weight_quantizer.scale", "0.weight_quantizer.initialized", "0.input_quantizer.scale"} <= keys
    assert asg["0"].learn == {"weight": "lsq", "act": "lsq"}
    assert model[0].weight_quantizer.scale.shape == (8, 1)   # int weights: per output channel
    model(torch.randn(4, 8))
    twin = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    quantize_model(twin, make_recipe(weights="int4", inputs="int8", learn_weight="lsq", learn_act="lsq"))
    twin.load_state_dict(model.state_dict())
    x = torch.randn(4, 8)
    assert torch.equal(twin(x), model(x))
    assert len(list(asg.quantizer_parameters())) == 4


def test_codebook_values_from_formats():
    assert codebook_values("fp2").tolist() == [-2.0, 0.0, 2.0]
    assert codebook_values("fp4").tolist().count(0.0) == 1 and len(codebook_values("fp4")) == 15
    assert len(codebook_values("nf4")) == 16 and codebook_values("int2").tolist() == [-2, -1, 0, 1]
    assert codebook_values("mxfp4").tolist() == codebook_values("fp4_e2m1").tolist()
    assert codebook_values([1, -1, 4, 0]).tolist() == [-1, 0, 1, 4]
    with pytest.raises(ValueError, match="cannot seed a codebook"):
        codebook_values("fp16")


def test_codebook_gradients_scatter_to_unsorted_values():
    cb = LearnableCodebook([-1.0, 0.0, 1.0, 2.0], scaling="none")
    with torch.no_grad():
        cb.values.copy_(torch.tensor([0.0, 2.0, -1.0, 1.0]))       # unsorted, as after values cross
    x = torch.tensor([-0.9, 0.2, 0.6, 1.7, 5.0, -3.0, 0.49], requires_grad=True)
    q = cb(x)
    assert q.tolist() == [-1.0, 0.0, 1.0, 2.0, 2.0, -1.0, 0.0]
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    (q * g).sum().backward()
    # stored order [0, 2, -1, 1]: value 0 <- x[1], x[6]; 2 <- x[3], x[4]; -1 <- x[0], x[5]; 1 <- x[2]
    assert cb.values.grad.tolist() == [9.0, 9.0, 7.0, 3.0]
    assert torch.equal(x.grad, g)                                    # straight-through
    scaled = LearnableCodebook([-1.0, 0.0, 1.0])                      # unit = amax / 1 from the first call
    xs = torch.tensor([4.0, -2.5, 0.5])
    assert scaled(xs).tolist() == [4.0, -4.0, 0.0] and scaled.scale.item() == 4.0
    scaled.values.grad = None
    scaled(xs).sum().backward()
    assert scaled.values.grad.tolist() == [4.0, 4.0, 4.0]             # s * count per value


def _train_digits(X, Y, recipe, freeze_codebooks=False, steps=80):
    """Full-batch Adam on a 64-32-10 MLP; returns (model, losses, quantizer params after init)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    asg = quantize_model(model, recipe)
    for m in model.modules():
        if isinstance(m, LearnableCodebook) and freeze_codebooks:
            m.values.requires_grad_(False)
    with torch.no_grad():
        model(X)                                        # learnable scales/units initialise here
    init = [p.detach().clone() for p in asg.quantizer_parameters()]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(X), Y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses, init


def test_learnable_codebook_learns_on_digits(digits):
    """fp2 weight codebooks {-2, 0, 2}: learnable values move and reach a much lower training loss
    than the same codebook frozen (the seed framework's 'learnable' values never moved)."""
    X, Y = digits
    recipe = make_recipe(weights="fp2", learn_weight="codebook")
    learned, l_learn, init = _train_digits(X, Y, recipe)
    frozen, l_frozen, _ = _train_digits(X, Y, recipe, freeze_codebooks=True)
    assert all(v.tolist() == [-2.0, 0.0, 2.0] for v in init)
    moved = [(m.sorted_values() - torch.tensor([-2.0, 0.0, 2.0])).abs().max().item()
             for m in learned.modules() if isinstance(m, LearnableCodebook)]
    assert min(moved) > 0.3, moved
    assert l_learn[-1] < 0.5 * l_learn[0]
    assert l_learn[-1] < 0.7 * l_frozen[-1], (l_learn[-1], l_frozen[-1])
    assert all(m.sorted_values().tolist() == [-2.0, 0.0, 2.0]
               for m in frozen.modules() if isinstance(m, LearnableCodebook))


def test_lsq_learns_on_digits(digits):
    X, Y = digits
    model, losses, init = _train_digits(X, Y, make_recipe(weights="int2", learn_weight="lsq"))
    assert losses[-1] < 0.3 * losses[0]
    final = list(model[0].weight_quantizer.parameters()) + list(model[2].weight_quantizer.parameters())
    for a, b in zip(init, final):
        assert (a - b.detach()).abs().max() > 0.05 * a.abs().max()  # the scales moved in training
    dequantize_model(model)
    assert isinstance(model[0], nn.Linear) and np.isfinite(losses).all()
