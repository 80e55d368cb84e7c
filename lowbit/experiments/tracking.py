"""Mirror each finished run into an experiment tracker: TensorBoard, MLflow or W&B (offline).

    lowbit run CONFIG --log tensorboard        # <out_dir>/tensorboard/<run_id>/events...
    lowbit run CONFIG --log mlflow             # <out_dir>/mlflow.db (MLflow, SQLite)
    lowbit run CONFIG --log wandb              # offline: <out_dir>/wandb (wandb sync later)
    mirror_sweep("runs/demo", "tensorboard")   # backfill a finished sweep
    lowbit ptq ... --log mlflow                # PTQ: one tracker run per W x A row (log_ptq)

The results store stays the record; a tracker gets a copy. The sweep driver calls the tracker
when a run's ``result.json`` is written (local and Ray executors alike), so workers and cluster
nodes need no tracker package, and a crash of the tracker cannot lose a run. Each run becomes
one tracker run named by its run id with the flat config row as parameters/hparams and every
numeric epoch metric logged at ``step = epoch``; its summary goes in at the end.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Callable

TRACKERS = ("tensorboard", "mlflow", "wandb")


def _numbers(row: dict) -> dict[str, float]:
    return {k: float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _params(config: dict) -> dict[str, str | float]:
    return {k: (v if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v))
            for k, v in config.items()}


def log_tensorboard(result: dict, out_dir: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
    with SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard" / result["run_id"])) as w:
        w.add_text("config", "\n".join(f"    {k}: {v}" for k, v in result["config"].items()))
        for row in result.get("epochs", []):
            for key, value in _numbers(row).items():
                if key != "epoch":
                    w.add_scalar(key, value, global_step=int(row["epoch"]))
        summary = _numbers(result.get("summary") or {})
        w.add_hparams(_params(result["config"]), {f"summary/{k}": v for k, v in summary.items()},
                      run_name=".")


def mlflow_uri(out_dir: str | Path) -> str:
    """The sweep's MLflow store: SQLite at ``<out_dir>/mlflow.db`` (``mlflow ui
    --backend-store-uri`` this)."""
    return f"sqlite:///{(Path(out_dir) / 'mlflow.db').resolve()}"


def log_mlflow(result: dict, out_dir: Path) -> None:
    import mlflow
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri(out_dir))
    name = str(result["config"].get("sweep", "lowbit"))
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        name, artifact_location=(Path(out_dir) / "mlartifacts").resolve().as_uri())
    run = client.create_run(exp_id, run_name=result["run_id"],
                            tags={"lowbit.run_id": result["run_id"],
                                  "lowbit.status": result["status"]})
    rid = run.info.run_id
    for key, value in _params(result["config"]).items():
        client.log_param(rid, key, str(value)[:500])
    for row in result.get("epochs", []):
        for key, value in _numbers(row).items():
            if key != "epoch":
                client.log_metric(rid, key, value, step=int(row["epoch"]))
    for key, value in _numbers(result.get("summary") or {}).items():
        client.log_metric(rid, f"summary.{key}", value)
    client.set_terminated(rid, "FINISHED" if result["status"] != "failed" else "FAILED")


def log_wandb(result: dict, out_dir: Path) -> None:
    import wandb
    os.environ.setdefault("WANDB_MODE", "offline")
    run = wandb.init(project=str(result["config"].get("sweep", "lowbit")), name=result["run_id"],
                     config=result["config"], dir=str(out_dir), reinit=True)
    for row in result.get("epochs", []):
        run.log(_numbers(row), step=int(row["epoch"]))
    run.summary.update(_numbers(result.get("summary") or {}))
    run.finish()


LOGGERS = {"tensorboard": log_tensorboard, "mlflow": log_mlflow, "wandb": log_wandb}
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def make_logger(kind: str, out_dir: str | Path) -> Callable[[dict], None]:
    """``result -> None`` mirroring into tracker ``kind``; raises ImportError early (with the
    package to install) when the tracker's package is missing."""
    if kind not in LOGGERS:
        raise ValueError(f"--log: unknown tracker {kind!r}; allowed: {', '.join(TRACKERS)}")
    import importlib.util
    try:
        found = importlib.util.find_spec(PACKAGES[kind]) is not None
    except (ImportError, ValueError):  # a broken or blocked install
        found = False
    if not found:
        raise ImportError(f"--log {kind} needs the {PACKAGES[kind]} package: "
                          f"pip install {PACKAGES[kind]}")
    log = LOGGERS[kind]

    def logger(result: dict) -> None:
        try:
            log(result, Path(out_dir))
        except Exception as err:  # noqa: BLE001 - the results store has the run; warn only
            print(f"warning: --log {kind}: {result.get('run_id')}: {err}", file=sys.stderr)
    return logger


def mirror_sweep(out_dir: str | Path, kind: str) -> int:
    """Mirror every stored ``result.json`` of ``out_dir`` into ``kind``; return how many."""
    from lowbit.experiments import store
    log = make_logger(kind, out_dir)
    n = 0
    for run_dir in sorted((Path(out_dir) / "runs").glob("*")):
        result = store.read_result(run_dir)
        if result is not None:
            log(result)
            n += 1
    return n


def ptq_results(rows: list[dict], sweep: str = "ptq") -> list[dict]:
    """PTQ rows (``lowbit.ptq``: weights, acts, acc, drop, ratio, sizes...) as results the loggers take:
    one tracker run per W x A row, named ``ptq-<W>x<A>``, whose parameters are the row's text fields
    and whose summary holds its numbers, so a tracker's parallel-coordinates view of the runs is the
    W x A sweep (the MobileNet study's plot)."""
    out = []
    for row in rows:
        config = {"sweep": sweep, **{k: v for k, v in row.items() if not _numbers({k: v})},
                  "W": str(row.get("weights")), "A": str(row.get("acts"))}
        out.append({"run_id": f"ptq-{row.get('weights')}x{row.get('acts')}", "config": config,
                    "status": "completed", "epochs": [], "summary": _numbers(row)})
    return out


def log_ptq(rows: list[dict], kind: str, out_dir: str | Path, sweep: str = "ptq") -> int:
    """Mirror a ``lowbit ptq`` table into tracker ``kind`` under ``out_dir``; returns the runs logged."""
    log = make_logger(kind, out_dir)
    results = ptq_results(rows, sweep)
    for result in results:
        log(result)
    return len(results)
