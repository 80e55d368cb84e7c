"""Model registry: a dict plus a decorator, in the style of timm.

Every model factory registered here has the signature
``factory(num_classes, in_chans, img_size, act, **kwargs) -> nn.Module``;
``create_model`` is the only place that calls it.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from lowbit.registry import Registry

MODELS = Registry("model")


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its ``__name__``; returns ``fn`` unchanged.

    Raises ValueError if the name is already taken, so two files cannot
    silently shadow each other.
    """
    return MODELS.add(fn.__name__, fn)


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    return MODELS.names()


def create_model(
    name: str,
    num_classes: int = 10,
    in_chans: int = 3,
    img_size: int = 32,
    act="relu",
    **kwargs,
) -> nn.Module:
    """Build the registered model ``name``.

    Args:
        name: a name from ``list_models()``.
        num_classes: size of the classifier output.
        in_chans: input channels (1 for digits/MNIST, 3 for CIFAR/ImageNet).
        img_size: input height = width in pixels; models use it to choose
            strides, patch sizes and positional-embedding lengths.
        act: activation, anything ``get_activation`` accepts.
        **kwargs: model-specific options, documented on each factory.

    Raises:
        ValueError: ``name`` is not registered.
    """
    return MODELS.get(name)(
        num_classes=num_classes, in_chans=in_chans, img_size=img_size, act=act, **kwargs
    )
