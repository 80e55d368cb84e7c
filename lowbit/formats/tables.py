"""Value tables computed from the format definitions alone (float64), independent of the fast casts.

``code_values(fmt)`` gives the value of every code (NaN for NaN codes), ``values(fmt)`` the sorted
distinct finite values. These tables are the specification that the fast paths are tested against.
"""
from __future__ import annotations

import functools
import math

import numpy as np


@functools.lru_cache(maxsize=None)
def _code_values(fmt) -> np.ndarray:
    if fmt.kind == "float":
        return _float_table(fmt)
    if fmt.kind == "int":
        codes = np.arange(fmt.n_codes, dtype=np.int64)
        if fmt.signed:
            codes = np.where(codes >= fmt.n_codes // 2, codes - fmt.n_codes, codes)
        vals = codes.astype(np.float64) * fmt.step
        if fmt.narrow:
            vals[codes == -(fmt.n_codes // 2)] = np.nan  # unused code
        return vals
    if fmt.kind == "codebook":
        return np.asarray(fmt.points, dtype=np.float64)
    if fmt.kind == "scale":  # E8M0
        vals = np.array([math.ldexp(1.0, e - 127) for e in range(256)], dtype=np.float64)
        vals[255] = np.nan
        return vals
    if fmt.kind == "block":
        return _code_values(fmt.element)
    raise ValueError(f"no value table for format {fmt.name!r}")


def code_values(fmt) -> np.ndarray:
    """Value of every code 0..n_codes-1 (float64; NaN for NaN codes). Floats up to 16 bits."""
    if fmt.kind == "float" and fmt.bits > 16:
        raise ValueError(f"{fmt.name} has {fmt.bits} bits: value tables are built for formats of <= 16 bits")
    return _code_values(fmt).copy()


def _float_table(fmt) -> np.ndarray:
    E, M, bias = fmt.exp_bits, fmt.man_bits, fmt.bias
    out = np.empty(fmt.n_codes, dtype=np.float64)
    top = 2 ** E - 1
    for code in range(fmt.n_codes):
        s = code >> (E + M)
        e = (code >> M) & top
        m = code & (2 ** M - 1)
        if e == 0:
            v = math.ldexp(m / 2 ** M, 1 - bias) if fmt.subnormals else 0.0
        else:
            v = math.ldexp(1 + m / 2 ** M, e - bias)
        if fmt.specials == "ieee" and e == top:
            v = math.inf if m == 0 else math.nan
        elif fmt.specials == "fn" and e == top and m == 2 ** M - 1:
            v = math.nan
        elif fmt.specials == "fnuz" and s == 1 and e == 0 and m == 0:
            v = math.nan
        out[code] = -v if s else v
    return out


def values(fmt) -> np.ndarray:
    """Sorted distinct finite values of a format (for block formats: of its element format)."""
    v = code_values(fmt)
    v = v[np.isfinite(v)]
    return np.unique(v) + 0.0  # +0 and -0 compare equal: one zero, +0
