"""DDP training (gloo, 2 CPU processes on one machine) equals one process with the full batch.

No test guesses a free TCP port (binding port 0, releasing it and hoping nobody takes it before gloo
does raced on a busy machine): the spawned processes rendezvous through a file (``file://``), and
torchrun runs ``--standalone``, whose c10d store binds its own port and is shared with the workers.
"""
import dataclasses
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import yaml

from lowbit.data import load_dataset
from lowbit.data.splits import TensorSplit
from lowbit.models import create_model
from lowbit.distributed.ddp import shard, train_ddp
from lowbit.train import TrainConfig, train

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")
# 150 samples, batch 63: batches 63, 63, 24; 63 splits 32/31, so the loss weighting matters
# (Nesterov SGD, as the tolerances below were measured with; SGD defaults to plain momentum)
CFG = TrainConfig(epochs=2, batch_size=63, optimizer="sgd", lr=0.05, seed=3, nesterov=True,
                  augmentation="none", weight_decay=1e-3, warmup_epochs=0.5)


def _data():
    s = load_dataset("digits", val_fraction=0.1, seed=0)
    return dataclasses.replace(s, train=TensorSplit(s.train.x[:150], s.train.y[:150]))


def _model(splits):
    torch.manual_seed(0)
    return create_model("mlp", num_classes=splits.num_classes, in_chans=splits.in_chans,
                        img_size=splits.img_size)


def _worker(rank, world, rendezvous, path):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        splits = _data()
        model = _model(splits)
        res = train_ddp(model, splits, CFG)
        if rank == 0:
            torch.save({"state": model.state_dict(), "epochs": res["epochs"]}, path)
    finally:
        dist.destroy_process_group()


def test_shard_covers_batch_once():
    batch = torch.arange(11)
    parts = [shard(batch, r, 3) for r in range(3)]
    assert sorted(torch.cat(parts).tolist()) == list(range(11))


def test_two_process_ddp_matches_single_process(tmp_path):
    path = tmp_path / "ddp.pt"
    rendezvous = tmp_path / "rendezvous"          # must not exist yet; gloo creates it
    torch.multiprocessing.spawn(_worker, args=(2, str(rendezvous), str(path)), nprocs=2)
    got = torch.load(path, weights_only=True)
    torch.set_num_threads(1)
    splits = _data()
    model = _model(splits)
    ref = train(model, splits, CFG)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(got["state"][name], value, rtol=1e-5, atol=1e-6)
    for a, b in zip(got["epochs"], ref["epochs"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["train_acc"] == b["train_acc"] and a["val_acc"] == b["val_acc"]


def test_torchrun_entry_point_writes_results(tmp_path):
    cfg = {"name": "ddp", "models": ["mlp"], "datasets": ["digits"], "epochs": 1,
           "batch_size": 64, "quant_backend": "eager", "precisions": ["fp32", "fp8_e4m3"],
           "data": {"train_subset": 200, "eval_subset": 100}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lowbit.cli.ddp", "--config", str(path), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = pd.read_parquet(out / "results" / "runs.parquet")
    assert len(runs) == 2 and set(runs["status"]) == {"completed"}
    # a DDP run is a run of its own: world_size in its config and id, not the single-process id
    from lowbit.experiments import expand, load_sweep
    single = {s.run_id for s in expand(load_sweep(path))}
    assert set(runs["world_size"]) == {2} and not single & set(runs["run_id"])
    assert set(runs["run_id"]) == {s.run_id for s in expand(load_sweep(path), world_size=2)}
