"""Run a sweep: every run in its own child process, ``jobs`` at a time, resumable.

Children are forked from a ``forkserver`` (``spawn`` where that is missing) that has imported
torch and lowbit once, so isolation costs milliseconds, not an interpreter start. A run whose
child raises is recorded by the child (status ``failed`` plus the error); a child that dies
without a result (killed, out of memory, segfault) is recorded by the parent with its exit code.
Either way the sweep goes on. Each child uses ``max(1, cores // jobs)`` torch threads.

Re-running a sweep skips runs whose ``result.json`` says completed, early_stopped or diverged,
re-runs failed ones, and resumes interrupted ones from their checkpoint. The tables cover the
runs of the current config only; other run folders in ``out_dir`` are left alone. One sweep
process per ``out_dir`` at a time.

As with any multiprocessing code, a script that calls :func:`run_sweep` needs the
``if __name__ == "__main__":`` guard (children re-import the main script without running it).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from lowbit.experiments import store
from lowbit.experiments.env import code_version, cpu_count, environment
from lowbit.experiments.grid import RunSpec, expand, flatten
from lowbit.experiments.progress import Progress
from lowbit.experiments.schema import SweepConfig
from lowbit.train import TERMINAL

# Imported once by the forkserver, so each run starts with these in memory: torch, lowbit, the
# bundled datasets' reader (sklearn, ~1 s) and torch._dynamo, which the first optimizer imports
# (~2.5 s). A module that fails to import is skipped.
PRELOAD = ["lowbit.experiments.worker", "lowbit.nn", "sklearn.datasets", "torch._dynamo"]


def _context():
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return mp.get_context("spawn")


def is_finished(run_dir: Path) -> bool:
    result = store.read_result(run_dir)
    return result is not None and result.get("status") in TERMINAL


def _death_result(spec: RunSpec, exitcode: int | None) -> dict:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else "?"
        why = f"child process killed by signal {-exitcode} ({name}"
        why += "; out of memory?)" if name == "SIGKILL" else ")"
    else:
        why = f"child process exited with code {exitcode} without writing a result"
    return {"run_id": spec.run_id, "config": flatten(spec), "spec": spec.to_dict(),
            "env": {**code_version(), **environment("cpu")}, "status": "failed", "error": why,
            "summary": {}, "epochs": [], "footprint": {}, "finished": time.time()}


def _detail(result: dict) -> str:
    s = result.get("summary") or {}
    if result["status"] == "failed":
        return f"- {result.get('error')}"
    if "best_val_acc" in s:
        return f"(best val_acc {s['best_val_acc']:.4f}, {s['total_time_s']:.1f}s)"
    return ""


def prepare(cfg: SweepConfig) -> list[RunSpec]:
    """Expand ``cfg``, write ``sweep.yaml`` and each run's ``config.yaml``; return the runs."""
    out = cfg.results_dir
    specs = expand(cfg)
    store.write_yaml(out / "sweep.yaml", cfg.to_dict())
    for spec in specs:
        path = out / "runs" / spec.run_id / "config.yaml"
        if not path.exists():
            store.write_yaml(path, spec.to_dict())
    return specs


def auto_jobs(cfg: SweepConfig) -> int:
    """Default parallelism: one run per core with one thread each on CPU (small models train
    faster that way than with several threads per run), one run at a time on a GPU."""
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return 1
    return cpu_count()


EXECUTORS = ("local", "ray")


def run_sweep(cfg: SweepConfig, jobs: int | None = None, progress: Progress | None = None,
              quiet: bool = False, executor: str = "local", address: str | None = None,
              on_result: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """Run every run of ``cfg`` not yet finished; return the runs table (``results/runs``).

    ``jobs``: runs in parallel (None: :func:`auto_jobs`). ``executor``: "local" (child
    processes, here) or "ray" (Ray tasks with ``cfg.resources``, in-process Ray or the cluster
    at ``address``; ``jobs`` is then Ray's to decide, see :mod:`lowbit.scale.ray_executor`).
    ``on_result(result)``: called in this process with each run's stored result as it finishes
    (e.g. a tracker from :mod:`lowbit.scale.trackers`).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor: expected one of {', '.join(EXECUTORS)}, got {executor!r}")
    if executor == "ray":
        from lowbit.scale.ray_executor import run_sweep_ray
        return run_sweep_ray(cfg, address=address, progress=progress, quiet=quiet,
                             on_result=on_result)
    jobs = auto_jobs(cfg) if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    out = cfg.results_dir
    specs = prepare(cfg)
    ids = [s.run_id for s in specs]
    todo = [s for s in specs if not is_finished(out / "runs" / s.run_id)]
    prog = progress or Progress(len(specs), done=len(specs) - len(todo), quiet=quiet)
    threads = max(1, cpu_count() // jobs)
    ctx = _context()
    events = ctx.Queue()
    active: dict[str, tuple] = {}
    try:
        while todo or active:
            while todo and len(active) < jobs:
                spec = todo.pop(0)
                proc = ctx.Process(target=_child, name=f"lowbit-run-{spec.run_id}", args=(
                    spec.to_dict(), str(out / "runs" / spec.run_id), threads, events, os.getpid()))
                proc.start()
                active[spec.run_id] = (proc, spec)
                prog.start(spec.run_id, spec.label, spec.train.epochs)
            _drain(events, prog, timeout=0.1)
            for run_id, (proc, spec) in list(active.items()):
                if proc.is_alive():
                    continue
                proc.join()
                _drain(events, prog, timeout=0)
                del active[run_id]
                run_dir = out / "runs" / run_id
                result = store.read_result(run_dir)
                if result is None:
                    result = _death_result(spec, proc.exitcode)
                    store.write_json(run_dir / store.RESULT_FILE, result)
                prog.end(run_id, spec.label, result["status"], _detail(result))
                if on_result is not None:
                    on_result(result)
                store.rebuild_tables(out, ids)
    except BaseException:
        for proc, _ in active.values():
            proc.terminate()
        for proc, _ in active.values():
            proc.join(5)
        store.rebuild_tables(out, ids)
        raise
    finally:
        prog.close()
    return store.rebuild_tables(out, ids)["runs"]


def _child(*args) -> None:
    from lowbit.experiments.worker import child_main
    child_main(*args)


def _drain(events, prog: Progress, timeout: float) -> None:
    """Forward progress events from the children to ``prog`` until the queue is empty."""
    deadline = time.perf_counter() + timeout
    while True:
        try:
            msg = events.get(timeout=max(0.0, deadline - time.perf_counter()))
        except (queue.Empty, EOFError, OSError):
            return
        if msg[0] == "epoch":
            prog.epoch(*msg[1:])
