"""Precision-specific softmax: each stage held in its own format.

    x' = Q_in(x)                  the logits
    e  = Q_exp(exp(x' - max x'))  in (0, 1]; the max subtraction is exact in fp32
    s  = Q_sum(sum e)             in [1, n]
    y  = Q_out(e / s)

Each Q is a resolved :class:`lowbit.QuantSpec` or None (fp32); gradients flow through every stage
by the spec's STE rule. Masked logits (-inf, as produced by attention masks) stay -inf: quantizing
them would saturate to -max and leak probability into masked positions. The result has the input's
dtype unless ``dtype`` is given (as ``torch.softmax``).

The true sum is >= 1 (the max term is exp(0) = 1). A format whose scaled range cannot hold [1, n]
(fp2 = {0, +-2} with a per-tensor scale set by the largest row sum, say) can round a small row sum
to 0; such a row keeps its fp32 sum, so that the division stays finite instead of giving NaN.
"""
from __future__ import annotations

import torch
from torch import nn

from lowbit.ops import QuantSpec, quantize

from .quantizers import describe

PARTS = ("input", "exp", "sum", "output")


def _q(x, spec):
    return x if spec is None else quantize(x, spec)


def quantized_softmax(x: torch.Tensor, dim: int, specs: dict, dtype=None) -> torch.Tensor:
    """softmax(x, dim) with ``specs`` = {"input"|"exp"|"sum"|"output": QuantSpec or None}."""
    if dtype is not None:
        x = x.to(dtype)
    q_in = specs.get("input")
    if q_in is not None:
        masked = x == float("-inf")
        x = torch.where(masked, x, quantize(torch.where(masked, 0.0, x), q_in))  # zeros move no scale
    m = x.amax(dim, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, 0.0)
    e = _q(torch.exp(x - m), specs.get("exp"))
    total = e.sum(dim, keepdim=True)
    s = _q(total, specs.get("sum"))
    if specs.get("sum") is not None:
        s = torch.where(s > 0, s, total)  # underflow to 0 (module docstring)
    return _q(e / s, specs.get("output"))


class QuantSoftmax(nn.Module):
    """nn.Softmax(dim) with per-stage formats (resolved QuantSpecs or None)."""

    def __init__(self, dim: int = -1, input: QuantSpec | None = None, exp: QuantSpec | None = None,
                 sum: QuantSpec | None = None, output: QuantSpec | None = None):
        super().__init__()
        self.dim = dim
        self.specs = {"input": input, "exp": exp, "sum": sum, "output": output}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantized_softmax(x, self.dim, self.specs)

    def extra_repr(self) -> str:
        parts = ", ".join(f"{k}={describe(v) if v is not None else 'fp32'}" for k, v in self.specs.items())
        return f"dim={self.dim}, {parts}"
