"""Number formats: specs, the registry, value tables, encode/decode and packing.

A format family is one file here: a frozen dataclass implementing :class:`Format` (see
:mod:`lowbit.formats.base`), decorated with :func:`register_family` so its spellings parse, plus any
named instances passed to :func:`register_format`. Nothing else in lowbit branches on the family.
"""
from .base import ElementFormat, Format, families, register_family
from .registry import FORMATS, SHORTHANDS, canonical_name, codebook, get_format, list_formats, register_format
from .spec import BlockFormat, CodebookFormat, E8M0Format, FloatFormat, IntFormat

__all__ = ["BlockFormat", "CodebookFormat", "E8M0Format", "ElementFormat", "FORMATS", "FloatFormat", "Format",
           "IntFormat", "SHORTHANDS", "canonical_name", "codebook", "families", "get_format", "list_formats",
           "register_family", "register_format"]
