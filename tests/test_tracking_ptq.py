"""PTQ tables (the MobileNet study's W x A sweep) go to trackers: one tracker run per W x A row."""
import pytest

from lowbit.experiments.tracking import log_ptq, mlflow_uri, ptq_results

ROWS = [{"model": "mobilenetv2", "weights": w, "acts": a, "acc": acc, "drop": 0.9 - acc,
         "orig_bytes": 8000, "packed_bytes": 8000 * b // 32, "ratio": 32 / b, "cost_bytes": 8000 * b // 32}
        for (w, a, b, acc) in [("int8", "int8", 8, 0.89), ("int4", "int8", 4, 0.85), ("int2", "int4", 2, 0.10)]]


def test_rows_become_results_with_params_and_metrics():
    res = ptq_results(ROWS)
    assert [r["run_id"] for r in res] == ["ptq-int8xint8", "ptq-int4xint8", "ptq-int2xint4"]
    assert res[1]["config"]["W"] == "int4" and res[1]["config"]["A"] == "int8"
    assert res[2]["summary"]["acc"] == 0.10 and res[2]["summary"]["ratio"] == 16.0


def test_ptq_to_tensorboard_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    assert log_ptq(ROWS, "tensorboard", tmp_path) == 3
    dirs = sorted((tmp_path / "tensorboard").iterdir())
    assert [d.name for d in dirs] == sorted(r["run_id"] for r in ptq_results(ROWS))
    acc = EventAccumulator(str(tmp_path / "tensorboard" / "ptq-int4xint8"))
    acc.Reload()
    assert "summary/acc" in acc.Tags()["scalars"]
    assert acc.Scalars("summary/acc")[0].value == pytest.approx(0.85)


def test_ptq_to_mlflow_store(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    assert log_ptq(ROWS, "mlflow", tmp_path, sweep="ptq-mobilenetv2") == 3
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri(tmp_path))
    exp = client.get_experiment_by_name("ptq-mobilenetv2")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"ptq-int8xint8", "ptq-int4xint8", "ptq-int2xint4"}
    r = runs["ptq-int2xint4"]
    assert r.data.params["W"] == "int2" and r.data.params["A"] == "int4"
    assert r.data.metrics["summary.acc"] == pytest.approx(0.10)
    assert r.data.metrics["summary.ratio"] == pytest.approx(16.0)
