"""E8M0: the OCP MX scale format (unsigned powers of two); it holds block scales, not tensors.

Codes are the biased exponent (255 = NaN).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .base import ElementFormat
from .cast import e8m0_cast


@dataclass(frozen=True)
class E8M0Format(ElementFormat):
    """OCP MX v1.0 section 5.4.1 scale format: unsigned powers of two 2^(e-127), e in 0..254; 0xFF is NaN.

    No zero, no sign, no Inf. Casting rounds to the nearest power of two with ties upward in magnitude
    (the significand 1.5 rounds to 2, as ml_dtypes' float8_e8m0fnu does), values below 2^-127 give
    2^-127, and values <= 0, NaN, Inf and values rounding above 2^127 give NaN.
    """

    name: str = field(default="e8m0", compare=False)

    kind = "scale"
    label = "scale"
    bits = 8
    bias = 127
    n_codes = 256
    max = 2.0 ** 127
    min_normal = 2.0 ** -127
    min_subnormal = 2.0 ** -127
    emax = 127

    @property
    def bits_per_element(self) -> float:
        return 8.0

    @property
    def default_scaling(self) -> str:
        return "none"

    def describe(self) -> dict:
        return dict(name=self.name, kind=self.kind, bits=8, max=self.max, min_normal=self.min_normal,
                    min_subnormal=self.min_subnormal, n_codes=256, bits_per_element=8.0)

    # ---- the format interface -------------------------------------------------------------------
    @property
    def scalings(self) -> tuple:
        return ()                                   # a scale format: it holds scales, not tensors

    @property
    def arithmetic(self) -> str:
        return "int"

    def codes(self, xf, rounding, saturate):
        q = e8m0_cast(xf)
        e = torch.bitwise_right_shift(q.view(torch.int32), 23)
        return torch.where(torch.isnan(q), 255, torch.where(e == 0, 0, e)).to(torch.uint8)

    def code_table(self):
        vals = np.array([math.ldexp(1.0, e - 127) for e in range(256)], dtype=np.float64)
        vals[255] = np.nan
        return vals

    def reference(self, x, saturate):
        with np.errstate(divide="ignore", invalid="ignore"):
            e = np.floor(np.log2(np.where(x > 0, x, 1.0)))
            frac = x / np.exp2(e)
        e = e + (frac >= 1.5)
        e = np.maximum(e, -127)
        bad = ~(x > 0) | ~np.isfinite(x) | (e > 127)
        return np.where(bad, np.nan, np.exp2(np.clip(e, -127, 127)))
