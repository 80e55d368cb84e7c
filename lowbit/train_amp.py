"""Automatic mixed precision for :mod:`lowbit.train`: the mode names, the autocast dtype, the scaler.

``amp`` modes: ``off`` (fp32 throughout); ``fp16`` / ``bf16`` run the forward pass under
``torch.autocast`` in that dtype (matmuls and convolutions in 16 bits, reductions and the loss in
fp32) on CPU and CUDA alike; ``bf16`` on a CUDA device without bf16 support falls back to fp16 and
the run records the dtype it used (``amp_dtype``); ``auto`` is fp16 on CUDA and off on CPU. fp16
scales the loss with a ``GradScaler`` (dynamic loss scaling: a step whose gradients overflow is
skipped and the scale halved), bf16 needs none (fp32's exponent range).
"""
from __future__ import annotations

import torch

AMP_MODES = ("off", "auto", "bf16", "fp16")


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``mode`` on ``device`` (None = no autocast); see the module doc."""
    if mode not in AMP_MODES:
        raise ValueError(f"amp: expected one of {', '.join(AMP_MODES)}, got {mode!r}")
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "bf16" and (device.type != "cuda" or torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def make_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Loss scaling for fp16 autocast (disabled, a pass-through, for bf16 and fp32)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def dtype_name(dtype: torch.dtype | None) -> str:
    """``float16`` / ``bfloat16`` / ``off``: the ``amp_dtype`` column of a run."""
    return str(dtype).replace("torch.", "") if dtype else "off"


__all__ = ["AMP_MODES", "amp_dtype", "make_scaler", "dtype_name"]
