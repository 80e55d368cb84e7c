"""Sweep executors behind one interface (:class:`Executor`), chosen by name.

    run_sweep(cfg, executor="local", jobs=2)      # LocalExecutor: child processes
    run_sweep(cfg, executor="ray", address=ADDR)  # RayExecutor: Ray tasks (pip install 'lowbit[ray]')
    run_sweep(cfg, executor=RayExecutor(max_retries=0))   # or an Executor instance

A new executor is a subclass of :class:`Executor` (see :mod:`lowbit.experiments.executors.base` for
the contract) added to :data:`EXECUTORS`.
"""
from __future__ import annotations

from lowbit.experiments.executors.base import Executor, describe_result, lost_result, record
from lowbit.experiments.executors.local import LocalExecutor
from lowbit.experiments.executors.ray import RayExecutor

EXECUTORS = {"local": LocalExecutor, "ray": RayExecutor}


def make_executor(name: str, *, jobs: int = 1, address: str | None = None) -> Executor:
    """The executor called ``name`` ("local": ``jobs`` processes; "ray": the cluster at ``address``)."""
    if name not in EXECUTORS:
        raise ValueError(f"executor: expected one of {', '.join(EXECUTORS)}, got {name!r}")
    return LocalExecutor(jobs) if name == "local" else RayExecutor(address)


__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "RayExecutor", "describe_result", "lost_result",
           "make_executor", "record"]
