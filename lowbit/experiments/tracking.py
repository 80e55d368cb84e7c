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

Off the critical path: the logger :func:`make_logger` returns only queues a result; one background
thread writes it into the tracker, so a slow tracker never delays the next run's start.
``logger.close()`` waits for the queue to drain and prints one warning line per run the tracker
refused (``lowbit run`` calls it at the end, also after Ctrl-C), and returns how many failed.
MLflow gets each run in a few ``log_batch`` calls (params, tags and metrics in batches of MLflow's
limits), not one call per value, and is idempotent: a run is found by its ``lowbit.run_id`` tag;
when the stored copy has the same ``lowbit.finished`` time it is skipped, otherwise (the run was
re-run) the old copy is deleted and the new one logged, so mirroring a sweep twice never
duplicates its runs.
"""
from __future__ import annotations

import math
import os
import queue
import sys
import threading
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
    finished = repr(float(result.get("finished") or 0))
    for old in client.search_runs([exp_id], f"tags.`lowbit.run_id` = '{result['run_id']}'"):
        if old.data.tags.get("lowbit.finished") == finished:
            return  # this very result is there already
        client.delete_run(old.info.run_id)  # an older result of the run (it was re-run)
    run = client.create_run(exp_id, run_name=result["run_id"],
                            tags={"lowbit.run_id": result["run_id"], "lowbit.finished": finished,
                                  "lowbit.status": result["status"]})
    _mlflow_batches(client, run.info.run_id, result)
    client.set_terminated(run.info.run_id, "FINISHED" if result["status"] != "failed" else "FAILED")


def _mlflow_batches(client, rid: str, result: dict) -> None:
    """The run's params, epoch metrics and summary in as few ``log_batch`` calls as MLflow allows."""
    from mlflow.entities import Metric, Param
    from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH
    params = [Param(k, str(v)[:500]) for k, v in _params(result["config"]).items()]
    now = int(float(result.get("finished") or 0) * 1000)
    metrics = [Metric(k, v, now, int(row["epoch"])) for row in result.get("epochs", [])
               for k, v in _numbers(row).items() if k != "epoch"]
    metrics += [Metric(f"summary.{k}", v, now, 0)
                for k, v in _numbers(result.get("summary") or {}).items()]
    for i in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(rid, params=params[i:i + MAX_PARAMS_TAGS_PER_BATCH])
    for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(rid, metrics=metrics[i:i + MAX_METRICS_PER_BATCH])


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


def make_logger(kind: str, out_dir: str | Path) -> "BackgroundLogger":
    """A :class:`BackgroundLogger` mirroring results into tracker ``kind`` (call it with each
    result, ``close()`` it at the end); raises ImportError early (with the package to install)
    when the tracker's package is missing."""
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
    return BackgroundLogger(kind, LOGGERS[kind], Path(out_dir))


class BackgroundLogger:
    """``logger(result)`` queues ``result``; a daemon thread logs it with ``log(result, out_dir)``.
    :meth:`close` drains the queue, prints one line per failed run and returns their number."""

    def __init__(self, kind: str, log: Callable[[dict, Path], None], out_dir: Path):
        self.kind, self._log, self.out_dir = kind, log, out_dir
        self._queue: queue.Queue = queue.Queue()
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._work, name=f"lowbit-{kind}", daemon=True)
        self._thread.start()

    def __call__(self, result: dict) -> None:
        self._queue.put(result)

    def _work(self) -> None:
        while (result := self._queue.get()) is not None:
            try:
                self._log(result, self.out_dir)
            except Exception as err:  # noqa: BLE001 - the results store has the run; report it
                why = " ".join(f"{type(err).__name__}: {err}".split())[:300]
                self.errors.append(f"{result.get('run_id')}: {why}")

    def close(self) -> int:
        """Wait until every queued result is logged; report and count the failures."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        for line in self.errors:
            print(f"warning: --log {self.kind}: {line} (the run is in the results store; "
                  f"mirror_sweep retries it)", file=sys.stderr)
        n, self.errors = len(self.errors), []
        return n


def mirror_sweep(out_dir: str | Path, kind: str) -> int:
    """Mirror every stored ``result.json`` of ``out_dir`` into ``kind`` (runs already there are
    skipped, see the module docstring); return how many were mirrored without error."""
    from lowbit.experiments import store
    log = make_logger(kind, out_dir)
    n = 0
    for run_dir in sorted((Path(out_dir) / "runs").glob("*")):
        result = store.read_result(run_dir)
        if result is not None:
            log(result)
            n += 1
    return n - log.close()


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
    return len(results) - log.close()
