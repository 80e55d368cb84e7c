"""Scale computation and the scaled quantize-dequantize kernels (pure torch, compile-friendly).

Granularities (``QuantSpec.scaling``):
    ``none``     direct cast, scale 1.
    ``tensor``   one scale s = amax / max_fmt, amax over the finite values (so one Inf does not wipe the
                 tensor); amax = 0 gives s = 1. ``pow2_scale`` rounds s up to a power of two (never clips).
    ``channel``  one scale per index along ``axis`` (amax over all other dims).
    ``group``    one scale per ``group_size`` consecutive elements along ``axis``.
    ``block``    MX / NVFP4 block scales, per :class:`lowbit.formats.spec.BlockFormat`.
Unsigned integer formats are asymmetric: s = (max(x, 0) - min(x, 0)) / qmax, zero point
z = round(-min / s), q = clamp(round(x / s) + z, 0, qmax), out = (q - z) * s.
Quantization divides (x / s, IEEE-rounded) and multiplies back (q * s).
"""
from __future__ import annotations

import torch

from lowbit.formats.cast import _pow2, codebook_cast, float_cast, int_cast

_NAN = float("nan")


def finite_amax(x: torch.Tensor, dims=None, keepdim=False) -> torch.Tensor:
    a = torch.where(torch.isfinite(x), x.abs(), 0.0)
    return a.amax() if dims is None else a.amax(dim=dims, keepdim=keepdim)


def pow2_ceil(s: torch.Tensor) -> torch.Tensor:
    """Smallest power of two >= s for positive normal fp32 s (exact, from the bits)."""
    b = s.view(torch.int32)
    return ((b + 0x7FFFFF) & 0x7F800000).view(torch.float32)


def element_cast(y, fmt, rounding, saturate, noise, values=None):
    """Cast already-scaled fp32 ``y`` to an element format (float, int or codebook)."""
    if fmt.kind == "float":
        return float_cast(y, fmt, rounding, saturate, noise)
    if fmt.kind == "int":
        return int_cast(y, fmt, rounding, saturate, noise)
    if fmt.kind == "codebook":
        if values is None:
            values = torch.tensor(fmt.values, dtype=torch.float32, device=y.device)
        return codebook_cast(y, values, rounding, noise)[0]
    raise ValueError(f"format {fmt.name!r} of kind {fmt.kind!r} cannot be an element format")


def element_scale(amax: torch.Tensor, fmt, pow2: bool) -> torch.Tensor:
    s = amax / fmt.max
    s = torch.where(s > 0, s, 1.0)
    if pow2:
        s = pow2_ceil(s)
    return s


def _reduce_dims(x: torch.Tensor, scaling: str, axis: int):
    if scaling == "tensor":
        return None
    if scaling == "channel":
        return tuple(d for d in range(x.dim()) if d != axis % x.dim())
    return (-1,)  # group / block: x is already (..., n_groups, G)


def scaled_qdq(x, fmt, scaling, axis, rounding, saturate, pow2, noise, scale=None, values=None):
    """Quantize-dequantize fp32 ``x`` with per-tensor/channel/group scales. Returns (out, scale).

    For group scaling ``x`` must already be shaped (..., n_groups, group_size).
    """
    if fmt.kind == "int" and not fmt.signed:
        return _asym_qdq(x, fmt, scaling, axis, rounding, noise, scale)
    if scaling == "none":
        return element_cast(x, fmt, rounding, saturate, noise, values), None
    if scale is None:
        dims = _reduce_dims(x, scaling, axis)
        scale = element_scale(finite_amax(x, dims, keepdim=True), fmt, pow2)
    q = element_cast(x / scale, fmt, rounding, saturate, noise, values)
    return q * scale, scale


def _asym_qdq(x, fmt, scaling, axis, rounding, noise, scale):
    if scaling == "none":
        return int_cast(x, fmt, rounding, True, noise), None
    if scale is None:
        dims = _reduce_dims(x, scaling, axis)
        xf = torch.where(torch.isfinite(x), x, 0.0)
        lo = (xf.amin() if dims is None else xf.amin(dim=dims, keepdim=True)).clamp(max=0)
        hi = (xf.amax() if dims is None else xf.amax(dim=dims, keepdim=True)).clamp(min=0)
        s = (hi - lo) / fmt.qmax
        s = torch.where(s > 0, s, 1.0)
        zp = torch.round(-lo / s).clamp(0, fmt.qmax)
    else:
        s, zp = scale
    q = int_cast(x / s + zp, fmt, rounding, True, noise)
    return (q - zp) * s, (s, zp)


def element_range_scaled(fmt, s, values=None):
    """(lo, hi): the inputs that a format with scale ``s`` represents without saturating."""
    if fmt.kind == "codebook":
        lo, hi = values[0], values[-1]
    elif fmt.kind == "int":
        lo, hi = fmt.min, fmt.max
        if not fmt.signed and s is not None:
            sc, zp = s
            return (fmt.qmin - zp) * sc, (fmt.qmax - zp) * sc
    else:
        lo, hi = -fmt.max, fmt.max
    if s is None:
        return lo, hi
    return lo * s, hi * s


# ---- block formats --------------------------------------------------------------------------------
def mx_shared_exp(amax: torch.Tensor, elem, rule: str) -> torch.Tensor:
    """OCP MX shared exponent per block (int32), clamped to [-127, 127]; callers mask non-finite amax."""
    b = amax.view(torch.int32)
    eb = torch.bitwise_right_shift(b, 23) & 0xFF
    mant = b & 0x7FFFFF
    if rule == "floor":
        e = eb - 127 - elem.emax
    elif rule == "ceil":
        e = eb - 127 + (mant != 0).to(torch.int32) - elem.emax
    else:  # rceil: round amax / max_elem up to a power of two
        d = (amax / elem.max).view(torch.int32)
        deb = torch.bitwise_right_shift(d, 23) & 0xFF
        dm = d & 0x7FFFFF
        e = torch.where(deb == 0, torch.where(dm > 0x400000, -126, -127).to(torch.int32),
                        deb - 127 + (dm != 0).to(torch.int32))
    return e.clamp(-127, 127)


def mx_qdq(xb: torch.Tensor, fmt, rounding, noise):
    """MX quantize-dequantize of fp32 blocks ``xb`` shaped (..., n_blocks, block_size)."""
    amax = xb.abs().amax(dim=-1, keepdim=True)               # NaN/Inf propagate: NaN scale below
    e = mx_shared_exp(amax, fmt.element, fmt.scale_rule)
    X = _pow2(e)
    q = element_cast(xb / X, fmt.element, rounding, True, noise) * X
    return torch.where(torch.isfinite(amax), q, _NAN), e


def nvfp4_qdq(xb: torch.Tensor, fmt, rounding, noise, tensor_amax=None):
    """NVFP4 quantize-dequantize of fp32 blocks (..., n_blocks, 16): E4M3 block scales, fp32 tensor scale."""
    from lowbit.formats.registry import get_format

    e4m3 = get_format("fp8_e4m3")
    elem = fmt.element
    if fmt.tensor_scale:
        ta = finite_amax(xb) if tensor_amax is None else tensor_amax
        st = ta / (e4m3.max * elem.max)
        st = torch.where(st > 0, st, 1.0)
    else:
        st = torch.ones((), dtype=torch.float32, device=xb.device)
    amax = xb.abs().amax(dim=-1, keepdim=True)
    sb = float_cast(amax / elem.max / st, e4m3, "nearest", True)
    total = sb * st
    safe = torch.where(total > 0, total, 1.0)
    q = element_cast(xb / safe, elem, rounding, True, noise) * total
    return torch.where(torch.isfinite(amax), q, _NAN), (sb, st)
