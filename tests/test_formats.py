"""Format definitions: golden facts (../shared/numerics.md), the registry, value tables, exhaustive
round trips of every format of 8 bits or fewer, named tie cases, and random minifloats (hypothesis)
checked against the float64 reference."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import NUMPY_NAN_WARNINGS, assert_same, probe_points, rand_f32, t
from lowbit import quantize
from lowbit.formats import (BlockFormat, CodebookFormat, E8M0Format, FloatFormat, IntFormat, SHORTHANDS,
                            get_format, list_formats)
from lowbit.formats.cast import float_cast
from lowbit.formats.reference import reference_cast
from lowbit.formats.tables import code_values, values

pytestmark = [pytest.mark.filterwarnings(w) for w in NUMPY_NAN_WARNINGS]

# ---- golden facts, typed in from ../shared/numerics.md (not computed from lowbit) --------------------
# name: (E, M, bias, max, min normal, min subnormal, has Inf, has NaN)
GOLDEN = {
    "fp8_e4m3": (4, 3, 7, 448.0, 2.0 ** -6, 2.0 ** -9, False, True),
    "fp8_e5m2": (5, 2, 15, 57344.0, 2.0 ** -14, 2.0 ** -16, True, True),
    "fp6_e3m2": (3, 2, 3, 28.0, 0.25, 0.0625, False, False),
    "fp6_e2m3": (2, 3, 1, 7.5, 1.0, 0.125, False, False),
    "fp4_e2m1": (2, 1, 1, 6.0, 1.0, 0.5, False, False),
    "fp16": (5, 10, 15, 65504.0, 2.0 ** -14, 2.0 ** -24, True, True),
    "bf16": (8, 7, 127, 3.3895313892515355e38, 2.0 ** -126, 2.0 ** -133, True, True),
}


@pytest.mark.parametrize("name", list(GOLDEN))
def test_golden_float_facts(name):
    E, M, bias, mx, mn, ms, has_inf, has_nan = GOLDEN[name]
    f = get_format(name)
    assert (f.exp_bits, f.man_bits, f.bias) == (E, M, bias)
    assert (f.max, f.min_normal, f.min_subnormal) == (mx, mn, ms)
    assert (f.has_inf, f.has_nan, f.bits, f.n_codes) == (has_inf, has_nan, 1 + E + M, 2 ** (1 + E + M))
    v = code_values(f)
    fin = v[np.isfinite(v)]
    assert fin.max() == mx and fin[fin > 0].min() == ms and np.isinf(v).any() == has_inf
    assert np.isnan(v).any() == has_nan


def test_golden_special_codes():
    e4m3 = code_values(get_format("fp8_e4m3"))
    assert set(np.flatnonzero(np.isnan(e4m3))) == {0x7F, 0xFF}           # only S.1111.111
    e5m2 = code_values(get_format("fp8_e5m2"))
    assert list(np.flatnonzero(np.isinf(e5m2))) == [0x7C, 0xFC]           # S.11111.00
    assert set(np.flatnonzero(np.isnan(e5m2))) == {0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF}
    assert e5m2[0xFC] == -np.inf
    fnuz = code_values(get_format("e4m3fnuz"))
    assert list(np.flatnonzero(np.isnan(fnuz))) == [0x80] and np.nanmax(fnuz) == 240
    e8m0 = code_values(get_format("e8m0"))
    assert e8m0[0] == 2.0 ** -127 and e8m0[127] == 1.0 and e8m0[254] == 2.0 ** 127 and np.isnan(e8m0[255])


# published value tables (positive half; tables are symmetric) -- numerics.md and the ExMy formulas
VALUE_TABLES = {
    "fp4_e2m1": [0, 0.5, 1, 1.5, 2, 3, 4, 6],
    "fp2": [0, 2],                      # e1m0: bias 0, no subnormals (M = 0)
    "fp3": [0, 1, 2, 4],                # e2m0: bias 1
    "e1m1": [0, 1, 2, 3],               # bias 0: subnormal 1, normals 2, 3
    "fp6_e2m3": [0, .125, .25, .375, .5, .625, .75, .875, 1, 1.125, 1.25, 1.375, 1.5, 1.625, 1.75, 1.875,
                 2, 2.25, 2.5, 2.75, 3, 3.25, 3.5, 3.75, 4, 4.5, 5, 5.5, 6, 6.5, 7, 7.5],
}


@pytest.mark.parametrize("name", list(VALUE_TABLES))
def test_value_tables(name):
    pos = np.array(VALUE_TABLES[name], dtype=np.float64)
    assert list(values(get_format(name))) == sorted(set((-pos).tolist() + pos.tolist()))


def test_int_and_codebook_facts():
    i8 = get_format("int8")
    assert (i8.qmin, i8.qmax, i8.max, i8.n_codes) == (-128, 127, 127, 256)
    n8 = get_format("int8_narrow")
    assert (n8.qmin, n8.qmax) == (-127, 127) and np.isnan(code_values(n8)[0x80])
    u4 = get_format("uint4")
    assert (u4.qmin, u4.qmax, u4.bits) == (0, 15, 4)
    mx8 = get_format("mxint8").element
    assert (mx8.max, mx8.min, mx8.step, mx8.emax) == (127 / 64, -127 / 64, 2.0 ** -6, 0)
    nf4 = get_format("nf4")
    assert nf4.n_codes == 16 and nf4.points[0] == -1 and nf4.points[-1] == 1 and 0.0 in nf4.points
    cb = get_format("codebook:4,-1,1,0")
    assert cb.points == (-1.0, 0.0, 1.0, 4.0) and cb.bits == 2 and cb.max == 4


@pytest.mark.parametrize("name,bpe", [("mxfp8_e4m3", 8.25), ("mxfp8_e5m2", 8.25), ("mxfp6_e3m2", 6.25),
                                      ("mxfp6_e2m3", 6.25), ("mxfp4", 4.25), ("mxint8", 8.25), ("nvfp4", 4.5)])
def test_block_formats(name, bpe):
    f = get_format(name)
    assert f.kind == "block" and f.bits_per_element == bpe
    emax = {"mxfp8_e4m3": 8, "mxfp8_e5m2": 15, "mxfp6_e3m2": 4, "mxfp6_e2m3": 2, "mxfp4": 2, "mxint8": 0}
    if name in emax:  # OCP MX v1.0 table: emax of the element's largest normal
        assert (f.element.emax, f.block_size, f.scale) == (emax[name], 32, "e8m0")
    else:
        assert (f.element.name, f.block_size, f.scale, f.tensor_scale) == ("fp4_e2m1", 16, "e4m3", True)


# ---- registry -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_formats())
def test_registry_round_trip(name):
    f = get_format(name)
    assert f.name == name and get_format(name.upper()) is f and get_format(f) is f
    assert hash(f) == hash(get_format(name)) and f.kind in ("float", "int", "codebook", "scale", "block")
    d = f.describe()
    assert d["name"] == name and d["bits"] == f.bits and d["bits_per_element"] == f.bits_per_element
    with pytest.raises(Exception):  # frozen
        f.name = "other"


def test_registry_kinds_and_shorthands():
    assert set(list_formats("float")) >= {"fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1",
                                          "fp16", "bf16", "fp32"}
    assert list_formats("scale") == ["e8m0"]
    assert {f"int{b}" for b in range(2, 17)} | {f"uint{b}" for b in range(1, 17)} == set(list_formats("int"))
    assert set(list_formats("block")) == {"mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4",
                                          "mxint8", "nvfp4"}
    assert SHORTHANDS == {"fp8": "fp8_e4m3", "fp6": "fp6_e3m2", "fp4": "fp4_e2m1", "fp3": "e2m0", "fp2": "e1m0"}
    for short, canon in SHORTHANDS.items():
        assert get_format(short).name == canon


@pytest.mark.parametrize("generic,named", [("e2m1", "fp4_e2m1"), ("e4m3fn", "fp8_e4m3"), ("e5m2ieee", "fp8_e5m2"),
                                           ("e3m2", "fp6_e3m2"), ("e2m3", "fp6_e2m3"), ("e5m10ieee", "fp16"),
                                           ("e8m7", "bf16"), ("e4m3fn_b7", "fp8_e4m3")])
def test_generic_spelling_resolves_to_named_format(generic, named):
    assert get_format(generic) is get_format(named)


def test_generic_spellings_are_distinct_formats():
    e5m2 = get_format("e5m2")  # finite by default for E <= 7: not OCP E5M2
    assert e5m2 != get_format("fp8_e5m2") and e5m2.max == 114688.0 and not e5m2.has_inf
    assert get_format("e4m3fnuz").bias == 8 and get_format("e4m3_b11").bias == 11
    assert get_format("e5m2_ftz").min_subnormal is None and not get_format("e5m2_ftz").subnormals
    assert get_format("e3m4ieee").max == 15.5


BAD_NAMES = [  # name, words the message must contain (the bad value and what is allowed)
    ("fp7", ["'fp7'", "fp8_e4m3", "eXmY"]), ("e9m2", ["'e9m2'", "1 <= X <= 8"]), ("e5m11", ["'e5m11'", "0 <= Y <= 10"]),
    ("int17", ["'int17'", "int2..int16"]), ("uint0", ["'uint0'", "uint1..uint16"]), ("int1", ["'int1'", "int2..int16"]),
    ("codebook:a,b", ["codebook:a,b", "codebook:-1,0,1,4"]), ("codebook:1", ["at least 2", "got 1"]),
    ("codebook:1,1", ["distinct", "[1.0, 1.0]"]), ("e1m0fn", ["e1m0", "'fn'", "'finite'"]),
    ("e1m0ieee", ["e1m0", "'ieee'", "exp_bits >= 2"]), ("e8m7fn", ["e8m7fn", "exceeds", "ieee"]),
    ("e8m2_b100", ["e8m2_b100", "larger bias"]), ("e4m3xyz", ["'e4m3xyz'", "eXmY"]),
    ("e8m2_b200", ["e8m2_b200", "smaller bias"]),
]


@pytest.mark.parametrize("bad,needles", BAD_NAMES, ids=[b for b, _ in BAD_NAMES])
def test_bad_format_names(bad, needles):
    with pytest.raises(ValueError) as e:
        get_format(bad)
    for needle in needles:
        assert needle in str(e.value), str(e.value)


@pytest.mark.parametrize("make,needle", [
    (lambda: FloatFormat(9, 2), "exp_bits=9"), (lambda: FloatFormat(4, 24), "man_bits=24"),
    (lambda: FloatFormat(4, 3, specials="xyz"), "specials='xyz'"), (lambda: IntFormat(0), "bits=0"),
    (lambda: IntFormat(4, signed=False, narrow=True), "narrow"), (lambda: IntFormat(1), "int2..int16"),
    (lambda: CodebookFormat((0.0, float("inf"))), "finite"), (lambda: CodebookFormat((0, 1), scaling="x"), "'x'"),
    (lambda: BlockFormat(get_format("nf4")), "float or int"),
    (lambda: BlockFormat(get_format("fp4"), 0), "block_size=0"),
    (lambda: BlockFormat(get_format("fp4"), 32, "e5m2"), "e8m0, e4m3"),
    (lambda: BlockFormat(get_format("fp4"), 32, scale_rule="round"), "floor, ceil, rceil"),
])
def test_bad_format_objects(make, needle):
    with pytest.raises(ValueError) as e:
        make()
    assert needle in str(e.value), str(e.value)


def test_e8m0_format_facts():
    f = get_format("e8m0")
    assert isinstance(f, E8M0Format) and (f.max, f.min_normal, f.n_codes, f.bits) == (2.0 ** 127, 2.0 ** -127, 256, 8)


# ---- derived properties equal the value table, for many generic formats -------------------------------
GENERIC = ["e1m0", "e2m0", "e1m1", "e2m2", "e3m3", "e5m3", "e4m3fnuz", "e5m2_ftz", "e3m2_b2", "e8m2", "e4m0",
           "e3m1fn", "e2m1ieee", "e6m1", "e3m4", "e5m2fnuz", "e7m2", "e2m3_b-1"]


@pytest.mark.parametrize("name", list(GOLDEN) + GENERIC)
def test_derived_properties_match_table(name):
    f = get_format(name)
    v = code_values(f)
    fin = v[np.isfinite(v)]
    assert f.max == fin.max() == -fin.min()
    normals = [math.ldexp(1 + m / 2 ** f.man_bits, e - f.bias) for e in range(1, 2 ** f.exp_bits)
               for m in range(2 ** f.man_bits)]
    assert f.min_normal == min(normals) and f.min_normal in fin
    pos = fin[fin > 0]
    assert (f.min_subnormal or f.min_normal) == pos.min()
    if f.min_subnormal is not None:
        assert f.min_subnormal < f.min_normal
    assert f.n_codes == len(v) == 2 ** f.bits
    assert f.emax == math.floor(math.log2(f.max))


# ---- exhaustive round trips: every code of every format of 8 bits or fewer ----------------------------
SMALL = sorted(n for n in set(list_formats()) | set(GENERIC) | {"int8_narrow", "int4_narrow", "codebook:-1,0,1,4",
                                                                "codebook:-3,-1,1,3"}
               if get_format(n).kind in ("float", "int", "codebook", "scale") and get_format(n).bits <= 8)


@pytest.mark.parametrize("name", SMALL)
def test_round_trip_every_code(name):
    f = get_format(name)
    assert f.bits <= 8
    codes = torch.arange(f.n_codes).to(torch.uint8)
    v = f.decode(codes)
    assert_same(v, code_values(f), codes, f"{name} decode == table")
    fin = torch.isfinite(v)
    back = f.encode(v[fin], saturate=False)
    assert back.dtype == torch.uint8
    assert_same(f.decode(back), v[fin], v[fin], f"{name} decode(encode(v)) == v")
    # codes are a bijection except for aliases (an _ftz format's subnormal codes all decode to zero)
    bits = v[fin].view(torch.int32)
    unique = (bits[:, None] == bits[None, :]).sum(1) == 1
    assert f.name.endswith("_ftz") or bool(unique.all())
    assert torch.equal(back[unique], codes[fin][unique])
    if f.kind == "float":
        special = v[~fin]
        again = f.decode(f.encode(special, saturate=False))
        assert_same(again, special, special, f"{name} specials")  # Inf -> Inf code, NaN -> a NaN code


# ---- named tie cases (torchao-style tables) -----------------------------------------------------------
TIES = [  # format, saturate, input, expected; each row names the rule it pins down
    ("fp4_e2m1", True, 0.25, 0.0),        # 0 | 0.5: even significand (0)
    ("fp4_e2m1", True, 0.75, 1.0),        # 0.5 | 1: 1.0 is even
    ("fp4_e2m1", True, 1.25, 1.0),
    ("fp4_e2m1", True, 1.75, 2.0),
    ("fp4_e2m1", True, 2.5, 2.0),
    ("fp4_e2m1", True, 3.5, 4.0),
    ("fp4_e2m1", True, 5.0, 4.0),
    ("fp4_e2m1", True, -5.0, -4.0),
    ("fp4_e2m1", True, 1e9, 6.0),          # finite format: always saturates
    ("fp4_e2m1", False, 1e9, 6.0),
    ("fp8_e4m3", True, 2.0 ** -10, 0.0),   # half the smallest subnormal
    ("fp8_e4m3", True, 3 * 2.0 ** -10, 2.0 ** -8),
    ("fp8_e4m3", False, 464.0, 448.0),     # overflow tie: 448 (m=110) is even, 480 would be odd
    ("fp8_e4m3", False, 464.00003, math.nan),
    ("fp8_e4m3", True, 464.00003, 448.0),
    ("fp8_e4m3", True, math.inf, 448.0),
    ("fp8_e4m3", False, math.inf, math.nan),
    ("fp8_e5m2", False, 61440.0, math.inf),  # 57344 | 65536: 65536 (m=00) is even
    ("fp8_e5m2", False, 61439.996, 57344.0),
    ("fp8_e5m2", True, 61440.0, 57344.0),
    ("fp8_e5m2", True, -math.inf, -57344.0),
    ("fp8_e5m2", False, -math.inf, -math.inf),
    ("e3m1fn", False, 20.0, 16.0),         # max 16 = 1.0 * 2^4: the next grid value is 24, not 20
    ("e3m1fn", False, 20.000002, math.nan),
    ("e2m0", True, 3.0, 4.0),              # M = 0: the significand is always 1, ties go up in magnitude
    ("e2m0", True, 1.5, 2.0),
    ("e2m0", True, 0.5, 0.0),              # 0 | 1: zero is even
    ("e1m0", True, 1.0, 0.0),
    ("e1m0", True, 1.0000001, 2.0),
    ("e5m2_ftz", True, 2.0 ** -15, 0.0),   # no subnormals: half of min normal ties to zero
    ("e5m2_ftz", True, 2.0 ** -15 * 1.0000001, 2.0 ** -14),
    ("int8", True, 2.5, 2.0), ("int8", True, -2.5, -2.0), ("int8", True, 3.5, 4.0), ("int8", True, 127.5, 127.0),
    ("int8", True, -128.5, -128.0), ("int8_narrow", True, -128.0, -127.0), ("uint4", True, -3.0, 0.0),
    ("nf4", True, 0.5, 0.44070982933044434),  # nearest codebook value
    ("codebook:-1,0,1,4", True, 2.5, 1.0),    # 1 (index 2) | 4 (index 3): a tie goes to the even index
    ("codebook:-1,0,1,4", True, 2.5000002, 4.0),
    ("codebook:-3,-1,1,3", True, -1e-20, -1.0),  # the midpoint 0 is far below the values' scale
]


@pytest.mark.parametrize("name,sat,x,want", TIES)
def test_named_ties(name, sat, x, want):
    q = quantize(torch.tensor([x]), name, saturate=sat, scaling="none", backend="eager")
    assert_same(q, [want], [x], f"{name}({x})")
    if get_format(name).kind == "float":
        assert_same(reference_cast(np.array([x], np.float32), get_format(name), sat), [want], [x], "reference")


# ---- random minifloats (Brevitas-style): fast cast == reference for any valid ExMy ---------------------
@st.composite
def minifloats(draw):
    E = draw(st.integers(1, 8))
    M = draw(st.integers(0, 11 - E))
    specials = draw(st.sampled_from(["ieee", "fn", "fnuz", "finite"]))
    default = 2 ** (E - 1) - (0 if specials == "fnuz" else 1)
    bias = draw(st.one_of(st.none(), st.integers(default - 6, default + 6)))
    subnormals = draw(st.booleans())
    try:
        return FloatFormat(E, M, bias=bias, specials=specials, subnormals=subnormals)
    except ValueError:
        assume(False)


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.filter_too_much])
@given(fmt=minifloats(), seed=st.integers(0, 2 ** 16))
def test_random_minifloat_matches_reference(fmt, seed):
    x = np.concatenate([probe_points(fmt), rand_f32(2048, seed)])
    for sat in (True, False):
        assert_same(float_cast(t(x), fmt, "nearest", sat), reference_cast(x, fmt, sat), x,
                    f"{fmt.name} saturate={sat}")
    fin = values(fmt)
    assert fin[-1] == fmt.max and fin[fin > 0][0] == (fmt.min_subnormal or fmt.min_normal)
