"""``lowbit.encode`` / ``lowbit.decode``: a tensor as integer codes plus its scales, and back.

``encode(x, spec)`` quantizes exactly as :func:`lowbit.quantize` does and returns an :class:`Encoded`
holding the element codes (in ``x``'s shape) and the scales in the spec's layout: ``None`` for a
direct cast, a tensor for tensor/channel/group scales ((scale, zero point) for unsigned integers),
E8M0 codes (uint8, 255 = NaN block) for MX, and (E4M3 codes, fp32 tensor scale) for NVFP4.
``decode(encode(x, spec))`` equals ``quantize(x, spec)`` bit for bit (tested).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lowbit.formats.cast import _pow2
from lowbit.formats.codec import encode_direct
from lowbit.formats.registry import get_format

from .kernels import from_blocks, to_blocks
from .quantize import _validate, make_spec
from .scaling import block_scales, element_cast, scaled_qdq


@dataclass
class Encoded:
    codes: torch.Tensor
    scale: object
    spec: object
    shape: tuple

    @property
    def format(self):
        return self.spec.format


def encode(x: torch.Tensor, fmt, *, generator: torch.Generator | None = None, **kw) -> Encoded:
    """Codes and scales of ``x`` quantized per ``fmt`` (a name, format or QuantSpec; kw: spec fields).

    ``generator`` seeds stochastic rounding, drawing the same noise as :func:`lowbit.quantize`.
    """
    spec = make_spec(fmt, **kw)
    _validate(x, spec)
    f = spec.format
    xf = x.detach().float()
    noise = None
    if spec.rounding == "stochastic":
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    if spec.chunk is None:
        if spec.scaling == "none":
            if noise is None:
                return Encoded(encode_direct(xf, f, spec.rounding, spec.saturate), None, spec, tuple(x.shape))
            q, _ = scaled_qdq(xf, f, "none", spec.axis, spec.rounding, spec.saturate, False, noise)
            return Encoded(encode_direct(q, f, "nearest", spec.saturate), None, spec, tuple(x.shape))
        q, s = scaled_qdq(xf, f, spec.scaling, spec.axis, spec.rounding, spec.saturate, spec.pow2_scale, noise)
        return Encoded(_element_codes(q, s, f, spec.saturate), s, spec, tuple(x.shape))
    axis = spec.axis % x.dim()
    xb = to_blocks(xf, axis, spec.chunk)
    nb = to_blocks(noise, axis, spec.chunk) if noise is not None else None
    if spec.scaling == "group":
        q, s = scaled_qdq(xb, f, "group", -1, spec.rounding, spec.saturate, spec.pow2_scale, nb)
        codes = _element_codes(q, s, f, spec.saturate)
    else:
        scale, detail = block_scales(xb, f)
        # the element cast itself, as block_qdq does it (dividing q by the scale would lose the sign
        # of zero in a zero-scale block, and digits where the scale is an fp32 subnormal)
        el = element_cast(xb / torch.where(scale > 0, scale, 1.0), f.element, spec.rounding, True, nb)
        codes = encode_direct(torch.nan_to_num(el), f.element)
        nan_block = torch.isnan(scale)
        if f.scale == "e8m0":
            s = torch.where(nan_block, 255, detail + 127).to(torch.uint8)
        else:  # NaN/Inf block: the E4M3 NaN code
            sb, st = detail
            s = (encode_direct(torch.where(nan_block, float("nan"), sb), get_format("fp8_e4m3")), st)
    return Encoded(from_blocks(codes, x.shape, axis), s, spec, tuple(x.shape))


def _element_codes(q, s, f, saturate):
    if f.asymmetric:
        sc, zp = s
        return encode_direct(torch.round(q / sc) + zp, f)
    return encode_direct(q / s, f, "nearest", saturate)


def decode(enc: Encoded, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Values of an :class:`Encoded` tensor (the same numbers :func:`lowbit.quantize` returns)."""
    if not isinstance(enc, Encoded):
        raise TypeError(f"decode expects the Encoded that lowbit.encode returns, got {type(enc).__name__}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype={dtype!r} is not allowed; allowed: a floating torch dtype such as torch.float32")
    spec, f, s = enc.spec, enc.spec.format, enc.scale
    if spec.chunk is None:
        v = f.decode(enc.codes)
        if s is None:
            return v.to(dtype)
        if f.asymmetric:
            return ((v - s[1]) * s[0]).to(dtype)
        return (v * s).to(dtype)
    axis = spec.axis % len(enc.shape)
    vb = to_blocks(enc.codes, axis, spec.chunk)
    v = f.element.decode(vb)
    if spec.scaling == "group":
        out = (v - s[1]) * s[0] if f.asymmetric else v * s
    elif f.scale == "e8m0":
        e = s.to(torch.int32) - 127
        out = torch.where(s == 255, float("nan"), v * _pow2(e.clamp(-127, 127)))
    else:
        sb = get_format("fp8_e4m3").decode(s[0])
        out = v * (sb * s[1])
    return from_blocks(out, enc.shape, axis).to(dtype)
