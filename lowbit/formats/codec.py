"""Codes <-> values for exactly representable values, and bit packing of sub-byte codes.

Code layout: minifloats are sign | exponent field | mantissa field (the IEEE layout, sign in the top
bit of a ``bits``-wide code); integers are two's-complement bit patterns (int4 -1 is 0b1111 = 15);
codebook codes are indices into the sorted values; E8M0 codes are the biased exponent. Codes are
returned as uint8 for formats of <= 8 bits, else int32.

Packing (``pack``/``unpack``) treats the flattened codes as a little-endian bit stream: code i
occupies stream bits [i*b, (i+1)*b), least significant bit first, and stream bit j is bit (j mod 8)
of byte j // 8. So two 4-bit codes share a byte with the first in the low nibble, four 2-bit codes
fill a byte from the bottom, and four 6-bit codes fill three bytes. The last byte is zero-padded.
"""
from __future__ import annotations

import torch

from .tables import code_values



def code_dtype(fmt) -> torch.dtype:
    return torch.uint8 if fmt.bits <= 8 else torch.int32


def float_codes(v: torch.Tensor, fmt) -> torch.Tensor:
    """Codes of fp32 values ``v`` that are already representable in the minifloat ``fmt``."""
    E, M = fmt.exp_bits, fmt.man_bits
    b = v.contiguous().view(torch.int32)
    sign = (b < 0).to(torch.int32)
    a = b & 0x7FFFFFFF
    eb = torch.bitwise_right_shift(a, 23)
    mant = a & 0x7FFFFF
    E32 = eb - 127
    if fmt.emin < -126:  # normals below 2^-126 are fp32 subnormals: read exponent and mantissa normalised
        sub = eb == 0
        an = (v.abs() * 2.0 ** 64).view(torch.int32)
        E32 = torch.where(sub, torch.bitwise_right_shift(an, 23) - 127 - 64, E32)
        mant = torch.where(sub, an & 0x7FFFFF, mant)
    normal = E32 >= fmt.emin
    e_field = torch.where(normal, E32 + fmt.bias, 0)
    m_field = torch.where(normal, torch.bitwise_right_shift(mant, 23 - M), 0)
    if fmt.subnormals:  # |v| = m * 2^(emin - M) exactly
        sub = torch.round(v.abs().double() * 2.0 ** (M - fmt.emin)).to(torch.int32)
        m_field = torch.where(normal, m_field, sub)
    code = (sign << (E + M)) | (e_field << M) | m_field
    top = 2 ** E - 1
    if fmt.specials == "ieee":
        code = torch.where(a == 0x7F800000, (sign << (E + M)) | (top << M), code)
        nan_code = (top << M) | (1 << (M - 1)) if M > 0 else (top << M)
    elif fmt.specials == "fn":
        nan_code = (top << M) | (2 ** M - 1)
    elif fmt.specials == "fnuz":
        nan_code = 1 << (E + M)
        code = torch.where(a == 0, 0, code)  # no negative zero
    else:
        nan_code = None
    isnan = torch.isnan(v)
    if nan_code is None:
        if bool(isnan.any()):
            raise ValueError(f"format {fmt.name!r} has no NaN code; the input holds NaN")
    else:
        code = torch.where(isnan, nan_code, code)
    return code.to(code_dtype(fmt))


def int_codes(v: torch.Tensor, fmt) -> torch.Tensor:
    if bool(torch.isnan(v).any()):  # round(NaN) -> int64 is undefined: it would give some code silently
        raise ValueError(f"format {fmt.name!r} has no NaN code; the input holds NaN")
    q = torch.round(v.double() / fmt.step).to(torch.int64)
    return (q & (fmt.n_codes - 1)).to(code_dtype(fmt))


def decode_element(codes: torch.Tensor, fmt) -> torch.Tensor:
    """Values (fp32) of element codes via the format's value table."""
    table = torch.from_numpy(code_values(fmt)).to(torch.float32).to(codes.device)
    c = codes.to(torch.int64)
    if bool(((c < 0) | (c >= table.numel())).any()):
        raise ValueError(f"codes out of range for {fmt.name!r}; allowed: 0..{table.numel() - 1}")
    return table[c]


def _check_bits(bits):
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise ValueError(f"bits={bits!r} is not allowed; allowed: 1..16")


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack ``bits``-wide codes (any integer dtype, flattened) into a uint8 tensor, LSB-first stream."""
    _check_bits(bits)
    if not isinstance(codes, torch.Tensor):
        raise TypeError(f"codes must be a torch.Tensor of integer codes, got {type(codes).__name__}")
    if codes.is_floating_point() or codes.is_complex():
        raise ValueError(f"codes of dtype {codes.dtype} are not allowed; allowed: an integer dtype "
                         f"(the codes lowbit.encode returns)")
    c = codes.reshape(-1).to(torch.int32)
    if bool(((c < 0) | (c >= (1 << bits))).any()):
        raise ValueError(f"codes do not fit in {bits} bits; allowed: 0..{(1 << bits) - 1}")
    if bits == 8:
        return c.to(torch.uint8)
    shifts = torch.arange(bits, dtype=torch.int32, device=c.device)
    stream = (torch.bitwise_right_shift(c[:, None], shifts) & 1).reshape(-1)
    pad = (-stream.numel()) % 8
    if pad:
        stream = torch.cat([stream, stream.new_zeros(pad)])
    weights = torch.bitwise_left_shift(torch.ones(8, dtype=torch.int32, device=c.device),
                                       torch.arange(8, dtype=torch.int32, device=c.device))
    return (stream.reshape(-1, 8) * weights).sum(-1).to(torch.uint8)


def unpack(data: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack`: the first ``count`` codes (uint8 for bits <= 8, else int32)."""
    _check_bits(bits)
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"packed data must be a torch.Tensor (uint8), got {type(data).__name__}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count={count!r} is not allowed; allowed: an integer >= 0")
    if data.dtype != torch.uint8:
        raise ValueError(f"packed data must be uint8, got {data.dtype}")
    need = (count * bits + 7) // 8
    if data.numel() < need:
        raise ValueError(f"{count} codes of {bits} bits need {need} bytes, got {data.numel()}")
    out_dtype = torch.uint8 if bits <= 8 else torch.int32
    if bits == 8:
        return data.reshape(-1)[:count].clone()
    d = data.reshape(-1)[:need].to(torch.int32)
    stream = (torch.bitwise_right_shift(d[:, None], torch.arange(8, dtype=torch.int32, device=d.device)) & 1)
    stream = stream.reshape(-1)[: count * bits].reshape(count, bits)
    weights = torch.bitwise_left_shift(torch.ones(bits, dtype=torch.int32, device=d.device),
                                       torch.arange(bits, dtype=torch.int32, device=d.device))
    return (stream * weights).sum(-1).to(out_dtype)


def encode_direct(x: torch.Tensor, fmt, rounding: str = "nearest", saturate: bool = True) -> torch.Tensor:
    """Round ``x`` to ``fmt`` without scaling (a direct cast) and return the codes."""
    from .cast import codebook_cast, e8m0_cast, float_cast, int_cast

    xf = x.detach().float().contiguous()
    if fmt.kind == "float":
        if fmt.man_bits >= 23:
            return xf.view(torch.int32).clone()
        return float_codes(float_cast(xf, fmt, rounding, saturate, _noise(xf, rounding)), fmt)
    if fmt.kind == "int":
        return int_codes(int_cast(xf, fmt, rounding, True, _noise(xf, rounding)), fmt)
    if fmt.kind == "codebook":
        if bool(torch.isnan(xf).any()):
            raise ValueError(f"codebook {fmt.name!r} has no NaN code; the input holds NaN")
        vals = torch.tensor(fmt.points, dtype=torch.float32, device=xf.device)
        return codebook_cast(xf, vals, rounding, _noise(xf, rounding))[1].to(code_dtype(fmt))
    if fmt.kind == "scale":
        q = e8m0_cast(xf)
        e = torch.bitwise_right_shift(q.view(torch.int32), 23)
        return torch.where(torch.isnan(q), 255, torch.where(e == 0, 0, e)).to(torch.uint8)
    raise ValueError(f"format {fmt.name!r} is block-scaled: use lowbit.encode(x, {fmt.name!r})")


def _noise(x, rounding):
    return torch.rand(x.shape, device=x.device) if rounding == "stochastic" else None
