"""Resize every split of a dataset to the model's input size (the study's ``Resize(224)``).

Bilinear interpolation (``torch.nn.functional.interpolate``, ``align_corners=False``, antialiased
when shrinking), results clamped to [0, 1]. Done once on the stored tensors, before augmentation;
``mean``/``std`` are recomputed on the resized training split.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from lowbit.data.splits import DatasetSplits, TensorSplit


def resize_splits(splits: DatasetSplits, size: int, batch: int = 1024) -> DatasetSplits:
    """``splits`` with every image resized to ``size`` x ``size`` (unchanged if already that size)."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"resize: expected an int >= 1, got {size!r}")
    if size == splits.img_size:
        return splits

    def one(split: TensorSplit) -> TensorSplit:
        x = split.x.float()
        parts = [F.interpolate(x[i:i + batch], size=(size, size), mode="bilinear", align_corners=False,
                               antialias=size < splits.img_size).clamp_(0, 1) for i in range(0, len(x), batch)]
        out = torch.cat(parts) if parts else x.new_zeros((0, splits.in_chans, size, size))
        return TensorSplit(out, split.y)

    train = one(splits.train)
    dims = (0, 2, 3)
    mean = tuple(float(v) for v in train.x.mean(dims)) if len(train) else splits.mean
    std = tuple(float(v) for v in train.x.std(dims).clamp_min(1e-6)) if len(train) > 1 else splits.std
    return dataclasses.replace(splits, train=train, val=one(splits.val), test=one(splits.test),
                               img_size=size, mean=mean, std=std)


__all__ = ["resize_splits"]
