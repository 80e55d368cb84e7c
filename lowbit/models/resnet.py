"""ResNet-18 (He et al., 2016) with BasicBlocks, in CIFAR and ImageNet variants.

``variant="imagenet"`` is torchvision's ``resnet18`` layer for layer
(11,689,512 parameters at 1000 classes). ``variant="cifar"`` replaces the
7x7/2 stem and max-pool by a 3x3/1 stem, the common CIFAR port
(11,173,962 parameters at 10 classes).
"""
from __future__ import annotations

import torch
from torch import nn

from .activations import get_activation
from .layers import ConvBnAct, init_conv_bn, resolve_variant
from .registry import register_model



class BasicBlock(nn.Module):
    """act(bn(conv3x3(act(bn(conv3x3(x))))) + shortcut(x)); 1x1 conv shortcut on shape change."""

    def __init__(self, in_chans: int, out_chans: int, stride: int = 1, act="relu"):
        super().__init__()
        self.conv1 = ConvBnAct(in_chans, out_chans, 3, stride, act=act)
        self.conv2 = ConvBnAct(out_chans, out_chans, 3, act=None)
        self.shortcut = nn.Identity()
        if stride != 1 or in_chans != out_chans:
            self.shortcut = ConvBnAct(in_chans, out_chans, 1, stride, act=None)
        self.act = get_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet(nn.Module):
    """Stem -> four stages of BasicBlocks (64, 128, 256, 512; stride 1, 2, 2, 2) -> avgpool -> fc."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size: int = 32, act="relu",
                 variant: str | None = None, layers=(2, 2, 2, 2)):
        super().__init__()
        variant = resolve_variant("resnet", variant, img_size)
        if variant == "cifar":
            self.stem = ConvBnAct(in_chans, 64, 3, 1, act=act)
        else:
            self.stem = nn.Sequential(ConvBnAct(in_chans, 64, 7, 2, act=act),
                                      nn.MaxPool2d(3, stride=2, padding=1))
        stages, prev = [], 64
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(prev, width, stride, act))
                prev = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(prev, num_classes)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


@register_model
def resnet18(num_classes=10, in_chans=3, img_size=32, act="relu", **kwargs) -> ResNet:
    """ResNet-18. kwargs: ``variant`` ("cifar" if img_size < 64 else "imagenet"),
    ``layers`` (BasicBlocks per stage, default (2, 2, 2, 2); (3, 4, 6, 3) is ResNet-34)."""
    return ResNet(num_classes, in_chans, img_size, act, **kwargs)


@register_model
def resnet18_imagenet(num_classes=1000, in_chans=3, img_size=224, act="relu", **kwargs) -> ResNet:
    """ResNet-18 with the ImageNet stem whatever the image size."""
    return ResNet(num_classes, in_chans, img_size, act, variant="imagenet", **kwargs)
