"""Vision Transformer (Dosovitskiy et al., 2021) and DeiT-Tiny (Touvron et al., 2021).

Attention is written with explicit ops -- two ``torch.matmul`` calls and an
``nn.Softmax`` module -- rather than ``F.scaled_dot_product_attention``, so a
later pass can quantize each of them separately.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import Mlp, PatchEmbed, default_patch_size, init_transformer
from .registry import register_model


class Attention(nn.Module):
    """Multi-head self-attention: softmax(q k^T * scale) v, heads concatenated, then ``proj``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.softmax = nn.Softmax(dim=-1)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        attn = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        attn = self.softmax(attn)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


class Block(nn.Module):
    """Pre-LN transformer block: x += Attn(LN(x)); x += MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, act="gelu", qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """Patch embedding + class token + learned positional embedding -> blocks -> LN -> head(cls)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size: int = 32, act="relu",
                 patch_size: int | None = None, embed_dim: int = 128, depth: int = 4,
                 num_heads: int = 4, mlp_ratio: float = 2.0, qkv_bias: bool = True):
        super().__init__()
        patch_size = patch_size or default_patch_size(img_size)
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.blocks = nn.Sequential(
            *(Block(embed_dim, num_heads, mlp_ratio, act, qkv_bias) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        init_transformer(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


@register_model
def vit(num_classes=10, in_chans=3, img_size=32, act="relu", **kwargs) -> VisionTransformer:
    """Small ViT for CPU training. kwargs: ``patch_size`` (default: 2 up to 16 px,
    4 up to 64 px, 8 up to 128 px, else 16), ``embed_dim`` (128), ``depth`` (4),
    ``num_heads`` (4), ``mlp_ratio`` (2.0), ``qkv_bias`` (True)."""
    return VisionTransformer(num_classes, in_chans, img_size, act, **kwargs)


@register_model
def deit_tiny(num_classes=10, in_chans=3, img_size=32, act="relu", **kwargs) -> VisionTransformer:
    """DeiT-Tiny: embed_dim 192, depth 12, 3 heads, mlp_ratio 4, class token, no
    distillation token; 5,717,416 parameters at 224 px / 1000 classes.

    Patch size is 16 at img_size >= 129 as in the paper; for small images it
    falls back to ``default_patch_size`` (2 at 8 px, 4 at 28/32 px, 8 up to
    128 px) so that the token grid stays useful. Any kwarg overrides these.
    The paper uses GELU: pass ``act="gelu"`` for the original model.
    """
    cfg = dict(patch_size=default_patch_size(img_size), embed_dim=192, depth=12,
               num_heads=3, mlp_ratio=4.0)
    cfg.update(kwargs)
    return VisionTransformer(num_classes, in_chans, img_size, act, **cfg)
