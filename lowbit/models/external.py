"""State dicts of other libraries' models, renamed to the zoo's parameter names.

Layouts (:data:`LAYOUTS`), detected from the keys by :func:`detect_layout`:

``lowbit``       the zoo's own names (nothing to rename).
``torchvision``  ``torchvision.models.resnet18`` (and resnet34, BasicBlock): ``conv1``/``bn1`` stem,
                 ``layer{1..4}.{j}.conv1/bn1/conv2/bn2`` and ``.downsample.0/.1``, ``fc``. Mapped to
                 lowbit's ``resnet18`` (ImageNet stem ``stem.0.0``/``stem.0.1`` + max-pool, or the
                 CIFAR stem ``stem.0``/``stem.1`` for a CIFAR port whose ``conv1`` is 3x3 and whose
                 max-pool is an Identity: which one is the target model's choice, e.g.
                 ``--model resnet18_imagenet`` for the 7x7 stem), ``stages.{i-1}.{j}.conv1.0/conv1.1/
                 conv2.0/conv2.1/shortcut.0/shortcut.1``, ``fc``.
``timm``         ``timm``'s ``VisionTransformer`` (``deit_tiny_patch16_224``, ``vit_*``): ``cls_token``,
                 ``pos_embed``, ``patch_embed.proj``, ``blocks.{i}.norm1/attn.qkv/attn.proj/norm2/
                 mlp.fc1/mlp.fc2``, ``norm``, ``head``: the zoo's ViT uses the same names, so the map is
                 the identity; DeiT's distilled variant (``dist_token``, ``head_dist``) has no zoo model.

A ``module.`` (DistributedDataParallel) or ``_orig_mod.`` (torch.compile) prefix on every key is
removed first. :func:`to_lowbit` never drops a tensor silently: whatever does not fit the target
model is reported by :func:`mismatch` (missing keys, unexpected keys, shape differences).
"""
from __future__ import annotations

import re

import torch
from torch import nn

LAYOUTS = ("lowbit", "torchvision", "timm")
PREFIXES = ("module.", "_orig_mod.")


def strip_prefixes(sd: dict) -> dict:
    for p in PREFIXES:
        if sd and all(k.startswith(p) for k in sd):
            sd = {k[len(p):]: v for k, v in sd.items()}
    return sd


def detect_layout(sd: dict) -> str:
    """``torchvision`` (ResNet keys ``layer1.0.conv1.weight``), ``timm`` (``blocks.0.attn.qkv.weight``
    and ``patch_embed.proj.weight``), else ``lowbit``."""
    if "layer1.0.conv1.weight" in sd and "conv1.weight" in sd:
        return "torchvision"
    if "blocks.0.attn.qkv.weight" in sd and "patch_embed.proj.weight" in sd:
        return "timm"
    return "lowbit"


_BLOCK = re.compile(r"layer(\d)\.(\d+)\.(conv1|bn1|conv2|bn2|downsample\.0|downsample\.1)\.(.+)")
_BLOCK_PART = {"conv1": "conv1.0", "bn1": "conv1.1", "conv2": "conv2.0", "bn2": "conv2.1",
               "downsample.0": "shortcut.0", "downsample.1": "shortcut.1"}


def torchvision_resnet_key(key: str, imagenet_stem: bool) -> str:
    """lowbit's name of torchvision ResNet key ``key`` (unchanged when it has no counterpart)."""
    stem = "stem.0." if imagenet_stem else "stem."
    if key.startswith("conv1."):
        return stem + "0." + key[len("conv1."):]
    if key.startswith("bn1."):
        return stem + "1." + key[len("bn1."):]
    m = _BLOCK.fullmatch(key)
    if m:
        stage, block, part, rest = m.groups()
        return f"stages.{int(stage) - 1}.{block}.{_BLOCK_PART[part]}.{rest}"
    return key


def to_lowbit(sd: dict, model: nn.Module, layout: str | None = None) -> tuple[dict, str, dict]:
    """(state dict renamed to ``model``'s names, the layout it came in, {new name: name in the file});
    ``layout`` None: detected."""
    sd = strip_prefixes(dict(sd))
    layout = layout or detect_layout(sd)
    if layout not in LAYOUTS:
        raise ValueError(f"state dict layout {layout!r} is not allowed; allowed: {', '.join(LAYOUTS)}")
    names = {k: k for k in sd}
    if layout == "torchvision":
        imagenet = "stem.0.0.weight" in model.state_dict()
        names = {torchvision_resnet_key(k, imagenet): k for k in sd}
        sd = {n: sd[k] for n, k in names.items()}
    return sd, layout, names


def mismatch(sd: dict, model: nn.Module, names: dict | None = None, show: int = 6) -> str:
    """'' when ``sd`` fits ``model`` exactly; else one line naming missing keys (model names),
    unexpected keys (their names in the file, ``names``: {new: file name}) and shape differences (the
    first ``show`` of each, with their counts)."""
    want = model.state_dict()
    names = names or {}
    missing = [k for k in want if k not in sd]
    unexpected = [names.get(k, k) for k in sd if k not in want]
    shapes = [f"{k} {tuple(sd[k].shape)} vs model {tuple(want[k].shape)}" for k in want
              if k in sd and isinstance(sd[k], torch.Tensor) and sd[k].shape != want[k].shape]
    parts = []
    for what, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f", ... ({len(items)} in all)" if len(items) > show else ""
            parts.append(f"{what}: {', '.join(items[:show])}{more}")
    return "; ".join(parts)
