"""MLP-Mixer (Tolstikhin et al., 2021, "MLP-Mixer: An all-MLP Architecture for Vision")."""
from __future__ import annotations

import torch
from torch import nn

from .layers import Mlp, PatchEmbed, default_patch_size, init_transformer
from .registry import register_model


class MixerBlock(nn.Module):
    """x += TokenMLP(LN(x)^T)^T; x += ChannelMLP(LN(x)). x is (B, N patches, C)."""

    def __init__(self, num_patches: int, dim: int, token_mlp_dim: int, channel_mlp_dim: int, act="gelu"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mlp = Mlp(num_patches, token_mlp_dim, act=act)
        self.norm2 = nn.LayerNorm(dim)
        self.channel_mlp = Mlp(dim, channel_mlp_dim, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class MlpMixer(nn.Module):
    """Patch embedding -> ``depth`` mixer blocks -> LayerNorm -> mean over patches -> head."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size: int = 32, act="relu",
                 patch_size: int | None = None, dim: int = 128, depth: int = 4,
                 token_mlp_dim: int = 64, channel_mlp_dim: int = 256):
        super().__init__()
        patch_size = patch_size or default_patch_size(img_size)
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, dim)
        n = self.patch_embed.num_patches
        self.blocks = nn.Sequential(
            *(MixerBlock(n, dim, token_mlp_dim, channel_mlp_dim, act) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        init_transformer(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.blocks(self.patch_embed(x)))
        return self.head(x.mean(dim=1))


@register_model
def mlpmixer(num_classes=10, in_chans=3, img_size=32, act="relu", **kwargs) -> MlpMixer:
    """MLP-Mixer. kwargs: ``patch_size`` (default as ``default_patch_size``),
    ``dim`` (128), ``depth`` (4), ``token_mlp_dim`` (64), ``channel_mlp_dim`` (256).
    Mixer-S/16 is patch_size=16, dim=512, depth=8, 256, 2048 at 224 px."""
    return MlpMixer(num_classes, in_chans, img_size, act, **kwargs)
