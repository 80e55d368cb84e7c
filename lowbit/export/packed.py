"""Packed checkpoints: a quantized model's weights stored as real bit-packed codes plus scales.

    save_packed(model_or_assignment, "model.lowbit.safetensors")   # -> PackedInfo (sizes)
    load_packed("model.lowbit.safetensors", fresh_model)           # weights == fake-quantized, bit for bit

File layout (a standard ``.safetensors`` file; any safetensors reader opens it). For every quantized
weight ``P`` (the ``weight`` of a QLinear / QConv1d / QConv2d / QEmbedding with a fixed weight
quantizer: :class:`lowbit.nn.WeightQuantizer` or :class:`lowbit.ptq.CalibratedQuantizer`):

    P                 uint8, the element codes (``lowbit.encode``) packed with ``lowbit.pack`` at the
                      element width (LSB-first bit stream, see :mod:`lowbit.formats.codec`), 1-D
    P::scale0         the scale as stored: fp32 per-tensor / per-channel / per-group scales, the E8M0
                      block exponents (uint8) of MX, the E4M3 block scales (uint8) of NVFP4
    P::scale1         the fp32 zero point (unsigned integers) or the fp32 tensor scale (NVFP4)

Every other parameter is stored as is (its own dtype), as are buffers (BatchNorm running statistics,
calibrated activation scales); the weight quantizers' own scale buffers are not duplicated. The
safetensors metadata holds ``{"lowbit": JSON}``: ``{"version": 1, "weights": {P: {"spec":
QuantSpec.to_dict(), "shape", "bits", "count", "scale": "none"|"tensor"|"pair", "fixed_scale"}},
"buffers": [names of buffer tensors]}``.

Size accounting (:class:`PackedInfo`). ``lowbit.cost.model_cost`` counts, per quantized weight,
``numel * element bits`` plus its scale bits, and every other parameter at 32 bits (no buffers).
The file holds exactly that, except that each packed code tensor is rounded up to whole bytes, so

    params_bytes - cost weight_bytes  in  [0, number of packed tensors)        (0 when all byte-aligned)
    file size = 8 + header bytes + params_bytes + buffer_bytes

where the header (JSON tensor index plus the metadata, space-padded to a multiple of 8 by
safetensors) is the only overhead: a few hundred bytes per tensor, reported as ``header_bytes``.
"""
from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field

import torch
from torch import nn

import lowbit
from lowbit.nn.packing import encode_weight, pack_weights, quantizer_parameter_ids
from lowbit.ops import QuantSpec
from lowbit.ops.encode import Encoded, decode

__all__ = ["PackedInfo", "cost_bytes", "encode_weight", "load_packed", "packed_info", "read_header", "read_metadata",
           "save_packed"]

FORMAT_TAG = "lowbit.packed"
VERSION = 1
SEP = "::"


@dataclass
class PackedInfo:
    """Sizes of a packed checkpoint (bytes)."""

    path: str
    file_bytes: int
    header_bytes: int          # 8-byte length prefix + JSON header (with metadata)
    params_bytes: int          # packed codes + scales + other parameters (what the cost model counts)
    buffer_bytes: int          # buffers (BatchNorm statistics, activation scales): not in the cost model
    packed_tensors: int        # number of packed code tensors (each rounded up to whole bytes)
    fp32_bytes: int            # every parameter at fp32
    rows: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _model_of(obj) -> nn.Module:
    if isinstance(obj, nn.Module):
        return obj
    m = getattr(obj, "model", None)
    if isinstance(m, nn.Module):
        return m
    raise TypeError(f"save_packed expects an nn.Module or a lowbit.nn.Assignment, got {type(obj).__name__}")


def _check_packable(model: nn.Module):
    """Every weight quantizer must be a fixed one with reproducible rounding."""
    from lowbit.nn.modules import QuantLayer
    from lowbit.nn.walker import walk
    for li in walk(model):
        name, q = li.name, getattr(li.module, "weight_quantizer", None)
        if not isinstance(li.module, QuantLayer) or q is None:
            continue
        kind = type(q).__name__
        if kind not in ("WeightQuantizer", "FakeQuantizer", "CalibratedQuantizer"):
            raise ValueError(f"layer {name!r}: weight quantizer {kind} cannot be packed; allowed: WeightQuantizer "
                             f"(quantize_model) or CalibratedQuantizer (lowbit.ptq)")
        if q.spec.rounding == "stochastic":
            raise ValueError(f"layer {name!r}: stochastic rounding cannot be packed reproducibly; allowed: "
                             f"rounding 'nearest' or 'zero'")


def _scale_kind(scale) -> str:
    return "none" if scale is None else "pair" if isinstance(scale, tuple) else "tensor"


def _tensor(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().contiguous().clone()


def save_packed(model_or_assignment, path) -> PackedInfo:
    """Write the packed checkpoint of a quantized model (or an Assignment's model) to ``path``.

    Returns a :class:`PackedInfo` with the sizes (compare ``params_bytes`` with :func:`cost_bytes`).
    """
    from safetensors.torch import save_file

    model = _model_of(model_or_assignment)
    _check_packable(model)
    packed = pack_weights(model)          # the one packer; sizes checked against the one size formula
    tensors, entries, rows = {}, {}, []
    skip = set()
    for pw in packed:
        pname, m, q, enc = (f"{pw.name}.weight" if pw.name else "weight"), pw.module, pw.quantizer, pw.encoded
        tensors[pname] = _tensor(pw.data)
        for i, s in enumerate(pw.scales):
            tensors[f"{pname}{SEP}scale{i}"] = _tensor(s)
        entries[pname] = {"spec": q.spec.to_dict(), "shape": list(enc.shape), "bits": q.spec.format.storage_bits,
                          "count": int(enc.codes.numel()), "scale": _scale_kind(enc.scale),
                          "fixed_scale": bool(hasattr(q, "fixed_scale") and q.fixed_scale() is not None)}
        skip.add(id(m.weight))
        skip |= {id(b) for b in q.buffers()}
        rows.append({**pw.row(), "name": pname})
    qparam_ids = quantizer_parameter_ids(model)
    if qparam_ids:
        raise ValueError("learnable quantizers (LSQ, codebooks) cannot be packed yet; allowed: fixed weight "
                         "quantizers (quantize_model's WeightQuantizer or lowbit.ptq's CalibratedQuantizer)")
    for name, p in model.named_parameters():
        if id(p) not in skip:
            tensors[name] = _tensor(p)
    buffers = []
    for name, b in model.named_buffers():
        if b is None or id(b) in skip:
            continue
        tensors[name] = _tensor(b)
        buffers.append(name)
    meta = {"version": VERSION, "weights": entries, "buffers": buffers}
    save_file(tensors, str(path), metadata={"format": FORMAT_TAG, "lowbit": json.dumps(meta, sort_keys=True)})
    return packed_info(path, rows)


def read_header(path) -> tuple[int, dict]:
    """(header length in bytes, parsed safetensors header) of ``path``."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return n, json.loads(fh.read(n))


def read_metadata(path) -> dict:
    """The lowbit metadata (``{"version", "weights", "buffers"}``) of a packed checkpoint."""
    _, header = read_header(path)
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT_TAG or "lowbit" not in meta:
        raise ValueError(f"{str(path)!r} is not a lowbit packed checkpoint (no {FORMAT_TAG!r} metadata)")
    return json.loads(meta["lowbit"])


def packed_info(path, rows=None) -> PackedInfo:
    """Sizes of the packed checkpoint at ``path`` (from its header; the tensors are not read)."""
    n, header = read_header(path)
    meta = read_metadata(path)
    buffers = set(meta["buffers"])
    pb = bb = fp32 = 0
    for name, t in header.items():
        if name == "__metadata__":
            continue
        size = t["data_offsets"][1] - t["data_offsets"][0]
        if name in buffers:
            bb += size
        else:
            pb += size
        if SEP not in name:
            fp32 += 4 * (meta["weights"][name]["count"] if name in meta["weights"] else
                         math.prod(t["shape"]) if name not in buffers else 0)
    return PackedInfo(str(path), os.path.getsize(path), 8 + n, pb, bb, len(meta["weights"]), fp32, rows or [])


def _spec(d: dict) -> QuantSpec:
    return QuantSpec(**d)


def load_packed(path, model: nn.Module, *, strict: bool = True) -> nn.Module:
    """Load a packed checkpoint into ``model`` (a fresh float model or a quantized one) and return it.

    Quantized weights are decoded (``lowbit.decode``): they equal the saved model's fake-quantized
    weights bit for bit. Other parameters and buffers are copied. ``strict``: every parameter of
    ``model`` must be in the file (quantizer buffers the model lacks are ignored).
    """
    from safetensors import safe_open

    meta = read_metadata(path)
    sd = {}
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        for pname, e in meta["weights"].items():
            spec = _spec(e["spec"])
            codes = lowbit.unpack(f.get_tensor(pname), e["bits"], e["count"]).reshape(e["shape"])
            n_scales = {"none": 0, "tensor": 1, "pair": 2}[e["scale"]]
            scales = [f.get_tensor(f"{pname}{SEP}scale{i}") for i in range(n_scales)]
            scale = None if not scales else scales[0] if len(scales) == 1 else tuple(scales)
            sd[pname] = decode(Encoded(codes, scale, spec, tuple(e["shape"])))
        for k in keys:
            if SEP not in k and k not in sd:
                sd[k] = f.get_tensor(k)
    own = model.state_dict()
    missing = [k for k, _ in model.named_parameters() if k not in sd]
    if strict and missing:
        raise ValueError(f"packed checkpoint {str(path)!r} lacks parameter(s) {', '.join(missing[:5])} of this model")
    wrong = [k for k in sd if k in own and tuple(own[k].shape) != tuple(sd[k].shape)]
    if wrong:
        raise ValueError(f"packed checkpoint {str(path)!r} does not fit this model: {wrong[0]} is "
                         f"{tuple(sd[wrong[0]].shape)}, the model has {tuple(own[wrong[0]].shape)}")
    with torch.no_grad():
        for k, v in sd.items():
            if k in own:
                own[k].copy_(v.to(own[k].dtype))
    return model


def cost_bytes(model: nn.Module, input_shape) -> float:
    """The cost model's storage figure (``lowbit.cost.model_cost(...).total["weight_bytes"]``) of a
    quantized model under the plan its quantized layers mean."""
    from lowbit.cost import LayerPlan, model_cost, profile_layers
    from lowbit.nn.modules import QuantLayer
    layers = profile_layers(model, input_shape)
    names = {li.name for li in layers}
    plan = {n: LayerPlan(m.weight_quantizer.spec, None) for n, m in model.named_modules()
            if isinstance(m, QuantLayer) and m.weight_quantizer is not None and n in names}
    return model_cost(layers, plan).total["weight_bytes"]
