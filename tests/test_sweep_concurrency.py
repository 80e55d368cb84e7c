"""Two sweep processes on one folder, per-run claims, damaged checkpoints in run folders."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from lowbit.experiments import expand, load_sweep, run_sweep
from lowbit.experiments.claim import CLAIMED, holder, try_claim
from lowbit.experiments.worker import execute

ROOT = Path(__file__).resolve().parents[1]
TINY = {"models": ["cnn"], "datasets": ["digits"], "epochs": 2, "batch_size": 64, "lr": 0.01,
        "model_kwargs": {"cnn": {"channels": [4, 8]}},
        "data": {"train_subset": 200, "eval_subset": 100}}


def test_claim_is_exclusive_and_names_its_holder(tmp_path):
    first = try_claim(tmp_path / "r")
    assert first is not None and holder(tmp_path / "r").startswith(f"{os.getpid()}@")
    probe = subprocess.run([sys.executable, "-c", "import sys; from lowbit.experiments.claim import "
                            "try_claim, holder; print(try_claim(sys.argv[1]) is None, holder("
                            "sys.argv[1]))", str(tmp_path / "r")], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert probe.stdout.split()[0] == "True" and probe.stdout.split()[1].startswith(f"{os.getpid()}@")
    first.release()
    assert holder(tmp_path / "r") is None


def test_claim_of_a_killed_process_is_free(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import sys, time; from lowbit.experiments.claim "
                             "import try_claim; c = try_claim(sys.argv[1]); print('held', flush=True);"
                             " time.sleep(60)", str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    assert holder(tmp_path) == f"{proc.pid}@{os.uname().nodename}"
    proc.kill()
    proc.wait()
    assert holder(tmp_path) is None and try_claim(tmp_path) is not None


def test_worker_leaves_a_claimed_run_alone(tmp_path):
    cfg = load_sweep(None, [f"out_dir={tmp_path}", "models=[cnn]", "activations=[relu]",
                            "precisions=[fp32]", "epochs=1"])
    spec = expand(cfg)[0]
    run_dir = tmp_path / "runs" / spec.run_id
    claim = try_claim(run_dir)
    assert execute(spec.to_dict(), str(run_dir), None, None, redirect=False) == CLAIMED
    claim.release()
    assert sorted(p.name for p in run_dir.iterdir()) == ["claim.lock"]  # nothing written


def test_two_concurrent_sweeps_train_each_run_once(tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump({**TINY, "name": "two", "seeds": [0, 1, 2, 3]}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "lowbit.cli", "run", str(path), "--out", str(tmp_path / "out"),
           "--no-report", "-j", "1"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for _, err in outs:
        assert "failed" not in err.lower() and "Traceback" not in err, err
    logs = sorted((tmp_path / "out" / "runs").glob("*/log.txt"))
    assert len(logs) == 4
    for log in logs:  # each run trained by exactly one process, once
        text = log.read_text()
        assert text.count(" start ") == 1 and text.count("epoch 1:") == 1, text
    assert any("run by another process" in err for _, err in outs)  # they shared the work
    for _, err in outs:  # each process reports all 4 runs with their real status
        assert err.count(" completed") == 4, err
    runs = pd.read_csv(tmp_path / "out" / "results" / "runs.csv")
    assert len(runs) == 4 and (runs.status == "completed").all()
    assert not list((tmp_path / "out").rglob("*.tmp*"))


@pytest.mark.parametrize("damage", [b"", b"not a checkpoint at all", "pickle-code", "state-dict"])
def test_damaged_checkpoint_is_quarantined_and_run_restarts(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("LOWBIT_BACKEND", "auto")
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    cfg = load_sweep(None, [f"out_dir={tmp_path}", "models=[cnn]", "activations=[relu]",
                            "precisions=[fp32]", "epochs=2", "model_kwargs.cnn.channels=[4, 8]",
                            "data.train_subset=200", "data.eval_subset=100"])
    spec = expand(cfg)[0]
    run_dir = tmp_path / "runs" / spec.run_id
    run_dir.mkdir(parents=True)
    ckpt = run_dir / "checkpoint.pt"
    if damage == "pickle-code":
        import pickle

        class Evil:
            def __reduce__(self):
                return (os.system, ("echo pwned",))
        ckpt.write_bytes(pickle.dumps(Evil()))
    elif damage == "state-dict":  # loadable, but not a lowbit.train checkpoint
        torch.save({"w": torch.zeros(3)}, ckpt)
    else:
        ckpt.write_bytes(damage)
    with pytest.warns(RuntimeWarning, match=r"checkpoint .*checkpoint\.pt.* cannot be resumed.*"
                      r"moved to .*checkpoint\.pt\.damaged-.*restarts from scratch"):
        status = execute(spec.to_dict(), str(run_dir), None, None, redirect=False)
    assert status == "completed"
    aside = list(run_dir.glob("checkpoint.pt.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == (
        damage if isinstance(damage, bytes) else aside[0].read_bytes())
    result = json.loads((run_dir / "result.json").read_text())
    assert [r["epoch"] for r in result["epochs"]] == [1, 2]
    # from scratch means bit for bit the run of a clean folder
    clean = tmp_path / "clean"
    assert execute(spec.to_dict(), str(clean), None, None, redirect=False) == "completed"
    ref = json.loads((clean / "result.json").read_text())
    assert [r["train_loss"] for r in ref["epochs"]] == [r["train_loss"] for r in result["epochs"]]
