"""lowbit.quantize: properties of the casts, scaling against hand computations, autograd, every knob
changes the numbers, and error messages.

Hand computations use numpy fp32 arithmetic for the scale (IEEE division and multiplication, the
documented contract: x / s, cast, q * s) and lowbit's float64 reference cast for the elements.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import NUMPY_NAN_WARNINGS, F32, assert_same, probe_points, rand_f32, same_bits, t
from lowbit import QuantSpec, quantize
from lowbit.formats import codebook, get_format, list_formats
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
    assert _differ(quantize(x, "nf4", values=v), quantize(x, "nf4"))


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


# ---- autograd ----------------------------------------------------------------------------------------------
GRAD_SPECS = [("fp8_e4m3", {}), ("fp4_e2m1", dict(scaling="tensor")), ("int8", {}), ("uint4", {}), ("nf4", {}),
              ("int4", dict(scaling="group", group_size=16)), ("mxfp4", {}), ("nvfp4", {}), ("mxint8", {})]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name,kw", GRAD_SPECS, ids=[n for n, _ in GRAD_SPECS])
def test_ste_gradient_is_the_incoming_gradient(name, kw, dtype):
    x = (torch.randn(4, 64) * 600).to(dtype).requires_grad_()
    gout = torch.randn(4, 64).to(dtype)
    y = quantize(x, name, **kw)
    assert y.dtype == dtype and y.requires_grad
    assert torch.equal(y.detach(), quantize(x.detach(), name, **kw))
    y.backward(gout)
    assert x.grad.dtype == dtype and torch.equal(x.grad, gout)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_clipped_gradient_zero_exactly_where_saturated(dtype):
    g = torch.Generator().manual_seed(13)
    gout = torch.randn(8, 64, generator=g)
    # direct cast: saturated where |x| rounds beyond 448 (half a gap, 16, past max)
    x = torch.randn(8, 64, generator=g) * 300
    x[0, :4] = torch.tensor([463.9, 464.1, -1e4, float("inf")])
    x = x.to(dtype).requires_grad_()
    quantize(x, "fp8_e4m3", grad="clipped").backward(gout.to(dtype))
    sat = x.detach().float().abs() > 464
    assert sat.any() and (~sat).any()
    assert torch.equal(x.grad, torch.where(sat, 0.0, gout).to(dtype))
    # per tensor with a computed scale: nothing saturates, every gradient passes
    for name in ("fp8_e4m3", "fp4_e2m1", "int8", "int4", "nf4", "uint4"):
        for i in range(20):
            xi = (torch.randn(64, generator=g) * torch.exp(torch.randn(1, generator=g) * 2)).to(dtype).requires_grad_()
            q = quantize(xi, name, scaling="tensor" if name != "uint4" else None, grad="clipped")
            q.backward(torch.ones(64, dtype=dtype))
            assert (xi.grad == 1).all(), (name, i)
    # per tensor with a fixed scale: saturated where |x / s| rounds beyond 127
    x = (torch.randn(8, 64, generator=g) * 10).to(dtype).requires_grad_()
    quantize(x, "int8", scale=torch.tensor(0.05), grad="clipped").backward(gout.to(dtype))
    y = x.detach().float() / 0.05
    sat = (y > 127.5) | (y < -128.5)                # int8 holds -128
    assert sat.any() and torch.equal(x.grad, torch.where(sat, 0.0, gout).to(dtype))


def test_clipped_gradient_mx():
    g = torch.Generator().manual_seed(14)
    x = torch.randn(16, 64, generator=g) * torch.exp(torch.randn(16, 1, generator=g) * 4)
    x[0, :32] = 0.5
    x[0, 0] = 1.999                  # saturates every element format under the floor rule
    x = x.requires_grad_()
    for name in ("mxfp4", "mxfp8_e4m3", "mxint8"):
        fmt = get_format(name)
        for rule in ("floor", "rceil"):
            f = dataclasses.replace(fmt, scale_rule=rule)
            x.grad = None
            quantize(x, f, grad="clipped").backward(torch.ones_like(x))
            xb = x.detach().double().view(16, 2, 32)
            amax = xb.abs().amax(-1, keepdim=True)
            fl = torch.frexp(amax)[1] - 1                                  # floor(log2(amax)), exact
            e = fl - fmt.element.emax
            if rule == "rceil":                                            # smallest e: amax <= max * 2^e
                e = fl - int(np.frexp(fmt.element.max)[1])
                e = e + (fmt.element.max * 2.0 ** e < amax).long()
                e = e + (fmt.element.max * 2.0 ** e < amax).long()
            X = 2.0 ** e.double()
            el = fmt.element
            half_gap = 0.5 * el.step if el.kind == "int" else 2.0 ** (el.emax - el.man_bits - 1)
            sat = (xb.abs() / X > el.max + half_gap).view(16, 64)
            if rule == "rceil":
                assert not sat.any()                                    # rceil never saturates
            else:
                assert sat.any()
            assert torch.equal(x.grad, (~sat).float()), (name, rule)


# ---- knob liveness: every option changes the numbers somewhere -----------------------------------------------
def _rich(seed=15):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 64, generator=g) * torch.exp(torch.randn(16, 1, generator=g) * 2)
    return x * torch.exp(torch.randn(1, 64, generator=g))


def test_every_format_changes_the_numbers():
    x = _rich()
    outs = {}
    for name in list_formats():
        if get_format(name).kind == "scale":
            continue
        q = quantize(x, name, backend="eager")
        if name == "fp32":
            assert torch.equal(q, x)                          # the identity format
            continue
        assert not torch.equal(q, x), name
        outs[name] = q
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not torch.equal(outs[a], outs[b]), (a, b)


def _differ(a, b):
    return not bool(same_bits(a, b).all())


def test_rounding_saturate_scaling_knobs():
    x = _rich()
    for name in ("fp8_e4m3", "int8", "nf4", "mxfp4", "fp4_e2m1"):
        r = {m: quantize(x, name, rounding=m, generator=torch.Generator().manual_seed(0))
             for m in ("nearest", "zero", "stochastic")}
        assert _differ(r["nearest"], r["zero"]) and _differ(r["nearest"], r["stochastic"])
        assert _differ(r["zero"], r["stochastic"])
    big = torch.tensor([1e5, -7e4, 500.0, 1.0])
    for name in ("fp8_e5m2", "fp8_e4m3"):
        assert _differ(quantize(big, name, saturate=True), quantize(big, name, saturate=False)), name
    for name in ("int8", "fp8_e4m3", "int4"):
        s = {sc: quantize(x, name, scaling=sc, **({"group_size": 16} if sc == "group" else {}))
             for sc in ("none", "tensor", "channel", "group")}
        keys = list(s)
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                assert _differ(s[a], s[b]), (name, a, b)
        assert _differ(quantize(x, name, scaling="tensor"), quantize(x, name, scaling="tensor", pow2_scale=True))
        assert _differ(quantize(x, name, scaling="channel", axis=0), quantize(x, name, scaling="channel", axis=1))
        assert _differ(quantize(x, name, scaling="group", group_size=16),
                       quantize(x, name, scaling="group", group_size=32))
        assert _differ(quantize(x, name, scaling="group", group_size=16, axis=-1),
                       quantize(x, name, scaling="group", group_size=16, axis=0))


def test_block_knobs():
    x = _rich()
    g = torch.Generator().manual_seed(16)       # heavy tails: elements in the element format's subnormals
    heavy = torch.randn(16, 64, generator=g) * torch.exp(torch.randn(16, 64, generator=g) * 6)
    heavy[0, :32] = 0.3
    heavy[0, 0] = 1.999             # significand above MXINT8's 127/64: floor saturates, rceil does not
    for name in ("mxfp4", "mxfp8_e4m3", "mxint8", "nvfp4"):
        assert _differ(quantize(x, name), quantize(x, name, block_size=16 if name != "nvfp4" else 32)), name
        assert _differ(quantize(x, name), quantize(x, name, axis=0, pad=True)), name
    for name in ("mxfp4", "mxfp8_e5m2", "mxint8"):
        fmt = get_format(name)
        r = {rule: quantize(heavy, dataclasses.replace(fmt, scale_rule=rule)) for rule in ("floor", "ceil", "rceil")}
        assert _differ(r["floor"], r["ceil"]) and _differ(r["floor"], r["rceil"]), name
        assert _differ(r["ceil"], r["rceil"]), name


def test_grad_and_narrow_knobs():
    x = (_rich() * 300).requires_grad_()
    grads = {}
    for gname in ("ste", "clipped"):
        x.grad = None
        quantize(x, "fp8_e4m3", grad=gname).sum().backward()
        grads[gname] = x.grad.clone()
    assert not torch.equal(grads["ste"], grads["clipped"])
    m128 = torch.tensor([-128.0, 127.0])
    assert quantize(m128, "int8", scaling="none").tolist() == [-128, 127]
    assert quantize(m128, "int8_narrow", scaling="none").tolist() == [-127, 127]
    s = torch.tensor(0.01)                      # (with amax scaling |x / s| <= 7: the narrow code never shows)
    assert _differ(quantize(_rich(), "int4", scale=s), quantize(_rich(), "int4_narrow", scale=s))


# ---- errors: the message names the bad value and the allowed ones ----------------------------------------------
ERRORS = [
    (dict(fmt="fp7"), ["'fp7'", "fp8_e4m3"]),
    (dict(fmt="e8m7fn"), ["e8m7fn", "ieee"]),
    (dict(fmt="int8", rounding="round"), ["rounding='round'", "nearest, zero, stochastic"]),
    (dict(fmt="int8", scaling="row"), ["scaling='row'", "none, tensor, channel, group, block"]),
    (dict(fmt="int8", grad="none"), ["grad='none'", "ste, clipped"]),
    (dict(fmt="int8", scaling="group"), ["group_size", "positive integer", "None"]),
    (dict(fmt="int8", scaling="group", group_size=0), ["group_size", "0"]),
    (dict(fmt="int8", scaling="tensor", group_size=16), ["group_size=16", "scaling='group'"]),
    (dict(fmt="mxfp4", scaling="tensor"), ["scaling='tensor'", "mxfp4", "allowed: block"]),
    (dict(fmt="int8", scaling="block"), ["scaling='block'", "int8", "none, tensor, channel, group"]),
    (dict(fmt="int8", block_size=16), ["block_size", "int8"]),
    (dict(fmt="mxfp4", block_size=0), ["block_size=0", "positive integer"]),
    (dict(fmt="e8m0"), ["e8m0", "scale format"]),
    (dict(fmt="int8", axis=1.5), ["axis=1.5", "integer"]),
]


@pytest.mark.parametrize("kw,needles", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_spec_errors(kw, needles):
    kw = dict(kw)
    fmt = kw.pop("fmt")
    with pytest.raises(ValueError) as e:
        QuantSpec(fmt, **kw)
    for needle in needles:
        assert needle in str(e.value), str(e.value)
    with pytest.raises(ValueError):
        quantize(torch.ones(4, 32), fmt, **kw)


@pytest.mark.parametrize("call,needles", [
    (lambda: quantize(torch.ones(4, 40), "mxfp4"), ["block size 32", "40", "pad=True"]),
    (lambda: quantize(torch.ones(4, 40), "int8", scaling="group", group_size=16), ["group_size 16", "40", "pad=True"]),
    (lambda: quantize(torch.ones(4, 32), "int8", scaling="channel", axis=2), ["axis=2", "[4, 32]"]),
    (lambda: quantize(torch.ones(4, 32), "mxfp4", axis=-3), ["axis=-3"]),
    (lambda: quantize(torch.ones(4, dtype=torch.int32), "int8"), ["torch.int32", "float32, float16, bfloat16"]),
    (lambda: quantize(torch.ones(4, dtype=torch.float64), "int8"), ["torch.float64", "float32, float16, bfloat16"]),
    (lambda: quantize(torch.tensor(1.0), "int8", scaling="channel"), ["scalar"]),
    (lambda: quantize(torch.ones(4), "int8", backend="fast"), ["backend='fast'", "auto, eager, compiled"]),
    (lambda: quantize(torch.ones(4), "int8", out=torch.ones(5)), ["[5]", "[4]"]),
    (lambda: quantize(torch.ones(4), "int8", out=torch.ones(4, dtype=torch.float16)), ["float16", "float32"]),
    (lambda: quantize(torch.ones(4, requires_grad=True), "int8", out=torch.ones(4)), ["out=", "requires grad"]),
])
def test_call_errors(call, needles):
    with pytest.raises(ValueError) as e:
        call()
    for needle in needles:
        assert needle in str(e.value), str(e.value)


def test_backend_env_error(monkeypatch):
    monkeypatch.setenv("LOWBIT_BACKEND", "gpu")
    with pytest.raises(ValueError) as e:
        quantize(torch.ones(4), "int8")
    assert "LOWBIT_BACKEND='gpu'" in str(e.value) and "auto, eager, compiled" in str(e.value)


def test_non_tensor_input():
    with pytest.raises(TypeError, match="torch.Tensor"):
        quantize(np.ones(4, F32), "int8")


def test_spec_is_frozen_hashable_and_serialisable():
    s = QuantSpec("fp4", scaling="group", group_size=32)
    assert s.format is get_format("fp4_e2m1") and hash(s) == hash(QuantSpec("fp4_e2m1", scaling="group", group_size=32))
    assert s.to_dict()["format"] == "fp4_e2m1" and s.replace(group_size=16).group_size == 16
    assert QuantSpec("mxfp4", block_size=16).format.block_size == 16
    with pytest.raises(Exception):
        s.rounding = "zero"
    assert QuantSpec("int8").scaling == "tensor" and QuantSpec("fp8").scaling == "none"
    assert QuantSpec("mxfp4").scaling == "block" and QuantSpec("nf4").scaling == "tensor"
