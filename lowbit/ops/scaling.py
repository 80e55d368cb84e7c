"""Scale computation and the scaled quantize-dequantize kernels (pure torch, compile-friendly).

Granularities (``QuantSpec.scaling``):
    ``none``     direct cast, scale 1.
    ``tensor``   one scale s = amax / max_fmt, amax over the finite values (so one Inf does not wipe the
                 tensor); amax = 0 (also an empty tensor) gives s = 1. s is the IEEE quotient (round to
                 nearest) where that is a normal fp32; below 2^-126 it is rounded up to the next multiple
                 of 2^-149 (at least 2^-149), see :func:`ratio_scale`: a tiny tensor is never flushed to
                 zero and its largest element does not clip. ``pow2_scale`` rounds s up to a power of two
                 (exactly, subnormal s included; never clips, except that s is at most 2^127).
    ``channel``  one scale per index along ``axis`` (amax over all other dims).
    ``group``    one scale per ``group_size`` consecutive elements along ``axis``.
    ``block``    MX / NVFP4 block scales, per :class:`lowbit.formats.spec.BlockFormat`.
Unsigned integer formats are asymmetric: s = (max(x, 0) - min(x, 0)) / qmax (by :func:`ratio_scale`),
zero point z = round(-min / s), q = clamp(round(x / s) + z, 0, qmax), out = (q - z) * s: x / s is
rounded before z is added, as torch.fake_quantize_per_tensor_affine and ONNX QuantizeLinear do
(rounding x / s + z in fp32 would round ties and near-ties differently once z shifts the value).
Quantization divides (x / s, IEEE-rounded) and multiplies back (q * s).
"""
from __future__ import annotations

import math

import torch

from lowbit.formats.cast import _pow2, float_cast, int_cast, int_round

_NAN = float("nan")


def _reduce(a: torch.Tensor, op: str, dims=None, keepdim=False) -> torch.Tensor:
    """``a.amax``/``a.amin`` over ``dims`` (all when None), 0 where the reduced set is empty."""
    if a.numel() == 0:  # amax has no identity; sum gives zeros of the reduced shape
        return a.sum() if dims is None else a.sum(dim=dims, keepdim=keepdim)
    f = a.amax if op == "max" else a.amin
    return f() if dims is None else f(dim=dims, keepdim=keepdim)


def finite_amax(x: torch.Tensor, dims=None, keepdim=False) -> torch.Tensor:
    """max |x| over the finite values (0 for none, and for an empty tensor)."""
    return _reduce(torch.where(torch.isfinite(x), x.abs(), 0.0), "max", dims, keepdim)


def ratio_scale(amax: torch.Tensor, fmax: float) -> torch.Tensor:
    """The scale amax / fmax (amax >= 0, finite) as a positive fp32, 1 where amax is 0.

    Where the quotient is a normal fp32 it is IEEE division (round to nearest). Below 2^-126 fp32's
    spacing 2^-149 is coarse, so rounding to nearest could leave amax / s far above fmax (the largest
    elements would clip), and a quotient below 2^-150 would round to 0 (the tensor would be flushed):
    there s = ceil(amax / fmax / 2^-149) * 2^-149, the next multiple of 2^-149 up, at least 2^-149.
    The quotient in units of 2^-149 is computed exactly up to one rounding: amax * 2^100 / fmax * 2^49
    (powers of two scale exactly; amax < fmax * 2^-126 there, so nothing overflows).
    """
    s = amax / fmax
    t = ((amax * 2.0 ** 100) / fmax * 2.0 ** 49).clamp(max=2.0 ** 23)
    tiny = torch.ceil(t).clamp(min=1.0) * 2.0 ** -149
    s = torch.where(s >= 2.0 ** -126, s, tiny)
    return torch.where(amax > 0, s, 1.0)


def _pow2_ceil_normal(s: torch.Tensor) -> torch.Tensor:
    b = s.view(torch.int32)
    return ((b + 0x7FFFFF) & 0x7F800000).view(torch.float32)


def pow2_ceil(s: torch.Tensor) -> torch.Tensor:
    """Smallest power of two >= s for positive fp32 s (exact, from the bits), at most 2^127
    (2^128 is Inf in fp32: a scale above 2^127 becomes 2^127 and the largest values saturate).
    An fp32 subnormal s is normalised by 2^64 first (its exponent field alone would give 2^-126)."""
    sub = s < 2.0 ** -126
    r = torch.where(sub, _pow2_ceil_normal(s * 2.0 ** 64) * 2.0 ** -64, _pow2_ceil_normal(s))
    return r.clamp(max=2.0 ** 127)


def element_cast(y, fmt, rounding, saturate, noise, values=None):
    """Cast already-scaled fp32 ``y`` to an element format (its ``cast``: float, int or codebook)."""
    return fmt.cast(y, rounding, saturate, noise, values)


def element_scale(amax: torch.Tensor, fmt, pow2: bool) -> torch.Tensor:
    s = ratio_scale(amax, fmt.max)
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
    if fmt.asymmetric:
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
        s, zp = asym_scale(*asym_range(x, scaling, axis), fmt)
    else:
        s, zp = scale
    return (asym_codes(x, fmt, s, zp, rounding, noise) - zp) * s, (s, zp)


def asym_range(x, scaling, axis):
    """(lo, hi) of the finite values of ``x`` per scale, lo <= 0 <= hi (asymmetric formats)."""
    dims = _reduce_dims(x, scaling, axis)
    xf = torch.where(torch.isfinite(x), x, 0.0)
    lo = _reduce(xf, "min", dims, keepdim=True).clamp(max=0)
    hi = _reduce(xf, "max", dims, keepdim=True).clamp(min=0)
    return lo, hi


def asym_scale(lo, hi, fmt):
    """(scale, zero point) of an asymmetric format for the range [lo, hi] (lo <= 0 <= hi)."""
    span = hi - lo
    s = ratio_scale(torch.where(torch.isinf(span), 0.0, span), fmt.qmax)
    s = torch.where(torch.isinf(span), hi / fmt.qmax - lo / fmt.qmax, s)  # hi - lo can exceed fp32's range
    zp = torch.round(-lo / s).clamp(0, fmt.qmax)
    return s, zp


def reduce_dims(x: torch.Tensor, scaling: str, axis: int):
    """The dims a ``tensor``/``channel`` scale's amax reduces over (None: all)."""
    return _reduce_dims(x, scaling, axis)


def asym_codes(x, fmt, s, zp, rounding, noise):
    """Unsigned codes clamp(round(x / s) + zp, 0, qmax) as fp32 (NaN stays NaN): x / s is rounded first."""
    r = int_round(x / s, rounding, noise)
    return (r + zp).clamp(0, fmt.qmax)


def element_range_scaled(fmt, s, values=None):
    """(lo, hi): the inputs that a format with scale ``s`` represents without saturating.

    "Saturating" means the clamp changes the result: for floats and integers the bounds sit half a gap
    beyond the largest values (inputs up to there round to them anyway). With bounds at +-max, the
    element that sets a per-tensor scale s = amax / max would count as clipped whenever s rounds down
    by one ulp (amax / s then exceeds max by a rounding error) and lose its gradient. Codebooks clamp
    to their end values before rounding, so their bounds are the end values.
    """
    lo, hi = fmt.cast_bounds(values)
    if fmt.asymmetric and s is not None:
        sc, zp = s
        return (fmt.qmin - 0.5 - zp) * sc, (fmt.qmax + 0.5 - zp) * sc
    if s is None:
        return lo, hi
    return lo * s, hi * s


# ---- block formats --------------------------------------------------------------------------------
def _exp_frac(a: torch.Tensor):
    """(floor(log2(a)), 23-bit fraction of a's significand) for positive fp32 ``a``, exact also when ``a``
    is an fp32 subnormal (normalised by 2^64 first: its exponent field alone would say -127)."""
    sub = a < 2.0 ** -126
    b = torch.where(sub, a * 2.0 ** 64, a).view(torch.int32)
    e = (torch.bitwise_right_shift(b, 23) & 0xFF) - 127 - sub.to(torch.int32) * 64
    return e, b & 0x7FFFFF


def mx_shared_exp(amax: torch.Tensor, elem, rule: str) -> torch.Tensor:
    """OCP MX shared exponent per block (int32), clamped to [-127, 127]; callers mask non-finite amax.

    Exact integer arithmetic on amax's exponent and significand: ``rceil`` compares significands
    instead of rounding amax / max_elem, whose fp32 quotient can round onto a power of two.
    """
    e, frac = _exp_frac(amax)
    if rule == "floor":
        e = e - elem.emax
    elif rule == "ceil":
        e = e + (frac != 0).to(torch.int32) - elem.emax
    else:  # rceil: the smallest e with amax <= max_elem * 2^e
        m, ex = math.frexp(elem.max)                 # max_elem = (2m) * 2^(ex - 1), 2m in [1, 2)
        frac_max = int((2 * m - 1) * 2 ** 23)        # exact: an element max has <= 24 significant bits
        e = e - (ex - 1) + (frac > frac_max).to(torch.int32)
    return e.clamp(-127, 127)


def block_scales(xb: torch.Tensor, fmt):
    """Per-block scales of fp32 blocks ``xb`` (..., n_blocks, n) -> (scale, detail).

    ``scale`` is the fp32 factor each block is divided by and multiplied back with, NaN for a block
    holding NaN or Inf. ``detail`` is the shared exponent (MX) or (E4M3 block scale, fp32 tensor
    scale) (NVFP4), what :func:`lowbit.encode` stores.
    """
    amax = xb.abs().amax(dim=-1, keepdim=True)               # NaN/Inf propagate into amax
    finite = torch.isfinite(amax)
    if fmt.scale == "e8m0":
        e = mx_shared_exp(amax, fmt.element, fmt.scale_rule)
        return torch.where(finite, _pow2(e), _NAN), e
    from lowbit.formats.registry import get_format

    e4m3, elem = get_format("fp8_e4m3"), fmt.element
    if fmt.tensor_scale:  # IEEE quotient (the E4M3 block scales absorb its rounding), never 0 for amax > 0
        at = finite_amax(xb)
        st = at / (e4m3.max * elem.max)
        st = torch.where(st > 0, st, torch.where(at > 0, 2.0 ** -149, 1.0))
    else:
        st = torch.ones((), dtype=torch.float32, device=xb.device)
    sb = float_cast(amax / st / elem.max, e4m3, "nearest", True)  # amax / max_elem could be an fp32 subnormal
    return torch.where(finite, sb * st, _NAN), (sb, st)


def block_qdq(xb: torch.Tensor, fmt, rounding, noise, scale: torch.Tensor) -> torch.Tensor:
    """Elements of blocks with per-block ``scale``: element_cast(v / scale) * scale, saturating.

    A NaN scale gives a NaN block; a zero scale (an NVFP4 block scale that rounded to 0) gives zeros.
    """
    safe = torch.where(scale > 0, scale, 1.0)
    return element_cast(xb / safe, fmt.element, rounding, True, noise) * scale


def mx_qdq(xb: torch.Tensor, fmt, rounding, noise):
    """MX quantize-dequantize of fp32 blocks ``xb`` shaped (..., n_blocks, block_size) -> (q, shared exp)."""
    X, e = block_scales(xb, fmt)
    return block_qdq(xb, fmt, rounding, noise, X), e


def nvfp4_qdq(xb: torch.Tensor, fmt, rounding, noise):
    """NVFP4 quantize-dequantize of fp32 blocks (..., n_blocks, 16) -> (q, (E4M3 block scale, tensor scale))."""
    total, detail = block_scales(xb, fmt)
    return block_qdq(xb, fmt, rounding, noise, total), detail
