"""The local executor: every run in its own child process, ``jobs`` at a time.

Children are forked from a ``forkserver`` (``spawn`` where that is missing) that has imported
torch and lowbit once, so isolation costs milliseconds, not an interpreter start. A run whose
child raises is recorded by the child (status ``failed`` plus the error); a child that dies
without a result (killed, out of memory, segfault) is recorded here with its exit code. Either way
the sweep goes on. Each child uses its run's configured ``threads`` (torch threads; the sweep's
``threads`` key, default 1), not a share of the cores, so ``-j`` never changes a result.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time

from lowbit.experiments.executors.base import (Executor, Finished, describe_result, record,
                                               settle)
from lowbit.experiments.claim import EXIT_CLAIMED
from lowbit.experiments.grid import RunSpec
from lowbit.experiments.progress import Progress

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


def exit_reason(exitcode: int | None) -> str:
    """Why a child process ended without a result, from its exit code."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else "?"
        why = f"child process killed by signal {-exitcode} ({name}"
        return why + ("; out of memory?)" if name == "SIGKILL" else ")")
    return f"child process exited with code {exitcode} without writing a result"


class LocalExecutor(Executor):
    """Child processes on this machine, ``jobs`` at a time (>= 1)."""

    name = "local"

    def __init__(self, jobs: int = 1):
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.jobs = jobs

    def run(self, cfg, todo, progress: Progress, finished: Finished) -> None:
        out, todo, since = cfg.results_dir, list(todo), time.time()
        ctx = _context()
        events = ctx.Queue()
        active: dict[str, tuple] = {}
        waiting: dict[str, RunSpec] = {}  # claimed by another process

        def done_elsewhere(spec, result) -> None:
            progress.end(spec.run_id, spec.label, result["status"],
                         f"{describe_result(result)} [run by another process]".strip())
            finished(result)

        try:
            while todo or active or waiting:
                _check_waiting(out, waiting, todo, since, done_elsewhere)
                while todo and len(active) < self.jobs:
                    spec = todo.pop(0)
                    state, info = settle(out / "runs" / spec.run_id, since)
                    if state == "done":
                        done_elsewhere(spec, info)
                        continue
                    if state == "claimed":
                        _wait_for(spec, info, waiting, progress)
                        continue
                    proc = ctx.Process(target=_child, name=f"lowbit-run-{spec.run_id}", args=(
                        spec.to_dict(), str(out / "runs" / spec.run_id), events,
                        os.getpid(), since))
                    proc.start()
                    active[spec.run_id] = (proc, spec)
                    progress.start(spec.run_id, spec.label, spec.train.epochs)
                _drain(events, progress, timeout=0.1 if active else 0.5)
                for run_id, (proc, spec) in list(active.items()):
                    if proc.is_alive():
                        continue
                    proc.join()
                    _drain(events, progress, timeout=0)
                    del active[run_id]
                    if proc.exitcode == EXIT_CLAIMED:  # claimed elsewhere between check and start
                        progress.running.pop(run_id, None)
                        waiting[run_id] = spec
                        continue
                    result = record(out / "runs" / run_id, spec, exit_reason(proc.exitcode))
                    progress.end(run_id, spec.label, result["status"], describe_result(result))
                    finished(result)
        except BaseException:
            _stop(active)
            raise


def _stop(active: dict) -> None:
    """Interrupted: SIGTERM every running child, SIGKILL those still there after 5 s. Once they are
    gone the forkserver exits too (it lives while any process holds its alive pipe: this one and the
    children)."""
    for proc, _ in active.values():
        proc.terminate()
    deadline = time.monotonic() + 5
    for proc, _ in active.values():
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(1)
    if not any(proc.is_alive() for proc, _ in active.values()):
        _stop_forkserver()


def _stop_forkserver() -> None:
    """Stop the forkserver now, rather than at interpreter exit, and reap it (CPython's
    ``ForkServer._stop``; a no-op where it is missing or no forkserver runs). It has no child left
    and holds nothing to save, so it gets SIGTERM first: left to exit by itself when its alive pipe
    closes, it runs torch's interpreter shutdown (measured 1.4 s)."""
    try:
        from multiprocessing import forkserver
        server = forkserver._forkserver
        stop = getattr(server, "_stop", None)
        pid = getattr(server, "_forkserver_pid", None)
        if stop is not None and pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            stop()
    except (OSError, AttributeError, ChildProcessError):
        pass


def _wait_for(spec: RunSpec, who: str, waiting: dict, progress: Progress) -> None:
    waiting[spec.run_id] = spec
    progress.note(f"{spec.label}: claimed by {who} (another sweep process on this folder); "
                  "waiting for its result")


def _check_waiting(out, waiting: dict, todo: list, since: float, done_elsewhere) -> None:
    """Runs claimed elsewhere: count those now finished, queue those whose claim is free again
    without a result (the other process died)."""
    for run_id, spec in list(waiting.items()):
        state, info = settle(out / "runs" / run_id, since)
        if state == "done":
            del waiting[run_id]
            done_elsewhere(spec, info)
        elif state == "free":
            del waiting[run_id]
            todo.append(spec)


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
