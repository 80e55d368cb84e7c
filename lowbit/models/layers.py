"""Building blocks shared by several models in the zoo."""
from __future__ import annotations

import torch
from torch import nn

from .activations import get_activation


def default_patch_size(img_size: int) -> int:
    """Patch size for patch-based models when none is given.

    2 for tiny inputs (8x8 digits -> 4x4 grid), 4 up to 64 px (28/32 ->
    7x7/8x8 grid), 8 up to 128 px, 16 beyond (224 -> 14x14, as in ViT/DeiT).
    """
    if img_size <= 16:
        return 2
    if img_size <= 64:
        return 4
    if img_size <= 128:
        return 8
    return 16


VARIANTS = ("cifar", "imagenet")


def resolve_variant(model: str, variant: str | None, img_size: int) -> str:
    """CNN stem variant: ``variant`` if given, else "cifar" below 64 px and "imagenet" from 64 px.

    "cifar" keeps full resolution in the stem (for 8-32 px inputs); "imagenet"
    downsamples early as the original 224 px designs do.
    """
    variant = variant or ("cifar" if img_size < 64 else "imagenet")
    if variant not in VARIANTS:
        raise ValueError(f"unknown {model} variant {variant!r}; allowed: {', '.join(VARIANTS)}")
    return variant


class PatchEmbed(nn.Module):
    """Split an image into non-overlapping patches and embed each linearly.

    A Conv2d with kernel = stride = ``patch_size`` (equivalent to a Linear on
    flattened patches). If ``img_size`` is not a multiple of ``patch_size``
    the right/bottom border is dropped, as the strided conv does.
    Input (B, C, H, W) -> output (B, N, dim) with N = (img_size // patch_size)**2.
    """

    def __init__(self, img_size: int, patch_size: int, in_chans: int, dim: int):
        super().__init__()
        if patch_size > img_size:
            raise ValueError(f"patch_size {patch_size} exceeds img_size {img_size}")
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    """Linear -> activation -> Linear, on the last dimension."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None, act="gelu"):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = get_activation(act)
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ConvBnAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> activation (omitted when ``act`` is None)."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, act="relu"):
        layers = [
            nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding=kernel_size // 2,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_chans),
        ]
        if act is not None:
            layers.append(get_activation(act))
        super().__init__(*layers)


def init_conv_bn(model: nn.Module) -> None:
    """Kaiming-normal (fan_out) convs, unit/zero BatchNorm, as torchvision's CNNs."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_transformer(model: nn.Module) -> None:
    """Truncated-normal(0.02) Linear weights, zero biases, unit/zero LayerNorm (ViT/Mixer style)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
