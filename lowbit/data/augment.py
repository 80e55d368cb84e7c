"""Data augmentation on whole batches (N, C, H, W), vectorised and seeded by a torch.Generator.

Inputs are float images in [0, 1], BEFORE :func:`normalize` (colour jitter clamps to [0, 1] and
padding/erasing fill with 0 = black). Every random draw comes from the ``generator`` passed to
the pipeline (the global RNG if None), made on the generator's device and moved to the batch's
device, so the same generator state gives the same batch on any device.

Presets (``get_augmentation(name, img_size, in_chans, **kw)``):

* ``none``: identity.
* ``basic``: random crop after zero padding (4 px, or ``max(1, img_size // 8)`` below 32 px) and
  horizontal flip with p=0.5 (pass ``flip=False`` for digits, where a mirror is not the same class).
* ``extended``: ``basic`` + colour jitter (brightness, contrast, and saturation for 3 channels;
  factors uniform in [1-0.2, 1+0.2], p=1), rotation uniform in +-10 degrees (bilinear,
  ``affine_grid``/``grid_sample``, zero fill) and random erasing (p=0.5, area 2-20 %, aspect
  ratio log-uniform in [0.3, 3.3], filled with 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from lowbit.registry import Registry

Gen = Optional[torch.Generator]
Step = Callable[[torch.Tensor, Gen], torch.Tensor]
AUGMENTATIONS = Registry("augmentation")
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights, as in torchvision's rgb_to_grayscale


def _rand(shape: tuple[int, ...], generator: Gen, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) drawn on the generator's device, returned on ``device``."""
    gen_device = generator.device if generator is not None else "cpu"
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def random_crop(x: torch.Tensor, generator: Gen, padding: int) -> torch.Tensor:
    """Zero-pad by ``padding`` on every side, then crop H x W at a random offset per image."""
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    span = 2 * padding + 1
    offsets = (_rand((2, n), generator, x.device) * span).long().clamp_(max=span - 1)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]


def random_hflip(x: torch.Tensor, generator: Gen, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``."""
    flip = _rand((x.shape[0],), generator, x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def color_jitter(x: torch.Tensor, generator: Gen, strength: float = 0.2) -> torch.Tensor:
    """Brightness, contrast, (3 channels) saturation by factors in [1-s, 1+s]; clamps to [0, 1]."""
    n = x.shape[0]
    factors = 1 + strength * (2 * _rand((3, n, 1, 1, 1), generator, x.device) - 1)
    x = (x * factors[0]).clamp(0, 1)
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * factors[1] + mean).clamp(0, 1)
    if x.shape[1] == 3:
        gray = _gray(x)
        x = ((x - gray) * factors[2] + gray).clamp(0, 1)
    return x


def random_rotation(x: torch.Tensor, generator: Gen, degrees: float = 10.0) -> torch.Tensor:
    """Rotate each image about its centre by an angle uniform in [-degrees, degrees]; zero fill."""
    n = x.shape[0]
    angle = (2 * _rand((n,), generator, x.device) - 1) * math.radians(degrees)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_erasing(x: torch.Tensor, generator: Gen, p: float = 0.5,
                   scale: tuple[float, float] = (0.02, 0.2),
                   ratio: tuple[float, float] = (0.3, 3.3)) -> torch.Tensor:
    """With probability ``p`` per image, zero one random rectangle of area ``scale`` x H x W."""
    n, _, h, w = x.shape
    u = _rand((5, n), generator, x.device)
    area = h * w * (scale[0] + (scale[1] - scale[0]) * u[0])
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[1])
    eh = (area * aspect).sqrt().round().clamp(1, h)
    ew = (area / aspect).sqrt().round().clamp(1, w)
    top = (u[2] * (h - eh + 1)).floor()
    left = (u[3] * (w - ew + 1)).floor()
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    box = ((rows >= top[:, None, None]) & (rows < (top + eh)[:, None, None])
           & (cols >= left[:, None, None]) & (cols < (left + ew)[:, None, None]))
    erase = box & (u[4] < p)[:, None, None]
    return x.masked_fill(erase[:, None], 0.0)


@dataclass(frozen=True)
class Augmentation:
    """A named sequence of batched steps; call as ``aug(x, generator) -> x`` (same shape/dtype)."""

    name: str
    steps: tuple[Step, ...] = ()

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for step in self.steps:
            x = step(x, generator)
        return x


def register_augmentation(name: str):
    """Decorator: register ``builder(img_size, in_chans, **kw) -> Augmentation`` under ``name``."""
    return AUGMENTATIONS.register(name)


def list_augmentations() -> list[str]:
    """Sorted names of the augmentation presets."""
    return AUGMENTATIONS.names()


def get_augmentation(name: str, img_size: int, in_chans: int, **kw) -> Augmentation:
    """Build preset ``name`` for (in_chans, img_size, img_size) images (see the module doc)."""
    builder = AUGMENTATIONS.get(name)
    if not all(isinstance(v, int) and v > 0 for v in (img_size, in_chans)):
        raise ValueError(f"img_size and in_chans must be positive ints, got {img_size!r}, {in_chans!r}")
    return builder(img_size, in_chans, **kw)


def default_padding(img_size: int) -> int:
    """Crop padding: 4 px for images of 32 px and more, else ``max(1, img_size // 8)``."""
    return 4 if img_size >= 32 else max(1, img_size // 8)


@register_augmentation("none")
def _none(img_size: int, in_chans: int) -> Augmentation:
    return Augmentation("none")


def _basic_steps(img_size: int, padding: int | None, flip: bool) -> tuple[Step, ...]:
    crop = partial(random_crop, padding=default_padding(img_size) if padding is None else padding)
    return (crop, random_hflip) if flip else (crop,)


@register_augmentation("basic")
def _basic(img_size: int, in_chans: int, padding: int | None = None,
           flip: bool = True) -> Augmentation:
    return Augmentation("basic", _basic_steps(img_size, padding, flip))


@register_augmentation("extended")
def _extended(img_size: int, in_chans: int, padding: int | None = None, flip: bool = True,
              jitter: float = 0.2, degrees: float = 10.0, erase_p: float = 0.5) -> Augmentation:
    steps = _basic_steps(img_size, padding, flip) + (
        partial(color_jitter, strength=jitter), partial(random_rotation, degrees=degrees),
        partial(random_erasing, p=erase_p))
    return Augmentation("extended", steps)


def normalize(x: torch.Tensor, mean: Sequence[float] | torch.Tensor,
              std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` per channel of an (N, C, H, W) batch; mean/std have C entries."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(-1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(-1)
    if m.numel() != x.shape[1] or s.numel() != x.shape[1]:
        raise ValueError(f"normalize: need {x.shape[1]} mean/std values, "
                         f"got {m.numel()} and {s.numel()}")
    return (x - m.view(1, -1, 1, 1)) / s.view(1, -1, 1, 1)
