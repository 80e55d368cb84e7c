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
    return fmt.codes(x.detach().float().contiguous(), rounding, saturate)


def noise_for(x, rounding):
    """Uniform [0, 1) noise for stochastic rounding, else None."""
    return torch.rand(x.shape, device=x.device) if rounding == "stochastic" else None
