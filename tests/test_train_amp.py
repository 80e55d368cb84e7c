"""Mixed precision in lowbit.train: each AMP mode runs in its own dtype, on CPU too, and changes the numerics."""
import math

import pytest
import torch

from lowbit.models import create_model
from lowbit.train import TrainConfig, train
from lowbit.train_amp import amp_dtype, make_scaler

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")



def test_amp_dtype_per_mode():
    assert amp_dtype("off", CPU) is None and amp_dtype("auto", CPU) is None
    assert amp_dtype("fp16", CPU) is torch.float16       # CPU autocast supports fp16 in this torch
    assert amp_dtype("bf16", CPU) is torch.bfloat16
    assert make_scaler(CPU, torch.float16).is_enabled() and not make_scaler(CPU, torch.bfloat16).is_enabled()
    with pytest.raises(ValueError, match="amp: expected one of off, auto, bf16, fp16, got 'fp8'"):
        amp_dtype("fp8", CPU)


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_each_mode_trains_in_its_dtype_and_changes_the_weights(digits):
    """fp16 and bf16 runs record their dtype, learn, and end with weights that differ from fp32's
    and from each other (the knob is live); fp32 is repeatable bit for bit."""
    out, weights = {}, {}
    for mode in ("off", "fp16", "bf16", "off"):
        torch.manual_seed(0)
        model = create_model("mlp", in_chans=1, img_size=8, hidden=(32,))
        res = train(model, digits, TrainConfig(epochs=2, batch_size=64, optimizer="adamw", lr=0.01, amp=mode))
        if mode in weights:
            assert torch.equal(weights[mode], _weights(model))
        out[mode], weights[mode] = res, _weights(model)
    assert out["fp16"]["summary"]["amp_dtype"] == "float16"
    assert out["bf16"]["summary"]["amp_dtype"] == "bfloat16"
    assert out["off"]["summary"]["amp_dtype"] == "off"
    for mode in ("fp16", "bf16"):
        assert not torch.equal(weights[mode], weights["off"])
        assert out[mode]["summary"]["best_val_acc"] > 0.8
        # the ViT FP8 seed's finding, FP16-AMP ~ FP32 (and BF16): within 2 points of test accuracy
        assert abs(out[mode]["summary"]["test_acc_at_best"] - out["off"]["summary"]["test_acc_at_best"]) <= 0.02
        assert math.isfinite(out[mode]["epochs"][-1]["train_loss"])
    assert not torch.equal(weights["fp16"], weights["bf16"])
