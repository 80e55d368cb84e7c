"""Number-format specifications: frozen dataclasses, each format family described once, in its file.

Every property a format has (range, code count, bits per element) is derived from the few fields that
define it, so two descriptions of the same format can never drift apart. The families and the
interface they implement (:class:`lowbit.formats.base.Format`):

* :class:`FloatFormat` (:mod:`.minifloat`): minifloats ExMy, IEEE fp16/bf16/fp32, OCP FP8/FP6/FP4;
* :class:`IntFormat` (:mod:`.integer`): signed/unsigned integers and fixed point;
* :class:`CodebookFormat` (:mod:`.codebook`): explicit value sets (NF4);
* :class:`E8M0Format` (:mod:`.e8m0`): the OCP MX scale format;
* :class:`BlockFormat` (:mod:`.block`): block-scaled MX and NVFP4.
"""
from __future__ import annotations

from .base import FP32_MAX, FP32_MIN_SUBNORMAL, ElementFormat, Format, families, register_family
from .block import SCALE_RULES, BlockFormat
from .codebook import CodebookFormat
from .e8m0 import E8M0Format
from .integer import IntFormat
from .minifloat import SPECIALS, FloatFormat

__all__ = ["FP32_MAX", "FP32_MIN_SUBNORMAL", "SCALE_RULES", "SPECIALS", "BlockFormat", "CodebookFormat",
           "E8M0Format", "ElementFormat", "FloatFormat", "Format", "IntFormat", "families", "register_family"]
