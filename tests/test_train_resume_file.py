"""Periodic checkpoint_epoch_N.pt files and resuming training from one (train(resume_from=...))."""
import pytest
import torch

from lowbit.checkpoint import CheckpointError
from lowbit.data import load_dataset
from lowbit.models import create_model
from lowbit.train import TrainConfig, train

CFG = dict(epochs=4, batch_size=64, optimizer="adamw", lr=0.01, augmentation="basic",
           augmentation_kwargs={"flip": False}, checkpoint_every=2, seed=3)


pytestmark = pytest.mark.usefixtures("one_thread")


def _model():
    torch.manual_seed(0)
    return create_model("mlp", in_chans=1, img_size=8, hidden=(32,))


def test_resume_from_an_epoch_checkpoint_gives_the_uninterrupted_weights(tmp_path):
    digits = load_dataset("digits", seed=0)
    full = _model()
    out = train(full, digits, TrainConfig(**CFG), run_dir=tmp_path / "a")
    files = sorted(p.name for p in (tmp_path / "a").glob("checkpoint_epoch_*.pt"))
    assert files == ["checkpoint_epoch_2.pt", "checkpoint_epoch_4.pt"]
    ckpt = torch.load(tmp_path / "a" / "checkpoint_epoch_2.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and len(ckpt["state"]["history"]) == 2

    resumed = _model()  # same init; train() must overwrite it from the file anyway
    torch.manual_seed(123)  # a different global RNG state: the checkpoint's must be restored
    res = train(resumed, digits, TrainConfig(**CFG), run_dir=tmp_path / "b",
                resume_from=tmp_path / "a" / "checkpoint_epoch_2.pt")
    assert [r["epoch"] for r in res["epochs"]] == [1, 2, 3, 4]
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert res["summary"]["best_val_acc"] == out["summary"]["best_val_acc"]
    assert not (tmp_path / "b" / "checkpoint_epoch_2.pt").exists()   # epochs 1-2 were not re-run
    assert (tmp_path / "b" / "checkpoint_epoch_4.pt").exists()


def test_a_bad_resume_file_is_one_clear_error(tmp_path):
    digits = load_dataset("digits", seed=0)
    bad = tmp_path / "x.pt"
    torch.save({"model": {}}, bad)
    with pytest.raises(CheckpointError, match=r"x\.pt' cannot be resumed .*allowed: a checkpoint\.pt or "
                                              r"checkpoint_epoch_N\.pt"):
        train(_model(), digits, TrainConfig(**CFG), resume_from=bad)
    assert bad.exists()                      # a file the user named is never moved aside
    with pytest.raises(ValueError, match="checkpoint_every: expected None or an int >= 1, got 0"):
        TrainConfig(checkpoint_every=0)
