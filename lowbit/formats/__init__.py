"""Number formats: specs, the registry, value tables, encode/decode and packing."""
from .registry import SHORTHANDS, canonical_name, codebook, get_format, list_formats, register_format
from .spec import BlockFormat, CodebookFormat, E8M0Format, FloatFormat, IntFormat

__all__ = ["BlockFormat", "CodebookFormat", "E8M0Format", "FloatFormat", "IntFormat", "SHORTHANDS",
           "canonical_name", "codebook", "get_format", "list_formats", "register_format"]
