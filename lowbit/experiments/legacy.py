"""Run folders from before the torch thread count was part of the run id.

Such a folder (``runs/<legacy_id>``, see :attr:`lowbit.experiments.grid.RunSpec.legacy_id`) holds
a run trained with whatever threads its executor gave it; its log says how many
(``start <id> <label> threads=N``, one line per attempt). When every attempt used the thread count
the run now asks for, the folder is the same run bit for bit: it is adopted (copied to its new id,
with the id and thread count written into its config and result; the old folder stays as it was),
so it resumes or counts as finished. Otherwise the run trains again under its new id and
:func:`adopt_legacy` says so, naming the old folders.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import yaml

from lowbit.experiments import store
from lowbit.experiments.claim import CLAIM_FILE, holder
from lowbit.experiments.grid import RunSpec, flatten

_START = re.compile(r"\] start (\w+) .* threads=(\d+)\s*$")


def _threads_used(run_dir: Path) -> set[int]:
    """The thread counts of every attempt of the run, from its log (empty: unknown)."""
    try:
        text = (run_dir / "log.txt").read_text(errors="replace")
    except OSError:
        return set()
    return {int(m.group(2)) for m in map(_START.search, text.splitlines()) if m}


def _is_legacy(run_dir: Path) -> bool:
    """A folder written before run specs had ``threads``."""
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(config, dict) and "threads" not in config


def _adopt(old: Path, new: Path, spec: RunSpec) -> None:
    tmp = new.with_name(f".{new.name}.adopting-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(old, tmp, ignore=shutil.ignore_patterns(CLAIM_FILE))
    store.write_yaml(tmp / "config.yaml", spec.to_dict())
    result = store.read_result(tmp)
    if result is not None:
        result.update(run_id=spec.run_id, config=flatten(spec), spec=spec.to_dict())
        store.write_json(tmp / store.RESULT_FILE, result)
    shutil.rmtree(new, ignore_errors=True)  # only the config.yaml prepare() wrote
    tmp.rename(new)


def adopt_legacy(out: Path, specs: list[RunSpec]) -> list[str]:
    """Adopt the legacy folders of ``specs`` under ``out/runs`` that match; return one note per
    legacy folder that could not be adopted (its run trains again), for the user."""
    notes = []
    for spec in specs:
        old, new = out / "runs" / spec.legacy_id, out / "runs" / spec.run_id
        if not old.is_dir() or not _is_legacy(old) or holder(old) is not None:
            continue
        if store.read_result(new) is not None or (new / "checkpoint.pt").exists():
            continue  # already adopted, or started under the new id
        used = _threads_used(old)
        if used == {spec.threads}:
            _adopt(old, new, spec)
            continue
        why = (f"it ran with threads={','.join(map(str, sorted(used)))}" if used
               else "its log does not say with how many threads it ran")
        notes.append(f"{spec.label} seed={spec.seed}: old folder runs/{spec.legacy_id} (from before "
                     f"the thread count joined the run id) is not reused: {why}, this run asks "
                     f"for threads={spec.threads}; it trains again as runs/{spec.run_id}")
    return notes
