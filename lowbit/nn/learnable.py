"""Learnable quantizers: LSQ scales (Esser et al., ICLR 2020) and learnable codebooks.

LSQ. Forward q = quantize(x, spec, scale=s) with a scale Parameter s (per tensor, or per channel of
a weight). With y = x / s, the element cast c(y) (round to the int grid, minifloat cast, or nearest
codebook value) and the format's range [lo, hi] in scaled units:

    dq/dx = 1 inside [lo, hi], else 0                       (clipped straight-through)
    dq/ds = c(y) - y inside, c(y) (= lo or hi) outside      (LSQ eq. 3; for floats c(y) plays the
                                                            role of round(x/s))
and the scale gradient is multiplied by g = 1 / sqrt(N * Qp), N = elements per scale value, Qp = the
format's largest value (qmax for ints, max normal for floats). Initialisation on the first forward:
``init="lsq"`` s = 2 mean|x| / sqrt(Qp) (the paper's), ``init="amax"`` s = amax|x| / Qp (no clipping).
Unsigned integer formats use zero point 0 (LSQ's unsigned activations). Scales are clamped to
>= 1e-12 in the forward so they stay positive.

Codebooks. Values v (a Parameter, any order; sorted on every forward) quantize
x' = x / s to the nearest value (``lowbit.formats.cast.codebook_cast``, ties to the even index). The
unit s is set once, on the first forward: s = amax|x| / max|v_init| (``scaling="tensor"``) or 1
(``"none"``), and then stays fixed (a buffer), so the values alone set the magnitudes. (A unit
recomputed from amax|x| every step couples the largest weight to every level; on the digits test it
made training diverge: loss 2.4 against 0.4.) Backward: dL/dv_k = s * sum of dL/dq over the elements
that chose v_k (scatter_add; torch.sort routes it back to the unsorted Parameter), dL/dx = dL/dq
(straight-through).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from lowbit.formats.cast import codebook_cast
from lowbit.formats.registry import get_format
from lowbit.formats.tables import values as table_values
from lowbit.ops import QuantSpec, quantize

from .quantizers import describe

INITS = ("lsq", "amax")


def _range(fmt) -> tuple[float, float]:
    """The values a format spans in scaled units (zero point 0 for unsigned ints)."""
    return fmt.value_range


def _sum_to(t: torch.Tensor, shape) -> torch.Tensor:
    return t.sum() if len(shape) == 0 else t.sum_to_size(shape)


class _LSQ(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, s, spec, lo, hi):
        xf, sf = x.float(), s.float()
        scale = (sf, torch.zeros_like(sf)) if spec.format.asymmetric else sf
        q = quantize(xf, spec, scale=scale)
        ctx.save_for_backward(xf, sf, q)
        ctx.lo, ctx.hi, ctx.s_shape = lo, hi, s.shape
        return q.to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        xf, sf, q = ctx.saved_tensors
        y, c = xf / sf, q / sf
        inside = (y >= ctx.lo) & (y <= ctx.hi)
        gf = g.float()
        gx = torch.where(inside, gf, 0.0).to(g.dtype)
        gs = _sum_to(gf * torch.where(inside, c - y, c), ctx.s_shape)
        return gx, gs, None, None, None


def _grad_scale(s: torch.Tensor, g: float) -> torch.Tensor:
    """s in the forward; its gradient multiplied by g in the backward."""
    return (s - s * g).detach() + s * g


class LSQQuantizer(nn.Module):
    """Fake quantization with a learnable scale (LSQ). ``spec.scaling`` must be ``tensor`` or ``channel``.

    ``scale_shape``: () for per-tensor; for per-channel the shape that broadcasts against the tensor
    (e.g. (out, 1, 1, 1) for a conv weight with ``spec.axis == 0``). State: ``scale`` (Parameter) and
    ``initialized`` (bool buffer), so a saved model restores its learned scales.
    """

    def __init__(self, spec: QuantSpec, scale_shape=(), init: str = "lsq"):
        super().__init__()
        if spec.scaling not in ("tensor", "channel") or spec.scaling not in spec.format.scalings:
            raise ValueError(f"LSQ needs scaling 'tensor' or 'channel' and an int, float or codebook format "
                             f"(got scaling={spec.scaling!r}, format {spec.format.name!r}); allowed: "
                             f"tensor, channel scaling; block formats have their own scales")
        if init not in INITS:
            raise ValueError(f"init={init!r} is not allowed; allowed: {', '.join(INITS)}")
        self.spec, self.init = spec, init
        self.lo, self.hi = _range(spec.format)
        self.qp = self.hi if self.hi > 0 else abs(self.lo)  # LSQ's Qp: the largest positive level
        self.scale = nn.Parameter(torch.ones(tuple(scale_shape)))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor):
        a = x.detach().float().abs()
        dims = [d for d in range(a.dim()) if self.scale.dim() == 0 or self.scale.shape[d] == 1]
        if self.init == "lsq":
            s = 2 * a.mean(dim=dims, keepdim=True) / math.sqrt(self.qp)
        else:
            s = a.amax(dim=dims, keepdim=True) / self.qp
        s = torch.where(s > 0, s, 1.0).reshape(self.scale.shape)
        self.scale.copy_(s)
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialized):
            self._initialize(x)
        n = x.numel() // max(1, self.scale.numel())
        s = _grad_scale(self.scale.clamp(min=1e-12), 1.0 / math.sqrt(max(1, n) * self.qp))
        return _LSQ.apply(x, s, self.spec, self.lo, self.hi)

    def extra_repr(self) -> str:
        return f"{describe(self.spec)}, lsq scale {tuple(self.scale.shape)}, init={self.init}"


class _Codebook(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, v, s):
        q, idx = codebook_cast(x.float() / s, v.detach().float())
        ctx.save_for_backward(idx, s)
        ctx.k = v.shape[0]
        return (q * s).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        idx, s = ctx.saved_tensors
        gv = torch.zeros(ctx.k, dtype=torch.float32, device=g.device)
        gv.scatter_add_(0, idx.reshape(-1), (g.float() * s).reshape(-1))
        return g, gv, None


def codebook_values(source) -> np.ndarray:
    """Sorted distinct values from a format (name or object; block formats: the element's) or a list."""
    if isinstance(source, (list, tuple, np.ndarray, torch.Tensor)):
        vals = np.asarray(source, dtype=np.float64)
    else:
        fmt = get_format(source)
        fmt = fmt.element
        if not fmt.holds_tensors or fmt.bits > 8:
            raise ValueError(f"format {fmt.name!r} cannot seed a codebook; allowed: float, int or codebook "
                             f"formats of at most 8 bits")
        vals = np.asarray(table_values(fmt), dtype=np.float64)
    vals = np.unique(vals + 0.0)  # -0.0 and 0.0 are one value
    if vals.size < 2:
        raise ValueError(f"a codebook needs at least 2 distinct values, got {vals.tolist()}")
    return vals


class LearnableCodebook(nn.Module):
    """Nearest-value quantization with learnable values (module docstring for the gradients).

    ``values``: a format (name/object: its value set, e.g. fp2 -> {-2, 0, 2}, nf4, int4) or a list.
    ``scaling``: ``"tensor"`` (unit s = amax|x| / max|v_init| from the first forward, then fixed) or
    ``"none"`` (s = 1). State: ``values`` (Parameter), ``scale`` and ``initialized`` (buffers).
    Used for weights (``learn_weight="codebook"``) and for activations (``learn_act="codebook"``: the
    unit comes from the first batch's amax, then stays fixed like a calibrated scale).
    """

    def __init__(self, values, scaling: str = "tensor", spec: QuantSpec | None = None):
        super().__init__()
        if scaling not in ("tensor", "none"):
            raise ValueError(f"scaling={scaling!r} is not allowed; allowed: tensor, none")
        vals = codebook_values(values)
        self.scaling = scaling
        self.spec = spec  # the slot's spec (its format's bits count in footprints), None if built from a list
        self.values = nn.Parameter(torch.tensor(vals, dtype=torch.float32))
        self.ref_max = float(np.abs(vals).max())
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("initialized", torch.tensor(scaling == "none"))

    @classmethod
    def from_spec(cls, spec: QuantSpec) -> "LearnableCodebook":
        return cls(spec.format, "none" if spec.scaling == "none" else "tensor", spec)

    def sorted_values(self) -> torch.Tensor:
        return torch.sort(self.values).values

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor):
        amax = torch.where(torch.isfinite(x), x.abs(), 0).amax().float()
        self.scale.copy_(torch.where(amax > 0, amax / self.ref_max, 1.0))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialized):
            self._initialize(x)
        return _Codebook.apply(x, self.sorted_values(), self.scale)

    def extra_repr(self) -> str:
        return f"{self.values.numel()} learnable values, scaling={self.scaling}"
