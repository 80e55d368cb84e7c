"""A graph convolutional network (Kipf & Welling, 2017) over image patches.

Each non-overlapping patch is a node; nodes are linked to their 4 grid
neighbours. Graph convolution: H' = act(A_hat @ H @ W) with
A_hat = D^-1/2 (A + I) D^-1/2.
"""
from __future__ import annotations

import torch
from torch import nn

from .activations import get_activation
from .layers import PatchEmbed, default_patch_size
from .registry import register_model


def grid_adjacency(grid_size: int) -> torch.Tensor:
    """Normalised adjacency D^-1/2 (A + I) D^-1/2 of a 4-neighbour grid, (N, N) float32.

    Nodes are numbered row-major, matching ``PatchEmbed``'s flattening.
    """
    n = grid_size * grid_size
    a = torch.eye(n)
    for r in range(grid_size):
        for c in range(grid_size):
            i = r * grid_size + c
            if c + 1 < grid_size:
                a[i, i + 1] = a[i + 1, i] = 1.0
            if r + 1 < grid_size:
                a[i, i + grid_size] = a[i + grid_size, i] = 1.0
    d_inv_sqrt = a.sum(1).rsqrt()
    return d_inv_sqrt[:, None] * a * d_inv_sqrt[None, :]


class GraphConv(nn.Module):
    """H' = act(A_hat @ H @ W); ``W`` is an nn.Linear (with bias)."""

    def __init__(self, in_features: int, out_features: int, act="relu"):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.act = get_activation(act)

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return self.act(self.linear(torch.matmul(adj, h)))


class GCN(nn.Module):
    """Patch embedding -> ``depth`` graph convolutions -> mean over nodes -> Linear head."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size: int = 32, act="relu",
                 patch_size: int | None = None, dim: int = 128, depth: int = 3):
        super().__init__()
        patch_size = patch_size or default_patch_size(img_size)
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, dim)
        self.register_buffer("adj", grid_adjacency(self.patch_embed.grid_size))
        self.layers = nn.ModuleList(GraphConv(dim, dim, act) for _ in range(depth))
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch_embed(x)
        for layer in self.layers:
            h = layer(h, self.adj)
        return self.head(h.mean(dim=1))


@register_model
def gcn(num_classes=10, in_chans=3, img_size=32, act="relu", **kwargs) -> GCN:
    """GCN on the patch grid. kwargs: ``patch_size`` (default: 2 up to 16 px,
    4 up to 64 px, 8 up to 128 px, else 16), ``dim`` (128), ``depth`` (3)."""
    return GCN(num_classes, in_chans, img_size, act, **kwargs)
