"""One run, executed in its own child process: data, model, precision, train, result file.

:func:`execute` never raises for a failing run: any exception is logged with its traceback to
``log.txt`` and recorded as ``status: failed`` with a one-line ``error``. A KeyboardInterrupt or
the death of the sweep process leaves no result, so the next sweep resumes the run from its
checkpoint.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
import traceback
from pathlib import Path

import torch

from lowbit.data import load_dataset, resize_splits
from lowbit.data.splits import TensorSplit
from lowbit.experiments import store
from lowbit.experiments.claim import CLAIMED, EXIT_CLAIMED, try_claim
from lowbit.experiments.env import code_version, environment
from lowbit.experiments.grid import RunSpec, flatten
from lowbit.experiments.memory import step_peak_bytes
from lowbit.experiments.precision import apply_precision
from lowbit.models import create_model
from lowbit.ops.backend import backend
from lowbit.train import TERMINAL, resolve_device, train


def load_run_data(spec: RunSpec):
    """The run's dataset, split with ``data.split_seed``, cut to the configured subsets and resized
    to ``data.resize`` when set."""
    d = spec.data
    extra = {"on_bad_file": d.on_bad_file} if spec.dataset == "imagefolder" else {}
    splits = load_dataset(spec.dataset, root=d.root, val_fraction=d.val_fraction,
                          seed=d.split_seed, **extra)
    gen = torch.Generator().manual_seed(d.split_seed)

    def cut(split: TensorSplit, limit: int | None) -> TensorSplit:
        if limit is None or limit >= len(split):
            return split
        idx = torch.randperm(len(split), generator=gen)[:limit].sort().values
        return TensorSplit(split.x[idx], split.y[idx])

    splits = dataclasses.replace(splits, train=cut(splits.train, d.train_subset),
                                 val=cut(splits.val, d.eval_subset),
                                 test=cut(splits.test, d.eval_subset))
    return resize_splits(splits, d.resize) if d.resize is not None else splits


def build_run_model(spec: RunSpec, splits):
    """The run's model (seeded), put in its precision -> (model, assignment rows, footprint columns,
    full footprint dict); see :func:`lowbit.experiments.precision.apply_precision`."""
    torch.manual_seed(spec.seed)
    model = create_model(spec.model, num_classes=splits.num_classes, in_chans=splits.in_chans,
                         img_size=splits.img_size, act=spec.activation, **spec.model_kwargs)
    shape = (1, splits.in_chans, splits.img_size, splits.img_size)
    return (model, *apply_precision(model, spec.precision, spec.quantize, spec.softmax_precision, shape,
                                    spec.keep_first_last, spec.learn_weight, spec.learn_act))


def allocation_columns(model, splits, spec: RunSpec, device) -> dict:
    """``alloc_peak_mb``: the tensor bytes one training step of the run's model allocates at its peak
    (:mod:`lowbit.experiments.memory`), next to the estimated ``footprint_*``; on CUDA the training
    loop's ``peak_mem_mb`` is the allocator's peak already, so nothing is added there."""
    if device.type != "cpu":
        return {}
    from lowbit.data import normalize
    n = min(spec.train.batch_size, len(splits.train))
    x = normalize(splits.train.x[:n].float(), splits.mean, splits.std)
    return {"alloc_peak_mb": step_peak_bytes(model, x, splits.train.y[:n].long()) / 2 ** 20}


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the process that forked us exits (no orphaned runs)."""
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _alive(pid: int | None) -> bool:
    """Whether process ``pid`` still runs (a zombie, killed but not yet reaped, does not)."""
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


WATCH_S = 0.25  # how often a run's child checks that its sweep process still runs


def watch_sweep(sweep_pid: int | None, period: float = WATCH_S) -> None:
    """Interrupt this process's main thread (KeyboardInterrupt) as soon as ``sweep_pid`` is gone, so a
    killed sweep (even by SIGKILL) stops its runs within ``period`` seconds, not at the end of an epoch.
    The run writes no result and resumes from its checkpoint next time."""
    if sweep_pid is None:
        return
    import _thread
    import threading

    def watch() -> None:
        while _alive(sweep_pid):
            time.sleep(period)
        _thread.interrupt_main()
    threading.Thread(target=watch, name="lowbit-watch-sweep", daemon=True).start()


def execute(spec_dict: dict, run_dir: str, events=None, sweep_pid: int | None = None,
            redirect: bool = True, since: float | None = None) -> str:
    """Run one spec in ``run_dir``; write ``result.json``; return the final status.

    The run's ``quant_backend`` holds for the whole run (``with lowbit.backend(...)``) and its
    ``threads`` are torch's intra-op threads (``torch.set_num_threads``), whichever executor calls
    this: a run's numbers depend on its spec alone.
    ``sweep_pid``: when that process is gone at the end of an epoch, stop (SystemExit) without
    a result, as after a kill. ``redirect``: send this process's stdout/stderr to the run log.
    Returns :data:`CLAIMED` without touching the folder when another process holds the run's claim
    (:mod:`lowbit.experiments.claim`) or has finished the run since it was handed to us (a
    terminal result, or any result written after ``since``, the sweep's start time).
    """
    run_dir = Path(run_dir)
    claim = try_claim(run_dir)
    if claim is None:
        return CLAIMED
    try:
        done = store.read_result(run_dir)
        if done is not None and (done.get("status") in TERMINAL or (
                since is not None and float(done.get("finished") or 0) >= since)):
            return CLAIMED
        with backend(RunSpec.from_dict(spec_dict).quant_backend):
            return _execute(spec_dict, run_dir, events, sweep_pid, redirect)
    finally:
        claim.release()


def _execute(spec_dict: dict, run_dir: Path, events, sweep_pid, redirect) -> str:
    """:func:`execute` once the run is claimed, inside the run's backend."""
    log = open(run_dir / "log.txt", "a", buffering=1)
    if redirect:  # warnings and prints of this run go to its log, not over the progress line
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    spec = RunSpec.from_dict(spec_dict)
    torch.set_num_threads(spec.threads)
    send = events.put if events is not None else (lambda msg: None)
    t0 = time.time()
    print(f"[{time.strftime('%H:%M:%S')}] start {spec.run_id} {spec.label} threads={spec.threads}",
          file=log)
    result = {"run_id": spec.run_id, "config": flatten(spec), "spec": spec.to_dict(),
              "env": {**code_version(), **environment("cpu")}, "started": t0}
    try:
        device = resolve_device(spec.train.device)
        result["env"] = {**code_version(), **environment(str(device))}
        splits = load_run_data(spec)
        model, assignment, footprint, fp_full = build_run_model(spec, splits)
        footprint = {**footprint, **allocation_columns(model, splits, spec, device)}
        store.write_json(run_dir / "assignment.json", assignment)
        store.write_json(run_dir / "footprint.json", fp_full)
        send(("start", spec.run_id, spec.train.epochs))
        out_rows: list[dict] = (store.read_json(run_dir / "metrics.json") or {}).get("epochs", [])

        def on_epoch(row: dict) -> None:
            print(f"epoch {row['epoch']}: " + " ".join(
                f"{k}={row[k]:.4g}" for k in ("train_loss", "train_acc", "val_acc", "test_acc",
                                               "epoch_time_s")), file=log)
            out_rows[:] = [r for r in out_rows if r["epoch"] < row["epoch"]] + [row]
            store.write_json(run_dir / "metrics.json", {"epochs": out_rows})
            send(("epoch", spec.run_id, row["epoch"], spec.train.epochs, row["val_acc"]))
            if not _alive(sweep_pid):
                raise SystemExit("sweep process is gone")

        out = train(model, splits, spec.train, run_dir=run_dir, on_epoch=on_epoch,
                    footprint=footprint)
        result.update(status=out["status"], error=None, summary=out["summary"],
                      epochs=out["epochs"], footprint=footprint)
    except (KeyboardInterrupt, SystemExit):
        print("interrupted: no result written, the next sweep resumes", file=log)
        raise
    except Exception as err:  # noqa: BLE001 - a failing run is a result, not a crash
        traceback.print_exc(file=log)
        message = " ".join(f"{type(err).__name__}: {err}".split())[:500]
        result.update(status="failed", error=message, summary={}, epochs=[], footprint={})
    result["finished"] = time.time()
    store.write_json(run_dir / store.RESULT_FILE, result)
    print(f"[{time.strftime('%H:%M:%S')}] {result['status']} in {time.time() - t0:.1f}s",
          file=log)
    send(("end", spec.run_id, result["status"]))
    log.close()
    return result["status"]


def child_main(spec_dict, run_dir, events, sweep_pid, since=None) -> None:
    """Entry point of the child process (see :func:`execute`); exit code :data:`EXIT_CLAIMED`
    when the run was claimed elsewhere."""
    _die_with_parent()
    watch_sweep(sweep_pid)
    try:
        status = execute(spec_dict, run_dir, events, sweep_pid, since=since)
    except KeyboardInterrupt:
        sys.exit(130)
    if status == CLAIMED:
        sys.exit(EXIT_CLAIMED)
