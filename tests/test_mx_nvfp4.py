"""MX (OCP Microscaling v1.0) and NVFP4 against an independent, slow reference written here.

The reference works per block in numpy float64 and takes the element casts from ml_dtypes (clamped
to +-max first, so they saturate), never from lowbit:
  MX:    shared_exp = floor(log2(amax)) - emax_elem (``ceil``: ceil(log2(amax)); ``rceil``: the smallest e
         with amax <= max_elem * 2^e), clamped to [-127, 127]; X = 2^shared_exp; element = cast(v / X);
         out = element * X; a block holding NaN or Inf is all NaN. MXINT8: round(v / X * 64) clamped to
         +-127, times 2^-6 (an integer has no -0).
  NVFP4: s_t = fp32(amax_tensor / (448 * 6)) over finite values (1 when that is 0), s_b =
         e4m3(amax_block / (6 * s_t)) (exact quotient, saturating), total = fp32(s_b * s_t) (the scale a
         kernel multiplies by, an fp32 number), element = e2m1(v / total), out = fp32(element * total);
         total = 0 gives a zero block.
Everything is compared bit for bit (NaN-aware, -0 distinct from +0).
"""
from __future__ import annotations

import dataclasses

import ml_dtypes
import numpy as np
import pytest
import torch

from conftest import NUMPY_NAN_WARNINGS, assert_same
from lowbit import decode, encode, quantize
from lowbit.formats import BlockFormat, get_format

pytestmark = [pytest.mark.filterwarnings(w) for w in NUMPY_NAN_WARNINGS]

# name: (emax_elem, max_elem, ml_dtypes element type or None for MXINT8); OCP MX v1.0 section 5.3
MX = {
    "mxfp8_e4m3": (8, 448.0, ml_dtypes.float8_e4m3fn),
    "mxfp8_e5m2": (15, 57344.0, ml_dtypes.float8_e5m2),
    "mxfp6_e3m2": (4, 28.0, ml_dtypes.float6_e3m2fn),
    "mxfp6_e2m3": (2, 7.5, ml_dtypes.float6_e2m3fn),
    "mxfp4": (2, 6.0, ml_dtypes.float4_e2m1fn),
    "mxint8": (0, 127 / 64, None),
}
RULES = ("floor", "ceil", "rceil")


# ---- the reference --------------------------------------------------------------------------------
def _blocks(x, axis, block):
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    pad = (-x.shape[-1]) % block
    xp = np.concatenate([x, np.zeros(x.shape[:-1] + (pad,))], -1) if pad else x
    return xp.reshape(-1, block), x.shape, xp.shape


def _unblocks(out, shape, pshape, axis):
    return np.moveaxis(out.reshape(pshape)[..., : shape[-1]], -1, axis).astype(np.float32)


def _floor_log2(a: float) -> int:
    return int(np.frexp(a)[1]) - 1          # exact for any positive float64 (fp32 subnormals included)


def mx_shared_exp_ref(amax: float, name: str, rule: str) -> int:
    emax, mx, _ = MX[name]
    if amax == 0:
        return -127
    fl = _floor_log2(amax)
    if rule == "floor":
        e = fl - emax
    elif rule == "ceil":
        e = fl + (amax != 2.0 ** fl) - emax
    else:  # rceil: smallest e with amax <= mx * 2^e (products of powers of two are exact in float64)
        e = fl - _floor_log2(mx) - 1
        while mx * 2.0 ** e < amax:
            e += 1
    return min(max(e, -127), 127)


def mx_element_ref(y, name):
    _, mx, dt = MX[name]
    y = np.clip(y, -mx, mx)
    if dt is None:
        return np.rint(y * 64) / 64 + 0.0
    return y.astype(np.float32).astype(dt).astype(np.float64)   # y = v / 2^e is exact in fp32 here


def mx_ref(x, name, rule="floor", block=32, axis=-1):
    """(dequantized values as fp32, E8M0 scale codes per block: e + 127, 255 for a NaN block)."""
    xb, shape, pshape = _blocks(x, axis, block)
    out = np.empty_like(xb)
    codes = np.empty(len(xb), np.int64)
    for i, v in enumerate(xb):
        if not np.isfinite(v).all():
            out[i], codes[i] = np.nan, 255
            continue
        e = mx_shared_exp_ref(np.abs(v).max(), name, rule)
        out[i], codes[i] = mx_element_ref(v / 2.0 ** e, name) * 2.0 ** e, e + 127
    return _unblocks(out, shape, pshape, axis), codes


def nvfp4_ref(x, block=16, axis=-1, tensor_scale=True):
    xb, shape, pshape = _blocks(x, axis, block)
    xv = np.asarray(x, np.float64)
    fin = np.abs(xv[np.isfinite(xv)])
    st = float(np.float32((fin.max() if fin.size else 0.0) / (448.0 * 6.0))) if tensor_scale else 1.0
    st = st if st > 0 else (2.0 ** -149 if fin.size and fin.max() > 0 else 1.0)   # never 0 for amax > 0
    out = np.empty_like(xb)
    for i, v in enumerate(xb):
        if not np.isfinite(v).all():
            out[i] = np.nan
            continue
        sb = np.float32(min(np.abs(v).max() / (6.0 * st), 448.0))
        sb = float(sb.astype(ml_dtypes.float8_e4m3fn).astype(np.float64))
        total = float(np.float32(sb * st))
        if total == 0:
            out[i] = np.copysign(0.0, v)
            continue
        q = np.clip(v / total, -6, 6).astype(np.float32).astype(ml_dtypes.float4_e2m1fn).astype(np.float64)
        out[i] = q * total
    return _unblocks(out, shape, pshape, axis)


def mx_format(name, rule):
    return dataclasses.replace(get_format(name), scale_rule=rule, name=f"{name}_{rule}")


# ---- data -----------------------------------------------------------------------------------------
CASES = ("random", "mixed", "ties")


def _data(case: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(CASES.index(case) + 11)
    if case == "random":    # per-row magnitudes from 1e-30 to 1e30: blocks of every scale
        return torch.randn(48, 96, generator=g) * torch.exp(torch.randn(48, 1, generator=g) * 16).clamp(1e-30, 1e30)
    if case == "mixed":     # zero / NaN / Inf / tiny / huge / subnormal blocks side by side
        x = torch.randn(12, 64, generator=g)
        x[0, :32] = 0.0
        x[0, 32:] = -0.0
        x[1, 3] = float("nan")
        x[2, 40] = float("inf")
        x[3, 0] = -float("inf")
        x[4] *= 1e-38                                  # amax near fp32's min normal
        x[5] *= 1e-42                                  # fp32 subnormals only
        x[6] = x[6] / x[6].abs().max() * 3e38          # amax near fp32's max
        x[7, :32] = torch.finfo(torch.float32).max
        x[8, :32] = torch.tensor(2.0 ** -149)
        x[9] = torch.where(x[9] > 0, 1.0, -1.0) * 2.0 ** torch.randint(-149, 128, (64,), generator=g).float()
        return x
    if case == "ties":      # exact element ties after scaling: multiples of 1/16 times powers of two
        k = torch.randint(-200, 200, (16, 64), generator=g).float() / 16
        return k * 2.0 ** torch.randint(-10, 10, (16, 1), generator=g).float()
    raise ValueError(case)


def edge_blocks(name):
    """One block per amax at the scale limits: max_elem * 2^k and its fp32 neighbours, powers of two."""
    _, mx, _ = MX[name]
    amaxes = []
    for k in (-130, -127, -126, -125, -9, 0, 1, 60, 119, 125, 126, 127):
        for base in (mx * 2.0 ** k, 2.0 ** k, 1.5 * 2.0 ** k):
            b = np.float32(base) if base < 3.4e38 else None
            if b is None or b == 0 or not np.isfinite(b):
                continue
            amaxes += [b, np.nextafter(b, np.float32(np.inf)), np.nextafter(b, np.float32(0))]
    amaxes = np.array([a for a in amaxes if 0 < a < np.inf], np.float32)
    frac = np.linspace(-1, 1, 32).astype(np.float32)                 # each block: amax * frac, amax itself
    x = amaxes[:, None] * frac[None, :]
    x[:, -1] = amaxes
    return torch.from_numpy(x.astype(np.float32))


# ---- MX ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("name", list(MX))
def test_mx_matches_reference(name, rule):
    fmt = get_format(name) if rule == "floor" else mx_format(name, rule)
    for case in CASES:
        x = _data(case)
        want, _ = mx_ref(x.numpy(), name, rule)
        assert_same(quantize(x, fmt, backend="eager"), want, x, f"{name}/{rule}/{case}")
    x = edge_blocks(name)
    want, _ = mx_ref(x.numpy(), name, rule)
    assert_same(quantize(x, fmt, backend="eager"), want, x, f"{name}/{rule}/scale limits")


@pytest.mark.parametrize("name", list(MX))
def test_mx_layouts(name):
    """block_size override, pad=True on a non-dividing axis, a non-last axis, a 3-D tensor."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, 50, generator=g) * 3
    want, _ = mx_ref(x.numpy(), name, block=16)
    assert_same(quantize(x[:, :48], name, block_size=16), mx_ref(x[:, :48].numpy(), name, block=16)[0], x[:, :48])
    assert_same(quantize(x, name, block_size=16, pad=True), want, x, f"{name} block 16 pad")
    assert_same(quantize(x, name, pad=True), mx_ref(x.numpy(), name)[0], x, f"{name} pad 50 -> 64")
    xt = x.T.contiguous()                                  # (50, 6): blocks along axis 0
    assert_same(quantize(xt, name, axis=0, pad=True), mx_ref(xt.numpy(), name, axis=0)[0], xt, f"{name} axis 0")
    x3 = torch.randn(3, 64, 5, generator=g)
    assert_same(quantize(x3, name, axis=1), mx_ref(x3.numpy(), name, axis=1)[0], x3, f"{name} 3-D axis 1")
    assert_same(quantize(x3, name, axis=-2, block_size=8), mx_ref(x3.numpy(), name, axis=1, block=8)[0], x3)


@pytest.mark.parametrize("name", list(MX))
def test_mx_encode_decode(name):
    for case in CASES:
        x = _data(case)
        enc = encode(x, name)
        _, codes = mx_ref(x.numpy(), name)
        assert enc.scale.dtype == torch.uint8 and enc.codes.shape == x.shape and enc.shape == tuple(x.shape)
        assert np.array_equal(enc.scale.reshape(-1).numpy().astype(np.int64), codes), f"{name}/{case} scale codes"
        assert_same(decode(enc), quantize(x, name), x, f"{name}/{case} decode(encode(x)) == quantize(x)")
        elem = get_format(name).element
        v = elem.decode(enc.codes).reshape(x.shape[0], -1, 32)      # element codes decode to elements
        X = torch.where(enc.scale == 255, float("nan"), 2.0 ** (enc.scale.float() - 127))
        assert_same((v * X).reshape(x.shape), quantize(x, name), x, f"{name}/{case} codes * 2^(scale-127)")
    x = _data("random")[:, :90]
    for kw in (dict(pad=True), dict(axis=0, pad=True), dict(block_size=16, pad=True)):
        assert_same(decode(encode(x, name, **kw)), quantize(x, name, **kw), x, f"{name} {kw}")


def test_mx_nan_block_is_all_nan_and_others_untouched():
    x = torch.ones(2, 64)
    x[0, 5] = float("nan")
    x[1, 40] = float("inf")
    q = quantize(x, "mxfp4")
    assert torch.isnan(q[0, :32]).all() and torch.isnan(q[1, 32:]).all()
    assert (q[0, 32:] == 1).all() and (q[1, :32] == 1).all()
    assert encode(x, "mxfp4").scale.reshape(-1).tolist() == [255, 125, 125, 255]  # 1 = 2^(127-127+2) * 0.25... X = 2^-2


# ---- NVFP4 ------------------------------------------------------------------------------------------
def test_nvfp4_matches_reference():
    for case in CASES + ("tiny", "huge", "subnormal"):
        x = {"tiny": lambda: _data("random") * 1e-36, "huge": lambda: _data("mixed")[6:8],
             "subnormal": lambda: torch.randn(64, 256, generator=torch.Generator().manual_seed(4)) * 1e-42,
             }.get(case, lambda: _data(case))()
        assert_same(quantize(x, "nvfp4", backend="eager"), nvfp4_ref(x.numpy()), x, f"nvfp4/{case}")


def test_nvfp4_layouts_and_no_tensor_scale():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(10, 40, generator=g) * 5
    assert_same(quantize(x, "nvfp4", pad=True), nvfp4_ref(x.numpy()), x, "nvfp4 pad")
    xt = x.T.contiguous()
    assert_same(quantize(xt, "nvfp4", axis=0, pad=True), nvfp4_ref(xt.numpy(), axis=0), xt, "nvfp4 axis 0")
    assert_same(quantize(x, "nvfp4", block_size=8), nvfp4_ref(x.numpy(), block=8), x, "nvfp4 block 8")
    plain = BlockFormat(get_format("fp4_e2m1"), 16, "e4m3", tensor_scale=False, name="nvfp4_noscale")
    x = x[:, :32] * 1e-3
    assert_same(quantize(x, plain), nvfp4_ref(x.numpy(), tensor_scale=False), x, "nvfp4 without tensor scale")


def test_nvfp4_encode_decode():
    for x in (_data("random"), _data("mixed"), torch.randn(4, 40)):
        kw = dict(pad=True) if x.shape[-1] % 16 else {}
        enc = encode(x, "nvfp4", **kw)
        sb_codes, st = enc.scale
        assert sb_codes.dtype == torch.uint8 and st.dtype == torch.float32 and st.numel() == 1
        fin = torch.isfinite(x)
        assert st.item() == np.float32(x[fin].abs().max().item() / 2688.0)
        assert_same(decode(enc), quantize(x, "nvfp4", **kw), x, "nvfp4 decode(encode(x)) == quantize(x)")


# ---- SQNR order (signal to quantization noise, dB) ----------------------------------------------------
def _sqnr(x, q):
    return 10 * torch.log10(x.square().sum() / (x - q).square().sum()).item()


def test_sqnr_order_on_randn():
    x = torch.randn(128, 256, generator=torch.Generator().manual_seed(0))
    s = {n: _sqnr(x, quantize(x, n)) for n in list(MX) + ["nvfp4"]}
    # about 6 dB per mantissa bit; the exponent bits buy range, which Gaussian blocks do not need
    assert s["mxint8"] > s["mxfp8_e4m3"] + 8
    assert 4 < s["mxfp8_e4m3"] - s["mxfp8_e5m2"] < 7.5 and 4 < s["mxfp6_e2m3"] - s["mxfp6_e3m2"] < 7.5
    assert abs(s["mxfp8_e4m3"] - s["mxfp6_e2m3"]) < 1 and abs(s["mxfp8_e5m2"] - s["mxfp6_e3m2"]) < 0.5
    assert s["mxfp6_e3m2"] > s["mxfp4"] + 4 and s["nvfp4"] > s["mxfp4"] > 15
    assert 28 < s["mxfp8_e4m3"] < 33, s


def test_sqnr_order_on_heavy_tails():
    """With heavy-tailed blocks the element exponent range matters: 8 bits > 6 bits > 4 bits."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(128, 256, generator=g) * torch.exp(torch.randn(128, 256, generator=g) * 2)

    def mean_snr(q):  # per-element SNR, so small elements count as much as large ones
        return (10 * torch.log10((x.square() / (x - q).square().clamp(min=1e-30)).clamp(max=1e12))).mean().item()
    s = {n: mean_snr(quantize(x, n)) for n in MX}
    assert s["mxfp8_e4m3"] > s["mxfp6_e2m3"] + 10 > s["mxfp4"] + 10
    assert s["mxfp8_e5m2"] > s["mxfp6_e3m2"] + 5 > s["mxfp4"] + 5
