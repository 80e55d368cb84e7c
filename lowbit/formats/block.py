"""Block-scaled formats: OCP MX (E8M0 block scales) and NVFP4 (E4M3 block scales + an fp32 tensor scale).

Elements are a minifloat or integer format; the block scale computation lives in
:mod:`lowbit.ops.scaling` (``block_scales``), the codes of scales in :mod:`lowbit.ops.encode`.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from .base import Format, _fail
from .integer import IntFormat
from .minifloat import FloatFormat

SCALE_RULES = ("floor", "ceil", "rceil")


@dataclass(frozen=True)
class BlockFormat(Format):
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
    label = "block-scaled (MX / NVFP4)"

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

    def describe(self) -> dict:
        return dict(name=self.name, kind=self.kind, bits=self.bits, element=self.element.name,
                    block_size=self.block_size, scale=self.scale, scale_rule=self.scale_rule,
                    max=self.max, min_normal=self.min_normal, min_subnormal=self.min_subnormal,
                    n_codes=self.n_codes, bits_per_element=self.bits_per_element)

    # ---- the format interface -------------------------------------------------------------------
    @property
    def scalings(self) -> tuple:
        return ("block",)

    def role_scaling(self, role):
        return "block"

    @property
    def arithmetic(self) -> str:
        return self.element.arithmetic

    @property
    def mac_operand(self):
        return self.element

    @property
    def value_range(self):
        return self.element.value_range

    def scale_storage_bits(self, n_scales: int) -> int:
        """One 8-bit scale code per block, plus the fp32 tensor scale that E4M3-scaled (NVFP4) blocks
        store (1.0 when ``tensor_scale=False``)."""
        return self.scale_bits * n_scales + (32 if self.scale == "e4m3" else 0)

    def code_table(self):
        return self.element.code_table()

    def reference(self, x, saturate):
        """The element's reference cast (of already block-scaled values)."""
        return self.element.reference(x, saturate)

    def with_block_size(self, n: int) -> "BlockFormat":
        """This format with ``n`` elements per block, named ``<name>_b<n>``."""
        if not isinstance(n, int) or n < 1:
            _fail(f"block_size={n!r} is not allowed; allowed: a positive integer")
        return dataclasses.replace(self, block_size=n, name=f"{self.name}_b{n}")

    def recipe_entry(self):
        """A block-size override ``<name>_b<n>`` is the registered ``<name>`` plus ``block_size: n``."""
        from .registry import get_format
        m = re.match(r"^(.*)_b(\d+)$", self.name)
        if m:
            try:
                base = get_format(m.group(1))
            except ValueError:
                return self.name, {}
            if isinstance(base, BlockFormat) and base.element == self.element:
                return m.group(1), {"block_size": int(m.group(2))}
        return self.name, {}
