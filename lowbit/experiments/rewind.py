"""``lowbit run CONFIG --resume FILE``: restart one run of a sweep from a ``checkpoint_epoch_N.pt``.

``FILE`` must lie in a run folder of the sweep (``<out_dir>/runs/<run_id>/``, kept there with the
sweep key ``checkpoint_every``). The run's ``result.json`` (if any) is moved aside to
``result.json.before-resume-<time>`` and ``FILE`` is copied over its ``checkpoint.pt``, so the
sweep that follows trains that run on from epoch N (with the checkpoint's optimizer, schedule and
RNG states: the same weights as an uninterrupted run) and writes a new result.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from lowbit.checkpoint import CheckpointError, read as read_checkpoint
from lowbit.experiments.grid import expand
from lowbit.experiments.schema import SweepConfig
from lowbit.experiments.store import RESULT_FILE


def rewind_run(cfg: SweepConfig, file: str | os.PathLike) -> str:
    """Make the run holding ``file`` resume from it (see the module doc); return its run id.
    Raises ValueError (one line) if ``file`` is not a training checkpoint of one of ``cfg``'s runs."""
    path = Path(file)
    if not path.is_file():
        raise ValueError(f"--resume {str(path)!r}: no such file; allowed: a checkpoint_epoch_N.pt in "
                         f"{str(cfg.results_dir / 'runs')}/<run_id>/")
    ids = {s.run_id for s in expand(cfg)}
    run_dir = path.resolve().parent
    if run_dir.parent != (cfg.results_dir / "runs").resolve() or run_dir.name not in ids:
        raise ValueError(f"--resume {str(path)!r}: not in a run folder of this sweep; allowed: a file in "
                         f"{str(cfg.results_dir / 'runs')}/<run_id>/ for one of its {len(ids)} runs")
    try:
        ckpt = read_checkpoint(path)
        epoch = int(ckpt["epoch"])
        ckpt["state"], ckpt["optimizer"], ckpt["rng"]
    except (CheckpointError, KeyError, TypeError, ValueError) as exc:
        why = " ".join(str(exc).split())[:200]
        raise ValueError(f"--resume {str(path)!r}: not a lowbit.train checkpoint ({why}); allowed: "
                         "checkpoint.pt or checkpoint_epoch_N.pt of a run") from None
    result = run_dir / RESULT_FILE
    if result.exists():
        os.replace(result, run_dir / f"{RESULT_FILE}.before-resume-{time.strftime('%Y%m%d-%H%M%S')}")
    target = run_dir / "checkpoint.pt"
    if path.resolve() != target.resolve():
        tmp = run_dir / f".checkpoint.pt.{os.getpid()}.tmp"
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
    print(f"{run_dir.name}: resumes from epoch {epoch} ({path.name})")
    return run_dir.name


__all__ = ["rewind_run"]
