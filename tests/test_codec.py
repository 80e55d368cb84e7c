"""Codes: element codes against the oracles' bit patterns, decode(encode(x)) == quantize(x) for every kind
of spec, and bit packing (golden layouts, numpy packbits as oracle, round trips, errors)."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch

from conftest import NUMPY_NAN_WARNINGS, assert_same, probe_points, rand_f32, t
from lowbit import decode, encode, pack, quantize, unpack
from lowbit.formats import get_format, list_formats
from lowbit.formats.cast import e8m0_cast, float_cast

pytestmark = [pytest.mark.filterwarnings(w) for w in NUMPY_NAN_WARNINGS]

ML = [("fp8_e4m3", ml_dtypes.float8_e4m3fn, False), ("fp8_e5m2", ml_dtypes.float8_e5m2, False),
      ("e4m3fnuz", ml_dtypes.float8_e4m3fnuz, False), ("e5m2fnuz", ml_dtypes.float8_e5m2fnuz, False),
      ("e3m4ieee", ml_dtypes.float8_e3m4, False), ("fp6_e2m3", ml_dtypes.float6_e2m3fn, True),
      ("fp6_e3m2", ml_dtypes.float6_e3m2fn, True), ("fp4_e2m1", ml_dtypes.float4_e2m1fn, True),
      ("fp16", np.float16, False), ("bf16", ml_dtypes.bfloat16, False)]


@pytest.mark.parametrize("name,dt,oracle_saturates", ML, ids=[m[0] for m in ML])
def test_codes_match_ml_dtypes_bit_patterns(name, dt, oracle_saturates):
    fmt = get_format(name)
    x = np.concatenate([probe_points(fmt), rand_f32(1 << 16, seed=2)])
    x = x[~np.isnan(x)]
    codes = fmt.encode(t(x), saturate=oracle_saturates).numpy().astype(np.int64)
    assert codes.dtype == np.int64 and codes.min() >= 0 and codes.max() < fmt.n_codes
    with np.errstate(over="ignore", invalid="ignore"):
        o = x.astype(dt)
    want = o.view(np.uint8 if fmt.bits <= 8 else np.uint16).astype(np.int64) & (fmt.n_codes - 1)
    isnan = np.isnan(o.astype(np.float32))   # NaN patterns may differ; both must decode to NaN
    assert (codes[~isnan] == want[~isnan]).all(), x[~isnan][codes[~isnan] != want[~isnan]][:8]
    assert np.isnan(fmt.decode(torch.from_numpy(codes[isnan])).numpy()).all()


def test_codes_match_torch_float8_bit_patterns():
    for name, dt, sat in (("fp8_e4m3", torch.float8_e4m3fn, True), ("fp8_e5m2", torch.float8_e5m2, False)):
        fmt = get_format(name)
        x = np.concatenate([probe_points(fmt), rand_f32(1 << 16, seed=4)])
        x = x[~np.isnan(x)]
        codes = fmt.encode(t(x), saturate=sat)
        assert torch.equal(codes, t(x).to(dt).view(torch.uint8)), name


ELEMENTS = [n for n in list_formats() if get_format(n).kind in ("float", "codebook", "scale")
            and get_format(n).bits <= 16] + ["int2", "int3", "int4", "int8", "int16", "uint1", "uint4", "uint8",
                                             "uint16", "e8m2", "e4m3fnuz", "e5m2_ftz", "e2m0", "int8_narrow",
                                             "e8m2_b140", "codebook:-1,0,1,4"]


@pytest.mark.parametrize("name", ELEMENTS)
def test_direct_decode_encode_equals_cast(name):
    """decode(encode(x)) == quantize(x) for a direct cast: the codes hold exactly the cast values."""
    fmt = get_format(name)
    x = np.concatenate([probe_points(fmt), rand_f32(1 << 13, seed=6)])
    if not (fmt.kind == "float" and fmt.has_nan) and fmt.kind != "scale":
        x = x[~np.isnan(x)]
    for sat in (True, False):
        if fmt.kind == "scale":
            codes = fmt.encode(t(x))
            want = e8m0_cast(t(x))
        else:
            enc = encode(t(x), name, scaling="none", saturate=sat)
            assert enc.scale is None and enc.format == fmt
            codes = enc.codes
            want = quantize(t(x), name, scaling="none", saturate=sat, backend="eager")
            assert_same(decode(enc), want, x, f"{name} saturate={sat} decode(encode(x))")
        assert codes.dtype == (torch.uint8 if fmt.bits <= 8 else torch.int32)
        assert_same(fmt.decode(codes), want, x, f"{name} saturate={sat}")
        if fmt.kind == "float":
            assert_same(want, float_cast(t(x), fmt, "nearest", sat), x, "quantize == float_cast")


def test_formats_without_nan_code_refuse_nan():
    x = t([1.0, np.nan])
    for name in ("fp4_e2m1", "fp6_e3m2", "int8", "uint4", "nf4", "codebook:-1,0,1,4"):
        with pytest.raises(ValueError, match="no NaN code"):
            encode(x, name, scaling="none")
    with pytest.raises(ValueError, match="no NaN code"):
        encode(x, "int8")          # tensor scaling: the NaN survives x / s


# ---- scaled specs: decode(encode(x)) == quantize(x), bit for bit ---------------------------------------
SPECS = [
    ("fp8_e4m3", dict(scaling="tensor")), ("fp8_e5m2", dict(scaling="tensor", saturate=False)),
    ("fp4_e2m1", dict(scaling="tensor", pow2_scale=True)), ("fp6_e2m3", dict(scaling="channel", axis=0)),
    ("fp8_e4m3", dict(scaling="channel", axis=1)), ("fp4_e2m1", dict(scaling="group", group_size=16)),
    ("int8", {}), ("int4", dict(scaling="channel", axis=0)), ("int4_narrow", dict(scaling="group", group_size=8)),
    ("int8", dict(pow2_scale=True)), ("uint4", {}), ("uint8", dict(scaling="channel", axis=0)),
    ("uint3", dict(scaling="group", group_size=16)), ("nf4", {}), ("nf4", dict(scaling="group", group_size=32)),
    ("codebook:-1,0,1,4", dict(scaling="tensor")), ("fp8_e4m3", dict(scaling="tensor", rounding="zero")),
    ("int4", dict(rounding="zero")), ("mxfp4", {}), ("mxint8", {}), ("nvfp4", {}),
    ("mxfp8_e4m3", dict(axis=0, pad=True)), ("mxfp6_e2m3", dict(block_size=16)),
    ("fp8_e4m3", dict(scaling="group", group_size=64, pad=True)),
]


def _data(mag, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 64, generator=g) * mag
    x[1] = 0.0
    x[2, :5] = torch.tensor([-0.0, 2.0 ** -149, -3.0, 1e-30, 7.0]) * mag
    return x


SPEC_IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in SPECS]


@pytest.mark.parametrize("name,kw", SPECS, ids=SPEC_IDS)
def test_decode_encode_equals_quantize(name, kw):
    for i, mag in enumerate((1.0, 1e-38, 1e-42, 1e30, 3e38)):
        x = _data(mag, i)
        want = quantize(x, name, backend="eager", **kw)
        enc = encode(x, name, **kw)
        assert enc.codes.shape == x.shape and enc.codes.dtype == torch.uint8
        assert_same(decode(enc), want, x, f"{name} {kw} magnitude {mag}")
        assert_same(decode(enc, torch.float16), want.half(), x, "decode(dtype=fp16)")
    x = _data(1.0, 9)
    x[3, 7] = float("inf")
    x[4, 9] = -float("inf")
    assert_same(decode(encode(x, name, **kw)), quantize(x, name, **kw), x, f"{name} {kw} with Inf")


@pytest.mark.parametrize("name,kw", [("fp8_e4m3", dict(scaling="tensor")), ("int4", {}), ("uint4", {}),
                                     ("fp4_e2m1", {}), ("nf4", {}), ("mxfp4", {}), ("nvfp4", {}),
                                     ("int8", dict(scaling="group", group_size=16))])
def test_stochastic_encode_matches_quantize_with_same_seed(name, kw):
    x = _data(1.0, 5)
    q = quantize(x, name, rounding="stochastic", generator=torch.Generator().manual_seed(3), **kw)
    enc = encode(x, name, rounding="stochastic", generator=torch.Generator().manual_seed(3), **kw)
    assert_same(decode(enc), q, x, f"{name} stochastic")


# ---- packing ---------------------------------------------------------------------------------------------
def test_pack_golden_layouts():
    assert pack(torch.tensor([1, 2]), 4).tolist() == [0x21]                     # first code in the low nibble
    assert pack(torch.tensor([1, 2, 3, 0]), 2).tolist() == [0b00111001]         # 2-bit codes fill from the bottom
    assert pack(torch.tensor([1, 0, 1, 1, 0, 0, 0, 1, 1]), 1).tolist() == [0b10001101, 0b1]
    # four 6-bit codes a, b, c, d fill three bytes: a | b << 6 | c << 12 | d << 18, little-endian
    a, b, c, d = 0b101010, 0b000111, 0b110011, 0b011110
    word = a | b << 6 | c << 12 | d << 18
    assert pack(torch.tensor([a, b, c, d]), 6).tolist() == [word & 255, word >> 8 & 255, word >> 16]
    assert pack(torch.tensor([0x1234, 0xABCD]), 16).tolist() == [0x34, 0x12, 0xCD, 0xAB]
    assert pack(torch.tensor([5, 7, 1]), 3).tolist() == [0b01111101, 0b0]
    assert pack(torch.tensor([200, 3], dtype=torch.uint8), 8).tolist() == [200, 3]


@pytest.mark.parametrize("bits", range(1, 17))
def test_pack_matches_numpy_packbits_and_round_trips(bits):
    g = np.random.default_rng(bits)
    for count in (1, 7, 8, 33, 1000):
        codes = g.integers(0, 2 ** bits, count)
        stream = ((codes[:, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(-1)
        want = np.packbits(stream, bitorder="little")
        dt = torch.uint8 if bits <= 8 else torch.int32
        packed = pack(torch.from_numpy(codes).to(dt), bits)
        assert packed.dtype == torch.uint8 and packed.numel() == (count * bits + 7) // 8
        assert np.array_equal(packed.numpy(), want)
        back = unpack(packed, bits, count)
        assert back.dtype == dt and np.array_equal(back.numpy().astype(np.int64), codes)


def test_pack_encoded_sub_byte_codes_round_trip():
    x = torch.randn(4, 32)
    for name in ("fp4_e2m1", "int4", "fp6_e3m2", "int2", "mxfp4", "nvfp4"):
        enc = encode(x, name)
        bits = get_format(name).bits
        back = unpack(pack(enc.codes, bits), bits, enc.codes.numel()).reshape(enc.codes.shape)
        assert torch.equal(back, enc.codes), name


@pytest.mark.parametrize("call,needle", [
    (lambda: pack(torch.tensor([16]), 4), "0..15"), (lambda: pack(torch.tensor([-1]), 4), "0..15"),
    (lambda: pack(torch.tensor([1]), 0), "bits=0"), (lambda: pack(torch.tensor([1]), 17), "1..16"),
    (lambda: unpack(torch.zeros(1, dtype=torch.int32), 4, 2), "uint8"),
    (lambda: unpack(torch.zeros(1, dtype=torch.uint8), 4, 3), "need 2 bytes"),
    (lambda: get_format("fp4").decode(torch.tensor([16])), "0..15"),
])
def test_pack_and_decode_errors(call, needle):
    with pytest.raises(ValueError) as e:
        call()
    assert needle in str(e.value), str(e.value)
