"""Malformed calls to the public Python API: each raises one clear exception naming the bad value and
what is allowed, never a deep error from inside torch, never silent acceptance (issue 14).

Each case: (id, call, exception type, fragments the message must hold).
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lowbit
from lowbit import QuantSpec, decode, encode, get_format, pack, quantize, unpack
from lowbit.data.splits import DatasetSplits, TensorSplit
from lowbit.models import create_model
from lowbit.nn import footprint, make_recipe, quantize_model
from lowbit.ptq import weight_scale
from lowbit.train import TrainConfig, train

X = torch.randn(4, 8)
NAN, INF = float("nan"), float("inf")


def _mlp():
    return nn.Sequential(nn.Linear(8, 4))


def _quantized():
    m = _mlp()
    return m, quantize_model(m, make_recipe(weights="int8"))


QUANTIZE = [
    ("scale -1", lambda: quantize(X, "int8", scale=-1.0), ValueError, ["scale=-1.0", "finite numbers > 0"]),
    ("scale 0", lambda: quantize(X, "int8", scale=0.0), ValueError, ["scale=0.0", "finite numbers > 0"]),
    ("scale nan", lambda: quantize(X, "int8", scale=NAN), ValueError, ["scale=nan", "finite numbers > 0"]),
    ("scale inf", lambda: quantize(X, "int8", scale=INF), ValueError, ["scale=inf", "finite numbers > 0"]),
    ("tensor scale -2", lambda: quantize(X, "int8", scaling="channel", axis=0,
                                         scale=torch.tensor([[1.0], [-2.0], [1.0], [1.0]])),
     ValueError, ["scale=-2.0", "finite numbers > 0"]),
    ("tensor scale inf", lambda: quantize(X, "int8", scale=torch.tensor(INF)), ValueError, ["scale=inf"]),
    ("tensor scale nan fp8", lambda: quantize(X, "fp8_e4m3", scaling="tensor", scale=torch.tensor(NAN)),
     ValueError, ["scale=nan"]),
    ("scale str", lambda: quantize(X, "int8", scale="1"), TypeError, ["str", "number or a torch.Tensor"]),
    ("scale wrong shape", lambda: quantize(X, "int8", scale=torch.ones(3)), ValueError, ["[3]", "broadcast"]),
    ("scale with scaling none", lambda: quantize(X, "fp8_e4m3", scale=2.0), ValueError,
     ["scaling='none'", "scaling='tensor'"]),
    ("uint scale not a pair", lambda: quantize(X, "uint8", scale=1.0), ValueError, ["uint8", "(scale, zero point)"]),
    ("uint zero point 300", lambda: quantize(X, "uint8", scale=(1.0, 300.0)), ValueError, ["300.0", "0..255"]),
    ("uint zero point 1.5", lambda: quantize(X, "uint4", scale=(1.0, 1.5)), ValueError, ["1.5", "0..15"]),
    ("uint scale 0", lambda: quantize(X, "uint8", scale=(0.0, 3.0)), ValueError, ["scale=0.0"]),
    ("pair for signed", lambda: quantize(X, "int8", scale=(1.0, 0.0)), ValueError, ["unsigned", "int8"]),
    ("generator int", lambda: quantize(X, "int8", rounding="stochastic", generator=3), TypeError,
     ["generator", "int"]),
    ("out list", lambda: quantize(X, "int8", out=[1]), TypeError, ["out", "list"]),
    ("values list", lambda: quantize(X, "nf4", values=[1, 2]), ValueError, ["values", "list"]),
    ("values for int", lambda: quantize(X, "int8", values=torch.tensor([0.0, 1.0])), ValueError,
     ["int8", "values=None"]),
    ("saturate str", lambda: quantize(X, "fp8_e4m3", saturate="no"), ValueError, ["saturate='no'", "True, False"]),
    ("pow2 str", lambda: quantize(X, "int8", pow2_scale="yes"), ValueError, ["pow2_scale='yes'"]),
    ("pad str", lambda: quantize(X, "mxfp4", pad="yes"), ValueError, ["pad='yes'"]),
    ("group_size True", lambda: quantize(X, "int8", scaling="group", group_size=True), ValueError,
     ["group_size=True", "integer"]),
    ("block_size True", lambda: quantize(X, "mxfp4", block_size=True), ValueError, ["block_size=True"]),
    ("rounding bogus", lambda: quantize(X, "int8", rounding="up"), ValueError, ["rounding='up'", "nearest"]),
    ("backend bogus", lambda: quantize(X, "int8", backend="gpu"), ValueError, ["backend='gpu'", "eager"]),
    ("axis out of range", lambda: quantize(X, "int8", scaling="channel", axis=5), ValueError, ["axis=5", "[4, 8]"]),
    ("float64 input", lambda: quantize(X.double(), "int8"), ValueError, ["float64", "float32"]),
    ("list input", lambda: quantize([1.0], "int8"), TypeError, ["list"]),
    ("misspelt keyword", lambda: quantize(X, "int8", rounding_mode="zero"), TypeError,
     ["'rounding_mode'", "rounding"]),
    ("encode scale", lambda: encode(X, "int8", scale=1.0), TypeError, ["'scale'", "pow2_scale"]),
]

CODEC = [
    ("decode a tensor", lambda: decode(X), TypeError, ["Encoded", "Tensor"]),
    ("decode dtype str", lambda: decode(encode(X, "int8"), dtype="float"), ValueError, ["'float'", "torch.float32"]),
    ("pack floats", lambda: pack(torch.tensor([0.5, 1.0]), 4), ValueError, ["float32", "integer dtype"]),
    ("pack list", lambda: pack([1, 2], 4), TypeError, ["list"]),
    ("pack bits True", lambda: pack(torch.tensor([1]), True), ValueError, ["bits=True", "1..16"]),
    ("pack too wide", lambda: pack(torch.tensor([16]), 4), ValueError, ["4 bits", "0..15"]),
    ("unpack count -1", lambda: unpack(torch.zeros(4, dtype=torch.uint8), 4, -1), ValueError,
     ["count=-1", ">= 0"]),
    ("unpack count 2.5", lambda: unpack(torch.zeros(4, dtype=torch.uint8), 4, 2.5), ValueError, ["count=2.5"]),
    ("unpack too short", lambda: unpack(torch.zeros(1, dtype=torch.uint8), 4, 8), ValueError, ["need 4 bytes"]),
    ("get_format unknown", lambda: get_format("fp9"), ValueError, ["'fp9'", "allowed"]),
    ("get_format int1", lambda: get_format("int1"), ValueError, ["int2..int16"]),
    ("QuantSpec grad", lambda: QuantSpec("int8", grad="none"), ValueError, ["grad='none'", "ste, clipped"]),
    ("QuantSpec scale format", lambda: QuantSpec("e8m0"), ValueError, ["e8m0", "scale format"]),
]

NN = [
    ("make_recipe misspelt", lambda: make_recipe(wieghts="int8"), TypeError, ["'wieghts'", "weights", "rounding"]),
    ("make_recipe unknown", lambda: make_recipe(weights="int8", foo=1), TypeError, ["'foo'", "activations"]),
    ("make_recipe bad field value", lambda: make_recipe(weights="int8", rounding="up"), ValueError, ["'up'"]),
    ("make_recipe weights 5", lambda: make_recipe(weights=5), ValueError, ["5", "a format name"]),
    ("quantize_model str", lambda: quantize_model("model", make_recipe(weights="int8")), TypeError,
     ["torch.nn.Module", "str"]),
    ("quantize_model recipe str", lambda: quantize_model(_mlp(), "int8"), TypeError, ["Recipe", "make_recipe"]),
    ("footprint None", lambda: footprint(_mlp(), None), TypeError, ["Assignment", "NoneType"]),
    ("footprint shape str", lambda: footprint(*_quantized(), "x"), ValueError, ["input_shape='x'", "positive ints"]),
    ("footprint shape negative", lambda: footprint(*_quantized(), (1, -8)), ValueError, ["(1, -8)"]),
    ("footprint shape mismatch", lambda: footprint(*_quantized(), (1, 7)), ValueError, ["[1, 7]", "the model"]),
    ("weight calib Inf", lambda: weight_scale(torch.tensor([1.0, INF, -INF]), QuantSpec("int8"), "minmax"),
     ValueError, ["2 Inf", "finite weights"]),
    ("weight calib NaN", lambda: weight_scale(torch.tensor([1.0, NAN]), QuantSpec("int8"), "minmax"),
     ValueError, ["1 NaN"]),
]

MODELS = [
    ("channels str", lambda: create_model("cnn", channels="x"), ValueError, ["channels='x'", "list of ints"]),
    ("channels mixed", lambda: create_model("cnn", channels=[16, "x"]), ValueError, ["[16, 'x']"]),
    ("unknown option", lambda: create_model("vit", channels=[8]), ValueError, ["'channels'", "embed_dim"]),
    ("depth str", lambda: create_model("vit", depth="a"), ValueError, ["depth='a'", "an int"]),
    ("negative width", lambda: create_model("cnn", channels=[-1]), ValueError, ["'cnn'", "negative"]),
    ("num_classes 0", lambda: create_model("cnn", num_classes=0), ValueError, ["num_classes=0", ">= 1"]),
    ("unknown model", lambda: create_model("resnet9"), ValueError, ["'resnet9'", "cnn"]),
    ("bad activation", lambda: create_model("mlp", act="zz"), ValueError, ["'zz'", "relu"]),
]

CONFIG = [
    ("lr inf", lambda: TrainConfig(lr=INF), ValueError, ["lr", "inf", "finite"]),
    ("lr nan", lambda: TrainConfig(lr=NAN), ValueError, ["lr", "nan"]),
    ("lr str", lambda: TrainConfig(lr="0.1"), ValueError, ["lr", "'0.1'"]),
    ("momentum -1", lambda: TrainConfig(momentum=-1.0), ValueError, ["momentum", "-1.0"]),
    ("weight_decay inf", lambda: TrainConfig(weight_decay=INF), ValueError, ["weight_decay", "inf"]),
    ("grad_clip nan", lambda: TrainConfig(grad_clip=NAN), ValueError, ["grad_clip", "nan"]),
    ("epochs True", lambda: TrainConfig(epochs=True), ValueError, ["epochs", "True"]),
    ("patience 1.5", lambda: TrainConfig(patience=1.5), ValueError, ["patience", "1.5"]),
    ("seed str", lambda: TrainConfig(seed="0"), ValueError, ["seed", "'0'"]),
]

CASES = QUANTIZE + CODEC + NN + MODELS + CONFIG


@pytest.mark.parametrize("call,exc,fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_error(call, exc, fragments):
    with pytest.raises(exc) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg, msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"


def test_warmup_message_names_warmup_not_weight_decay():
    with pytest.raises(ValueError) as info:
        TrainConfig(warmup_epochs=-1)
    msg = str(info.value)
    assert "warmup_epochs" in msg and "-1" in msg and "weight_decay" not in msg and "0.01" not in msg


def test_good_values_still_accepted():
    assert TrainConfig(lr=0.1, grad_clip=1.0, patience=2, warmup_epochs=0.5).lr == 0.1
    assert quantize(X, "int8", scale=0.5).shape == X.shape
    assert quantize(X, "uint8", scale=(torch.tensor(0.1), torch.tensor(3.0))).shape == X.shape
    assert quantize(X, "int8", scaling="channel", axis=0, scale=torch.full((4, 1), 0.1)).shape == X.shape
    assert quantize(X, "int8", scaling="group", group_size=4, scale=torch.full((4, 2, 1), 0.1)).shape == X.shape
    assert create_model("cnn", channels=[4, 8]) is not None
    assert make_recipe(weights="int8", rounding="stochastic").rules


def _splits(n_train=8, n_test=4, test_fill=None):
    g = torch.Generator().manual_seed(0)
    def split(n):
        return TensorSplit(torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 2, (n,), generator=g))
    test = split(n_test)
    if test_fill is not None:
        test.x.fill_(test_fill)
    return DatasetSplits(name="toy", train=split(n_train), val=split(4), test=test, num_classes=2,
                         in_chans=1, img_size=8, mean=(0.5,), std=(0.25,))


@pytest.mark.parametrize("splits,fragments", [
    (lambda: _splits(n_train=0), ["training split is empty", "at least 1"]),
    (lambda: _splits(test_fill=INF), ["test split", "Inf", "finite inputs"]),
    (lambda: _splits(test_fill=NAN), ["test split", "NaN"]),
], ids=["empty train", "all-Inf test", "all-NaN test"])
def test_train_refuses_meaningless_data(splits, fragments):
    model = create_model("mlp", num_classes=2, in_chans=1, img_size=8, hidden=[8])
    with pytest.raises(ValueError) as info:
        train(model, splits(), TrainConfig(epochs=1, batch_size=4))
    for frag in fragments:
        assert frag in str(info.value)


def test_non_finite_test_loss_is_a_divergence():
    class InfOnTest(nn.Module):  # finite while training, Inf logits in eval mode (val and test passes)
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(64, 2)

        def forward(self, x):
            out = self.lin(x.flatten(1))
            return out if self.training else out * math.inf

    result = train(InfOnTest(), _splits(), TrainConfig(epochs=2, batch_size=4))
    assert result["status"] == "diverged" and len(result["epochs"]) == 1


def test_ptq_names_the_layer_with_inf_weights():
    from lowbit.ptq import PTQConfig, quantize_ptq

    m = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        m[2].weight[0, 0] = INF
    with pytest.raises(ValueError) as info:
        quantize_ptq(m, "int8", "int8", torch.randn(16, 8), PTQConfig())
    msg = str(info.value)
    assert "'2'" in msg and "1 Inf" in msg and "NaN" not in msg, msg
