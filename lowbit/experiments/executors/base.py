"""The executor interface: where the runs of a sweep execute.

The runner (:func:`lowbit.experiments.run_sweep`) expands the config, writes the run folders, picks
the runs that are not finished and hands them to an executor's :meth:`Executor.run` together with a
:class:`~lowbit.experiments.progress.Progress` and a ``finished(result)`` callback. The executor
runs each one through :func:`lowbit.experiments.worker.execute` (which writes the run's own
``result.json``), writes a :func:`lost_result` for a run whose process died without one, reports
``progress.end(...)`` and calls ``finished(result)`` once per run, in this process. On any exception
(KeyboardInterrupt included) it stops what it started and re-raises; the runner then rebuilds the
tables from what is on disk, so a re-run resumes.

Several sweep processes may share one ``out_dir``: a run is trained only by the process whose worker
holds its claim (:mod:`lowbit.experiments.claim`). An executor checks :func:`settle` before it
starts a run and when a worker returns :data:`~lowbit.experiments.worker.CLAIMED`: a run claimed
elsewhere waits until its claim is free, then counts with the result the other process wrote (or,
when that process died without one, runs here), so each process ends with the runs' real results.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from lowbit.experiments import store
from lowbit.experiments.claim import holder
from lowbit.experiments.env import code_version, environment
from lowbit.experiments.grid import RunSpec, flatten
from lowbit.experiments.progress import Progress
from lowbit.train import TERMINAL

Finished = Callable[[dict], None]


class Executor:
    """Base class of the sweep executors; subclasses set ``name`` and implement :meth:`run`."""

    name = "?"

    def run(self, cfg, todo: list[RunSpec], progress: Progress, finished: Finished) -> None:
        """Execute the runs ``todo`` of sweep ``cfg`` (see the module docstring)."""
        raise NotImplementedError


def lost_result(spec: RunSpec, why: str) -> dict:
    """The ``failed`` result of a run whose process ended without writing one (``why``: the reason)."""
    return {"run_id": spec.run_id, "config": flatten(spec), "spec": spec.to_dict(),
            "env": {**code_version(), **environment("cpu")}, "status": "failed", "error": why,
            "summary": {}, "epochs": [], "footprint": {}, "finished": time.time()}


def record(run_dir: Path, spec: RunSpec, why: str) -> dict:
    """The run's stored result, or (none stored) a :func:`lost_result` written to ``run_dir``."""
    result = store.read_result(run_dir)
    if result is None:
        result = lost_result(spec, why)
        store.write_json(run_dir / store.RESULT_FILE, result)
    return result


def settle(run_dir: Path, since: float) -> tuple[str, dict | str | None]:
    """Where a run stands for a sweep that started at ``since`` (a ``time.time()``):
    ``("claimed", "pid@host")`` while another process holds it; ``("done", result)`` when it is
    finished, or another process wrote its result (failed too) after ``since``; else
    ``("free", None)``: run it."""
    who = holder(run_dir)
    if who is not None:
        return "claimed", who
    result = store.read_result(run_dir)
    if result is not None and (result.get("status") in TERMINAL
                               or float(result.get("finished") or 0) >= since):
        return "done", result
    return "free", None


def describe_result(result: dict) -> str:
    """The short detail printed after a finished run: its error, or best val_acc and time."""
    s = result.get("summary") or {}
    if result["status"] == "failed":
        return f"- {result.get('error')}"
    if "best_val_acc" in s:
        return f"(best val_acc {s['best_val_acc']:.4f}, {s['total_time_s']:.1f}s)"
    return ""
