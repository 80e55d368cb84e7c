"""The format interface: what every number-format family implements, so the rest of lowbit never
asks which family a format belongs to.

A family is one file in this package (``minifloat``, ``integer``, ``codebook``, ``e8m0``, ``block``)
holding a frozen dataclass that subclasses :class:`Format`, plus one :func:`register_family` call so
that its name grammar is parsed by :func:`lowbit.formats.get_format`. The methods below have the
defaults of an element format; a family overrides what differs.

Identity: ``kind`` (the family name, recorded by ``describe()``), ``name`` (the canonical spelling;
recipes, run ids and results store it). Range: ``bits``, ``n_codes``, ``max``, ``min_normal``,
``min_subnormal``, ``bits_per_element``, ``value_range``. Use: ``scalings`` (the QuantSpec scalings
allowed), ``default_scaling`` / ``role_scaling(role)``, ``asymmetric`` (a zero point),
``holds_tensors``, ``direct_cast_ok``, ``element`` / ``storage_bits`` (what one stored code is),
``arithmetic`` (the datapath a MAC operand uses). Numerics: ``cast`` (scaled fp32 -> nearest value),
``codes`` (direct cast -> codes), ``code_table`` (value of every code), ``reference`` (the slow
spec), ``cast_bounds``, ``cast_values`` (codebook value tensor).
"""
from __future__ import annotations

import numpy as np

FP32_MAX = 3.4028234663852886e38
FP32_MIN_SUBNORMAL = 2.0 ** -149
ELEMENT_SCALINGS = ("none", "tensor", "channel", "group")

_FAMILIES: list = []


def _fail(msg: str) -> None:
    raise ValueError(msg)


def register_family(cls):
    """Class decorator: the family's ``parse(key, original, registered)`` joins the name grammar."""
    if cls in _FAMILIES:
        raise ValueError(f"format family {cls.__name__} is already registered")
    _FAMILIES.append(cls)
    return cls


def families() -> list:
    """Registered format families (classes), in registration order."""
    return list(_FAMILIES)


class Format:
    """Base of every format family (see the module docstring for the interface)."""

    kind = "format"
    label = "format"             # the family in words, for messages
    grammar = ""                 # name spellings the family parses, for error messages
    names_by_grammar = False     # registered names already covered by ``grammar`` (int2..int16)

    # ---- parsing ----------------------------------------------------------------------------------
    @classmethod
    def parse(cls, key: str, original: str, registered) -> "Format | None":
        """The format spelled ``key`` (lower case), or None if the family has no such spelling."""
        return None

    # ---- how the format is used -------------------------------------------------------------------
    # ``element``: the format of one element (a block format's element; else the format itself)

    @property
    def storage_bits(self) -> int:
        """Bits of one stored element code (scales are counted separately)."""
        return self.element.bits

    @property
    def scalings(self) -> tuple:
        """The ``QuantSpec.scaling`` values this format allows."""
        return ELEMENT_SCALINGS

    @property
    def holds_tensors(self) -> bool:
        """Whether tensors can be quantized to this format (False for scale-only formats)."""
        return bool(self.scalings)

    @property
    def default_scaling(self) -> str:
        return "tensor"

    def role_scaling(self, role: str) -> str:
        """Default scaling in a role ('weight', 'act', 'grad'): see :mod:`lowbit.nn.defaults`."""
        return "tensor"

    def scale_storage_bits(self, n_scales: int) -> int:
        """Bits that ``n_scales`` scales of a tensor in this format occupy: fp32 each, plus an fp32
        zero point each for asymmetric formats (block formats: their own scale codes)."""
        return (64 if self.asymmetric else 32) * n_scales

    @property
    def asymmetric(self) -> bool:
        """Whether scaled use needs a zero point (unsigned integers): scales are (scale, zero point)."""
        return False

    def native_element(self, rounding: str) -> "dict | str":
        """The native kernels' element descriptor (:mod:`lowbit.ops.native`, ``_Elem`` field -> value;
        ``lo``/``hi`` filled in by the caller), or a one-line reason why they cannot cast this format.
        A family the native kernels do not know keeps this default."""
        return f"{self.kind} formats"

    @property
    def direct_cast_ok(self) -> bool:
        """Whether the values carry their own exponent, so an unscaled cast is meaningful."""
        return False

    @property
    def arithmetic(self) -> str:
        """The datapath a MAC operand in this format uses: 'int' or 'float'."""
        return "float"

    @property
    def mac_operand(self) -> "Format":
        """The format a MAC operand is computed in (codebooks decode to fp16, blocks to their element)."""
        return self

    @property
    def value_range(self) -> tuple[float, float]:
        """(lowest, highest) value in scaled units (zero point 0 for unsigned integers)."""
        return -self.max, self.max

    # ---- numerics ---------------------------------------------------------------------------------
    def cast(self, y, rounding: str, saturate: bool, noise, values=None):
        """Already-scaled fp32 ``y`` -> nearest value of this element format (fp32 tensor)."""
        raise ValueError(f"format {self.name!r} of kind {self.kind!r} cannot be an element format")

    def cast_values(self, device=None):
        """The value tensor a nearest-value cast searches (codebooks), else None."""
        return None

    def cast_bounds(self, values=None) -> tuple[float, float]:
        """Unscaled inputs that cast without saturating (see ``lowbit.ops.scaling.element_range_scaled``)."""
        raise ValueError(f"format {self.name!r} of kind {self.kind!r} cannot be an element format")

    def codes(self, xf, rounding: str, saturate: bool):
        """Direct cast (no scaling) of fp32 ``xf`` to this format's codes."""
        raise ValueError(f"format {self.name!r} is block-scaled: use lowbit.encode(x, {self.name!r})")

    def code_table(self) -> np.ndarray:
        """Value of every code 0..n_codes-1 (float64; NaN for NaN codes)."""
        raise ValueError(f"no value table for format {self.name!r}")

    def reference(self, x: np.ndarray, saturate: bool) -> np.ndarray:
        """The slow reference cast of float64 ``x`` (see :mod:`lowbit.formats.reference`)."""
        raise ValueError(f"no reference cast for format {self.name!r}")

    # ---- codes, values and names ------------------------------------------------------------------
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

    def recipe_entry(self) -> tuple[str, dict]:
        """(registry name, QuantSpec fields) that rebuild this format in a recipe."""
        return self.name, {}

    def with_block_size(self, n: int) -> "Format":
        raise ValueError(f"block_size is only used with block formats (got {self.name!r})")


class ElementFormat(Format):
    """A format whose codes are the elements themselves (every family but the block-scaled one)."""

    @property
    def element(self) -> Format:
        return self
