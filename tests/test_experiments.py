"""Tests for lowbit.experiments: config validation, grid, run ids, runner, results store."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from lowbit.cli.run import main as cli_run
from lowbit.experiments import (ConfigError, expand, load_sweep, run_sweep,
                                sweep_from_dict)
from lowbit.experiments.defaults import DEFAULT_SWEEP
from lowbit.experiments.schema import apply_overrides
from lowbit.experiments.worker import execute

ROOT = Path(__file__).resolve().parents[1]
TINY = {"models": ["cnn"], "datasets": ["digits"], "epochs": 2, "batch_size": 64, "lr": 0.01,
        "model_kwargs": {"cnn": {"channels": [4, 8]}},
        "data": {"train_subset": 200, "eval_subset": 100}}


@pytest.mark.parametrize("raw,message", [
    ({"epoch": 3}, "config: unknown key 'epoch'; allowed: activations, amps, "),
    ({"epochs": "ten"}, "epochs: expected int, got str 'ten'"),
    ({"lr": "fast"}, "lr: expected float, got str 'fast'"),
    ({"nesterov": 1}, "nesterov: expected bool, got int 1"),
    ({"models": ["cnn", "resnet"]}, "models[1]: unknown model 'resnet'; allowed: cnn, "),
    ({"activations": ["relu", "swishy"]}, "activations[1]: unknown activation 'swishy'; allowed:"),
    ({"datasets": "imagenet"}, "datasets[0]: unknown dataset 'imagenet'; allowed: cifar10,"),
    ({"precisions": ["fp32", "fp5x"]}, "precisions[1]: unknown format 'fp5x'; allowed: fp8_e4m3,"),
    ({"augmentations": ["heavy"]}, "augmentations[0]: unknown augmentation 'heavy'; allowed: "
                                   "basic, extended, none"),
    ({"optimizer": "adam"}, "optimizer: unknown optimizer 'adam'; allowed: sgd, adamw"),
    ({"quantize": ["weights", "biases"]}, "quantize[0]: unknown quantize target 'biases'"),
    ({"model_kwargs": {"cnnn": {}}}, "model_kwargs: unknown model 'cnnn'"),
    ({"data": {"subset": 10}}, "data: unknown key 'subset'; allowed: eval_subset, on_bad_file, resize, root, "),
    ({"data": {"train_subset": "all"}}, "data.train_subset: expected int, got str 'all'"),
    ({"seeds": [0, 1.5]}, "seeds[1]: expected int, got float 1.5"),
    ({"models": []}, "models: expected at least one value, got an empty list"),
    ({"augmentations": ["none", "basic"], "augmentation_kwargs": {"jitter": 0.1}},
     "augmentation_kwargs: basic: "),
    ({"models": 3}, "models[0]: expected str, got int 3"),
])
def test_validation_messages(raw, message):
    with pytest.raises(ConfigError) as info:
        sweep_from_dict(raw)
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_cli_config_error_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("models: [cnn]\nprecisions: [fp32, fp7]\n")
    assert cli_run([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lowbit run: error: precisions[1]: unknown format 'fp7'; allowed:")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert cli_run([str(path), "--set", "precisions=[fp32]", "--set", "epochs=x"]) == 2
    assert "epochs: expected int, got str 'x'" in capsys.readouterr().err
    assert cli_run([str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_grid_expansion_order_and_dedup():
    cfg = sweep_from_dict({**TINY, "models": ["cnn", "vit"], "activations": ["relu", "gelu"],
                           "precisions": ["fp32", "fp8_e4m3"], "seeds": [0, 1],
                           "softmax_precisions": [None, "same"],
                           "quantize": [["weights"], ["weights", "activations"]]})
    runs = expand(cfg)
    # fp32: quantize cleared and softmax "same" -> float, so 1 fp32 run per model/act/seed;
    # fp8: 2 softmax x 2 quantize settings.
    assert len(runs) == 2 * 2 * (1 + 4) * 2
    assert [r.model for r in runs[:10]] == ["cnn"] * 10
    assert (runs[0].activation, runs[0].precision, runs[0].seed) == ("relu", "fp32", 0)
    assert runs[1].seed == 1
    assert {r.softmax_precision for r in runs if r.precision == "fp8_e4m3"} == {None, "fp8_e4m3"}
    assert all(r.quantize == () for r in runs if r.precision == "fp32")
    assert runs[0].model_kwargs == {"channels": [4, 8]} and runs[-1].model_kwargs == {}
    assert len({r.run_id for r in runs}) == len(runs)


def test_run_ids_stable():
    a = expand(sweep_from_dict({**TINY, "name": "a", "out_dir": "/tmp/x"}))[0]
    b = expand(sweep_from_dict({**TINY, "name": "b"}))[0]
    assert a.run_id == b.run_id and len(a.run_id) == 10
    c = expand(sweep_from_dict({**TINY, "epochs": 3}))[0]
    assert c.run_id != a.run_id
    assert type(a).from_dict(a.to_dict()) == a
    # A golden id: if this changes, existing sweep folders no longer resume. Update it only with
    # an intended change of the run schema or of a default.
    assert a.run_id == GOLDEN_ID and a.legacy_id == "aa11a40b18"


GOLDEN_ID = "34efbcebb1"  # with threads (1) in the id; before: aa11a40b18 = its legacy_id


def test_overrides_and_scalars():
    raw = apply_overrides({"model_kwargs": {"cnn": {"channels": [4]}}},
                          ["epochs=3", "model_kwargs.cnn.channels=[8, 16]", "models=vit",
                           "data.train_subset=50", "lr=1e-3"])
    assert raw["model_kwargs"]["cnn"]["channels"] == [8, 16]
    cfg = sweep_from_dict(raw)
    assert cfg.models == ("vit",) and cfg.epochs == 3 and cfg.data.train_subset == 50
    assert cfg.lr == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="--set: expected key=value"):
        apply_overrides({}, ["epochs"])


def test_shipped_configs_load():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        assert expand(load_sweep(path)), path
    assert yaml.safe_load((ROOT / "configs" / "default.yaml").read_text()) == DEFAULT_SWEEP
    assert len(expand(load_sweep(None))) == 36


# --- running sweeps (child processes) -----------------------------------------------------------

@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A tiny sweep through the CLI, two jobs: cnn runs finish, vit runs crash when built for the
    dataset (a patch larger than digits' 8x8 images: a bad key is refused before any run starts,
    tests/test_cli_errors.py, so the crash is one only the run can find)."""
    out = tmp_path_factory.mktemp("sweep")
    path = out / "sweep.yaml"
    path.write_text(yaml.safe_dump({**TINY, "name": "tiny", "models": ["cnn", "vit"],
                                    "seeds": [0, 1], "model_kwargs": {
                                        "cnn": {"channels": [4, 8]}, "vit": {"patch_size": 16}}}))
    code = cli_run([str(path), "--out", str(out), "-j", "2", "-q"])
    assert code == 1  # some runs failed
    return out


def test_sweep_records_results_and_failures(sweep_dir):
    runs = pd.read_csv(sweep_dir / "results" / "runs.csv")
    assert len(runs) == 4
    ok, failed = runs[runs.status == "completed"], runs[runs.status == "failed"]
    assert sorted(ok.model) == ["cnn", "cnn"] and sorted(ok.seed) == [0, 1]
    assert sorted(failed.model) == ["vit", "vit"]
    assert failed.error.str.contains("patch_size 16 exceeds img_size 8").all()
    epochs = pd.read_csv(sweep_dir / "results" / "epochs.csv")
    assert len(epochs) == 4 and set(epochs.epoch) == {1, 2}
    assert (epochs.lr == 0.01).all() and (runs.lr == 0.01).all()  # no metric overwrote config
    assert (epochs.epoch_lr < 0.01).any()
    for col in ("run_id", "model", "activation", "dataset", "precision", "seed", "epochs", "lr",
                "model_kwargs", "data_train_subset", "lowbit_version", "git_commit",
                "torch_version", "numpy_version", "python_version", "hostname", "device_name"):
        assert col in runs.columns and col in epochs.columns, col
    for col in ("best_val_acc", "convergence_epoch", "gen_gap", "total_time_s", "peak_mem_mb",
                "footprint_weight_bytes", "cpu_util_mean"):
        assert col in runs.columns, col
    assert (ok.best_val_acc > 0.1).all()
    summary = pd.read_csv(sweep_dir / "results" / "summary.csv")
    assert summary.n_seeds.tolist() == [2]
    assert {"best_val_acc_mean", "best_val_acc_std"} <= set(summary.columns)
    run_dir = sweep_dir / "runs" / ok.run_id.iloc[0]
    for name in ("config.yaml", "log.txt", "checkpoint.pt", "best.pt", "metrics.json",
                 "result.json"):
        assert (run_dir / name).exists(), name
    assert "Traceback" in (sweep_dir / "runs" / failed.run_id.iloc[0] / "log.txt").read_text()
    assert (sweep_dir / "report" / "index.html").exists()


def test_csv_and_parquet_agree(sweep_dir):
    pytest.importorskip("pyarrow", reason="pyarrow not installed: only CSV tables are written")
    for name in ("runs", "epochs", "summary"):
        csv = pd.read_csv(sweep_dir / "results" / f"{name}.csv")
        pq = pd.read_parquet(sweep_dir / "results" / f"{name}.parquet")
        assert list(csv.columns) == list(pq.columns)
        pd.testing.assert_frame_equal(csv.astype(str).replace("None", "nan"),
                                      pq.astype(str).replace("None", "nan"), check_dtype=False)


def test_rerun_skips_finished_runs(sweep_dir):
    before = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("runs/*/result.json")}
    cfg = load_sweep(sweep_dir / "sweep.yaml", [f"out_dir={sweep_dir}"])
    runs = run_sweep(cfg, jobs=2, quiet=True)
    assert len(runs) == 4
    after = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("runs/*/result.json")}
    finished = [p for p in before if json.loads(p.read_text())["status"] == "completed"]
    assert all(before[p] == after[p] for p in finished)  # not run again
    assert any(before[p] != after[p] for p in before if p not in finished)  # failed: retried


def test_interrupted_run_resumes_from_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_BACKEND", "auto")  # execute() sets it for its (own) process
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # ... and the thread count
    cfg = load_sweep(None, [f"out_dir={tmp_path}", "models=[cnn]", "activations=[relu]",
                            "precisions=[fp32]", "epochs=3", "model_kwargs.cnn.channels=[4, 8]",
                            "data.train_subset=200"])
    spec = expand(cfg)[0]
    run_dir = tmp_path / "runs" / spec.run_id
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout  # a pid that has exited
    with pytest.raises(SystemExit):  # as if the sweep were killed after epoch 1
        execute(spec.to_dict(), str(run_dir), None, int(gone), redirect=False)
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "result.json").exists()
    runs = run_sweep(cfg, jobs=2, quiet=True)  # 2 jobs: 1 thread, as the shared CPU prefers
    assert runs.status.tolist() == ["completed"]
    log = (run_dir / "log.txt").read_text()
    assert log.count(" start ") == 2 and "epoch 1:" in log and log.count("epoch 1:") == 1
    epochs = pd.read_csv(tmp_path / "results" / "epochs.csv")
    assert epochs.epoch.tolist() == [1, 2, 3]


def test_kill_mid_sweep_leaves_readable_results(tmp_path):
    path = tmp_path / "kill.yaml"
    path.write_text(yaml.safe_dump({**TINY, "name": "kill", "epochs": 4, "seeds": [0, 1, 2, 3]}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "lowbit.cli", "run", str(path), "--out",
                             str(tmp_path), "-q", "--no-report", "-j", "2"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:  # SIGKILL as soon as the first run has finished, while others are under way
        while time.time() < deadline and proc.poll() is None:
            if list(tmp_path.glob("runs/*/result.json")):
                break
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    time.sleep(0.5)  # children die with the forkserver (PR_SET_PDEATHSIG)
    for file in tmp_path.glob("runs/*/*.json"):
        json.loads(file.read_text())  # every file whole: written atomically
    assert not list(tmp_path.glob("results/*.tmp*"))
    if (tmp_path / "results" / "runs.csv").exists():
        pd.read_csv(tmp_path / "results" / "runs.csv")
    if (tmp_path / "results" / "runs.parquet").exists():
        pd.read_parquet(tmp_path / "results" / "runs.parquet")
    runs = run_sweep(load_sweep(path, [f"out_dir={tmp_path}"]), jobs=2, quiet=True)
    assert len(runs) == 4 and (runs.status == "completed").all()
    epochs = pd.read_csv(tmp_path / "results" / "epochs.csv")
    assert epochs.groupby("run_id").epoch.apply(list).map(tuple).unique().tolist() == \
        [(1, 2, 3, 4)]
