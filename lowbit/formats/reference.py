"""The slow, obvious reference cast: nearest value from the format's value table, in float64.

This is the specification the fast kernels are tested against, written without bit tricks:
    * x is mapped to the nearest finite value of the table;
    * a tie between neighbours lo < hi goes to the one whose value divided by the gap (hi - lo) is
      even: the significand's last bit for minifloats (ties up in magnitude when M = 0), the even
      integer for integer formats. Codebooks use the even index instead (documented there);
    * beyond +-max the format rounds as if its exponent were unbounded; the result is +-max when
      saturating (or the format has no Inf/NaN), else Inf (IEEE-like) or NaN ("fn", "fnuz");
    * NaN -> NaN; Inf -> +-max when saturating, else Inf/NaN as above.
"""
from __future__ import annotations

import numpy as np

from .tables import values as table_values


def reference_cast(x, fmt, saturate: bool = True) -> np.ndarray:
    """Round ``x`` (array-like) to ``fmt`` in float64; element formats only (float, int, codebook, e8m0)."""
    x = np.asarray(x, dtype=np.float64)
    vals = table_values(fmt)
    if fmt.kind == "scale":
        return _e8m0(x, vals)
    ax_sign = np.signbit(x)
    lo_i = np.clip(np.searchsorted(vals, x, side="right") - 1, 0, len(vals) - 1)
    hi_i = np.clip(lo_i + 1, 0, len(vals) - 1)
    lo, hi = vals[lo_i], vals[hi_i]
    # compare with the midpoint, not the distances |x - lo|, |hi - x|: those round in float64 and can
    # fake a tie (x = -1e-20 between -1 and 1); (lo + hi) / 2 is exact for fp32-valued tables
    mid = (lo + hi) / 2
    gap = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        if fmt.kind == "codebook":
            hi_even = hi_i % 2 == 0
        else:
            hi_even = np.mod(np.round(hi / np.where(gap > 0, gap, 1)), 2) == 0
    pick_hi = (x > mid) | ((x == mid) & hi_even)
    q = np.where(pick_hi, hi, lo)
    q = np.where(x <= vals[0], vals[0], q)
    q = _overflow(x, q, vals, fmt, saturate)
    q = np.where(np.isnan(x), np.nan, q)
    if fmt.kind == "float":  # sign of zero follows the input, where the format has -0
        zero_sign = ax_sign if fmt.has_negative_zero else np.zeros_like(ax_sign)
        q = np.where(q == 0, np.where(zero_sign, -0.0, 0.0), q)
    return q


def _overflow(x, q, vals, fmt, saturate):
    mx = vals[-1]
    if fmt.kind != "float":
        return np.where(x >= mx, mx, q)
    # unbounded exponent: the gap in max's binade, 2^(emax - M) (not max - previous value, which is
    # half of it when max has the significand 1.0, e.g. e3m1fn or M = 0); a tie goes to the even multiple
    top_gap = 2.0 ** (fmt.emax - fmt.man_bits)
    nxt = mx + top_gap
    beyond = (np.abs(x) > mx) & ((np.abs(x) > mx + top_gap / 2) |
                                 ((np.abs(x) == mx + top_gap / 2) & (np.mod(nxt / top_gap, 2) == 0)))
    beyond |= np.isinf(x)
    if saturate or not (fmt.has_inf or fmt.has_nan):
        rep = np.sign(x) * mx
    else:
        rep = np.sign(x) * np.inf if fmt.has_inf else np.full_like(x, np.nan)
    q = np.where(np.abs(x) > mx, np.sign(x) * mx, q)
    return np.where(beyond, rep, q)


def _e8m0(x, vals):
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.floor(np.log2(np.where(x > 0, x, 1.0)))
        frac = x / np.exp2(e)
    e = e + (frac >= 1.5)
    e = np.maximum(e, -127)
    bad = ~(x > 0) | ~np.isfinite(x) | (e > 127)
    return np.where(bad, np.nan, np.exp2(np.clip(e, -127, 127)))
