"""Run a sweep's runs as Ray tasks, on this machine or on an existing Ray cluster.

    runs = run_sweep_ray(cfg)                          # ray.init in-process, num_cpus=cores
    runs = run_sweep_ray(cfg, address="ray://head:10001")   # or "auto" on a cluster node

Same contract as the local executor (:func:`lowbit.experiments.run_sweep`): the driver expands
the config, skips runs whose ``result.json`` is terminal, and submits one task per remaining
run, reserving ``cfg.resources`` (``cpus`` also sets the run's torch threads, ``gpus`` what
Ray exposes through ``CUDA_VISIBLE_DEVICES``). Each task runs
:func:`lowbit.experiments.worker.execute`, which writes its own ``result.json`` atomically into
``out_dir`` (so ``out_dir`` must be a path every node sees: a shared file system on a cluster);
the driver rebuilds the tables after every finished run, as the local runner does.

A worker process lost mid-run (killed, out of memory, node gone) is retried ``max_retries``
times by Ray; the retry resumes from the run's last checkpoint. A run whose retries are all
lost is recorded as ``failed`` with Ray's reason. A run that raises is ``failed`` as before.
One driver per ``out_dir`` at a time, as with the local executor.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import pandas as pd

from lowbit.experiments import store
from lowbit.experiments.env import cpu_count
from lowbit.experiments.grid import RunSpec
from lowbit.experiments.progress import Progress
from lowbit.experiments.runner import _death_result, _detail, is_finished, prepare
from lowbit.experiments.schema import SweepConfig

MAX_RETRIES = 2  # lost workers; a run that raises is a result, never retried


def require_ray():
    """Import ray or raise an ImportError saying how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ImportError("the ray executor needs Ray: pip install 'lowbit[ray]' "
                          "(or pip install ray)") from err
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None):
    """Connect to ``address`` (a cluster), or start Ray in-process with ``num_cpus`` (default:
    this machine's cores). Does nothing when Ray is already initialised."""
    ray = require_ray()
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus or cpu_count(), include_dashboard=False,
                     log_to_driver=False)
    return ray


def _run_task(spec_dict: dict, run_dir: str, threads: int, before: Callable | None) -> str:
    """Body of the Ray task: one run in a Ray worker process."""
    from lowbit.experiments.worker import execute
    if before is not None:  # test hook (e.g. kill this worker on a first attempt)
        before(spec_dict, run_dir)
    return execute(spec_dict, run_dir, threads, events=None, sweep_pid=None, redirect=False)


def run_sweep_ray(cfg: SweepConfig, address: str | None = None, progress: Progress | None = None,
                  quiet: bool = False, max_retries: int = MAX_RETRIES,
                  before_run: Callable[[dict, str], None] | None = None,
                  on_result: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """Run every unfinished run of ``cfg`` as a Ray task; return the runs table.

    ``on_result(result)``: called here with each run's stored result as it finishes.
    ``before_run(spec_dict, run_dir)`` is called in the worker before each attempt (tests).
    """
    out = cfg.results_dir.resolve()
    cfg_specs = prepare(cfg)
    ids = [s.run_id for s in cfg_specs]
    todo = [s for s in cfg_specs if not is_finished(out / "runs" / s.run_id)]
    if not todo:  # nothing to run: no need to start or join Ray
        return store.rebuild_tables(out, ids)["runs"]
    ray = init_ray(address)
    prog = progress or Progress(len(cfg_specs), done=len(cfg_specs) - len(todo), quiet=quiet)
    cpus = float(cfg.resources.get("cpus", 1))
    _warn_if_infeasible(ray, cpus, float(cfg.resources.get("gpus", 0)))
    task = ray.remote(_run_task).options(
        num_cpus=cpus, num_gpus=float(cfg.resources.get("gpus", 0)), max_retries=max_retries,
        retry_exceptions=False)
    pending: dict = {}
    for spec in todo:
        ref = task.remote(spec.to_dict(), str(out / "runs" / spec.run_id),
                          max(1, int(cpus)), before_run)
        pending[ref] = spec
        prog.start(spec.run_id, spec.label, spec.train.epochs)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in done:
                result = _finish(ray, ref, pending.pop(ref), out, prog)
                if on_result is not None:
                    on_result(result)
                store.rebuild_tables(out, ids)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        store.rebuild_tables(out, ids)
        raise
    finally:
        prog.close()
    return store.rebuild_tables(out, ids)["runs"]


def _warn_if_infeasible(ray, cpus: float, gpus: float) -> None:
    """Ray queues a task no node can hold until one joins (autoscaling): say so, once."""
    have = ray.cluster_resources()
    for name, need in (("CPU", cpus), ("GPU", gpus)):
        if need > have.get(name, 0):
            print(f"warning: each run asks for {need:g} {name} but the Ray cluster has "
                  f"{have.get(name, 0):g} now; runs wait until a node that large joins",
                  file=sys.stderr)


def _finish(ray, ref, spec: RunSpec, out: Path, prog: Progress) -> dict:
    """Record a finished task: its own result file, or a failure when every attempt was lost."""
    run_dir = out / "runs" / spec.run_id
    error = None
    try:
        ray.get(ref)
    except Exception as err:  # noqa: BLE001 - a lost worker is a failed run, not a crash
        error = " ".join(f"{type(err).__name__}: {err}".split())[:500]
    result = store.read_result(run_dir)
    if result is None:
        result = _death_result(spec, None)
        result["error"] = f"ray task lost after retries: {error}"
        store.write_json(run_dir / store.RESULT_FILE, result)
    prog.end(spec.run_id, spec.label, result["status"], _detail(result))
    return result

