"""timm models by name: ``create_model("timm:vit_tiny_patch16_224", ...)`` when timm is importable.

The name after ``timm:`` goes to ``timm.create_model`` with ``num_classes``, ``in_chans`` and
``img_size`` (for ViT/DeiT architectures) and the model kwargs (``pretrained`` stays False unless
given; pretrained weights need a local file, ``pretrained_cfg_overlay={"file": ...}``). The
activation is the architecture's own: ``act`` is not used here, and a sweep accepts only
``gelu``/``default`` in ``activations`` next to a timm model (``lowbit.experiments.schema``).
timm needs torchvision; where it cannot be imported, every use raises one ImportError naming the
model and the reason.
"""
from __future__ import annotations

from torch import nn

PREFIX = "timm:"
ACT_DEFAULT = ("gelu", "default")   # what a sweep may name as the activation of a timm model


def timm_module():
    """The imported ``timm`` package, or ImportError with one line saying why not."""
    try:
        import timm
    except Exception as exc:  # noqa: BLE001 - timm's own import fails with ImportError or worse (torchvision)
        why = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise ImportError(f"timm models need the timm package, which cannot be imported here ({why}); "
                          "install timm (it needs torchvision) or use a lowbit zoo model") from None
    return timm


def create_timm_model(name: str, num_classes: int, in_chans: int, img_size: int, act=None,
                      **kwargs) -> nn.Module:
    """``timm.create_model(name[len("timm:"):], ...)``; see the module doc."""
    arch = name[len(PREFIX):]
    if not arch:
        raise ValueError(f"model {name!r}: expected timm:<architecture>, e.g. timm:vit_tiny_patch16_224")
    timm = timm_module()
    if arch not in timm.list_models():
        raise ValueError(f"model {name!r}: unknown timm architecture {arch!r}; allowed: timm.list_models()")
    kwargs.setdefault("pretrained", False)
    if "vit" in arch or "deit" in arch:
        kwargs.setdefault("img_size", img_size)
    try:
        return timm.create_model(arch, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"model {name!r} cannot be built with {kwargs}: {exc}") from None
