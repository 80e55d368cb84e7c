"""Xlbmac semantics (lowbit.export.c.xlbmac) against a slow, obvious reference: every mode, every
field value and activation byte, sign/range edges, random words, encodings, packing."""
from __future__ import annotations

import random

import numpy as np
import pytest

from lowbit.export.c.xlbmac import (INPUTS, OPCODE_MAC, OPCODE_RQ, IllegalInstruction, MacUnit, encode, mac_terms,
                                    pack_ext, requantize, rq_config)

F3 = {8: 0, 4: 1, 2: 2}


def slow_field(word: int, f: int, bits: int) -> int:
    """Field f of a 32-bit word via its binary string (bit 0 = last character)."""
    s = format(word & 0xFFFFFFFF, "032b")
    v = int(s[32 - bits * (f + 1):32 - bits * f], 2)
    return v - (1 << bits) if s[32 - bits * (f + 1)] == "1" else v


def slow_act(word: int, m: int, signed: bool) -> int:
    v = (word >> (8 * m)) % 256
    return v - 256 if signed and v >= 128 else v


def slow_mac(bits, a, w, lane, signed):
    p = INPUTS[bits]
    return [sum(slow_field(w, j * p + i, bits) * slow_act(a, lane * p + i, signed) for i in range(p))
            for j in range(4)]


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("signed", [False, True])
def test_every_weight_code_times_every_activation(bits, signed):
    """All 2^b codes in every field x all 256 activation bytes in every lane position (numpy path)."""
    p = INPUTS[bits]
    codes = np.arange(1 << bits)
    acts = np.arange(256)
    for lane in range(4 // p):
        for f in range(4 * p):
            j, i = divmod(f, p)
            w = (codes << (bits * f))[:, None].astype(np.int64)
            a = (acts << (8 * (lane * p + i)))[None, :].astype(np.int64)
            got = mac_terms(bits, a, w, lane, signed)
            wv = np.where(codes >= 1 << (bits - 1), codes - (1 << bits), codes)[:, None]
            av = np.where(signed & (acts >= 128), acts - 256, acts)[None, :]
            for jj in range(4):
                want = wv * av if jj == j else np.zeros((len(codes), 256), np.int64)
                assert np.array_equal(got[jj], want), (bits, signed, lane, f, jj)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_random_words_vs_slow_reference_and_unit(bits):
    rng = random.Random(bits)
    edge = [0, 0xFFFFFFFF, 0x80808080, 0x7F7F7F7F, 0x55555555, 0xAAAAAAAA, 0x01010101]
    for t in range(3000):
        a = edge[t % len(edge)] if t < 50 else rng.getrandbits(32)
        w = edge[(t // 7) % len(edge)] if t < 50 else rng.getrandbits(32)
        lane, signed = rng.randrange(4 // INPUTS[bits]), bool(rng.getrandbits(1))
        assert mac_terms(bits, a, w, lane, signed) == slow_mac(bits, a, w, lane, signed)
        u = MacUnit(acc=[5, -7, 2**31 - 1, -2**31])
        assert u.execute(encode(OPCODE_MAC, F3[bits], (lane << 1) | signed, 0, 10, 11), a, w) is None
        want = [((s + d + 2**31) % 2**32) - 2**31 for s, d in zip([5, -7, 2**31 - 1, -2**31],
                                                                    slow_mac(bits, a, w, lane, signed))]
        assert u.acc == want                                   # int32 wrap-around


def test_extremes_of_each_mode():
    """The largest products: -2^(b-1)... codes are narrow-range in the export, but the unit is full-range."""
    assert mac_terms(8, 0xFF, 0x80, 0, True) == [-128 * -1, 0, 0, 0]
    assert mac_terms(8, 0xFF, 0x80, 0, False) == [-128 * 255, 0, 0, 0]
    assert mac_terms(2, 0xFFFFFFFF, 0xAAAAAAAA, 0, False) == [-2 * 255 * 4] * 4
    assert mac_terms(4, 0x7F7F7F7F, 0x77777777, 1, True) == [2 * 7 * 127] * 4


def test_accumulator_moves_requantize_and_config():
    u = MacUnit()
    for j, v in enumerate([1, -1, 2**31 - 1, -2**31]):
        u.execute(encode(OPCODE_MAC, 3, j, 0, 10), v & 0xFFFFFFFF, 0)
    assert u.acc == [1, -1, 2**31 - 1, -2**31]
    assert u.execute(encode(OPCODE_MAC, 4, 1, 5), 0, 0) == 0xFFFFFFFF
    u.execute(encode(OPCODE_RQ, 0, 0, 0, 10, 11), 1 << 30, rq_config(31, -128, 127))
    assert (u.q, u.n, u.lo, u.hi) == (1 << 30, 31, -128, 127)
    for acc in [0, 1, -1, 2, -2, 3, -3, 255, -255, 1000, -1000, 2**31 - 1, -2**31]:
        u.acc[0] = acc
        want = max(-128, min(127, (acc * (1 << 30) + (1 << 30)) >> 31))     # acc / 2, round half up
        assert u.execute(encode(OPCODE_RQ, 1, 0, 7), 0, 0) == want & 0xFFFFFFFF
    u.execute(encode(OPCODE_RQ, 0, 0), 100, rq_config(62, 0, 255))
    assert (u.n, u.lo, u.hi) == (62, 0, 255)
    assert requantize(np.array([-5, 5, 1 << 40]), 3, 2, -1, 4).tolist() == [-1, 4, 4]


@pytest.mark.parametrize("insn", [encode(OPCODE_MAC, 5, 0), encode(OPCODE_MAC, 0, 8), encode(OPCODE_MAC, 1, 4),
                                  encode(OPCODE_MAC, 2, 2), encode(OPCODE_MAC, 3, 4), encode(OPCODE_RQ, 2, 0),
                                  encode(OPCODE_RQ, 1, 5), encode(OPCODE_RQ, 0, 0)])
def test_reserved_encodings_are_illegal(insn):
    with pytest.raises(IllegalInstruction):
        MacUnit().execute(insn, 0, 0)      # lb.rqcfg with n = 0 is illegal too


def test_rq_config_range():
    with pytest.raises(ValueError, match="allowed: 1 <= n <= 63"):
        rq_config(0, 0, 255)
    with pytest.raises(ValueError, match="allowed"):
        rq_config(8, 10, 5)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_pack_ext_layout(bits):
    """Each word holds neuron 4g+j x input 4s+L*p+i at field j*p+i, padded with zeros."""
    rng = np.random.default_rng(bits)
    q = (1 << (bits - 1)) - 1
    codes = rng.integers(-q, q + 1, size=(6, 11))
    words = pack_ext(codes, bits)
    p, wps = INPUTS[bits], 4 // INPUTS[bits]
    assert len(words) == 2 * 3 * wps            # 2 groups of 4 neurons, 3 steps of 4 inputs
    for g in range(2):
        for s in range(3):
            for lane in range(wps):
                wd = int(words[(g * 3 + s) * wps + lane])
                for j in range(4):
                    for i in range(p):
                        o, k = 4 * g + j, 4 * s + lane * p + i
                        want = codes[o, k] if o < 6 and k < 11 else 0
                        assert slow_field(wd, j * p + i, bits) == want
