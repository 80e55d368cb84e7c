"""Models to quantize: zoo models built for a dataset, weights from checkpoints, a quick training run.

Checkpoints accepted by :func:`load_state_dict`: lowbit.train's ``checkpoint.pt`` / ``best.pt``
(a dict whose ``"model"`` entry is the state dict), a dict with a ``"state_dict"`` entry, a plain
state dict saved with ``torch.save``, or a ``.safetensors`` file. ``torch.load`` runs with
``weights_only=True``: a checkpoint never executes code.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

# (in_chans, img_size, num_classes) of the registered datasets, so that cost estimates need no data
# files; any other dataset is loaded to read them.
KNOWN_SHAPES = {"digits": (1, 8, 10), "mnist-small": (1, 28, 10), "mnist": (1, 28, 10),
                "fashion-mnist": (1, 28, 10), "cifar10": (3, 32, 10), "cifar100": (3, 32, 100)}


def dataset_shape(name: str) -> tuple[int, int, int]:
    """(in_chans, img_size, num_classes) of dataset ``name``."""
    if name in KNOWN_SHAPES:
        return KNOWN_SHAPES[name]
    from lowbit.data import load_dataset
    s = load_dataset(name)
    return s.in_chans, s.img_size, s.num_classes


def parse_model_kwargs(text: str | None) -> dict:
    """``--model-kwargs`` JSON (e.g. '{"channels": [16, 32, 64, 64]}') -> dict."""
    if not text:
        return {}
    try:
        kw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--model-kwargs {text!r} is not valid JSON ({exc.msg}); allowed: a JSON object "
                         f"such as '{{\"channels\": [16, 32, 64, 64]}}'") from None
    if not isinstance(kw, dict):
        raise ValueError(f"--model-kwargs {text!r} is not allowed; allowed: a JSON object")
    return kw


def build_model(name: str, dataset: str, model_kwargs: dict | None = None) -> nn.Module:
    """A fresh zoo model shaped for ``dataset`` (seed before calling for a fixed initialisation)."""
    from lowbit.models import create_model
    c, size, k = dataset_shape(dataset)
    try:
        return create_model(name, num_classes=k, in_chans=c, img_size=size, **(model_kwargs or {}))
    except TypeError as exc:
        raise ValueError(f"model {name!r} does not accept {model_kwargs}: {exc}") from None


def load_state_dict(path) -> dict:
    """The state dict stored in ``path`` (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(p))
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types
        raise ValueError(f"checkpoint {str(path)!r} cannot be loaded with weights_only=True: "
                         f"{' '.join(str(exc).split())[:200]}") from None
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"checkpoint {str(path)!r} holds no state dict; allowed: lowbit.train's checkpoint.pt / "
                         f"best.pt, a state dict saved with torch.save, or a .safetensors file")
    return obj


def load_into(model: nn.Module, path) -> nn.Module:
    """Load ``path`` into ``model`` (strict); a mismatch names the first differing keys."""
    sd = load_state_dict(path)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:300]
        raise ValueError(f"checkpoint {str(path)!r} does not fit this model (check --model and "
                         f"--model-kwargs): {first}") from None
    return model


def quick_model_kwargs(name: str) -> dict:
    """The small size of model ``name`` that the built-in sweep uses (``lowbit run``), else {}."""
    try:
        from lowbit.experiments.defaults import DEFAULT_SWEEP
    except ImportError:
        return {}
    return dict(DEFAULT_SWEEP.get("model_kwargs", {}).get(name, {}))


def train_quick(model: nn.Module, splits, epochs: int = 5, seed: int = 0, run_dir: str | os.PathLike | None = None,
                lr: float = 3e-3) -> dict:
    """Train ``model`` on ``splits`` with lowbit.train (AdamW, cosine); resumes/reuses ``run_dir``."""
    from lowbit.train import TrainConfig, train
    cfg = TrainConfig(epochs=epochs, optimizer="adamw", lr=lr, weight_decay=1e-4, batch_size=64, seed=seed)
    return train(model, splits, cfg, run_dir=run_dir)
