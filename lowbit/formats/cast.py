"""Element casts: fp32 tensor -> nearest value of a format, returned as fp32 (quantize-dequantize).

These are the arithmetic core of lowbit. They use only exact operations (integer arithmetic on the
fp32 encoding, multiplications by powers of two, comparisons), so the eager path and the
torch.compile'd path give bit-identical results, and the result does not depend on vectorisation.

Rounding (``rounding``):
    ``nearest``     round to nearest, ties to the even significand (IEEE 754 roundTiesToEven; for
                    formats with no mantissa bits the significand is always 1, so ties go up in
                    magnitude, as ml_dtypes does for E8M0).
    ``zero``        toward zero (truncation). Never overflows: IEEE 754 section 7.4 gives +-max.
    ``stochastic``  up with probability equal to the distance from the lower neighbour, in units of
                    the gap, so E[q] = x (exact to 2^-24 of a gap; noise is uniform [0, 1) fp32).
Overflow (``saturate``): True clamps to +-max (Inf too); False gives Inf where the format has Inf,
else NaN where it has NaN (formats with neither always saturate). NaN in gives NaN out.
"""
from __future__ import annotations

import torch

ROUNDINGS = ("nearest", "zero", "stochastic")

_INF_BITS = 0x7F800000
_NAN_BITS = 0x7FC00000


def _pow2(k: torch.Tensor) -> torch.Tensor:
    """2^k as fp32 for integer tensors k in [-149, 127], built from bits (exact, no pow)."""
    normal = (k + 127) << 23
    sub = torch.bitwise_left_shift(torch.ones_like(k), (k + 149).clamp(0, 22))
    return torch.where(k >= -126, normal, sub).view(torch.float32)


def _round_shift(m: torch.Tensor, sh: torch.Tensor, rounding: str, noise) -> torch.Tensor:
    """Integer m / 2^sh rounded per ``rounding``; m < 2^24, sh >= 1."""
    if rounding == "nearest":
        sh = sh.clamp(max=25)  # m < 2^24: every shift >= 25 rounds to 0 alike
        half = torch.bitwise_left_shift(torch.ones_like(sh), sh - 1)
        odd = torch.bitwise_right_shift(m, sh) & 1
        return torch.bitwise_right_shift(m + half - 1 + odd, sh)
    if rounding == "zero":
        return torch.bitwise_right_shift(m, sh.clamp(max=25))
    # stochastic: t = m / 2^sh exactly in fp32 (sh <= 60 keeps 2^-sh normal), up with P = frac(t)
    t = m.to(torch.float32) * _pow2(-(sh.clamp(max=60)))
    fl = torch.floor(t)
    return (fl + (noise < (t - fl)).to(torch.float32)).to(torch.int32)


def _magic_ok(fmt) -> bool:
    """The FPU-rounding path needs 2^(emax + 2 - M + 23) to be a finite fp32 (all formats with E <= 7)."""
    return fmt.emax + 2 - fmt.man_bits + 23 <= 127


def float_cast(x: torch.Tensor, fmt, rounding: str = "nearest", saturate: bool = True,
               noise: torch.Tensor | None = None) -> torch.Tensor:
    """Cast fp32 ``x`` to the minifloat ``fmt`` (a FloatFormat) and back to fp32."""
    if fmt.man_bits >= 23:
        return x.clone()
    if rounding == "nearest" and _magic_ok(fmt):
        return _float_cast_magic(x, fmt, saturate)
    return _float_cast_int(x, fmt, rounding, saturate, noise)


def _float_cast_magic(x: torch.Tensor, fmt, saturate: bool) -> torch.Tensor:
    """Round-to-nearest-even by the FPU: (|x| + C) - C with C = 2^(k + 23), k the exponent of the gap.

    Adding C aligns |x| (< C) to C's ulp, which is exactly the gap 2^k of the format around |x|, so the
    fp32 adder performs the tie-to-even rounding and the subtraction is exact. Cheaper than shifting.
    """
    M = fmt.man_bits
    ax = x.abs().clamp(max=2.0 ** (fmt.emax + 2))       # keeps C finite; Inf and huge values still overflow
    ef = ax.view(torch.int32) & 0x7F800000          # exponent field of |x|
    if fmt.emin < -126:  # the format has normals below 2^-126: fp32 subnormals need their true binade
        ef = torch.where(ax < 2.0 ** -126, ((ax * 2.0 ** 64).view(torch.int32) & 0x7F800000) - (64 << 23), ef)
    emin_f = (fmt.emin + 127) << 23
    if fmt.subnormals:
        c = ef.clamp(min=emin_f) + ((23 - M) << 23)
    else:
        c = torch.where(ef < emin_f, (fmt.emin + 23 + 127) << 23, ef + ((23 - M) << 23))
    c = c.view(torch.float32)
    q = (ax + c) - c
    return _finish(q, x, fmt, saturate)


def _finish(q: torch.Tensor, x: torch.Tensor, fmt, saturate: bool) -> torch.Tensor:
    """Overflow policy, then ``x``'s sign, on a rounded magnitude ``q`` (NaN where ``x`` was NaN).

    Float ops only (copysign, not bit ORs): a trailing int->float bitcast makes Inductor write an
    intermediate buffer, costing a full extra pass over memory.
    """
    maxv = fmt.max
    if saturate or not (fmt.has_inf or fmt.has_nan):
        q = q.clamp(max=maxv)                          # propagates NaN
    else:
        q = torch.where(q > maxv, float("inf") if fmt.has_inf else float("nan"), q)
    q = torch.copysign(q, x)
    if not fmt.has_negative_zero:
        q = torch.where(q == 0, 0.0, q)
    return q


def _float_cast_int(x: torch.Tensor, fmt, rounding: str, saturate: bool, noise) -> torch.Tensor:
    """General path (every rounding, every exponent width): integer rounding of the significand."""
    M = fmt.man_bits
    a = x.view(torch.int32) & 0x7FFFFFFF
    eb = torch.bitwise_right_shift(a, 23)
    m = (a & 0x7FFFFF) | ((eb > 0).to(torch.int32) << 23)  # implicit bit; int32 throughout
    E = eb.clamp(min=1) - 127                      # unbiased exponent (fp32 subnormals: -126)
    emin = fmt.emin
    Eb = E                                         # exponent of x's binade
    if emin < -126:  # the format has normals below 2^-126: an fp32 subnormal's binade is floor(log2(m)) - 149
        Eb = torch.where(eb == 0, torch.bitwise_right_shift(m.to(torch.float32).view(torch.int32), 23) - 276, E)
    if fmt.subnormals:
        k = Eb.clamp(min=emin) - M                 # exponent of the gap between neighbours
    else:
        k = torch.where(Eb >= emin, Eb - M, emin)  # below min normal: choose 0 or 2^emin
    sh = 23 + k - E
    if emin < -126:  # a gap of 2^-149 gives sh = 0 for fp32 subnormals (m < 2^23): keep sh >= 1
        m, sh = torch.where(eb == 0, m << 1, m), torch.where(eb == 0, sh + 1, sh)
    n = _round_shift(m, sh, rounding, noise)
    q = n.to(torch.float32) * _pow2(k)             # exact: n < 2^(M+2), k >= -149
    isinf = a == _INF_BITS
    if rounding == "zero":                         # IEEE 7.4: truncation overflows to +-max
        q = torch.where(isinf, fmt.max, q)
        saturate = True
    else:
        q = torch.where(isinf, float("inf"), q)
    q = torch.where(a > _INF_BITS, float("nan"), q)
    return _finish(q, x, fmt, saturate)


def int_round(y: torch.Tensor, rounding: str, noise: torch.Tensor | None = None) -> torch.Tensor:
    """``y`` rounded to an integer (as fp32) per ``rounding``; NaN and +-Inf pass through."""
    if rounding == "nearest":
        return torch.round(y)  # torch.round is round-half-to-even
    if rounding == "zero":
        return torch.trunc(y)
    fl = torch.floor(y)
    return fl + (noise < (y - fl)).to(torch.float32)


def int_cast(x: torch.Tensor, fmt, rounding: str = "nearest", saturate: bool = True,
             noise: torch.Tensor | None = None) -> torch.Tensor:
    """Round fp32 ``x`` to the integer grid of ``fmt`` (step 2^-frac_bits) and clamp to its range.

    Integers have no Inf: out-of-range values (and +-Inf) always saturate; NaN stays NaN; zero is +0.
    """
    y = x * (2.0 ** fmt.frac_bits) if fmt.frac_bits else x
    r = int_round(y, rounding, noise).clamp(fmt.qmin, fmt.qmax)  # clamp propagates NaN
    r = torch.where(r == 0, 0.0, r)  # integers have no -0 (round(-0.3) is -0.0): the code 0 decodes to +0
    return r * fmt.step if fmt.frac_bits else r


def codebook_cast(x: torch.Tensor, values: torch.Tensor, rounding: str = "nearest",
                  noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest value of the sorted 1-D ``values`` (ties to the even index). Returns (q, index).

    Values outside [values[0], values[-1]] saturate to the end values. ``zero`` picks the neighbour
    nearer zero; ``stochastic`` picks the upper neighbour with probability (x - lo) / (hi - lo).
    NaN maps to NaN (index 0).
    """
    n = values.numel()
    xc = torch.nan_to_num(x, nan=0.0).clamp(values[0], values[-1])
    hi = torch.bucketize(xc.contiguous(), values, right=False).clamp(1, n - 1)   # values[hi-1] < x <= values[hi]
    lo = hi - 1
    vlo, vhi = values[lo], values[hi]
    if rounding == "nearest":
        # sign(vlo + vhi - 2x) decides, computed exactly: fp32 distances x - vlo, vhi - x are rounded
        # and can turn a near-tie into a false tie. TwoSum gives vlo + vhi = s + err exactly; then
        # s - 2x is exact wherever it is small (Sterbenz), and d + err keeps the sign of the exact sum.
        s = vlo + vhi
        bv = s - vlo
        err = (vlo - (s - bv)) + (vhi - bv)
        c = (s - 2.0 * xc) + err
        up = (c < 0) | ((c == 0) & (hi % 2 == 0))
    elif rounding == "zero":
        up = (xc == vhi) | ((xc != vlo) & (vhi.abs() < vlo.abs()))  # the neighbour nearer zero
    else:
        up = noise * (vhi - vlo) < (xc - vlo)
    idx = torch.where(up, hi, lo)
    q = values[idx]
    q = torch.where(torch.isnan(x), float("nan"), q)
    return q, idx


def e8m0_cast(x: torch.Tensor) -> torch.Tensor:
    """Cast fp32 to E8M0 and back (see :class:`lowbit.formats.spec.E8M0Format` for the contract)."""
    a = x.view(torch.int32)
    eb = torch.bitwise_right_shift(a & 0x7FFFFFFF, 23)
    mant = a & 0x7FFFFF
    # biased E8M0 exponent; in fp32's subnormal range the candidates are 2^-127 (mant 0x400000) and
    # 2^-126, whose midpoint is mant 0x600000; elsewhere the significand 1.5 is the midpoint
    e = torch.where(eb == 0, (mant >= 0x600000).to(torch.int32), eb + (mant >= 0x400000).to(torch.int32))
    bad = (x <= 0) | ~torch.isfinite(x) | (e > 254)
    out = torch.where(e == 0, 0x00400000, e << 23)
    return torch.where(bad, _NAN_BITS, out).view(torch.float32)
