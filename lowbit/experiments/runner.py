"""Run a sweep: expand the config, skip finished runs, hand the rest to an executor, write the tables.

Where runs execute is the executor's business (:mod:`lowbit.experiments.executors`): ``local``
child processes (the default, ``jobs`` at a time) or ``ray`` tasks. Either way a crash of one run is
recorded and the sweep goes on.

Re-running a sweep skips runs whose ``result.json`` says completed, early_stopped or diverged,
re-runs failed ones, and resumes interrupted ones from their checkpoint. Results accumulate: the
tables (``results/``) are rebuilt from every run folder in ``out_dir``, so a second sweep into the
same folder, or a ``--set`` slice of the first, adds its runs to the earlier ones instead of
replacing them (each row carries its full config; delete a run folder to drop it). Several sweep
processes may share one ``out_dir``: each run is trained once, by the process that claims it
(:mod:`lowbit.experiments.claim`); the others wait for it and report its result. A damaged
``checkpoint.pt`` in a run folder is moved aside (``checkpoint.pt.damaged-*``, with a warning in
the run's log) and that run restarts from scratch.

As with any multiprocessing code, a script that calls :func:`run_sweep` needs the
``if __name__ == "__main__":`` guard (children re-import the main script without running it).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from lowbit.distributed.cores import cpu_count
from lowbit.experiments import store
from lowbit.experiments.executors import Executor, make_executor
from lowbit.experiments.grid import RunSpec, expand
from lowbit.experiments.legacy import adopt_legacy
from lowbit.experiments.progress import Progress
from lowbit.experiments.schema import SweepConfig
from lowbit.train import TERMINAL


def is_finished(run_dir: Path) -> bool:
    result = store.read_result(run_dir)
    return result is not None and result.get("status") in TERMINAL


def prepare(cfg: SweepConfig, notes: list[str] | None = None, world_size: int = 1) -> list[RunSpec]:
    """Expand ``cfg``, write ``sweep.yaml`` and each run's ``config.yaml``; return the runs.

    Run folders from before the thread count joined the run id are adopted where they match
    (:mod:`lowbit.experiments.legacy`); a line per one that does not is appended to ``notes``.
    ``world_size``: the runs as DDP runs over that many ranks (their own ids, see ``expand``)."""
    out = cfg.results_dir
    specs = expand(cfg, world_size)
    store.write_yaml(out / "sweep.yaml", cfg.to_dict())
    if (out / "runs").is_dir() and world_size == 1:
        (notes if notes is not None else []).extend(adopt_legacy(out, specs))
    for spec in specs:
        path = out / "runs" / spec.run_id / "config.yaml"
        if not path.exists():
            store.write_yaml(path, spec.to_dict())
    return specs


def auto_jobs(cfg: SweepConfig) -> int:
    """Default parallelism: as many runs as the cores hold at ``cfg.threads`` torch threads each
    on CPU (small models train faster as one-thread runs side by side than with several threads
    per run), one run at a time on a GPU."""
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return 1
    return max(1, cpu_count() // cfg.threads)


def run_sweep(cfg: SweepConfig, jobs: int | None = None, progress: Progress | None = None,
              quiet: bool = False, executor: str | Executor = "local", address: str | None = None,
              on_result: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """Run every run of ``cfg`` not yet finished; return the runs table (``results/runs``: every
run in ``cfg.out_dir``, this sweep's and earlier ones').

    ``executor``: "local" (child processes, ``jobs`` in parallel; None: :func:`auto_jobs`), "ray"
    (Ray tasks with ``cfg.resources``, in-process Ray or the cluster at ``address``), or an
    :class:`~lowbit.experiments.executors.Executor`. ``on_result(result)``: called in this process
    with each run's stored result as it finishes (e.g. a tracker from
    :mod:`lowbit.experiments.tracking`). Without runs left to do, no executor starts (no Ray).
    """
    if not isinstance(executor, Executor):
        executor = make_executor(executor, jobs=auto_jobs(cfg) if jobs is None else jobs,
                                 address=address)
    out = cfg.results_dir
    notes: list[str] = []
    specs = prepare(cfg, notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    todo = [s for s in specs if not is_finished(out / "runs" / s.run_id)]
    if todo:
        prog = progress or Progress(len(specs), done=len(specs) - len(todo), quiet=quiet)

        def finished(result: dict) -> None:
            if on_result is not None:
                on_result(result)
            store.rebuild_tables(out)
        try:
            executor.run(cfg, todo, prog, finished)
        except BaseException:
            store.rebuild_tables(out)
            raise
        finally:
            prog.close()
    return store.rebuild_tables(out)["runs"]
