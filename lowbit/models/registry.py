"""Model registry: a dict plus a decorator, in the style of timm.

Every model factory registered here has the signature
``factory(num_classes, in_chans, img_size, act, **kwargs) -> nn.Module``;
``create_model`` is the only place that calls it.
"""
from __future__ import annotations

import inspect
import math
import typing
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
        name: a name from ``list_models()``, or ``timm:<architecture>`` for a timm model
            (:mod:`lowbit.models.timm_models`; ImportError when timm cannot be imported).
        num_classes: size of the classifier output.
        in_chans: input channels (1 for digits/MNIST, 3 for CIFAR/ImageNet).
        img_size: input height = width in pixels; models use it to choose
            strides, patch sizes and positional-embedding lengths.
        act: activation, anything ``get_activation`` accepts.
        **kwargs: model-specific options, documented on each factory.

    Raises:
        ValueError: ``name`` is not registered.
    """
    if isinstance(name, str) and name.startswith("timm:"):   # timm's models, when timm is importable
        from lowbit.models.timm_models import create_timm_model
        return create_timm_model(name, num_classes=num_classes, in_chans=in_chans, img_size=img_size,
                                 act=act, **kwargs)
    factory = MODELS.get(name)
    for key, value in (("num_classes", num_classes), ("in_chans", in_chans), ("img_size", img_size)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"model {name!r}: {key}={value!r} is not allowed; allowed: an int >= 1")
    _check_kwargs(name, kwargs)
    try:
        return factory(
            num_classes=num_classes, in_chans=in_chans, img_size=img_size, act=act, **kwargs
        )
    except (TypeError, ValueError, RuntimeError, ArithmeticError) as exc:  # a value the options' types allow but the model not
        raise ValueError(f"model {name!r} cannot be built with {kwargs or 'its defaults'}: {exc}") from None


_STANDARD = ("self", "num_classes", "in_chans", "img_size", "act")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def model_options(name: str) -> dict:
    """{option: default} of model ``name``'s keyword arguments (from the class its factory builds)."""
    fn = MODELS.get(name)
    try:
        cls = typing.get_type_hints(fn).get("return")
    except Exception:  # an unresolvable annotation: fall back to the factory's own signature
        cls = None
    sig = inspect.signature(cls.__init__ if isinstance(cls, type) else fn)
    return {k: p.default for k, p in sig.parameters.items()
            if k not in _STANDARD and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _fits(value, default) -> bool:
    """``value`` has the kind of the option's default (None as default: anything)."""
    if default is None or default is inspect.Parameter.empty:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return _is_int(value)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list)) and len(value) > 0 and all(
            _fits(v, default[0]) for v in value) if default else isinstance(value, (tuple, list))
    return True


def _describe(default) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an int"
    if isinstance(default, float):
        return "a finite number"
    if isinstance(default, str):
        return "a string"
    if isinstance(default, (tuple, list)) and default:
        return f"a non-empty list of {_describe(default[0]).replace('an ', '').replace('a ', '')}s"
    return f"a value like {default!r}"


def _check_kwargs(name: str, kwargs: dict) -> None:
    options = model_options(name)
    for key, value in kwargs.items():
        if key not in options:
            allowed = ", ".join(options) or "none"
            raise ValueError(f"model {name!r} has no option {key!r}; allowed: {allowed}")
        if not _fits(value, options[key]):
            raise ValueError(f"model {name!r}: {key}={value!r} is not allowed; allowed: {_describe(options[key])} "
                             f"(default {options[key]!r})")
