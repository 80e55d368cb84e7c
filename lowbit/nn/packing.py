"""The one size computation and the one weight packer, shared by footprint, cost, PTQ and export.

Storage of one quantized weight (:func:`weight_storage`, the formula; see :mod:`lowbit.nn.footprint`
for the table): element codes ``numel * storage_bits`` bit-packed and rounded up to whole bytes
(``lowbit.pack``), plus the scales as stored (``Format.scale_storage_bits``). Every other parameter
counts at its dtype's size; buffers are not counted (deployment folds them).

:func:`pack_weights` encodes and bit-packs every quantized weight of a model for real
(``lowbit.encode``; a FIXED calibrated scale is honoured) and checks that the bytes it produced are
exactly what :func:`weight_storage` says, so ``lowbit.nn.footprint``, ``lowbit.cost.model_cost``,
``lowbit.ptq.packed_size`` and the packed checkpoint of ``lowbit.export.packed`` agree by construction
(footprint and cost count bits; PTQ and the checkpoint count whole bytes per packed tensor: they
differ by less than one byte per quantized weight, and not at all where ``numel * bits`` is a
multiple of 8).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

import lowbit
from lowbit.formats.tables import values as table_values
from lowbit.ops import quantize
from lowbit.ops.encode import Encoded

from .modules import QuantLayer
from .walker import walk

LEARNABLE = ("LSQQuantizer", "LearnableCodebook")


def scale_count(shape, spec) -> int:
    """Number of scale values of a tensor of ``shape`` quantized per ``spec``."""
    if spec.scaling == "none":
        return 0
    if spec.scaling == "tensor":
        return 1
    axis = spec.axis % len(shape)
    n = math.prod(shape)
    if spec.scaling == "channel":
        return shape[axis]
    return math.ceil(shape[axis] / spec.chunk) * (n // shape[axis])


def weight_storage(shape, spec, learn: str | None = None) -> tuple[int, int]:
    """(element bits, scale/metadata bits) of one weight tensor quantized per ``spec``.

    ``learn="codebook"``: a learnable codebook stores ceil(log2 K)-bit indices plus its K fp32 values
    (and a per-tensor scale unless the spec is a direct cast).
    """
    n, fmt = math.prod(shape), spec.format
    if learn == "codebook":
        k = len(table_values(fmt.element))
        scale_bits = 32 * k + (32 if spec.scaling != "none" else 0)
        return n * max(1, math.ceil(math.log2(k))), scale_bits
    return n * fmt.storage_bits, fmt.scale_storage_bits(scale_count(shape, spec))


def packed_bytes(element_bits: int) -> int:
    """Bytes of a bit-packed code tensor of ``element_bits`` bits (``lowbit.pack`` pads the last byte)."""
    return (element_bits + 7) // 8


# ---- encoding weights ------------------------------------------------------------------------------
def weight_codes(w: torch.Tensor, spec, scale=None, backend: str | None = None):
    """(codes, [scale tensors as stored]) of weight ``w`` quantized per ``spec`` with ``scale``.

    ``decode`` of the result equals ``lowbit.quantize(w, spec, scale=scale)`` bit for bit (tested).
    """
    f = spec.format
    if scale is None:
        enc = lowbit.encode(w.detach().float(), spec)
        s = enc.scale
        return enc.codes, [t for t in (s if isinstance(s, tuple) else (s,)) if isinstance(t, torch.Tensor)]
    q = quantize(w.detach().float(), spec, scale=scale, backend=backend)
    if f.asymmetric:
        s, zp = scale
        return f.encode(torch.round(q / s) + zp), [s, zp]
    return f.encode(q / scale), [scale]


def decode_codes(codes, spec, scales) -> torch.Tensor:
    """Values of codes from :func:`weight_codes` with a fixed scale (the inverse, for checks)."""
    f = spec.format
    v = f.decode(codes)
    if f.asymmetric:
        return (v - scales[1]) * scales[0]
    return v * scales[0]


def encode_weight(w: torch.Tensor, q) -> Encoded:
    """The :class:`Encoded` of weight ``w`` under quantizer ``q`` (fixed calibrated scale honoured)."""
    spec = q.spec
    fixed = q.fixed_scale() if hasattr(q, "fixed_scale") else None
    if fixed is None:
        return lowbit.encode(w.detach().float(), spec)
    codes, _ = weight_codes(w, spec, fixed, getattr(q, "backend", None))
    return Encoded(codes, fixed, spec, tuple(w.shape))


@dataclass
class PackedWeight:
    """One quantized weight, encoded and packed: what a checkpoint stores and what its size is."""

    name: str                  # the layer's name
    module: nn.Module
    quantizer: nn.Module
    encoded: Encoded
    data: torch.Tensor         # uint8, the packed element codes
    scales: list               # the scale tensors as stored

    @property
    def scale_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.scales)

    def row(self) -> dict:
        spec = self.quantizer.spec
        return {"name": self.name, "format": spec.format.name, "scaling": spec.scaling,
                "numel": self.module.weight.numel(), "packed_bytes": self.data.numel(),
                "scale_bytes": self.scale_bytes}


def _stored_scales(scale) -> list:
    if scale is None:
        return []
    return [torch.as_tensor(t) for t in (scale if isinstance(scale, tuple) else (scale,))]


def pack_weights(model: nn.Module) -> list[PackedWeight]:
    """Every quantized weight of ``model`` (module order, through the model walker), encoded and packed.

    Raises AssertionError if a packed tensor's size differs from :func:`weight_storage` (the one
    size computation).
    """
    out = []
    for li in walk(model):
        m = li.module
        q = getattr(m, "weight_quantizer", None) if isinstance(m, QuantLayer) else None
        if q is None:
            continue
        enc = encode_weight(m.weight, q)
        data = lowbit.pack(enc.codes.reshape(-1), q.spec.format.storage_bits)
        pw = PackedWeight(li.name, m, q, enc, data, _stored_scales(enc.scale))
        eb, sb = weight_storage(tuple(m.weight.shape), q.spec)
        if (pw.data.numel(), 8 * pw.scale_bytes) != (packed_bytes(eb), sb):
            raise AssertionError(f"layer {li.name!r}: packed {pw.data.numel()} + {pw.scale_bytes} bytes, the size "
                                 f"formula says {packed_bytes(eb)} + {sb / 8:g} ({q.spec.format.name})")
        out.append(pw)
    return out


def quantizer_parameter_ids(model: nn.Module) -> set:
    """Parameters of learnable quantizers: counted in their layer's scale bits, not as weights."""
    return {id(p) for m in model.modules() if type(m).__name__ in LEARNABLE for p in m.parameters()}
