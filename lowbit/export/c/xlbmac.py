"""Xlbmac: lowbit's packed-SIMD multiply-accumulate extension for RV32 (semantics, encodings, packing).

This module is the one implementation of the extension: the unicorn hook that executes the custom
opcodes (:mod:`lowbit.export.c.emulator`) calls :meth:`MacUnit.execute`, and the Python reference of
the extension program (:func:`lowbit.export.c.reference_ext.run_ext`) calls :func:`mac_terms` and
:func:`requantize` on numpy arrays. Every function is written with ``>>``, ``&``, ``^``, ``*``, ``+``
only, so it works unchanged on Python ints and on numpy int64 arrays. Full specification:
``docs/riscv-extension.md``.

State: four int32 accumulators ``acc[0..3]`` (one per output neuron) and a requantization
configuration (q, n, lo, hi). Encodings (R-type, rd/rs1/rs2 are x registers)::

    custom-0 (opcode 0x0B)
      funct3 0  lb.mac8  rs1=a, rs2=w   acc[j] += W8[j]          * A[L]             (4 MACs)
      funct3 1  lb.mac4  rs1=a, rs2=w   acc[j] += sum_i W4[2j+i] * A[2L+i], i<2     (8 MACs)
      funct3 2  lb.mac2  rs1=a, rs2=w   acc[j] += sum_i W2[4j+i] * A[i],    i<4     (16 MACs)
      funct3 3  lb.accw  rs1=v          acc[J] = v
      funct3 4  lb.accr  rd             rd = acc[J]
    custom-1 (opcode 0x2B)
      funct3 0  lb.rqcfg rs1=q, rs2=c   q = rs1 (unsigned), n = c[5:0], lo = c[16:8], hi = c[25:17] (9-bit signed)
      funct3 1  lb.rq    rd             rd = clamp((acc[J] * q + 2^(n-1)) >> n, lo, hi)   (exact, then int32)

MAC funct7 = (L << 1) | S: S=1 reads the activation bytes A[m] = rs1[8m+7:8m] as int8, S=0 as
uint8; L is the lane (mac8: 0..3, mac4: 0..1, mac2: 0). W_b[f] = rs2[b*f+b-1 : b*f] as b-bit two's
complement (field 0 in the least significant bits). accw/accr/rq: J = funct7[1:0], funct7[6:2] = 0.
Accumulators wrap modulo 2^32 (the export proves its sums never do). Any other encoding is illegal.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

OPCODE_MAC, OPCODE_RQ = 0x0B, 0x2B
MAC_FUNCT3 = {8: 0, 4: 1, 2: 2}            # weight bits -> funct3 of lb.macB
INPUTS = {8: 1, 4: 2, 2: 4}                # inputs per output neuron per instruction
WORDS_PER_STEP = {8: 4, 4: 2, 2: 1}        # weight words per 4 inputs x 4 outputs
F3_ACCW, F3_ACCR, F3_RQCFG, F3_RQ = 3, 4, 0, 1
NAMES = {(OPCODE_MAC, 0): "lb.mac8", (OPCODE_MAC, 1): "lb.mac4", (OPCODE_MAC, 2): "lb.mac2",
         (OPCODE_MAC, 3): "lb.accw", (OPCODE_MAC, 4): "lb.accr", (OPCODE_RQ, 0): "lb.rqcfg", (OPCODE_RQ, 1): "lb.rq"}


class IllegalInstruction(ValueError):
    """An encoding in custom-0/custom-1 that Xlbmac does not define."""


def sext(v, bits: int):
    """The low ``bits`` of ``v`` as a two's complement number."""
    sign = 1 << (bits - 1)
    return ((v & ((1 << bits) - 1)) ^ sign) - sign


def act(word, m: int, signed: bool):
    """Activation byte ``m`` of a 32-bit word (int8 when ``signed``, else uint8)."""
    b = (word >> (8 * m)) & 0xFF
    return sext(b, 8) if signed else b


def weight(word, f: int, bits: int):
    """Weight field ``f`` (b-bit two's complement, field 0 least significant) of a 32-bit word."""
    return sext(word >> (bits * f), bits)


def mac_terms(bits: int, a_word, w_word, lane: int, signed: bool) -> list:
    """The four accumulator increments of one lb.mac{bits} (the instruction's arithmetic)."""
    if bits not in INPUTS:
        raise IllegalInstruction(f"weight width {bits!r} is not allowed; allowed: 8, 4, 2")
    p = INPUTS[bits]
    if not 0 <= lane < 4 // p:
        raise IllegalInstruction(f"lane {lane} is not allowed for lb.mac{bits}; allowed: 0..{4 // p - 1}")
    a = [act(a_word, lane * p + i, signed) for i in range(p)]
    out = []
    for j in range(4):
        s = 0
        for i in range(p):
            s = s + weight(w_word, j * p + i, bits) * a[i]
        out.append(s)
    return out


def requantize(acc, q: int, n: int, lo: int, hi: int):
    """clamp((acc * q + 2^(n-1)) >> n, lo, hi), computed exactly (arithmetic shift: round half up)."""
    v = (acc * q + (1 << (n - 1))) >> n
    if isinstance(v, np.ndarray):
        return np.clip(v, lo, hi)
    return lo if v < lo else (hi if v > hi else v)


def rq_config(n: int, lo: int, hi: int) -> int:
    """The rs2 word of lb.rqcfg."""
    if not (1 <= n <= 63 and -256 <= lo <= hi <= 255):
        raise ValueError(f"requantization n={n}, lo={lo}, hi={hi} is not allowed; allowed: 1 <= n <= 63, "
                         f"-256 <= lo <= hi <= 255")
    return n | ((lo & 0x1FF) << 8) | ((hi & 0x1FF) << 17)


def encode(opcode: int, funct3: int, funct7: int, rd: int = 0, rs1: int = 0, rs2: int = 0) -> int:
    """The 32-bit R-type word."""
    return (funct7 << 25) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode


def _wrap32(v: int) -> int:
    return sext(v, 32)


@dataclass
class MacUnit:
    """Architectural state of Xlbmac; :meth:`execute` runs one instruction."""
    acc: list = field(default_factory=lambda: [0, 0, 0, 0])
    q: int = 0
    n: int = 1
    lo: int = -128
    hi: int = 127

    def execute(self, insn: int, rs1: int, rs2: int) -> int | None:
        """Execute ``insn`` with register values ``rs1``/``rs2`` (uint32); returns the rd value
        (a uint32) or None when the instruction writes no register. Raises IllegalInstruction."""
        return self.compile(insn)(rs1, rs2)

    def compile(self, insn: int):
        """``insn`` decoded once: a function (rs1, rs2) -> rd value or None that executes it on this
        unit (the emulator caches one per instruction address). Raises IllegalInstruction."""
        opcode, f3, f7 = insn & 0x7F, (insn >> 12) & 7, insn >> 25
        if opcode == OPCODE_MAC and f3 in (0, 1, 2):
            bits = {0: 8, 1: 4, 2: 2}[f3]
            if f7 >> 3:
                raise IllegalInstruction(f"lb.mac{bits}: funct7 {f7:#x} is reserved; allowed: (lane << 1) | signed")
            lane, signed, acc = f7 >> 1, bool(f7 & 1), self.acc
            mac_terms(bits, 0, 0, lane, signed)          # an illegal lane raises now

            def mac(rs1, rs2):
                for j, t in enumerate(mac_terms(bits, rs1, rs2, lane, signed)):
                    acc[j] = _wrap32(acc[j] + t)
            return mac
        if f7 >> 2:
            raise IllegalInstruction(f"{NAMES.get((opcode, f3), 'custom op')}: funct7 {f7:#x} is reserved")
        j = f7 & 3
        if opcode == OPCODE_MAC and f3 == F3_ACCW:
            return lambda rs1, rs2: self.acc.__setitem__(j, sext(rs1, 32))
        if opcode == OPCODE_MAC and f3 == F3_ACCR:
            return lambda rs1, rs2: self.acc[j] & 0xFFFFFFFF
        if opcode == OPCODE_RQ and f3 == F3_RQCFG:
            return self._rqcfg
        if opcode == OPCODE_RQ and f3 == F3_RQ:
            return lambda rs1, rs2: requantize(self.acc[j], self.q, self.n, self.lo, self.hi) & 0xFFFFFFFF
        raise IllegalInstruction(f"instruction {insn:#010x} (opcode {opcode:#x}, funct3 {f3}) is not an "
                                 f"Xlbmac instruction; allowed: {', '.join(NAMES.values())}")

    def _rqcfg(self, rs1: int, rs2: int) -> None:
        n, lo, hi = rs2 & 0x3F, sext(rs2 >> 8, 9), sext(rs2 >> 17, 9)
        if n == 0:
            raise IllegalInstruction("lb.rqcfg: n = 0 is not allowed; allowed: 1..63")
        self.q, self.n, self.lo, self.hi = rs1 & 0xFFFFFFFF, n, lo, hi


def writes_rd(insn: int) -> bool:
    return (insn & 0x7F, (insn >> 12) & 7) in ((OPCODE_MAC, F3_ACCR), (OPCODE_RQ, F3_RQ))


def pack_ext(codes: np.ndarray, bits: int) -> np.ndarray:
    """(cout, K) weight codes -> the word stream lb.mac{bits} reads (docs/riscv-extension.md, packing).

    Output channels are padded to a multiple of 4 (groups g of 4 neurons), K to a multiple of 4
    (steps s of 4 inputs), with zero codes. Word ((g * S + s) * WORDS_PER_STEP + L) holds, in
    field j * p + i (p = inputs per instruction), the code of neuron 4g + j for input 4s + L * p + i.
    """
    p, wps = INPUTS[bits], WORDS_PER_STEP[bits]
    cout, k = codes.shape
    c4, k4 = -(-cout // 4) * 4, -(-k // 4) * 4
    w = np.zeros((c4, k4), np.int64)
    w[:cout, :k] = codes
    # (g, j, s, L, i) -> (g, s, L, j, i): field index j * p + i within word (g, s, L)
    w = w.reshape(c4 // 4, 4, k4 // 4, wps, p).transpose(0, 2, 3, 1, 4).reshape(-1, 4 * p)
    f = (w & ((1 << bits) - 1)).astype(np.uint64)
    shifts = (np.arange(4 * p, dtype=np.uint64) * np.uint64(bits))
    return (f << shifts).sum(axis=1, dtype=np.uint64).astype(np.uint32)
