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


def reference_cast(x, fmt, saturate: bool = True) -> np.ndarray:
    """Round ``x`` (array-like) to ``fmt`` in float64: each family's ``reference`` method, built on
    :func:`nearest` (block formats: their element's cast of already-scaled values)."""
    return fmt.reference(np.asarray(x, dtype=np.float64), saturate)


def nearest(x: np.ndarray, vals: np.ndarray, ties_by_index: bool = False) -> np.ndarray:
    """Nearest of the sorted finite ``vals`` (below ``vals[0]``: ``vals[0]``); ties per the module doc.

    Values above ``vals[-1]`` come back as the nearest neighbour pair's pick; the caller applies its
    overflow policy and maps NaN.
    """
    lo_i = np.clip(np.searchsorted(vals, x, side="right") - 1, 0, len(vals) - 1)
    hi_i = np.clip(lo_i + 1, 0, len(vals) - 1)
    lo, hi = vals[lo_i], vals[hi_i]
    # compare with the midpoint, not the distances |x - lo|, |hi - x|: those round in float64 and can
    # fake a tie (x = -1e-20 between -1 and 1); (lo + hi) / 2 is exact for fp32-valued tables
    mid = (lo + hi) / 2
    gap = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        if ties_by_index:
            hi_even = hi_i % 2 == 0
        else:
            hi_even = np.mod(np.round(hi / np.where(gap > 0, gap, 1)), 2) == 0
    pick_hi = (x > mid) | ((x == mid) & hi_even)
    q = np.where(pick_hi, hi, lo)
    return np.where(x <= vals[0], vals[0], q)
