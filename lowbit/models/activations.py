"""Activations by name.

Models never call functional activations (``F.relu``); they hold one
``nn.Module`` instance per use site, obtained from ``get_activation``, so a
later model-surgery pass can find and wrap every activation.
"""
from __future__ import annotations

import copy
from typing import Callable, Union

from torch import nn
import torch.nn.modules.activation as _torch_act

ActSpec = Union[str, type, Callable[[], nn.Module], nn.Module]

# Short names. ``swish`` and ``silu`` are the same function (x * sigmoid(x))
# and both resolve to nn.SiLU.
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "mish": nn.Mish,
}

# Class names from torch.nn's activation module ("ReLU6", "Hardswish", ...).
# MultiheadAttention lives there too but is not an activation.
_TORCH_ACTIVATIONS: dict[str, type] = {
    name: getattr(_torch_act, name)
    for name in _torch_act.__all__
    if name != "MultiheadAttention"
}
_TORCH_LOWER = {name.lower(): cls for name, cls in _TORCH_ACTIVATIONS.items()}


def list_activations() -> list[str]:
    """Sorted short names; torch.nn activation class names are accepted too."""
    return sorted(_ACTIVATIONS)


def _resolve_name(name: str) -> Callable[[], nn.Module]:
    """Short name, then exact torch class name, then case-insensitive class name."""
    for table, key in ((_ACTIVATIONS, name), (_TORCH_ACTIVATIONS, name), (_TORCH_LOWER, name.lower())):
        if key in table:
            return table[key]
    raise ValueError(
        f"unknown activation {name!r}; allowed: {', '.join(list_activations())}, "
        f"or a torch.nn activation class name ({', '.join(sorted(_TORCH_ACTIVATIONS))})"
    )


def get_activation(act: ActSpec) -> nn.Module:
    """Return a NEW activation module for ``act``.

    ``act`` may be a name (see ``list_activations``; torch.nn activation class
    names such as ``"ReLU6"`` or ``"Hardswish"`` also work), an ``nn.Module``
    subclass or zero-argument factory, or a module instance (deep-copied).
    A new instance is returned on every call because some activations
    (PReLU) own parameters that must not be shared between layers.

    Raises:
        ValueError: unknown name.
        TypeError: ``act`` is none of the accepted kinds, or the factory does
            not return an ``nn.Module``.
    """
    if isinstance(act, nn.Module):
        return copy.deepcopy(act)
    if isinstance(act, str):
        factory = _resolve_name(act)
    elif callable(act):
        factory = act
    else:
        raise TypeError(f"activation must be a name, class or factory, got {act!r}")
    module = factory()
    if not isinstance(module, nn.Module):
        raise TypeError(f"activation factory {act!r} returned {type(module).__name__}, not nn.Module")
    return module
