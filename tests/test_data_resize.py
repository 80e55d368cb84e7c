"""data.resize: every split resized to the model's input size, the model built for it."""
import pytest
import torch

from lowbit.data import load_dataset, resize_splits
from lowbit.experiments.grid import expand
from lowbit.experiments.schema import ConfigError, sweep_from_dict
from lowbit.experiments.worker import build_run_model, load_run_data


def test_resize_splits_shapes_range_and_statistics():
    digits = load_dataset("digits", seed=0)
    big = resize_splits(digits, 16)
    assert big.img_size == 16 and tuple(big.test.x.shape[1:]) == (1, 16, 16)
    assert big.sizes == digits.sizes and torch.equal(big.train.y, digits.train.y)
    assert float(big.train.x.min()) >= 0 and float(big.train.x.max()) <= 1
    assert big.mean[0] == pytest.approx(float(big.train.x.mean()), rel=1e-5)
    assert big.mean[0] == pytest.approx(digits.mean[0], abs=0.01)      # resizing keeps the mean brightness
    # bilinear x2, half-pixel centres: output (1, 1) samples source (0.25, 0.25) -> weights 0.75 / 0.25
    w = torch.tensor([0.75, 0.25])
    src = digits.train.x[:50, 0, :2, :2]
    want = (w[:, None] * w[None, :] * src).sum((1, 2))
    assert torch.allclose(big.train.x[:50, 0, 1, 1], want, atol=1e-6)
    assert resize_splits(digits, 8) is digits
    with pytest.raises(ValueError, match="resize: expected an int >= 1, got 0"):
        resize_splits(digits, 0)


def test_sweep_data_resize_builds_the_model_for_the_size():
    base = {"models": ["vit"], "datasets": ["digits"], "epochs": 1,
            "model_kwargs": {"vit": {"embed_dim": 16, "depth": 1, "num_heads": 2, "patch_size": 4}}}
    plain = expand(sweep_from_dict(base))[0]
    spec = expand(sweep_from_dict({**base, "data": {"resize": 16}}))[0]
    assert spec.run_id != plain.run_id
    assert expand(sweep_from_dict({**base, "data": {"resize": None}}))[0].run_id == plain.run_id
    splits = load_run_data(spec)
    model = build_run_model(spec, splits)[0]
    assert splits.img_size == 16
    assert model(splits.test.x[:4]).shape == (4, 10)
    with pytest.raises(ConfigError, match="data.resize: expected null or an int >= 1, got 0"):
        sweep_from_dict({**base, "data": {"resize": 0}})
