"""MobileNetV2 (Sandler et al., 2018): inverted residuals with linear bottlenecks.

Block layout and width rounding follow torchvision's ``mobilenet_v2``.
``variant="cifar"`` uses a stride-1 stem and stride 1 in the second stage
(as in the common CIFAR ports, e.g. kuangliu/pytorch-cifar), so 32x32 inputs
end at 4x4; parameter count is unchanged by strides: 2,236,682 at 10 classes,
width 1.0 (kuangliu's port has 2.30M because it adds 1x1 conv shortcuts).
The activation (ReLU6 in the paper) is the ``act`` argument.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import ConvBnAct, init_conv_bn, resolve_variant
from .registry import register_model

# (expansion t, output channels c, repeats n, stride s) per stage, from the paper's Table 2.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round ``v`` to a multiple of ``divisor``, never going below 90% of ``v`` (torchvision rule)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class InvertedResidual(nn.Module):
    """Expand 1x1 (skipped when t=1) -> depthwise 3x3 -> linear 1x1 project; residual when shapes match."""

    def __init__(self, in_chans: int, out_chans: int, stride: int, expand_ratio: int, act="relu"):
        super().__init__()
        hidden = in_chans * expand_ratio
        self.use_residual = stride == 1 and in_chans == out_chans
        layers = [ConvBnAct(in_chans, hidden, 1, act=act)] if expand_ratio != 1 else []
        layers += [ConvBnAct(hidden, hidden, 3, stride, groups=hidden, act=act),
                   ConvBnAct(hidden, out_chans, 1, act=None)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """Stem conv -> inverted-residual stages -> 1x1 conv to ``last_channel`` -> avgpool -> head."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size: int = 32, act="relu",
                 width_mult: float = 1.0, variant: str | None = None, dropout: float = 0.0):
        super().__init__()
        variant = resolve_variant("mobilenetv2", variant, img_size)
        cifar = variant == "cifar"
        prev = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [ConvBnAct(in_chans, prev, 3, 1 if cifar else 2, act=act)]
        for i, (t, c, n, s) in enumerate(STAGES):
            out = make_divisible(c * width_mult)
            s = 1 if (cifar and i == 1) else s
            for j in range(n):
                layers.append(InvertedResidual(prev, out, s if j == 0 else 1, t, act))
                prev = out
        layers.append(ConvBnAct(prev, last, 1, act=act))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(last, num_classes)
        init_conv_bn(self)
        nn.init.normal_(self.head.weight, 0, 0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pool(self.features(x)).flatten(1)))


@register_model
def mobilenetv2(num_classes=10, in_chans=3, img_size=32, act="relu", **kwargs) -> MobileNetV2:
    """MobileNetV2. kwargs: ``width_mult`` (1.0), ``variant`` ("cifar" if img_size < 64
    else "imagenet"), ``dropout`` before the head (0.0; torchvision uses 0.2)."""
    return MobileNetV2(num_classes, in_chans, img_size, act, **kwargs)
