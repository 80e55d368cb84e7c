"""lowbit.quantize: properties of the casts and scaling against hand computations (autograd, knob
liveness and error messages: test_quantize_knobs.py).

Hand computations use numpy fp32 arithmetic for the scale (IEEE division and multiplication, the
documented contract: x / s, cast, q * s) and lowbit's float64 reference cast for the elements.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import NUMPY_NAN_WARNINGS, F32, assert_same, probe_points, rand_f32, same_bits, t
from lowbit import quantize
from lowbit.formats import codebook, get_format
from lowbit.formats.reference import reference_cast
from lowbit.formats.tables import values as table_values

pytestmark = [pytest.mark.filterwarnings(w) for w in NUMPY_NAN_WARNINGS]

FLOATS = ["fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1", "fp16", "bf16", "e2m0", "e1m0",
          "e4m3fnuz", "e5m2_ftz", "e8m2"]
DIRECT = FLOATS + ["int8", "int4", "uint4", "int4_narrow", "nf4", "codebook:-1,0,1,4"]


def q_direct(x, name, **kw):
    return quantize(x, name, scaling="none", backend="eager", **kw)


@pytest.fixture(scope="module")
def xs():
    """Finite fp32 probes across magnitudes, sorted (NaN and Inf removed)."""
    x = rand_f32(1 << 14, seed=21)
    x = np.concatenate([x, probe_points(get_format("fp8_e4m3")), probe_points(get_format("fp4_e2m1"))])
    return np.sort(x[np.isfinite(x)])


# ---- properties of direct casts ---------------------------------------------------------------------
@pytest.mark.parametrize("name", DIRECT)
def test_idempotent(name, xs):
    x = t(xs)
    for kw in (dict(), dict(rounding="zero"), dict(saturate=False)):
        q = q_direct(x, name, **kw)
        assert_same(q_direct(q, name, **kw), q, x, f"{name} {kw}")
    q = q_direct(x, name)  # representable values never move under stochastic rounding
    assert_same(q_direct(q, name, rounding="stochastic", generator=torch.Generator().manual_seed(0)), q, x)


@pytest.mark.parametrize("name", DIRECT)
def test_monotone(name, xs):
    for kw in (dict(), dict(rounding="zero")):
        q = q_direct(t(xs), name, **kw)
        assert not torch.isnan(q).any()
        d = q[1:] - q[:-1]
        assert bool((d >= 0).all()), (name, kw, xs[1:][(d < 0).numpy()][:5])
    if get_format(name).kind == "float" and get_format(name).has_inf:  # Inf keeps the order too
        q = q_direct(t(xs), name, saturate=False)
        assert bool((q[1:] >= q[:-1]).all())


@pytest.mark.parametrize("name", FLOATS + ["int4_narrow", "int8_narrow"])
def test_sign_symmetric(name, xs):
    fmt = get_format(name)
    x = t(xs)
    if fmt.kind == "int":
        x = x.clamp(fmt.min, fmt.max)
    for kw in (dict(), dict(rounding="zero"), dict(saturate=False)):
        q, qn = q_direct(x, name, **kw), q_direct(-x, name, **kw)
        if fmt.kind == "float" and fmt.has_negative_zero:
            assert_same(qn, -q, x, f"{name} {kw}")          # bitwise, -0 included
        else:                                                # no -0 in the format: 0 == -0
            assert bool(((qn == -q) | (torch.isnan(qn) & torch.isnan(q))).all()), name


@pytest.mark.parametrize("name", FLOATS + ["int8", "uint4", "nf4"])
def test_saturation_and_overflow(name, xs):
    fmt = get_format(name)
    mx = max(abs(table_values(fmt)[0]), table_values(fmt)[-1])
    x = np.concatenate([xs, [np.inf, -np.inf, 3.4e38, -3.4e38]]).astype(F32)
    q = q_direct(t(x), name)
    assert bool((q.abs() <= mx).all()) and q[-4] == table_values(fmt)[-1] and q[-3] == table_values(fmt)[0]
    if fmt.kind != "float":
        return
    qo = q_direct(t(x), name, saturate=False)
    gap = 2.0 ** (fmt.emax - fmt.man_bits)
    # rounds beyond max with an unbounded exponent; the tie goes up when max is an odd multiple of the gap
    over = (np.abs(x) > fmt.max + gap / 2) | ((np.abs(x) == fmt.max + gap / 2) & ((fmt.max / gap) % 2 == 1))
    if fmt.has_inf:
        assert torch.equal(qo[over], torch.from_numpy(np.sign(x[over]) * np.inf).float())
    elif fmt.has_nan:
        assert torch.isnan(qo[over]).all()
    else:
        assert torch.equal(qo, q)                           # no Inf, no NaN: always saturates
    assert torch.equal(qo[~over], q[~over])


@pytest.mark.parametrize("name", DIRECT)
def test_round_toward_zero_never_grows(name, xs):
    x = t(xs)
    q = q_direct(x, name, rounding="zero")
    assert bool((q.abs() <= x.abs()).all())
    qn = q_direct(x, name)                                   # and nearest is never farther than zero
    assert bool(((x.double() - qn.double()).abs() <= (x.double() - q.double()).abs()).all())


# ---- stochastic rounding ------------------------------------------------------------------------------
SR_CASES = [  # format, scaling kwargs, inputs (normal and subnormal range of the element format)
    ("fp8_e4m3", {}, [1.1, -3.3, 200.0, 0.003, -0.0051]),        # 2^-6 = 0.0156: the last two are subnormal
    ("fp4_e2m1", {}, [0.3, 1.2, -2.6, 5.1]),                      # 0.3 is subnormal (0 | 0.5)
    ("bf16", {}, [1.00390625 + 2.0 ** -9, 3e-39, -1.5e-40]),      # fp32 subnormals, bf16 subnormals
    ("int8", dict(scaling="none"), [0.3, -2.7, 100.49, -0.5]),
    ("int4", dict(scaling="tensor", scale=torch.tensor(0.25)), [0.3, -0.61, 1.1]),
    ("nf4", dict(scaling="none"), [0.05, -0.3, 0.9]),
]


@pytest.mark.parametrize("name,kw,vals", SR_CASES, ids=[c[0] for c in SR_CASES])
def test_stochastic_rounding_is_unbiased(name, kw, vals):
    n = 20_000
    x = torch.tensor(vals, dtype=torch.float32).repeat(n, 1)
    g = torch.Generator().manual_seed(1234)
    q = quantize(x, name, rounding="stochastic", generator=g, backend="eager", **kw).double()
    toward_zero = quantize(x[:1], name, rounding="zero", backend="eager", **kw).double()[0]
    for j, v in enumerate(vals):
        col = q[:, j]
        v32 = float(np.float32(v))
        up = col.max().item()
        low = col.min().item()
        assert set(col.unique().tolist()) <= {low, up} and low <= v32 <= up    # only the two neighbours
        p = (v32 - low) / (up - low) if up > low else 0.0
        se = (up - low) * np.sqrt(p * (1 - p) / n)
        assert abs(col.mean().item() - v32) <= 5 * se + 1e-12 * abs(v32), (name, v, col.mean().item())
        assert 0 < p < 1 and toward_zero[j].item() in (low, up)


def test_stochastic_rounding_reproducible():
    x = torch.randn(4096)
    for name, kw in (("fp8_e4m3", {}), ("int4", {}), ("mxfp4", {}), ("nvfp4", {}), ("nf4", {})):
        a = quantize(x, name, rounding="stochastic", generator=torch.Generator().manual_seed(7), **kw)
        b = quantize(x, name, rounding="stochastic", generator=torch.Generator().manual_seed(7), **kw)
        c = quantize(x, name, rounding="stochastic", generator=torch.Generator().manual_seed(8), **kw)
        assert torch.equal(a, b) and not torch.equal(a, c), name


# ---- scaling against hand computations ------------------------------------------------------------------
def ref_elem(y32, fmt, saturate=True):
    """Reference element cast of an fp32 array -> fp32."""
    return reference_cast(y32, fmt, saturate).astype(F32)


def pow2_ceil_np(s):
    m, e = np.frexp(s.astype(np.float64))
    return np.where(m == 0.5, np.ldexp(1.0, e - 1), np.ldexp(1.0, e)).astype(F32)


def hand_scaled(x, fmt, dims=None, pow2=False, scale=None):
    """Symmetric scaling: s = finite amax / max (fp32), 1 if amax = 0; q = cast(x / s) * s."""
    x = np.asarray(x, F32)
    if scale is None:
        a = np.where(np.isfinite(x), np.abs(x), F32(0))
        amax = a.max() if dims is None else a.max(axis=dims, keepdims=True)
        s = np.asarray(amax / F32(fmt.max), F32)
        s = np.where(s > 0, s, F32(1)).astype(F32)
        if pow2:
            s = pow2_ceil_np(s)
    else:
        s = np.asarray(scale, F32)
    with np.errstate(all="ignore"):
        return (ref_elem((x / s).astype(F32), fmt) * s).astype(F32)


def hand_asym(x, fmt, dims=None):
    x = np.asarray(x, F32)
    xf = np.where(np.isfinite(x), x, F32(0))
    lo = np.minimum(xf.min() if dims is None else xf.min(axis=dims, keepdims=True), F32(0))
    hi = np.maximum(xf.max() if dims is None else xf.max(axis=dims, keepdims=True), F32(0))
    s = np.asarray((hi - lo) / F32(fmt.qmax), F32)
    s = np.where(s > 0, s, F32(1)).astype(F32)
    zp = np.clip(np.rint(-lo / s), 0, fmt.qmax).astype(F32)
    c = np.clip(np.rint((x / s + zp).astype(F32)), 0, fmt.qmax).astype(F32) + F32(0)   # integers have no -0
    return ((c - zp) * s).astype(F32)


def _matrix(seed=0, rows=6, cols=64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g) * torch.exp(torch.randn(rows, 1, generator=g) * 3)
    x = x * torch.exp(torch.randn(1, cols, generator=g))
    x[2] = 0.0                                   # an all-zero row (channel axis 0)
    x[:, 5] = 0.0                                # an all-zero column (channel axis 1)
    return x


SCALED = ["fp8_e4m3", "fp8_e5m2", "fp4_e2m1", "fp6_e2m3", "int8", "int4", "int4_narrow", "nf4"]


@pytest.mark.parametrize("name", SCALED)
def test_per_tensor_and_per_channel(name):
    fmt = get_format(name)
    x = _matrix()
    xn = x.numpy()
    for pow2 in (False, True):
        kw = dict(pow2_scale=pow2, backend="eager")
        assert_same(quantize(x, name, scaling="tensor", **kw), hand_scaled(xn, fmt, pow2=pow2), x, "tensor")
        assert_same(quantize(x, name, scaling="channel", axis=0, **kw), hand_scaled(xn, fmt, (1,), pow2), x, "ch0")
        assert_same(quantize(x, name, scaling="channel", axis=1, **kw), hand_scaled(xn, fmt, (0,), pow2), x, "ch1")
        assert_same(quantize(x, name, scaling="channel", axis=-1, **kw), hand_scaled(xn, fmt, (0,), pow2), x)
    x4 = torch.randn(2, 5, 3, 4, generator=torch.Generator().manual_seed(1)) * torch.arange(1, 6).view(1, 5, 1, 1) ** 3
    want = hand_scaled(x4.numpy(), fmt, (0, 2, 3))
    assert_same(quantize(x4, name, scaling="channel", axis=1), want, x4, "4-D axis 1")


@pytest.mark.parametrize("name", SCALED)
def test_per_group(name):
    fmt = get_format(name)
    x = _matrix(seed=3)
    for axis, G in ((-1, 16), (1, 8), (0, 3), (0, 2)):
        xm = np.moveaxis(x.numpy(), axis, -1)
        grouped = xm.reshape(*xm.shape[:-1], -1, G)
        want = np.moveaxis(hand_scaled(grouped, fmt, (-1,)).reshape(xm.shape), -1, axis)
        got = quantize(x, name, scaling="group", group_size=G, axis=axis, backend="eager")
        assert_same(got, want, x, f"group {G} axis {axis}")
    want = hand_scaled(np.pad(x.numpy(), ((0, 0), (0, 6))).reshape(6, -1, 10), fmt, (-1,)).reshape(6, -1)[:, :64]
    assert_same(quantize(x, name, scaling="group", group_size=10, pad=True), want, x, "group 10, padded")


@pytest.mark.parametrize("name", ["uint8", "uint4", "uint2", "uint1"])
def test_unsigned_asymmetric(name):
    fmt = get_format(name)
    x = _matrix(seed=5) + 0.7           # mostly positive, some negative: a nonzero zero point
    xn = x.numpy()
    assert_same(quantize(x, name), hand_asym(xn, fmt), x, "tensor")
    assert_same(quantize(x, name, scaling="channel", axis=0), hand_asym(xn, fmt, (1,)), x, "channel 0")
    assert_same(quantize(x, name, scaling="channel", axis=1), hand_asym(xn, fmt, (0,)), x, "channel 1")
    pos = x.abs()                       # zero point 0: the grid starts at 0
    assert_same(quantize(pos, name), hand_asym(pos.numpy(), fmt), pos, "non-negative")
    assert (quantize(-pos, name) <= 0).all()
    assert len(torch.unique(quantize(x, name))) <= fmt.n_codes   # q = (c - zp) * s: at most 2^b values


def test_all_zero_tensors():
    z = torch.zeros(4, 32)
    for name, kw in (("fp8_e4m3", dict(scaling="tensor")), ("int8", {}), ("uint4", {}), ("nf4", {}),
                     ("int4", dict(scaling="channel", axis=0)), ("fp4_e2m1", dict(scaling="group", group_size=8)),
                     ("mxfp4", {}), ("nvfp4", {}), ("fp4_e2m1", dict(scaling="tensor", pow2_scale=True))):
        assert_same(quantize(z, name, **kw), z, z, f"{name} {kw}")
        assert torch.equal(quantize(-z, name, **kw), z), (name, kw)       # -0 may keep its sign


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2", "int8", "nf4"])
def test_inf_uses_finite_amax(name):
    fmt = get_format(name)
    x = _matrix(seed=8)
    x[0, 0], x[3, 9] = float("inf"), -float("inf")
    want = hand_scaled(x.numpy(), fmt)
    assert np.isfinite(want).all()               # the Inf elements saturate to +-max * s
    assert_same(quantize(x, name, scaling="tensor"), want, x, "tensor with Inf")
    assert_same(quantize(x, name, scaling="channel", axis=0), hand_scaled(x.numpy(), fmt, (1,)), x)
    if name == "fp8_e5m2":
        q = quantize(x, name, scaling="tensor", saturate=False)
        assert q[0, 0] == float("inf") and q[3, 9] == -float("inf") and torch.isfinite(q).sum() == x.numel() - 2


def test_extreme_magnitudes_stay_finite():
    """Finite inputs near fp32's max give finite outputs: the scale computations must not overflow
    (max - min of a tensor can exceed fp32's range; a power-of-two scale above 2^127 is Inf). Kept to
    |x| <= 3e38 and to formats whose grid does not reach past amax: a grid point a rounding step beyond
    amax (fp4 with pow2_scale: 3e38 -> 4 * 2^126; uint2: (0 - zero point) * s) is itself beyond fp32."""
    g = torch.Generator().manual_seed(17)
    x = torch.randn(4, 64, generator=g).clamp(-1, 1) * 3e38
    x[0, 0], x[1, 0] = 3e38, -3e38
    for name, kw in (("uint4", {}), ("uint8", dict(scaling="channel", axis=0)),
                     ("nf4", dict(pow2_scale=True)), ("int8", dict(pow2_scale=True)),
                     ("fp8_e4m3", dict(scaling="tensor")),
                     ("int4", dict(scaling="group", group_size=16)),
                     ("mxfp4", {}), ("mxint8", {}), ("mxfp8_e4m3", {}), ("nvfp4", {})):
        q = quantize(x, name, **kw)
        assert torch.isfinite(q).all(), (name, kw, x[~torch.isfinite(q)][:4])
        assert (q.abs() <= x.abs().max() * 2).all()


def test_fixed_scale_argument():
    x = _matrix(seed=9)
    fmt = get_format("int8")
    s = torch.tensor(0.05)
    assert_same(quantize(x, "int8", scale=s), hand_scaled(x.numpy(), fmt, scale=0.05), x, "scalar scale")
    sc = torch.rand(6, 1, generator=torch.Generator().manual_seed(0)) + 0.01
    want = hand_scaled(x.numpy(), fmt, scale=sc.numpy())
    assert_same(quantize(x, "int8", scaling="channel", axis=0, scale=sc), want, x, "per-channel scale")
    fp = get_format("fp8_e4m3")
    want = hand_scaled(x.numpy(), fp, scale=1 / 64)
    assert_same(quantize(x, fp, scaling="tensor", scale=torch.tensor(1 / 64)), want, x, "fp8 fixed scale")
    # a fixed scale below amax / max saturates: that is what a fixed (calibrated) scale means
    q = quantize(x, "int8", scale=torch.tensor(1e-3))
    assert q.max() == np.float32(127) * np.float32(1e-3) and q.min() == np.float32(-128) * np.float32(1e-3)
    u = get_format("uint4")
    s_u, zp = torch.tensor(0.1), torch.tensor(3.0)
    want = ((np.clip(np.rint((x.numpy() / F32(0.1) + F32(3)).astype(F32)), 0, 15) - 3) * F32(0.1)).astype(F32)
    assert_same(quantize(x, u, scale=(s_u, zp)), want, x, "uint4 (scale, zero point)")


def test_codebook_values_override():
    """``values=`` (learnable codebooks) acts exactly like a codebook format with those values."""
    x = _matrix(seed=18)
    v = torch.tensor([-1.0, -0.4, -0.05, 0.0, 0.1, 0.3, 0.62, 1.0])
    want = quantize(x, codebook(v.tolist(), scaling="tensor"))
    assert_same(quantize(x, "nf4", values=v), want, x, "values= override")
    assert not same_bits(quantize(x, "nf4", values=v), quantize(x, "nf4")).all()


def test_out_buffer():
    x = _matrix(seed=10)
    for name, kw in (("fp8_e4m3", {}), ("int8", {}), ("int4", dict(scaling="channel", axis=0)),
                     ("fp4_e2m1", dict(scaling="group", group_size=16)), ("mxfp4", {}), ("nvfp4", {}),
                     ("mxfp8_e4m3", dict(axis=0, pad=True)), ("int4", dict(scaling="group", group_size=10, pad=True))):
        out = torch.full_like(x, 7.0)
        r = quantize(x, name, out=out, **kw)
        assert r is out and torch.equal(out, quantize(x, name, **kw)), (name, kw)
        xh = x.half()
        outh = torch.empty_like(xh)
        assert torch.equal(quantize(xh, name, out=outh, **kw), quantize(xh, name, **kw))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_keep_dtype_and_match_fp32(dtype):
    x = (_matrix(seed=11) * 0.01).to(dtype)
    for name, kw in (("fp8_e4m3", {}), ("fp8_e5m2", dict(saturate=False)), ("fp4_e2m1", dict(scaling="tensor")),
                     ("int8", {}), ("uint4", {}), ("int4", dict(scaling="channel", axis=1)), ("nf4", {}),
                     ("fp6_e2m3", dict(scaling="group", group_size=16)), ("mxfp4", {}), ("mxint8", {}), ("nvfp4", {}),
                     ("fp8_e4m3", dict(rounding="zero"))):
        q = quantize(x, name, **kw)
        assert q.dtype == dtype and q.shape == x.shape
        assert_same(q.float(), quantize(x.float(), name, **kw).to(dtype).float(), x, f"{name} {kw} {dtype}")


# ---- idempotence with per-tensor scaling ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2", "fp4_e2m1", "fp6_e3m2", "int8", "int4", "int4_narrow", "nf4"])
def test_per_tensor_scaling_idempotent(name):
    g = torch.Generator().manual_seed(12)
    for i in range(10):
        x = torch.randn(8, 257, generator=g) * torch.exp(torch.randn(8, 1, generator=g) * 8)
        for kw in (dict(scaling="tensor"), dict(scaling="tensor", pow2_scale=True), dict(scaling="channel", axis=0),
                   dict(scaling="group", group_size=257)):
            q = quantize(x, name, **kw)
            assert_same(quantize(q, name, **kw), q, x, f"{name} {kw}")
