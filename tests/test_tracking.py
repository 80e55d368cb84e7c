"""Trackers: each finished run's config and epoch metrics mirrored into TensorBoard / MLflow."""
import pytest
import yaml

from lowbit.cli.run import main as cli_run
from lowbit.experiments.tracking import make_logger, mirror_sweep, mlflow_uri

TINY = {"name": "trk", "models": ["mlp"], "datasets": ["digits"], "epochs": 2, "batch_size": 64,
        "quant_backend": "eager", "data": {"train_subset": 200, "eval_subset": 100}}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A two-run sweep run once, logged to TensorBoard when installed."""
    out = tmp_path_factory.mktemp("trk")
    path = out / "sweep.yaml"
    path.write_text(yaml.safe_dump({**TINY, "precisions": ["fp32", "fp8_e4m3"]}))
    args = [str(path), "--out", str(out), "-j", "2", "-q", "--no-report"]
    try:
        import tensorboard  # noqa: F401
        args += ["--log", "tensorboard"]
    except ImportError:
        pass
    assert cli_run(args) == 0
    return out


def test_unknown_tracker_and_missing_package(monkeypatch):
    with pytest.raises(ValueError, match="unknown tracker 'neptune'"):
        make_logger("neptune", ".")
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install mlflow"):
        make_logger("mlflow", ".")


def test_tensorboard_gets_epoch_metrics(request):
    pytest.importorskip("tensorboard")
    sweep = request.getfixturevalue("sweep")  # after the skip: no sweep without the package
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    runs = sorted((sweep / "tensorboard").iterdir())
    assert len(runs) == 2
    acc = EventAccumulator(str(runs[0]))
    acc.Reload()
    val = acc.Scalars("val_acc")
    assert [e.step for e in val] == [1, 2] and all(0 <= e.value <= 1 for e in val)


def test_mlflow_sqlite_store(request):
    mlflow = pytest.importorskip("mlflow")
    sweep = request.getfixturevalue("sweep")
    assert mirror_sweep(sweep, "mlflow") == 2
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri(sweep))
    (exp,) = [e for e in client.search_experiments() if e.name == "trk"]
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2
    run = runs[0]
    assert run.data.params["model"] == "mlp" and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert sorted(m.step for m in history) == [1, 2]


def test_wandb_offline_run_written(request, monkeypatch):
    pytest.importorskip("wandb")
    sweep = request.getfixturevalue("sweep")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert mirror_sweep(sweep, "wandb") == 2
    runs = sorted((sweep / "wandb").glob("**/offline-run-*"))
    assert len(runs) == 2 and all(any(r.glob("*.wandb")) for r in runs)


def test_mlflow_mirror_is_idempotent_and_batched(request, monkeypatch, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    import json
    import shutil
    src = request.getfixturevalue("sweep")
    out = tmp_path / "copy"
    shutil.copytree(src / "runs", out / "runs")
    calls = {"log_batch": 0}
    real = mlflow.MlflowClient.log_batch

    def counting(self, *a, **kw):
        calls["log_batch"] += 1
        return real(self, *a, **kw)

    def per_value(self, *a, **kw):
        raise AssertionError("one call per value")
    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", counting)
    monkeypatch.setattr(mlflow.MlflowClient, "log_metric", per_value)
    monkeypatch.setattr(mlflow.MlflowClient, "log_param", per_value)
    assert mirror_sweep(out, "mlflow") == 2
    assert calls["log_batch"] == 4  # per run: one batch of params, one of metrics
    assert mirror_sweep(out, "mlflow") == 2  # again: nothing new
    assert calls["log_batch"] == 4
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri(out))
    (exp,) = [e for e in client.search_experiments() if e.name == "trk"]
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["lowbit.run_id"] for r in runs) == sorted(p.name for p in (out / "runs").iterdir())
    assert len(client.get_metric_history(runs[0].info.run_id, "val_acc")) == 2
    # a run that was re-run (a newer result): its tracker copy is replaced, not duplicated
    path = out / "runs" / runs[0].data.tags["lowbit.run_id"] / "result.json"
    result = json.loads(path.read_text())
    result["finished"] += 10
    path.write_text(json.dumps(result))
    assert mirror_sweep(out, "mlflow") == 2
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2 and {r.data.tags["lowbit.finished"] for r in runs} >= {repr(result["finished"])}


def test_background_logger_is_off_the_critical_path_and_reports_errors(capsys, tmp_path):
    import time
    from lowbit.experiments.tracking import BackgroundLogger
    done = []

    def slow(result, out_dir):
        time.sleep(0.3)
        if result["run_id"] == "bad":
            raise RuntimeError("tracker down")
        done.append(result["run_id"])
    log = BackgroundLogger("mlflow", slow, tmp_path)
    t0 = time.perf_counter()
    for rid in ("a", "bad", "c"):
        log({"run_id": rid})
    assert time.perf_counter() - t0 < 0.2  # queued, not logged, on the caller's thread
    assert log.close() == 1 and done == ["a", "c"]
    err = capsys.readouterr().err
    assert err.count("warning: --log mlflow:") == 1 and "bad: RuntimeError: tracker down" in err
