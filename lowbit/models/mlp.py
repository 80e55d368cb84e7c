"""A multilayer perceptron on flattened pixels."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .activations import get_activation
from .registry import register_model


class MLP(nn.Module):
    """Flatten -> [Linear -> act] per hidden width -> Linear head."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size: int = 32, act="relu",
                 hidden: Sequence[int] = (256, 128), dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_chans * img_size * img_size
        for width in hidden:
            layers += [nn.Linear(prev, width), get_activation(act)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model
def mlp(num_classes=10, in_chans=3, img_size=32, act="relu", **kwargs) -> MLP:
    """MLP. kwargs: ``hidden`` widths (default (256, 128)), ``dropout`` (default 0)."""
    return MLP(num_classes, in_chans, img_size, act, **kwargs)
