"""Measured storage of a quantized model: every quantized weight encoded and bit-packed for real.

For each weight quantizer: the element codes (``lowbit.encode`` for block formats and direct casts,
whose scales come from the data; for a FIXED calibrated scale, the codes of quantize(w, scale) / scale,
because ``lowbit.encode`` has no ``scale=`` argument yet) packed with ``lowbit.pack`` at the element
width, plus the scale tensors as stored (fp32 per-tensor / per-channel scales and zero points, E8M0
bytes for MX, E4M3 bytes plus the fp32 tensor scale for NVFP4). Every other parameter (biases,
norms, weights left in float) counts at 4 bytes. Buffers (BatchNorm running statistics) are not
counted, as in :func:`lowbit.nn.footprint` (deployment folds them).
"""
from __future__ import annotations

import torch
from torch import nn

import lowbit
from lowbit.nn.modules import QuantLayer
from lowbit.ops import quantize


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


def packed_size(model: nn.Module) -> dict:
    """{"bytes", "weight_bytes", "scale_bytes", "other_bytes", "fp32_bytes", "rows"} of ``model``."""
    rows, counted = [], set()
    for name, m in model.named_modules():
        q = getattr(m, "weight_quantizer", None) if isinstance(m, QuantLayer) else None
        if q is None:
            continue
        fixed = q.fixed_scale() if hasattr(q, "fixed_scale") else None
        codes, scales = weight_codes(m.weight, q.spec, fixed, getattr(q, "backend", None))
        data = lowbit.pack(codes.reshape(-1), q.spec.format.storage_bits)
        sbytes = sum(t.numel() * t.element_size() for t in scales)
        counted.add(id(m.weight))
        rows.append({"name": name, "format": q.spec.format.name, "scaling": q.spec.scaling,
                     "numel": m.weight.numel(), "packed_bytes": data.numel(), "scale_bytes": sbytes})
    qids = {id(p) for mod in model.modules() if type(mod).__name__ in ("LSQQuantizer", "LearnableCodebook")
            for p in mod.parameters()}
    other = [p for p in model.parameters() if id(p) not in counted | qids]
    wb = sum(r["packed_bytes"] for r in rows)
    sb = sum(r["scale_bytes"] for r in rows)
    ob = 4 * sum(p.numel() for p in other)
    fp32 = 4 * sum(p.numel() for p in model.parameters() if id(p) not in qids)
    return {"bytes": wb + sb + ob, "weight_bytes": wb, "scale_bytes": sb, "other_bytes": ob, "fp32_bytes": fp32,
            "rows": rows}
