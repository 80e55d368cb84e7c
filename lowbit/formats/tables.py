"""Value tables computed from the format definitions alone (float64), independent of the fast casts.

``code_values(fmt)`` gives the value of every code (NaN for NaN codes), ``values(fmt)`` the sorted
distinct finite values. These tables are the specification that the fast paths are tested against.
"""
from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=None)
def _code_values(fmt) -> np.ndarray:
    return fmt.code_table()


def code_values(fmt) -> np.ndarray:
    """Value of every code 0..n_codes-1 (float64; NaN for NaN codes). Floats up to 16 bits."""
    return _code_values(fmt).copy()


def values(fmt) -> np.ndarray:
    """Sorted distinct finite values of a format (for block formats: of its element format)."""
    v = code_values(fmt)
    v = v[np.isfinite(v)]
    return np.unique(v) + 0.0  # +0 and -0 compare equal: one zero, +0
