"""Integers: two's-complement (``int2..int16``) or unsigned (``uint1..uint16``), optionally fixed point.

Codes are two's-complement bit patterns (int4 -1 is 0b1111 = 15). Unsigned formats are used
asymmetrically (a zero point, see :mod:`lowbit.ops.scaling`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import torch

from .base import ElementFormat, _fail, register_family
from .cast import int_cast
from .codec import code_dtype, noise_for
from .reference import nearest
from .tables import values as table_values

_INT = re.compile(r"^(u?)int(\d+)(_narrow)?$")


@register_family
@dataclass(frozen=True)
class IntFormat(ElementFormat):
    """Two's-complement (``signed``) or unsigned integers of ``bits`` bits.

    Values are ``code * 2^-frac_bits`` (``frac_bits`` > 0 gives fixed point, as MXINT8's elements).
    ``narrow=True`` drops the most negative code so the range is symmetric: [-(2^(b-1)-1), 2^(b-1)-1].
    """

    bits: int
    signed: bool = True
    narrow: bool = False
    frac_bits: int = 0
    name: str = field(default="", compare=False)

    kind = "int"
    label = "integer"
    grammar = "int2..int16, uint1..uint16, intN_narrow"
    names_by_grammar = True

    def __post_init__(self):
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 16:
            _fail(f"bits={self.bits!r} is not allowed; allowed: integers 1..16")
        if self.signed and self.bits < 2:
            _fail("a signed integer format needs at least 2 bits; allowed: int2..int16, uint1..uint16")
        if self.narrow and not self.signed:
            _fail("narrow=True is only meaningful for signed formats")
        if not self.name:
            base = f"{'int' if self.signed else 'uint'}{self.bits}"
            object.__setattr__(self, "name", base + ("_narrow" if self.narrow else "")
                               + (f"_f{self.frac_bits}" if self.frac_bits else ""))

    @property
    def qmin(self) -> int:
        if not self.signed:
            return 0
        return -(2 ** (self.bits - 1)) + (1 if self.narrow else 0)

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2 ** self.bits - 1

    @property
    def step(self) -> float:
        return 2.0 ** -self.frac_bits

    @property
    def max(self) -> float:
        return self.qmax * self.step

    @property
    def min(self) -> float:
        return self.qmin * self.step

    @property
    def emax(self) -> int:
        return math.floor(math.log2(self.max))

    @property
    def n_codes(self) -> int:
        return 2 ** self.bits

    @property
    def min_normal(self) -> float:
        return self.step

    @property
    def min_subnormal(self) -> float:
        return self.step

    @property
    def default_scaling(self) -> str:
        return "tensor"

    @property
    def bits_per_element(self) -> float:
        return float(self.bits)

    def describe(self) -> dict:
        return dict(name=self.name, kind=self.kind, bits=self.bits, signed=self.signed, narrow=self.narrow,
                    max=self.max, min=self.min, min_normal=self.step, min_subnormal=self.step,
                    n_codes=self.n_codes, bits_per_element=float(self.bits))

    # ---- the format interface -------------------------------------------------------------------
    @classmethod
    def parse(cls, key, original, registered):
        m = _INT.match(key)
        if not m:
            return None
        signed, bits = m.group(1) == "", int(m.group(2))
        if not (2 if signed else 1) <= bits <= 16:
            raise ValueError(f"format {original!r}: integer formats are int2..int16 and uint1..uint16")
        return cls(bits, signed=signed, narrow=m.group(3) is not None)

    def role_scaling(self, role):
        return "channel" if role == "weight" else "tensor"

    @property
    def asymmetric(self) -> bool:
        return not self.signed

    @property
    def arithmetic(self) -> str:
        return "int"

    @property
    def value_range(self):
        return self.min, self.max

    def native_element(self, rounding):
        """Descriptor of the native kernels' integer cast (signed, round to nearest-even or to zero)."""
        if not self.signed:
            return f"{self.name} (asymmetric, zero point)"
        codes = {"nearest": 0, "zero": 1}
        if rounding not in codes:
            return f"rounding={rounding!r}"
        return {"kind": 1, "rounding": codes[rounding], "has_frac": int(self.frac_bits != 0),
                "frac_mul": 2.0 ** self.frac_bits, "qmin": self.qmin, "qmax": self.qmax, "step": self.step}

    def cast(self, y, rounding, saturate, noise, values=None):
        return int_cast(y, self, rounding, saturate, noise)

    def cast_bounds(self, values=None):
        return (self.qmin - 0.5) * self.step, (self.qmax + 0.5) * self.step

    def codes(self, xf, rounding, saturate):
        return int_codes(int_cast(xf, self, rounding, True, noise_for(xf, rounding)), self)

    def code_table(self):
        codes = np.arange(self.n_codes, dtype=np.int64)
        if self.signed:
            codes = np.where(codes >= self.n_codes // 2, codes - self.n_codes, codes)
        vals = codes.astype(np.float64) * self.step
        if self.narrow:
            vals[codes == -(self.n_codes // 2)] = np.nan  # unused code
        return vals

    def reference(self, x, saturate):
        vals = table_values(self)
        q = nearest(x, vals)
        return np.where(np.isnan(x), np.nan, np.where(x >= vals[-1], vals[-1], q))


def int_codes(v: torch.Tensor, fmt) -> torch.Tensor:
    if bool(torch.isnan(v).any()):  # round(NaN) -> int64 is undefined: it would give some code silently
        raise ValueError(f"format {fmt.name!r} has no NaN code; the input holds NaN")
    q = torch.round(v.double() / fmt.step).to(torch.int64)
    return (q & (fmt.n_codes - 1)).to(code_dtype(fmt))
