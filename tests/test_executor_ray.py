"""Ray executor: same results store, resume, per-run resources, retry of a lost worker."""
import json
import os
import signal
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")

from lowbit.cli.run import main as cli_run  # noqa: E402
from lowbit.experiments import load_sweep, run_sweep, sweep_from_dict  # noqa: E402
from lowbit.experiments.executors import RayExecutor  # noqa: E402

TINY = {"name": "raytiny", "models": ["mlp"], "datasets": ["digits"], "epochs": 2,
        "batch_size": 64, "lr": 0.01, "seeds": [0, 1], "quant_backend": "eager",
        "data": {"train_subset": 200, "eval_subset": 100}, "resources": {"cpus": 1, "gpus": 0}}


@pytest.fixture(scope="module", autouse=True)
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _kill_first_attempt():
    """A hook that kills its Ray worker the first time a run starts (a marker file tells
    attempts apart). A closure, so Ray pickles it by value (workers cannot import tests/)."""
    def hook(spec_dict, run_dir):
        marker = Path(run_dir) / "attempted"
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("1")
            os.kill(os.getpid(), signal.SIGKILL)
    return hook


def test_cli_ray_sweep_then_resume(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "out"
    assert cli_run([str(path), "--executor", "ray", "--out", str(out), "-q", "--no-report"]) == 0
    assert (out / "results" / "runs.parquet").exists()
    table = load_sweep(path, [f"out_dir={out}"])
    first = {p.name: (p / "result.json").stat().st_mtime_ns for p in (out / "runs").iterdir()}
    assert len(first) == 2
    for executor in ("ray", "local"):  # resume with either executor: nothing left to run
        rows = run_sweep(table, executor=executor, jobs=1, quiet=True)
        assert sorted(rows["run_id"]) == sorted(first) and set(rows["status"]) == {"completed"}
        assert {p.name: (p / "result.json").stat().st_mtime_ns
                for p in (out / "runs").iterdir()} == first


def _kill_after_first_checkpoint():
    """A hook that, on a run's first attempt, kills its Ray worker as soon as the epoch-1
    checkpoint is on disk (mid-run); on the next attempt it notes whether one was there."""
    def hook(spec_dict, run_dir):
        import threading
        import time
        run_dir = Path(run_dir)
        marker = run_dir / "attempted"
        if marker.exists():
            if (run_dir / "checkpoint.pt").exists():
                (run_dir / "retry_found_checkpoint").write_text("1")
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("1")

        def watch():
            while not (run_dir / "result.json").exists():
                if (run_dir / "checkpoint.pt").exists():
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(0.002)
        threading.Thread(target=watch, daemon=True).start()
    return hook


def test_worker_lost_mid_run_is_retried_from_checkpoint(tmp_path):
    cfg = sweep_from_dict({**TINY, "out_dir": str(tmp_path), "seeds": [0], "epochs": 3,
                           "data": {"train_subset": 600, "eval_subset": 200}})
    rows = run_sweep(cfg, executor=RayExecutor(before_run=_kill_after_first_checkpoint()), quiet=True)
    assert list(rows["status"]) == ["completed"]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "retry_found_checkpoint").exists()  # killed mid-run, then resumed
    log = (run_dir / "log.txt").read_text()
    assert log.count(" start ") == 2 and log.count("epoch 1:") <= 1
    result = json.loads((run_dir / "result.json").read_text())
    assert [r["epoch"] for r in result["epochs"]] == [1, 2, 3]


def test_lost_worker_without_retries_is_a_failed_run(tmp_path):
    cfg = sweep_from_dict({**TINY, "out_dir": str(tmp_path), "seeds": [0]})
    rows = run_sweep(cfg, executor=RayExecutor(max_retries=0, before_run=_kill_first_attempt()), quiet=True)
    assert list(rows["status"]) == ["failed"]
    assert "ray task lost" in rows["error"].iloc[0]
    rows = run_sweep(cfg, executor="ray", quiet=True)  # a failed run is re-run on the next sweep
    assert list(rows["status"]) == ["completed"]


def test_threads_come_from_the_config_not_the_resources(tmp_path):
    """resources.cpus is what Ray reserves; the run's torch threads are its config's threads."""
    for threads, cpus in ((1, 2), (2, 2)):
        out = tmp_path / f"t{threads}"
        cfg = sweep_from_dict({**TINY, "out_dir": str(out), "seeds": [0], "epochs": 1,
                               "threads": threads, "resources": {"cpus": cpus}})
        rows = run_sweep(cfg, executor="ray", quiet=True)
        assert list(rows["status"]) == ["completed"] and list(rows["threads"]) == [threads]
        (run_dir,) = (out / "runs").iterdir()
        assert f"threads={threads}\n" in (run_dir / "log.txt").read_text()
