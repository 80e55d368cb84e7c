"""Element casts against independent oracles (ml_dtypes, torch dtypes) and against lowbit's reference.

Oracle quirks this file relies on (each is checked by a test of its own, so a changed oracle fails loudly
instead of silently weakening the comparison):
  * ml_dtypes' FP8 and fp16/bf16 casts do not saturate (overflow -> Inf or NaN): compare with
    ``saturate=False``, and compare ``saturate=True`` with the oracle applied to ``clip(x, -max, max)``.
  * ml_dtypes' FP6/FP4 casts saturate and map NaN to -0: NaN is excluded there and checked separately.
  * ml_dtypes' integer casts truncate toward zero and wrap: only in-range integers are compared with
    them; rounding is compared with numpy ``rint`` + ``clip``.
  * torch's float8_e4m3fn cast saturates (even Inf -> 448), float8_e5m2 does not.
  * fp32 *subnormals* to E8M0: torch (2.13) and ml_dtypes < 0.7 round on the bit pattern, so every x in
    (2^-127, 2^-126) becomes 2^-126 although 2^-127 is nearer; ml_dtypes >= 0.7 rounds by value (ties
    1.5 * 2^-127 up), as lowbit's documented contract does. With ml_dtypes >= 0.7 that interval is part
    of the ml_dtypes comparison; with an older ml_dtypes, and for torch, it is compared with a hand
    computation instead. torch's E8M0 cast also ignores the sign and maps 0 to 2^-127: it is compared on
    positive normal fp32 inputs only.
Each quirk is stated per oracle version in ``test_oracle_quirks_are_as_assumed``; a quirk that an oracle
fixes becomes a comparison that has to agree (as the E8M0 subnormals did with ml_dtypes 0.7.0).
"""
from __future__ import annotations

import zlib

import ml_dtypes
import numpy as np
import pytest
import torch

from conftest import F32, NUMPY_NAN_WARNINGS, assert_same, f32_exact, neighbours, probe_points, rand_f32, t
from lowbit import quantize
from lowbit.formats import get_format, list_formats
from lowbit.formats.cast import e8m0_cast, float_cast
from lowbit.formats.reference import reference_cast
from lowbit.formats.tables import code_values

N_RANDOM = 1 << 20
ML_DTYPES_VERSION = tuple(int(p) for p in ml_dtypes.__version__.split(".")[:2])
# ml_dtypes 0.7.0 rounds fp32 subnormals to E8M0 by value (older releases: on the bit pattern)
ML_E8M0_SUBNORMALS_BY_VALUE = ML_DTYPES_VERSION >= (0, 7)
pytestmark = [pytest.mark.filterwarnings(w) for w in NUMPY_NAN_WARNINGS]

# lowbit name, oracle dtype, oracle saturates?
ML_FLOATS = [
    ("fp8_e4m3", ml_dtypes.float8_e4m3fn, False),
    ("fp8_e5m2", ml_dtypes.float8_e5m2, False),
    ("e4m3fnuz", ml_dtypes.float8_e4m3fnuz, False),
    ("e5m2fnuz", ml_dtypes.float8_e5m2fnuz, False),
    ("e3m4ieee", ml_dtypes.float8_e3m4, False),
    ("fp6_e2m3", ml_dtypes.float6_e2m3fn, True),
    ("fp6_e3m2", ml_dtypes.float6_e3m2fn, True),
    ("fp4_e2m1", ml_dtypes.float4_e2m1fn, True),
    ("fp16", np.float16, False),
    ("bf16", ml_dtypes.bfloat16, False),
]
ML_IDS = [m[0] for m in ML_FLOATS]


@pytest.fixture(scope="module")
def random_x():
    return rand_f32(N_RANDOM, seed=1)


def oracle(x, dt):
    with np.errstate(over="ignore", invalid="ignore"):
        return x.astype(dt).astype(F32)


def code_dtype_np(bits):
    return np.uint8 if bits <= 8 else np.uint16


# ---- the oracles' own behaviour (documents the quirks the comparisons rely on) ----------------------
def test_oracle_quirks_are_as_assumed():
    big = np.array([1e6, -1e6, np.inf], dtype=F32)
    assert np.isnan(oracle(big, ml_dtypes.float8_e4m3fn)).all()            # no saturation
    assert np.isinf(oracle(big, ml_dtypes.float8_e5m2)).all()
    assert (oracle(big, ml_dtypes.float4_e2m1fn) == [6, -6, 6]).all()       # saturates
    assert np.signbit(oracle(np.array([np.nan], F32), ml_dtypes.float4_e2m1fn))[0]  # NaN -> -0
    assert oracle(np.array([2.7, -2.7], F32), ml_dtypes.int4).tolist() == [2, -2]    # truncates
    assert torch.tensor([1e6, float("inf")]).to(torch.float8_e4m3fn).float().tolist() == [448, 448]
    assert torch.tensor([1e6]).to(torch.float8_e5m2).float().isinf().all()
    sub = torch.tensor([2.0 ** -127 * 1.01])                                  # nearer 2^-127...
    assert sub.to(torch.float8_e8m0fnu).float().item() == 2.0 ** -126        # ...but torch says 2^-126
    # ml_dtypes < 0.7 says 2^-126 too (bit pattern); 0.7.0 and newer round by value, as lowbit does
    want = 2.0 ** -127 if ML_E8M0_SUBNORMALS_BY_VALUE else 2.0 ** -126
    assert oracle(sub.numpy(), ml_dtypes.float8_e8m0fnu)[0] == want, ml_dtypes.__version__


# ---- every code's value ----------------------------------------------------------------------------
@pytest.mark.parametrize("name,dt,_sat", ML_FLOATS, ids=ML_IDS)
def test_every_code_value_matches_ml_dtypes(name, dt, _sat):
    fmt = get_format(name)
    codes = np.arange(fmt.n_codes).astype(code_dtype_np(fmt.bits))
    want = codes.view(dt).astype(F32)
    assert_same(code_values(fmt), want, codes, f"{name} value table")
    assert_same(fmt.decode(torch.from_numpy(codes.astype(np.int64))), want, codes, f"{name} decode")


@pytest.mark.parametrize("name,dt", [("int2", ml_dtypes.int2), ("int4", ml_dtypes.int4),
                                     ("uint2", ml_dtypes.uint2), ("uint4", ml_dtypes.uint4),
                                     ("int8", np.int8), ("uint8", np.uint8)])
def test_every_int_code_value_matches_ml_dtypes(name, dt):
    fmt = get_format(name)
    codes = np.arange(fmt.n_codes, dtype=np.uint8)
    want = codes.view(dt).astype(F32)
    assert_same(fmt.decode(torch.from_numpy(codes)), want, codes, f"{name} decode")


def test_every_e8m0_code_matches_both_oracles():
    fmt = get_format("e8m0")
    codes = np.arange(256, dtype=np.uint8)
    want = codes.view(ml_dtypes.float8_e8m0fnu).astype(F32)
    assert_same(fmt.decode(torch.from_numpy(codes)), want, codes, "e8m0 decode vs ml_dtypes")
    want_t = torch.from_numpy(codes).view(torch.float8_e8m0fnu).float()
    assert_same(fmt.decode(torch.from_numpy(codes)), want_t, codes, "e8m0 decode vs torch")


# ---- casts: probes (every value, tie, tie +- 1 ulp, overflow, underflow, specials) and random ---------
@pytest.mark.parametrize("name,dt,oracle_saturates", ML_FLOATS, ids=ML_IDS)
def test_cast_matches_ml_dtypes(name, dt, oracle_saturates, random_x):
    fmt = get_format(name)
    x = np.concatenate([probe_points(fmt), random_x])
    if oracle_saturates:
        x = x[~np.isnan(x)]
    for sat in (False, True):
        got = float_cast(t(x), fmt, "nearest", sat)
        if oracle_saturates or not sat:
            want = oracle(x, dt)
        else:  # a saturating cast equals the raw cast of the clamped input (NaN stays NaN)
            want = oracle(np.clip(x, -fmt.max, fmt.max).astype(F32), dt)
        assert_same(got, want, x, f"{name} saturate={sat}")
        # the public API (direct cast) is the same kernel
        assert_same(quantize(t(x), name, saturate=sat, scaling="none", backend="eager"), want, x,
                    f"quantize {name} saturate={sat}")


@pytest.mark.parametrize("name", ["fp6_e2m3", "fp6_e3m2", "fp4_e2m1"])
def test_nan_in_nan_out_for_finite_formats(name):
    x = t([np.nan, -np.nan, 1.0])
    q = float_cast(x, get_format(name), "nearest", True)
    assert torch.isnan(q[:2]).all() and q[2] == 1.0


@pytest.mark.parametrize("name,dt,saturates", [("fp8_e4m3", torch.float8_e4m3fn, True),
                                               ("fp8_e5m2", torch.float8_e5m2, False)])
def test_cast_matches_torch_float8(name, dt, saturates, random_x):
    fmt = get_format(name)
    x = np.concatenate([probe_points(fmt), random_x])
    want = t(x).to(dt).float()
    assert_same(float_cast(t(x), fmt, "nearest", saturates), want, x, f"{name} vs torch {dt}")


@pytest.mark.parametrize("name,dt", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_cast_matches_torch_half_types(name, dt, random_x):
    fmt = get_format(name)
    x = np.concatenate([probe_points(fmt), random_x])
    assert_same(float_cast(t(x), fmt, "nearest", False), t(x).to(dt).float(), x, f"{name} vs torch")


# ---- E8M0 ------------------------------------------------------------------------------------------
def e8m0_probes():
    v = code_values(get_format("e8m0"))[:255]
    p = f32_exact(np.concatenate([v, v * 1.5, v * 0.75, v * 1.25]))
    return np.concatenate([neighbours(p), [0.0, -0.0, np.inf, -np.inf, np.nan, -1.0, -2.0 ** -127]]).astype(F32)


def test_e8m0_matches_ml_dtypes(random_x):
    x = np.concatenate([e8m0_probes(), random_x])
    if not ML_E8M0_SUBNORMALS_BY_VALUE:                  # see the module docstring
        x = x[~((x > 2.0 ** -127) & (x < 2.0 ** -126))]
    assert_same(e8m0_cast(t(x)), oracle(x, ml_dtypes.float8_e8m0fnu), x, "e8m0 vs ml_dtypes")
    codes = get_format("e8m0").encode(t(x)).numpy()
    with np.errstate(invalid="ignore", over="ignore"):
        want = x.astype(ml_dtypes.float8_e8m0fnu).view(np.uint8)
    assert (codes == want).all(), x[codes != want][:8]


def test_e8m0_matches_torch_on_positive_normals(random_x):
    x = np.concatenate([e8m0_probes(), random_x])
    x = x[np.isfinite(x) & (x >= 2.0 ** -126)]
    assert_same(e8m0_cast(t(x)), t(x).to(torch.float8_e8m0fnu).float(), x, "e8m0 vs torch")


def test_e8m0_rounds_fp32_subnormals_by_value():
    lo, hi = 2.0 ** -127, 2.0 ** -126
    mid = 1.5 * lo
    x = neighbours(np.array([lo, mid, hi, 1.01 * lo, 1.49 * lo, 1.51 * lo, 1.99 * lo, 0.5 * lo, 2.0 ** -149], F32))
    x = x[x > 0]
    want = np.where(x >= mid, hi, lo).astype(F32)   # nearest power of two; the tie 1.5 * 2^-127 goes up
    assert_same(e8m0_cast(t(x)), want, x, "e8m0 in the fp32 subnormal range")
    if ML_E8M0_SUBNORMALS_BY_VALUE:                 # the oracle agrees since it fixed its quirk
        assert_same(e8m0_cast(t(x)), oracle(x, ml_dtypes.float8_e8m0fnu), x, "e8m0 subnormals vs ml_dtypes")


def test_e8m0_contract():
    x = t([1.0, 1.5, 1.4999999, 3.0, 0.75, 2.0 ** 127, 1.5 * 2.0 ** 127, 1.9 * 2.0 ** 127, 0.0, -0.0,
           -4.0, np.inf, -np.inf, np.nan, 2.0 ** -149, 1e-45])
    want = [1.0, 2.0, 1.0, 4.0, 1.0, 2.0 ** 127, np.nan, np.nan, np.nan, np.nan,
            np.nan, np.nan, np.nan, np.nan, 2.0 ** -127, 2.0 ** -127]
    assert_same(e8m0_cast(x), want, x, "e8m0 contract")
    assert_same(reference_cast(x.numpy(), get_format("e8m0")), want, x, "e8m0 reference")


# ---- integers ----------------------------------------------------------------------------------------
INT_ORACLES = [("int2", ml_dtypes.int2), ("int4", ml_dtypes.int4), ("uint2", ml_dtypes.uint2),
               ("uint4", ml_dtypes.uint4), ("int8", np.int8), ("uint8", np.uint8), ("int16", np.int16)]


@pytest.mark.parametrize("name,dt", INT_ORACLES, ids=[n for n, _ in INT_ORACLES])
def test_int_cast_matches_oracles(name, dt):
    fmt = get_format(name)
    ints = np.arange(fmt.qmin, fmt.qmax + 1).astype(F32)
    q = quantize(t(ints), name, scaling="none", backend="eager")
    assert_same(q, ints.astype(dt).astype(F32), ints, f"{name} integers vs oracle")
    codes = fmt.encode(t(ints)).numpy().astype(np.int64)
    want_codes = ints.astype(dt).view(np.uint8 if fmt.bits <= 8 else np.uint16).astype(np.int64)
    assert (codes == (want_codes & (fmt.n_codes - 1))).all()
    # rounding: numpy rint (half to even) and clip
    g = np.random.default_rng(3)
    span = fmt.qmax - fmt.qmin + 8
    x = np.concatenate([(g.random(100_000) * span + fmt.qmin - 4).astype(F32),
                        neighbours((np.arange(fmt.qmin - 3, fmt.qmax + 3) + 0.5).astype(F32)),
                        [np.inf, -np.inf, 3e38, -3e38, 0.0, -0.0]]).astype(F32)
    want = np.clip(np.rint(x.astype(np.float64)), fmt.qmin, fmt.qmax) + 0.0  # integers have no -0
    assert_same(quantize(t(x), name, scaling="none", backend="eager"), want, x, f"{name} rounding")
    assert torch.isnan(quantize(t([np.nan]), name, scaling="none")).all()


# ---- lowbit's own float64 reference, every float format (<= 16 bits) and generic ones ---------------
GENERIC_FLOATS = ["e1m0", "e2m0", "e1m1", "e2m2", "e3m3", "e5m3", "e4m3fnuz", "e5m2_ftz", "e3m2_b2", "e8m2",
                  "e8m1", "e4m0", "e2m1_ftz", "e4m3_ftz", "e3m1fn", "e2m1ieee", "e4m3_b11", "e3m4", "e6m2",
                  "e5m2fnuz", "e3m4ieee", "e4m3fn_b4", "e7m1", "e5m10_ftz", "e3m2_b-2", "e1m2fn",
                  # normals below fp32's min normal 2^-126 (bias > 127): fp32 subnormals hold whole binades
                  "e8m2_b128", "e8m3_b145", "e5m2_b130", "e5m2_b130_ftz", "e8m0fn_b149_ftz"]
REF_FLOATS = [n for n in list_formats("float") if get_format(n).bits <= 16] + GENERIC_FLOATS


@pytest.mark.parametrize("name", REF_FLOATS)
def test_float_cast_matches_reference(name):
    fmt = get_format(name)
    x = np.concatenate([probe_points(fmt), rand_f32(1 << 16, seed=zlib.crc32(name.encode()))])
    for sat in (True, False):
        got = float_cast(t(x), fmt, "nearest", sat)
        assert_same(got, reference_cast(x, fmt, sat), x, f"{name} saturate={sat}")


def test_reference_itself_matches_ml_dtypes(random_x):
    """The spec is checked too: reference_cast equals ml_dtypes on the probes and random data."""
    for name, dt, oracle_saturates in ML_FLOATS:
        fmt = get_format(name)
        x = np.concatenate([probe_points(fmt), random_x[::16]])
        if oracle_saturates:
            x = x[~np.isnan(x)]
        with np.errstate(invalid="ignore", over="ignore"):
            assert_same(reference_cast(x, fmt, oracle_saturates), oracle(x, dt), x, f"reference {name}")


INTS = [n for n in list_formats("int")] + ["int8_narrow", "int4_narrow", "int2_narrow"]
CODEBOOKS = ["nf4", "codebook:-1,0,1,4", "codebook:-2,-0.5,0.25,3", "codebook:0,1", "codebook:-3,-1,1,3"]


@pytest.mark.parametrize("name", INTS + CODEBOOKS)
def test_int_and_codebook_cast_match_reference(name):
    fmt = get_format(name)
    x = np.concatenate([probe_points(fmt), np.nan_to_num(rand_f32(1 << 15, seed=5), posinf=0, neginf=0) % 40_000])
    x = x[~np.isnan(x)]
    got = quantize(t(x), name, scaling="none", backend="eager")
    assert_same(got, reference_cast(x, fmt), x, name)


# ---- rounding toward zero against a table lookup -----------------------------------------------------
def truncate_ref(x, fmt):
    """The nearest value on the zero side of x (table lookup); beyond the range (and +-Inf) the end
    value (IEEE 754 section 7.4); NaN -> NaN; the sign of a zero result follows x for floats with -0."""
    v = code_values(fmt)
    v = np.unique(v[np.isfinite(v)])
    xd = x.astype(np.float64)
    down = v[np.clip(np.searchsorted(v, xd, side="right") - 1, 0, len(v) - 1)]  # largest v <= x
    up = v[np.clip(np.searchsorted(v, xd, side="left"), 0, len(v) - 1)]         # smallest v >= x
    q = np.where(xd >= 0, down, up)
    q = np.where(np.isnan(xd), np.nan, q)
    if fmt.kind == "float" and fmt.has_negative_zero:
        q = np.where(q == 0, np.copysign(0.0, xd), q)
    return q


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp4_e2m1", "bf16", "e8m2", "e4m3fnuz",
                                  "e5m2_ftz", "e2m0", "e8m2_b140", "e5m2_b130_ftz", "int8", "int4"])
def test_round_toward_zero_is_truncation(name, random_x):
    fmt = get_format(name)
    x = np.concatenate([probe_points(fmt), random_x[::64]])
    for sat in (True, False):
        got = quantize(t(x), name, rounding="zero", saturate=sat, scaling="none", backend="eager")
        assert_same(got, truncate_ref(x, fmt), x, f"{name} zero saturate={sat}")
