"""Number-format specifications: frozen dataclasses, each format described once.

Every property a format has (range, code count, bits per element) is derived from the few fields that
define it, so two descriptions of the same format can never drift apart.

Minifloat value of a code (sign s, exponent field e, mantissa field m), see ../shared/numerics.md:
    normal    (e > 0):  (-1)^s * 2^(e - bias) * (1 + m / 2^M)
    subnormal (e = 0):  (-1)^s * 2^(1 - bias) * (m / 2^M)
Special-value policies (``specials``):
    ``ieee``    exponent field all ones is Inf (m = 0) or NaN (m != 0), as IEEE 754 / OCP E5M2.
    ``fn``      finite, a single NaN pattern per sign: all ones (S.1111.111), as OCP E4M3.
    ``fnuz``    finite, no negative zero; the code 1000...0 is the only NaN (ml_dtypes' *fnuz types).
    ``finite``  every code is a number, no Inf and no NaN, as OCP FP6/FP4.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

FP32_MAX = 3.4028234663852886e38
FP32_MIN_SUBNORMAL = 2.0 ** -149

SPECIALS = ("ieee", "fn", "fnuz", "finite")


def _fail(msg: str) -> None:
    raise ValueError(msg)


class _Codes:
    """Methods shared by every element format: codes, values and value tables."""

    def encode(self, x, rounding: str = "nearest", saturate: bool = True):
        """Direct cast of ``x`` (no scaling) to this format's codes (see :mod:`lowbit.formats.codec`)."""
        from .codec import encode_direct
        return encode_direct(x, self, rounding, saturate)

    def decode(self, codes):
        """fp32 values of ``codes``."""
        from .codec import decode_element
        return decode_element(codes, self)

    def values(self):
        """Sorted distinct finite values (float64 numpy array)."""
        from .tables import values
        return values(self)


@dataclass(frozen=True)
class FloatFormat(_Codes):
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


@dataclass(frozen=True)
class IntFormat(_Codes):
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


@dataclass(frozen=True)
class CodebookFormat(_Codes):
    """An explicit, sorted set of values (``points``, a tuple); ``x`` maps to the nearest one.

    ``points`` is the field (``values()`` is the method every element format has: the sorted finite
    values as a float64 numpy array, here the same numbers). Ties (``x`` exactly half-way between two neighbours) go to the neighbour with the even index in
    the sorted list, the codebook analogue of round-half-to-even. Codes are indices into ``values``.
    ``scaling`` is the default scaling when the format is used: ``none`` (values are absolute) or
    ``tensor`` (values are normalised, e.g. NF4 in [-1, 1]).
    """

    points: tuple
    name: str = field(default="", compare=False)
    scaling: str = "none"

    kind = "codebook"

    def __post_init__(self):
        try:
            vals = tuple(float(v) for v in self.points)
        except (TypeError, ValueError):
            _fail(f"codebook values {self.points!r} must be a list of numbers")
        if len(vals) < 2:
            _fail(f"a codebook needs at least 2 values, got {len(vals)}")
        if any(not math.isfinite(v) for v in vals):
            _fail(f"codebook values must be finite, got {list(vals)}")
        if len(set(vals)) != len(vals):
            _fail(f"codebook values must be distinct, got {list(vals)}")
        if len(vals) > 65536:
            _fail(f"a codebook has at most 65536 values, got {len(vals)}")
        if self.scaling not in ("none", "tensor"):
            _fail(f"codebook scaling={self.scaling!r} is not allowed; allowed: none, tensor")
        vals = tuple(sorted(vals))
        object.__setattr__(self, "points", vals)
        if not self.name:
            object.__setattr__(self, "name", "codebook:" + ",".join(f"{v:g}" for v in vals))

    @property
    def bits(self) -> int:
        return max(1, math.ceil(math.log2(len(self.points))))

    @property
    def n_codes(self) -> int:
        return len(self.points)

    @property
    def max(self) -> float:
        return max(abs(v) for v in self.points)

    @property
    def emax(self) -> int:
        return math.floor(math.log2(self.max))

    @property
    def min_normal(self) -> float:
        nz = [abs(v) for v in self.points if v != 0]
        return min(nz) if nz else 0.0

    min_subnormal = min_normal

    @property
    def default_scaling(self) -> str:
        return self.scaling

    @property
    def bits_per_element(self) -> float:
        return float(self.bits)

    def describe(self) -> dict:
        return dict(name=self.name, kind=self.kind, bits=self.bits, max=self.max,
                    min=min(self.points), min_normal=self.min_normal, min_subnormal=self.min_normal,
                    n_codes=self.n_codes, bits_per_element=float(self.bits))


@dataclass(frozen=True)
class E8M0Format(_Codes):
    """OCP MX v1.0 section 5.4.1 scale format: unsigned powers of two 2^(e-127), e in 0..254; 0xFF is NaN.

    No zero, no sign, no Inf. Casting rounds to the nearest power of two with ties upward in magnitude
    (the significand 1.5 rounds to 2, as ml_dtypes' float8_e8m0fnu does), values below 2^-127 give
    2^-127, and values <= 0, NaN, Inf and values rounding above 2^127 give NaN.
    """

    name: str = field(default="e8m0", compare=False)

    kind = "scale"
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


SCALE_RULES = ("floor", "ceil", "rceil")


@dataclass(frozen=True)
class BlockFormat:
    """Block-scaled format: blocks of ``block_size`` consecutive elements along an axis share one scale.

    ``scale="e8m0"`` is OCP MX v1.0 (section 6.3): X = 2^shared_exp with, for the default
    ``scale_rule="floor"``, shared_exp = floor(log2(amax)) - emax_elem, clamped to [-127, 127];
    ``ceil`` uses ceil(log2(amax)) and ``rceil`` rounds amax / max_elem up to a power of two (never
    saturates). Elements are element_cast(v / X) with round-to-nearest-even, saturating to +-max.
    A block holding NaN or Inf gets the NaN scale (0xFF) and decodes to all NaN.

    ``scale="e4m3"`` is NVFP4: a per-tensor fp32 scale s_t = amax(tensor) / (448 * max_elem) (1 when
    ``tensor_scale=False`` or amax is 0; 2^-149 where the quotient underflows), block scale s_b = fp8_e4m3(amax(block) / max_elem / s_t),
    saturating, elements = element_cast(v / (s_b * s_t)). A block whose s_b rounds to 0 decodes to 0.
    """

    element: object
    block_size: int = 32
    scale: str = "e8m0"
    scale_rule: str = "floor"
    tensor_scale: bool = False
    name: str = field(default="", compare=False)

    kind = "block"

    def __post_init__(self):
        if not isinstance(self.element, (FloatFormat, IntFormat)):
            _fail(f"block element format must be a float or int format, got {self.element!r}")
        if not isinstance(self.block_size, int) or self.block_size < 1:
            _fail(f"block_size={self.block_size!r} is not allowed; allowed: a positive integer")
        if self.scale not in ("e8m0", "e4m3"):
            _fail(f"block scale={self.scale!r} is not allowed; allowed: e8m0, e4m3")
        if self.scale_rule not in SCALE_RULES:
            _fail(f"scale_rule={self.scale_rule!r} is not allowed; allowed: {', '.join(SCALE_RULES)}")
        if not self.name:
            object.__setattr__(self, "name", f"block:{self.element.name}/{self.block_size}/{self.scale}")

    @property
    def bits(self) -> int:
        return self.element.bits

    @property
    def scale_bits(self) -> int:
        return 8

    @property
    def bits_per_element(self) -> float:
        """Element bits plus the block scale's share (the per-tensor fp32 scale is not included)."""
        return self.element.bits + self.scale_bits / self.block_size

    @property
    def max(self) -> float:
        return self.element.max

    @property
    def n_codes(self) -> int:
        return self.element.n_codes

    @property
    def min_normal(self) -> float:
        return self.element.min_normal

    @property
    def min_subnormal(self) -> float:
        return self.element.min_subnormal

    @property
    def default_scaling(self) -> str:
        return "block"

    def values(self):
        """Sorted distinct finite element values (float64 numpy array), before block scaling."""
        return self.element.values()

    def describe(self) -> dict:
        return dict(name=self.name, kind=self.kind, bits=self.bits, element=self.element.name,
                    block_size=self.block_size, scale=self.scale, scale_rule=self.scale_rule,
                    max=self.max, min_normal=self.min_normal, min_subnormal=self.min_subnormal,
                    n_codes=self.n_codes, bits_per_element=self.bits_per_element)


Format = FloatFormat | IntFormat | CodebookFormat | E8M0Format | BlockFormat
