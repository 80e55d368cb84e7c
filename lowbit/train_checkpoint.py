"""Checkpoints of :func:`lowbit.train.train`: atomic writes, resume, quarantine of damaged files.

A checkpoint is a plain dict of tensors and Python values written with ``torch.save`` (no pickled
classes), so ``torch.load(path, weights_only=True)`` reads it: model, optimizer, scheduler and
scaler state, epoch, the RNG states (torch, the shuffling generator, CUDA) and the loop state
(history, best validation accuracy, epochs without improvement, status).
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import torch

from lowbit.checkpoint import read as read_checkpoint


def save_atomic(obj: dict, path: Path) -> None:
    """``torch.save`` to ``path.tmp``, then ``os.replace``: a reader never sees a partial file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def resume_or_quarantine(path: Path, model, opt, sched, scaler, gen, device) -> dict | None:
    """:func:`_resume`; a checkpoint that cannot be resumed (empty, corrupt, code, not a lowbit.train
    checkpoint of this model) is renamed to ``checkpoint.pt.damaged-<time>`` with a warning naming
    both files, the model and torch's RNG are put back as they were, and None is returned."""
    model_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    try:
        return _resume(path, model, opt, sched, scaler, gen, device)
    except Exception as exc:  # noqa: BLE001 - any unusable file is quarantined, not fatal
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        os.replace(path, aside)
        model.load_state_dict(model_state)
        torch.set_rng_state(rng)
        why = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        warnings.warn(f"checkpoint {str(path)!r} cannot be resumed ({why}); moved to "
                      f"{str(aside)!r}, the run restarts from scratch", RuntimeWarning, stacklevel=3)
        return None


def resume_file(path: Path, model, opt, sched, scaler, gen, device) -> dict:
    """:func:`_resume` from a file the user named: any failure is one
    :class:`~lowbit.checkpoint.CheckpointError` naming the file (nothing is moved aside)."""
    from lowbit.checkpoint import CheckpointError
    try:
        return _resume(path, model, opt, sched, scaler, gen, device)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - wrong model, not a training checkpoint, ...
        why = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        raise CheckpointError(f"{str(path)!r} cannot be resumed ({why}); allowed: a checkpoint.pt or "
                              "checkpoint_epoch_N.pt of lowbit.train for this model and optimizer") from None


def _resume(path: Path, model, opt, sched, scaler, gen, device) -> dict:
    """Load ``path`` into the training objects and RNGs; return the saved loop state."""
    ckpt = read_checkpoint(path, map_location=device)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    gen.set_state(ckpt["rng"]["generator"])
    if device.type == "cuda" and ckpt["rng"].get("cuda"):
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
    return ckpt["state"]


def checkpoint_state(model, opt, sched, scaler, gen, device, state) -> dict:
    rng = {"torch": torch.get_rng_state(), "generator": gen.get_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
            "epoch": state["epoch"], "best_val_acc": state["best_val_acc"], "rng": rng,
            "state": state}


__all__ = ["save_atomic", "resume_or_quarantine", "resume_file", "checkpoint_state"]
