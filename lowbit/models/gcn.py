"""A graph convolutional network (Kipf & Welling, 2017) over image patches.

Each non-overlapping patch is a node; nodes are linked to their 4 grid
neighbours. Graph convolution: H' = act(A_hat @ H @ W) with
A_hat = D^-1/2 (A + I) D^-1/2, applied as a pre-norm residual block
H <- H + act(A_hat @ LayerNorm(H) @ W).

Readout: ``"flatten"`` (default) concatenates the node features before the
head, so the classifier knows where on the grid a feature was found;
``"mean"`` averages the nodes (permutation-invariant, as for real graphs).
On images the mean readout loses the layout: on digits (500 images, 5
epochs) a mean-readout GCN stayed at 12-20 % for every activation, the
flatten readout with residual LayerNorm blocks reached 93-94 %.
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


READOUTS = ("flatten", "mean")


class GCN(nn.Module):
    """Patch embedding -> ``depth`` residual graph convolutions -> readout -> Linear head."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size: int = 32, act="relu",
                 patch_size: int | None = None, dim: int = 128, depth: int = 3,
                 readout: str = "flatten"):
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"gcn: readout={readout!r} is not one of {', '.join(READOUTS)}")
        patch_size = patch_size or default_patch_size(img_size)
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, dim)
        self.register_buffer("adj", grid_adjacency(self.patch_embed.grid_size))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(depth))
        self.layers = nn.ModuleList(GraphConv(dim, dim, act) for _ in range(depth))
        self.readout = readout
        n_nodes = self.patch_embed.grid_size ** 2
        self.head = nn.Linear(dim * n_nodes if readout == "flatten" else dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch_embed(x)
        for norm, layer in zip(self.norms, self.layers):
            h = h + layer(norm(h), self.adj)
        return self.head(h.flatten(1) if self.readout == "flatten" else h.mean(dim=1))


@register_model
def gcn(num_classes=10, in_chans=3, img_size=32, act="relu", **kwargs) -> GCN:
    """GCN on the patch grid. kwargs: ``patch_size`` (default: 2 up to 16 px,
    4 up to 64 px, 8 up to 128 px, else 16), ``dim`` (128), ``depth`` (3), ``readout``
    ("flatten" or "mean")."""
    return GCN(num_classes, in_chans, img_size, act, **kwargs)
