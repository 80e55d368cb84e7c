"""Tests for lowbit.train: learning, exact resume, divergence, early stopping, checkpoints."""
import math

import pytest
import torch

from lowbit.models import create_model
from lowbit.train import TrainConfig, evaluate, lr_factor, summarize, train


pytestmark = pytest.mark.usefixtures("one_thread")



def tiny_cnn(seed=0):
    torch.manual_seed(seed)
    return create_model("cnn", in_chans=1, img_size=8, channels=(8, 16))


def tiny_mlp(seed=0):
    """No BatchNorm: nothing changes in eval outputs unless the weights do."""
    torch.manual_seed(seed)
    return create_model("mlp", in_chans=1, img_size=8, hidden=(32,))


FAST = dict(batch_size=64, optimizer="adamw", lr=0.01, weight_decay=0.0)


def test_learns_digits(digits):
    model = tiny_cnn()
    out = train(model, digits, TrainConfig(epochs=3, **FAST))
    assert out["status"] == "completed"
    assert len(out["epochs"]) == 3
    assert out["summary"]["best_val_acc"] > 0.6  # chance is 0.1
    loss, acc = evaluate(model, digits.test.x, digits.test.y, 256,
                         mean=digits.mean, std=digits.std)
    assert acc == pytest.approx(out["epochs"][-1]["test_acc"])
    assert 0 < loss < 2.3
    row = out["epochs"][0]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                "epoch_lr", "epoch_time_s", "throughput", "peak_mem_mb", "cpu_util_pct", "rss_mb"):
        assert key in row, key
    assert row["peak_mem_mb"] > 0 and row["throughput"] > 0


def test_resume_matches_uninterrupted(digits, tmp_path):
    cfg = TrainConfig(epochs=3, augmentation="basic", augmentation_kwargs={"flip": False},
                      warmup_epochs=1, label_smoothing=0.1, grad_clip=1.0, **FAST)
    full = tiny_cnn()
    ref = train(full, digits, cfg, run_dir=tmp_path / "a")

    class Stop(Exception):
        pass

    def crash_after_first(row):
        if row["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train(tiny_cnn(), digits, cfg, run_dir=tmp_path / "b", on_epoch=crash_after_first)
    resumed = tiny_cnn(seed=123)  # weights come from the checkpoint, not from this init
    out = train(resumed, digits, cfg, run_dir=tmp_path / "b")
    assert [r["epoch"] for r in out["epochs"]] == [1, 2, 3]
    assert [r["val_acc"] for r in out["epochs"]] == [r["val_acc"] for r in ref["epochs"]]
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    again = train(tiny_cnn(), digits, cfg, run_dir=tmp_path / "b")  # finished: nothing to do
    assert again["status"] == "completed" and len(again["epochs"]) == 3


def test_checkpoints_load_weights_only(digits, tmp_path):
    train(tiny_cnn(), digits, TrainConfig(epochs=2, **FAST), run_dir=tmp_path)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2
    assert {"model", "optimizer", "scheduler", "rng", "best_val_acc"} <= set(ckpt)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    model = tiny_cnn()
    model.load_state_dict(best["model"])
    assert not list(tmp_path.glob("*.tmp"))


def test_divergence_is_detected(digits):
    cfg = TrainConfig(epochs=5, batch_size=64, optimizer="sgd", lr=1e12, momentum=0.0,
                      weight_decay=0.0)
    out = train(tiny_mlp(), digits, cfg)
    assert out["status"] == "diverged"
    assert len(out["epochs"]) < 5
    last = out["epochs"][-1]
    assert not (math.isfinite(last["train_loss"]) and math.isfinite(last["val_loss"]))


def test_early_stopping(digits):
    cfg = TrainConfig(epochs=6, batch_size=256, optimizer="sgd", lr=1e-9, patience=1)
    out = train(tiny_mlp(), digits, cfg)
    assert out["status"] == "early_stopped"
    assert len(out["epochs"]) == 2


def test_bf16_autocast_on_cpu(digits):
    out = train(tiny_cnn(), digits, TrainConfig(epochs=1, amp="bf16", **FAST))
    assert out["summary"]["amp_dtype"] == "bfloat16"
    assert math.isfinite(out["epochs"][0]["train_loss"])


def test_config_validation_messages():
    with pytest.raises(ValueError, match="optimizer: expected one of sgd, adamw, got 'adam'"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ValueError, match="epochs: expected an int >= 1"):
        TrainConfig(epochs=0)


def test_schedule_and_summary_definitions():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10) == pytest.approx(0.0)
    rows = [dict(epoch=e, val_acc=v, test_acc=v, train_acc=t, train_loss=0.0, val_loss=0.0,
                 test_loss=0.0, epoch_time_s=1.0) for e, v, t in
            [(1, 0.5, 0.5), (2, 0.895, 0.9), (3, 0.9, 0.95), (4, 0.8, 0.99)]]
    s = summarize(rows, "completed")
    assert s["best_epoch"] == 3 and s["convergence_epoch"] == 2  # 0.895 >= 0.99 * 0.9
    assert s["gen_gap"] == pytest.approx(0.05)
    assert s["total_time_s"] == 4.0
