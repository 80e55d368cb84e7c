"""Measured storage of a quantized model: every quantized weight encoded and bit-packed for real
(:func:`lowbit.nn.packing.pack_weights`, which checks each tensor against the one size formula).

For each weight quantizer: the element codes (``lowbit.encode`` for block formats and direct casts,
whose scales come from the data; for a FIXED calibrated scale, the codes of quantize(w, scale) / scale,
because ``lowbit.encode`` has no ``scale=`` argument yet) packed with ``lowbit.pack`` at the element
width, plus the scale tensors as stored (fp32 per-tensor / per-channel scales and zero points, E8M0
bytes for MX, E4M3 bytes plus the fp32 tensor scale for NVFP4). Every other parameter (biases,
norms, weights left in float) counts at 4 bytes. Buffers (BatchNorm running statistics) are not
counted, as in :func:`lowbit.nn.footprint` (deployment folds them).
"""
from __future__ import annotations

from torch import nn

from lowbit.nn.packing import decode_codes, pack_weights, quantizer_parameter_ids, weight_codes

__all__ = ["decode_codes", "packed_size", "weight_codes"]


def packed_size(model: nn.Module) -> dict:
    """{"bytes", "weight_bytes", "scale_bytes", "other_bytes", "fp32_bytes", "rows"} of ``model``."""
    packed = pack_weights(model)
    rows = [pw.row() for pw in packed]
    counted = {id(pw.module.weight) for pw in packed}
    qids = quantizer_parameter_ids(model)
    other = [p for p in model.parameters() if id(p) not in counted | qids]
    wb = sum(r["packed_bytes"] for r in rows)
    sb = sum(r["scale_bytes"] for r in rows)
    ob = 4 * sum(p.numel() for p in other)
    fp32 = 4 * sum(p.numel() for p in model.parameters() if id(p) not in qids)
    return {"bytes": wb + sb + ob, "weight_bytes": wb, "scale_bytes": sb, "other_bytes": ob, "fp32_bytes": fp32,
            "rows": rows}
