"""Minifloats ExMy (OCP FP8/FP6/FP4, fp16, bf16, fp32 and any eXmY): the ``float`` format family.

Value of a code (sign s, exponent field e, mantissa field m), see ../shared/numerics.md:
    normal    (e > 0):  (-1)^s * 2^(e - bias) * (1 + m / 2^M)
    subnormal (e = 0):  (-1)^s * 2^(1 - bias) * (m / 2^M)
Special-value policies (``specials``):
    ``ieee``    exponent field all ones is Inf (m = 0) or NaN (m != 0), as IEEE 754 / OCP E5M2.
    ``fn``      finite, a single NaN pattern per sign: all ones (S.1111.111), as OCP E4M3.
    ``fnuz``    finite, no negative zero; the code 1000...0 is the only NaN (ml_dtypes' *fnuz types).
    ``finite``  every code is a number, no Inf and no NaN, as OCP FP6/FP4.
Codes are sign | exponent field | mantissa field (the IEEE layout, sign in the top bit).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import torch

from .base import FP32_MAX, FP32_MIN_SUBNORMAL, ElementFormat, _fail, register_family
from .cast import float_cast
from .codec import code_dtype, noise_for
from .reference import nearest
from .tables import values as table_values

SPECIALS = ("ieee", "fn", "fnuz", "finite")
_EXMY = re.compile(r"^e(\d+)m(\d+)(ieee|fnuz|fn|finite)?(?:_b(-?\d+))?(_ftz)?$")


@register_family
@dataclass(frozen=True)
class FloatFormat(ElementFormat):
    """A signed minifloat ExMy: 1 sign bit, ``exp_bits`` exponent bits, ``man_bits`` stored mantissa bits.

    ``bias`` defaults to 2^(E-1) - 1 (2^(E-1) for ``fnuz``, as ml_dtypes does). ``subnormals=False``
    flushes values below the smallest normal to zero (round-to-nearest between 0 and min normal).
    """

    exp_bits: int
    man_bits: int
    bias: int | None = None
    specials: str = "finite"
    subnormals: bool = True
    name: str = field(default="", compare=False)

    kind = "float"
    label = "minifloat"
    grammar = "eXmY[ieee|fn|fnuz|finite][_bBIAS][_ftz]"

    def __post_init__(self):
        E, M = self.exp_bits, self.man_bits
        if not isinstance(E, int) or not 1 <= E <= 8:
            _fail(f"exp_bits={E!r} is not allowed; allowed: integers 1..8")
        if not isinstance(M, int) or not 0 <= M <= 23:
            _fail(f"man_bits={M!r} is not allowed; allowed: integers 0..23")
        if self.specials not in SPECIALS:
            _fail(f"specials={self.specials!r} is not allowed; allowed: {', '.join(SPECIALS)}")
        if self.bias is None:
            object.__setattr__(self, "bias", 2 ** (E - 1) - (0 if self.specials == "fnuz" else 1))
        if self.specials == "ieee" and (E < 2 or M < 1):
            _fail(f"specials='ieee' needs exp_bits >= 2 and man_bits >= 1 (got e{E}m{M}): "
                  f"the top exponent code holds Inf and NaN")
        if self.specials == "fn" and E == 1 and M == 0:
            _fail("e1m0 with specials='fn' has no finite nonzero value; use specials='finite'")
        if self.max > FP32_MAX:
            _fail(f"{self.spelled_name()}: max {self.max:g} exceeds the fp32 range that lowbit computes in; "
                  f"allowed: specials='ieee' for 8 exponent bits, or a larger bias")
        if self.min_positive < FP32_MIN_SUBNORMAL:
            _fail(f"{self.spelled_name()}: smallest value {self.min_positive:g} is below fp32's 2^-149; "
                  f"allowed: a smaller bias")
        if not self.name:
            object.__setattr__(self, "name", self.spelled_name())

    # ---- naming -------------------------------------------------------------------------------
    def spelled_name(self) -> str:
        """Generic spelling ``eXmY`` plus suffixes for every field that differs from the defaults."""
        E, M = self.exp_bits, self.man_bits
        default_specials = "ieee" if E == 8 else "finite"
        s = f"e{E}m{M}"
        if self.specials != default_specials:
            s += self.specials
        if self.bias is not None and self.bias != 2 ** (E - 1) - (0 if self.specials == "fnuz" else 1):
            s += f"_b{self.bias}"
        if not self.subnormals:
            s += "_ftz"
        return s

    # ---- derived properties ----------------------------------------------------------------------
    @property
    def bits(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def n_codes(self) -> int:
        return 2 ** self.bits

    @property
    def has_inf(self) -> bool:
        return self.specials == "ieee"

    @property
    def has_nan(self) -> bool:
        return self.specials != "finite"

    @property
    def has_negative_zero(self) -> bool:
        return self.specials != "fnuz"

    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal."""
        return 1 - self.bias

    @property
    def max_exp_field(self) -> int:
        top = 2 ** self.exp_bits - 1
        if self.specials == "ieee" or (self.specials == "fn" and self.man_bits == 0):
            return top - 1
        return top

    @property
    def max_man_field(self) -> int:
        full = 2 ** self.man_bits - 1
        if self.specials == "fn" and self.max_exp_field == 2 ** self.exp_bits - 1:
            return full - 1  # S.111..1.111..1 is NaN
        return full

    @property
    def emax(self) -> int:
        """Unbiased exponent of the largest normal (OCP's emax_elem)."""
        return self.max_exp_field - self.bias

    @property
    def max(self) -> float:
        return math.ldexp(1.0 + self.max_man_field / 2 ** self.man_bits, self.emax)

    @property
    def min_normal(self) -> float:
        return math.ldexp(1.0, self.emin)

    @property
    def min_subnormal(self) -> float | None:
        """Smallest positive subnormal; None without subnormals (``_ftz``, or M = 0: only zero)."""
        return math.ldexp(1.0, self.emin - self.man_bits) if self.subnormals and self.man_bits else None

    @property
    def min_positive(self) -> float:
        return self.min_subnormal or self.min_normal

    @property
    def default_scaling(self) -> str:
        return "none"

    def describe(self) -> dict:
        return dict(name=self.name, kind=self.kind, bits=self.bits, exp_bits=self.exp_bits,
                    man_bits=self.man_bits, bias=self.bias, specials=self.specials,
                    subnormals=self.subnormals, max=self.max, min_normal=self.min_normal,
                    min_subnormal=self.min_subnormal, n_codes=self.n_codes,
                    bits_per_element=float(self.bits))

    @property
    def bits_per_element(self) -> float:
        return float(self.bits)

    # ---- the format interface -------------------------------------------------------------------
    @classmethod
    def parse(cls, key, original, registered):
        m = _EXMY.match(key)
        if not m:
            return None
        E, M = int(m.group(1)), int(m.group(2))
        if not 1 <= E <= 8 or not 0 <= M <= 10:
            raise ValueError(f"format {original!r}: eXmY needs 1 <= X <= 8 and 0 <= Y <= 10 (got X={E}, Y={M})")
        specials = m.group(3) or ("ieee" if E == 8 else "finite")
        bias = int(m.group(4)) if m.group(4) is not None else None
        fmt = cls(E, M, bias=bias, specials=specials, subnormals=m.group(5) is None)
        for known in registered:  # one spelling per format: a named format keeps its name
            if isinstance(known, cls) and known == fmt:
                return known
        return fmt

    def role_scaling(self, role):
        return "none" if self.bits >= 16 else "tensor"

    @property
    def direct_cast_ok(self) -> bool:
        return True

    def native_element(self, rounding):
        """Descriptor of the native kernels' minifloat cast (round to nearest only; fp32 bit tricks
        need M < 23 and a clamp exponent inside fp32)."""
        if self.man_bits >= 23 or self.emax + 2 - self.man_bits + 23 > 127:
            return f"{self.name} (needs the integer rounding path)"
        if rounding != "nearest":
            return f"rounding={rounding!r} for a minifloat"
        emin = self.emin
        return {"kind": 0, "subnormals": int(self.subnormals), "low_emin": int(emin < -126),
                "no_negzero": int(not self.has_negative_zero), "emin_f": (emin + 127) << 23,
                "shift_add": (23 - self.man_bits) << 23, "ftz_c": (emin + 23 + 127) << 23,
                "clamp_hi": 2.0 ** (self.emax + 2), "maxv": self.max,
                "ovf": math.inf if self.has_inf else math.nan,
                "saturate_always": int(not (self.has_inf or self.has_nan))}

    def cast(self, y, rounding, saturate, noise, values=None):
        return float_cast(y, self, rounding, saturate, noise)

    def cast_bounds(self, values=None):
        half_gap = 2.0 ** (self.emax - self.man_bits - 1)
        return -(self.max + half_gap), self.max + half_gap

    def codes(self, xf, rounding, saturate):
        if self.man_bits >= 23:
            return xf.view(torch.int32).clone()
        return float_codes(float_cast(xf, self, rounding, saturate, noise_for(xf, rounding)), self)

    def code_table(self):
        if self.bits > 16:
            raise ValueError(f"{self.name} has {self.bits} bits: value tables are built for formats of <= 16 bits")
        return _float_table(self)

    def reference(self, x, saturate):
        q = nearest(x, table_values(self))
        q = _overflow(x, q, table_values(self), self, saturate)
        q = np.where(np.isnan(x), np.nan, q)
        zero_sign = np.signbit(x) if self.has_negative_zero else np.zeros_like(np.signbit(x))
        return np.where(q == 0, np.where(zero_sign, -0.0, 0.0), q)


def float_codes(v: torch.Tensor, fmt) -> torch.Tensor:
    """Codes of fp32 values ``v`` that are already representable in the minifloat ``fmt``."""
    E, M = fmt.exp_bits, fmt.man_bits
    b = v.contiguous().view(torch.int32)
    sign = (b < 0).to(torch.int32)
    a = b & 0x7FFFFFFF
    eb = torch.bitwise_right_shift(a, 23)
    mant = a & 0x7FFFFF
    E32 = eb - 127
    if fmt.emin < -126:  # normals below 2^-126 are fp32 subnormals: read exponent and mantissa normalised
        sub = eb == 0
        an = (v.abs() * 2.0 ** 64).view(torch.int32)
        E32 = torch.where(sub, torch.bitwise_right_shift(an, 23) - 127 - 64, E32)
        mant = torch.where(sub, an & 0x7FFFFF, mant)
    normal = E32 >= fmt.emin
    e_field = torch.where(normal, E32 + fmt.bias, 0)
    m_field = torch.where(normal, torch.bitwise_right_shift(mant, 23 - M), 0)
    if fmt.subnormals:  # |v| = m * 2^(emin - M) exactly
        sub = torch.round(v.abs().double() * 2.0 ** (M - fmt.emin)).to(torch.int32)
        m_field = torch.where(normal, m_field, sub)
    code = (sign << (E + M)) | (e_field << M) | m_field
    top = 2 ** E - 1
    if fmt.specials == "ieee":
        code = torch.where(a == 0x7F800000, (sign << (E + M)) | (top << M), code)
        nan_code = (top << M) | (1 << (M - 1)) if M > 0 else (top << M)
    elif fmt.specials == "fn":
        nan_code = (top << M) | (2 ** M - 1)
    elif fmt.specials == "fnuz":
        nan_code = 1 << (E + M)
        code = torch.where(a == 0, 0, code)  # no negative zero
    else:
        nan_code = None
    isnan = torch.isnan(v)
    if nan_code is None:
        if bool(isnan.any()):
            raise ValueError(f"format {fmt.name!r} has no NaN code; the input holds NaN")
    else:
        code = torch.where(isnan, nan_code, code)
    return code.to(code_dtype(fmt))


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


def _overflow(x, q, vals, fmt, saturate):
    mx = vals[-1]
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
