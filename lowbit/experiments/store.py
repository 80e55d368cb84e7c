"""Results store: one ``result.json`` per run folder, combined tables rebuilt from them.

Layout of a sweep's ``out_dir``::

    sweep.yaml                   the resolved sweep config
    runs/<run_id>/config.yaml    the resolved run config
    runs/<run_id>/log.txt        the run's log (tracebacks of failures too)
    runs/<run_id>/checkpoint.pt  last epoch (resume), best.pt: best validation accuracy
    runs/<run_id>/metrics.json   epoch rows so far (rewritten after every epoch)
    runs/<run_id>/result.json    written once when the run ends (completed, early_stopped,
                                 diverged or failed): config row, summary, epoch rows
    results/runs.csv|parquet     one row per run: config, status, summary, footprint, env
    results/epochs.csv|parquet   one row per run-epoch: config, epoch metrics, env
    results/summary.csv|parquet  mean and std over seeds, grouped by config minus seed

Every file is written to a temporary name and moved into place with ``os.replace``, so killing a
sweep at any moment leaves each file either old or new, never partial; the tables are rebuilt
from the per-run files, which are never modified once written.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable

import pandas as pd
import yaml

RESULT_FILE = "result.json"
TABLES = ("runs", "epochs", "summary")
# Metrics averaged over seeds in summary tables.
SEED_METRICS = ("best_val_acc", "test_acc_at_best", "final_test_acc", "final_val_acc", "gen_gap",
                "convergence_epoch", "mean_epoch_time_s", "total_time_s", "peak_mem_mb", "alloc_peak_mb")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else str(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_json(path: Path, obj) -> None:
    """Atomic JSON (NaN becomes null so any JSON reader accepts the file)."""
    write_atomic(path, json.dumps(_json_safe(obj), indent=1, allow_nan=False))


def write_yaml(path: Path, obj) -> None:
    write_atomic(path, yaml.safe_dump(obj, sort_keys=False))


def read_json(path: Path):
    """Parsed JSON file, or None if absent or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_result(run_dir: Path) -> dict | None:
    """The run's ``result.json``, or None if absent or unreadable."""
    return read_json(Path(run_dir) / RESULT_FILE)


def run_rows(result: dict) -> tuple[dict, list[dict]]:
    """(summary row, epoch rows) of one stored result, each a flat dict."""
    base = dict(result["config"])
    env = dict(result.get("env", {}))
    status = {"status": result["status"], "error": result.get("error")}
    summary = {**base, **status, **result.get("summary", {}), **result.get("footprint", {}), **env}
    epochs = [{**base, **row, **env} for row in result.get("epochs", [])]
    return summary, epochs


def atomic_frame(df: pd.DataFrame, stem: Path) -> None:
    """Write ``stem.csv`` and ``stem.parquet``, each atomically (Parquet only with pyarrow)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    for ext, writer in (("csv", lambda p: df.to_csv(p, index=False)),
                        ("parquet", lambda p: df.to_parquet(p, index=False))):
        tmp = stem.with_name(f".{stem.name}.{os.getpid()}.tmp.{ext}")
        try:
            writer(tmp)
        except ImportError:  # no parquet engine installed: the CSV is the table
            tmp.unlink(missing_ok=True)
            continue
        os.replace(tmp, stem.with_suffix(f".{ext}"))


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in df.columns:  # an all-null column reads back from CSV as float: make it so now
        if df[col].isna().all():
            df[col] = df[col].astype("float64")
    return df


def config_columns(df: pd.DataFrame) -> list[str]:
    """Columns that describe a run's configuration (everything before ``status``/``epoch``)."""
    cols = list(df.columns)
    for marker in ("status", "epoch"):
        if marker in cols:
            return cols[:cols.index(marker)]
    return cols


def seed_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over seeds of :data:`SEED_METRICS`, grouped by config minus seed."""
    if runs.empty:
        return pd.DataFrame()
    done = runs[runs["status"] != "failed"]
    keys = [c for c in config_columns(runs) if c not in ("run_id", "seed")]
    metrics = [m for m in SEED_METRICS if m in done.columns]
    if done.empty or not metrics:
        return pd.DataFrame(columns=keys)
    grouped = done.groupby([done[k].astype(str) for k in keys], sort=False, dropna=False)
    agg = grouped[metrics].agg(["mean", "std"])
    agg.columns = [f"{m}_{s}" for m, s in agg.columns]
    agg["n_seeds"] = grouped.size()
    first = grouped[keys].first()
    return pd.concat([first, agg], axis=1).reset_index(drop=True)


def rebuild_tables(out_dir: Path, run_ids: Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
    """Rebuild ``results/*`` from ``runs/*/result.json`` (only ``run_ids`` when given)."""
    out_dir = Path(out_dir)
    ids = list(run_ids) if run_ids is not None else sorted(
        p.name for p in (out_dir / "runs").glob("*") if p.is_dir())
    summaries, epochs = [], []
    for run_id in ids:
        result = read_result(out_dir / "runs" / run_id)
        if result is not None:
            summary, rows = run_rows(result)
            summaries.append(summary)
            epochs.extend(rows)
    tables = {"runs": _frame(summaries), "epochs": _frame(epochs)}
    tables["summary"] = seed_summary(tables["runs"])
    for name, df in tables.items():
        atomic_frame(df, out_dir / "results" / name)
    return tables


def load_tables(path: Path) -> dict[str, pd.DataFrame]:
    """Read ``runs``/``epochs``/``summary`` tables from a sweep dir or its ``results`` dir.

    Parquet is preferred; CSV is the fallback when pyarrow is missing.
    """
    path = Path(path)
    results = path / "results" if (path / "results").is_dir() else path
    tables = {}
    for name in TABLES:
        for ext, reader in (("parquet", pd.read_parquet), ("csv", pd.read_csv)):
            file = results / f"{name}.{ext}"
            if file.exists():
                try:
                    tables[name] = reader(file)
                    break
                except (ImportError, ValueError, pd.errors.EmptyDataError):
                    tables[name] = pd.DataFrame()
        tables.setdefault(name, pd.DataFrame())
    return tables
