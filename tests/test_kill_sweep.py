"""Killing ``lowbit run`` (SIGINT or SIGTERM to the sweep process alone, as ``kill`` does) stops its
run processes and the forkserver within seconds, not at the end of an epoch; finished results stay
intact and the same command resumes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# mlp: a quick run that finishes first; cnn: epochs of about a second or more (3000 28x28 images in
# batches of 8, one torch thread), killed early in its second epoch
SWEEP = {"name": "kill", "models": ["mlp", "cnn"], "activations": ["relu"], "precisions": ["fp32"],
         "datasets": ["mnist-small"], "epochs": 2, "batch_size": 8, "optimizer": "adamw", "lr": 0.001,
         "model_kwargs": {"mlp": {"hidden": [16]}, "cnn": {"channels": [16, 32]}},
         "data": {"train_subset": 3000, "eval_subset": 100}}


def session_processes(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``: the sweep, its forkserver and run children."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if os.getsid(int(entry)) == sid and state != "Z":
                found.append(int(entry))
        except (OSError, IndexError):
            pass
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _wait(cond, timeout, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(step)
    return False


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_kill_stops_children_and_forkserver_then_resumes(sig, code, tmp_path):
    from lowbit.experiments import expand, load_sweep, run_sweep

    path = tmp_path / "kill.yaml"
    path.write_text(yaml.safe_dump(SWEEP))
    cfg = load_sweep(path, [f"out_dir={tmp_path / 'out'}"])
    mlp, cnn = (tmp_path / "out" / "runs" / s.run_id for s in expand(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "lowbit.cli", "run", str(path), "--out",
                             str(tmp_path / "out"), "-q", "--no-report", "-j", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert _wait(lambda: (cnn / "metrics.json").exists(), 180), "cnn never finished epoch 1"
        assert len(session_processes(proc.pid)) >= 3      # sweep, forkserver, run child
        done = (mlp / "result.json").read_bytes()
        epoch1 = json.loads((cnn / "metrics.json").read_text())["epochs"][0]["epoch_time_s"]
        time.sleep(0.25 * epoch1)                          # early in epoch 2, whatever the CPU's speed
        t0 = time.time()
        proc.send_signal(sig)
        # the run child and the forkserver (the sweep's resource tracker ends with the sweep)
        children_gone = _wait(lambda: not [p for p in session_processes(proc.pid)
                                            if p != proc.pid and "resource_tracker" not in _cmdline(p)], 30)
        took = time.time() - t0
        gone = _wait(lambda: proc.poll() is not None and not session_processes(proc.pid), 30)
    finally:
        for pid in session_processes(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.wait()
    epoch_s = json.loads((cnn / "metrics.json").read_text())["epochs"][0]["epoch_time_s"]
    assert children_gone and gone and proc.returncode == code
    assert took < min(10.0, epoch_s), (took, epoch_s)     # stopped mid-epoch, not at its end
    assert not (cnn / "result.json").exists() and (cnn / "checkpoint.pt").exists()
    assert (mlp / "result.json").read_bytes() == done
    json.loads(done)
    before = (mlp / "result.json").stat().st_mtime_ns
    runs = run_sweep(cfg, jobs=1, quiet=True)
    assert (runs.status == "completed").all() and len(runs) == 2
    assert (mlp / "result.json").stat().st_mtime_ns == before            # not run again
    log = (cnn / "log.txt").read_text()
    assert log.count(" start ") == 2 and log.count("epoch 1:") == 1     # resumed after epoch 1
    epochs = pd.read_csv(tmp_path / "out" / "results" / "epochs.csv")
    assert sorted(epochs.groupby("run_id").epoch.apply(list).map(tuple).unique()) == [(1, 2)]
