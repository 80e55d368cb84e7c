"""The Ray executor: a sweep's runs as Ray tasks, on this machine or on an existing Ray cluster.

    run_sweep(cfg, executor="ray")                                   # ray.init in-process, num_cpus=cores
    run_sweep(cfg, executor=RayExecutor(address="ray://head:10001"))  # or "auto" on a cluster node

Same contract as the local executor (:mod:`lowbit.experiments.executors.base`): one task per
remaining run, reserving ``cfg.resources`` (``gpus``: what Ray exposes through
``CUDA_VISIBLE_DEVICES``). A run's torch threads are its config's ``threads``, not ``cpus``, so a
run gives the same bits here as under the local executor; reserve ``cpus >= threads`` to avoid
oversubscription (a warning says so otherwise). Each task runs
:func:`lowbit.experiments.worker.execute`, which writes its own ``result.json`` atomically into
``out_dir`` (so ``out_dir`` must be a path every node sees: a shared file system on a cluster).

A worker process lost mid-run (killed, out of memory, node gone) is retried ``max_retries``
times by Ray; the retry resumes from the run's last checkpoint. A run whose retries are all
lost is recorded as ``failed`` with Ray's reason. A run that raises is ``failed`` as before.
Several drivers may share ``out_dir`` (per-run claims, as with the local executor).
"""
from __future__ import annotations

import sys
import time
from typing import Callable

from lowbit.distributed.ray import init_ray
from lowbit.experiments.claim import CLAIMED
from lowbit.experiments.executors.base import (Executor, Finished, describe_result, record,
                                               settle)
from lowbit.experiments.progress import Progress

MAX_RETRIES = 2  # lost workers; a run that raises is a result, never retried


def _run_task(spec_dict: dict, run_dir: str, before: Callable | None,
              since: float | None = None) -> str:
    """Body of the Ray task: one run in a Ray worker process."""
    from lowbit.experiments.worker import execute
    if before is not None:  # test hook (e.g. kill this worker on a first attempt)
        before(spec_dict, run_dir)
    return execute(spec_dict, run_dir, events=None, sweep_pid=None, redirect=False, since=since)


class RayExecutor(Executor):
    """Ray tasks in-process or on the cluster at ``address``. ``before_run(spec_dict, run_dir)`` is
    called in the worker before each attempt (tests)."""

    name = "ray"

    def __init__(self, address: str | None = None, max_retries: int = MAX_RETRIES,
                 before_run: Callable[[dict, str], None] | None = None):
        self.address, self.max_retries, self.before_run = address, max_retries, before_run

    def run(self, cfg, todo, progress: Progress, finished: Finished) -> None:
        out = cfg.results_dir.resolve()
        ray = init_ray(self.address)
        cpus = float(cfg.resources.get("cpus", 1))
        gpus = float(cfg.resources.get("gpus", 0))
        _warn_if_infeasible(ray, cpus, gpus)
        if cfg.threads > cpus:
            print(f"warning: each run uses threads={cfg.threads} torch threads but reserves "
                  f"resources.cpus={cpus:g}; Ray may oversubscribe the cores", file=sys.stderr)
        task = ray.remote(_run_task).options(num_cpus=cpus, num_gpus=gpus,
                                             max_retries=self.max_retries, retry_exceptions=False)
        pending: dict = {}
        since = time.time()
        waiting = {s.run_id: s for s in todo}  # not submitted yet, or claimed by another process

        def submit(spec) -> None:
            ref = task.remote(spec.to_dict(), str(out / "runs" / spec.run_id), self.before_run,
                              since)
            pending[ref] = spec
            progress.start(spec.run_id, spec.label, spec.train.epochs)
        try:
            while pending or waiting:
                for run_id, spec in list(waiting.items()):
                    state, info = settle(out / "runs" / run_id, since)
                    if state == "claimed":
                        continue
                    del waiting[run_id]
                    if state == "free":
                        submit(spec)
                    else:
                        progress.end(spec.run_id, spec.label, info["status"],
                                     f"{describe_result(info)} [run by another process]".strip())
                        finished(info)
                if not pending:
                    time.sleep(0.5)
                    continue
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in done:
                    spec = pending.pop(ref)
                    if _returned(ray, ref) == CLAIMED:
                        progress.running.pop(spec.run_id, None)
                        waiting[spec.run_id] = spec
                        continue
                    result = record(out / "runs" / spec.run_id, spec,
                                    f"ray task lost after retries: {_error(ray, ref)}")
                    progress.end(spec.run_id, spec.label, result["status"], describe_result(result))
                    finished(result)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise


def _returned(ray, ref):
    """The task's return value, or None when it raised (a lost worker)."""
    try:
        return ray.get(ref)
    except Exception:  # noqa: BLE001 - reported by _error
        return None


def _error(ray, ref) -> str | None:
    """None when the task returned; else Ray's reason on one line (a lost worker, not a crash)."""
    try:
        ray.get(ref)
    except Exception as err:  # noqa: BLE001 - a lost worker is a failed run, not a crash
        return " ".join(f"{type(err).__name__}: {err}".split())[:500]
    return None


def _warn_if_infeasible(ray, cpus: float, gpus: float) -> None:
    """Ray queues a task no node can hold until one joins (autoscaling): say so, once."""
    have = ray.cluster_resources()
    for name, need in (("CPU", cpus), ("GPU", gpus)):
        if need > have.get(name, 0):
            print(f"warning: each run asks for {need:g} {name} but the Ray cluster has "
                  f"{have.get(name, 0):g} now; runs wait until a node that large joins",
                  file=sys.stderr)
