"""Fixed-spec quantizer modules: fake-quantize a tensor, its gradient, or a weight.

Each holds a resolved :class:`lowbit.QuantSpec` and calls :func:`lowbit.quantize`, whose contract
(rounding, saturation, scales, STE / clipped-STE gradient) applies unchanged. Scales are dynamic:
computed from the tensor on every call. They own no parameters or buffers, so attaching them to a
model adds no state_dict keys. Learnable variants live in :mod:`lowbit.nn.learnable`.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from lowbit.ops import QuantSpec, quantize


def describe(spec: QuantSpec) -> str:
    """Short text for a spec: format, scaling (and axis), rounding when not nearest."""
    s = f"{spec.format.name}"
    if spec.scaling not in ("none",):
        s += f"/{spec.scaling}"
        if spec.scaling in ("channel", "group", "block"):
            s += f"@{spec.axis}"
    if spec.rounding != "nearest":
        s += f"/{spec.rounding}"
    return s


@functools.lru_cache(maxsize=None)
def nchw_spec(spec: QuantSpec) -> QuantSpec:
    """``spec`` with its channel/group/block axis on dim 1 (the channels of an NCHW feature map)."""
    return spec.replace(axis=1)


def spec_for(spec: QuantSpec, x: torch.Tensor, nchw: bool) -> QuantSpec:
    """The spec to use on ``x``: with ``nchw``, 4-D tensors get their axis on the channels."""
    return nchw_spec(spec) if nchw and x.dim() == 4 else spec


class FakeQuantizer(nn.Module):
    """x -> quantize(x, spec): dynamic scales, STE or clipped STE backward (per ``spec.grad``).

    ``nchw=True`` (modules whose tensor layout is not known in advance: activations, other leaves)
    moves a channel/group/block axis to dim 1 for 4-D tensors, so MX blocks run along the channels
    of a feature map, as they do for the conv that consumes it, instead of along its width.
    """

    def __init__(self, spec: QuantSpec, nchw: bool = False):
        super().__init__()
        self.spec, self.nchw = spec, nchw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantize(x, spec_for(self.spec, x, self.nchw))

    def extra_repr(self) -> str:
        return describe(self.spec)


class WeightQuantizer(FakeQuantizer):
    """A FakeQuantizer that, outside autograd (evaluation), reuses the quantized weight while the
    weight tensor is unchanged (same storage and version counter). Training re-quantizes every call."""

    def __init__(self, spec: QuantSpec):
        super().__init__(spec)
        self._cache = None

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if (torch.is_grad_enabled() and w.requires_grad) or self.spec.rounding == "stochastic":
            self._cache = None
            return quantize(w, self.spec)
        key = (w.data_ptr(), w._version, w.dtype, w.device, tuple(w.shape))
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, quantize(w, self.spec))
        return self._cache[1]


class _GradQuant(torch.autograd.Function):
    """Identity forward; the backward gradient is fake-quantized (low-precision training)."""

    @staticmethod
    def forward(ctx, x, spec):
        ctx.spec = spec
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return quantize(g.contiguous(), ctx.spec), None


def quantize_grad(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """``x`` unchanged; dL/dx is replaced by quantize(dL/dx, spec) in the backward pass."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x
    return _GradQuant.apply(x, spec)


class GradQuantizer(nn.Module):
    """Module form of :func:`quantize_grad`."""

    def __init__(self, spec: QuantSpec):
        super().__init__()
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantize_grad(x, self.spec)

    def extra_repr(self) -> str:
        return describe(self.spec)
