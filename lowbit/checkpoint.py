"""Reading model weights from a file: the one checkpoint loader every command and library uses.

Accepted: lowbit.train's ``checkpoint.pt`` / ``best.pt`` (a dict whose ``"model"`` entry is the state
dict), a dict with a ``"state_dict"`` / ``"model_state_dict"`` entry, a plain state dict saved with
``torch.save``, or a ``.safetensors`` file; in lowbit's names or in the layout of torchvision's ResNet
or timm's ViT/DeiT (renamed by :mod:`lowbit.models.external`). ``torch.load`` runs with ``weights_only=True``: a
checkpoint never executes code (a pickle holding code is refused). Every failure (missing, a folder,
empty, truncated or corrupt, code, no tensors, a state dict of another model) is a
:class:`CheckpointError` (a ``ValueError``) whose message is one line naming the file.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file and what is allowed."""


ALLOWED = ("allowed: lowbit.train's checkpoint.pt / best.pt, a state dict saved with torch.save, "
           "or a .safetensors file")


def _one_line(exc: Exception, n: int = 200) -> str:
    return " ".join(str(exc).split())[:n]


def read(path, map_location="cpu"):
    """``torch.load(path, weights_only=True)``; any failure is a one-line :class:`CheckpointError`."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing: noise
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be loaded with weights_only=True (corrupt, "
                              f"or a pickle holding code): {_one_line(exc)}") from None


def load_state_dict(path) -> dict:
    """The state dict stored in the file ``path`` (see the module docstring)."""
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder, not a file; {ALLOWED}")
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if p.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes); {ALLOWED}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(p))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise CheckpointError(f"checkpoint {str(path)!r} is not a readable .safetensors file: "
                                  f"{_one_line(exc)}") from None
    obj = read(p)
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {str(path)!r} holds no state dict; {ALLOWED}")
    return obj


def load_into(model: nn.Module, path, hint: str = "check --model and --model-kwargs",
              layout: str | None = None) -> nn.Module:
    """Load ``path`` into ``model`` (strict). A state dict in torchvision's ResNet or timm's ViT/DeiT
    layout is renamed first (:mod:`lowbit.models.external`; ``layout`` None: detected from the keys).
    A mismatch is one line naming the layout, the missing and unexpected keys and the shape differences."""
    from lowbit.models.external import mismatch, to_lowbit
    sd, found, names = to_lowbit(load_state_dict(path), model, layout)
    bad = mismatch(sd, model, names)
    if bad:
        raise CheckpointError(f"checkpoint {str(path)!r} ({found} layout) does not fit this model ({hint}): {bad}")
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit this model ({hint}): "
                              f"{_one_line(exc, 300)}") from None
    return model
