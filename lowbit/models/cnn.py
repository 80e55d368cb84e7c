"""A plain VGG-like CNN: four conv-bn-act blocks, global average pool, FC head."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .layers import ConvBnAct, init_conv_bn
from .registry import register_model


class SimpleCNN(nn.Module):
    """Conv blocks of ``channels`` with 2x2 max-pooling between blocks.

    A pool is inserted after a block only while the feature map is at least
    4 px wide, so the last block still sees >= 2x2: 8x8 inputs pool twice
    (8 -> 4 -> 2), 28/32 px inputs pool three times.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size: int = 32, act="relu",
                 channels: Sequence[int] = (64, 128, 256, 512)):
        super().__init__()
        layers: list[nn.Module] = []
        size, prev = img_size, in_chans
        for i, ch in enumerate(channels):
            layers.append(ConvBnAct(prev, ch, 3, act=act))
            if i < len(channels) - 1 and size >= 4:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            prev = ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(prev, num_classes)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


@register_model
def cnn(num_classes=10, in_chans=3, img_size=32, act="relu", **kwargs) -> SimpleCNN:
    """4-block CNN. kwargs: ``channels`` (default (64, 128, 256, 512))."""
    return SimpleCNN(num_classes, in_chans, img_size, act, **kwargs)
