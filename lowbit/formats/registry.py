"""Format registry: canonical names, shorthands and the grammar for generic names.

Grammar accepted by :func:`get_format` (case-insensitive):

* registered canonical names (``list_formats()``): ``fp8_e4m3``, ``fp8_e5m2``, ``fp6_e3m2``,
  ``fp6_e2m3``, ``fp4_e2m1``, ``fp16``, ``bf16``, ``fp32``, ``e8m0``, ``mxfp8_e4m3``, ``mxfp8_e5m2``,
  ``mxfp6_e3m2``, ``mxfp6_e2m3``, ``mxfp4``, ``mxint8``, ``nvfp4``, ``nf4``, ``int2..int16``,
  ``uint1..uint16``, ``fp2_4level``;
* shorthands, always resolved to a canonical format (whose name is what results record):
  ``fp8 -> fp8_e4m3``, ``fp6 -> fp6_e3m2``, ``fp4 -> fp4_e2m1``, ``fp3 -> e2m0``, ``fp2 -> e1m0``;
  ``fp2`` is the sign-magnitude minifloat e1m0: 4 codes but only 3 distinct values {-2, 0, 2} (+0 and
  -0). ``fp2_4level`` is the 4-level 2-bit format of the precision-comparison study (its FP2's initial
  values): the codebook {-1, 0, 1, 4}, codes 0..3 = the values in ascending order;
* ``eXmY`` with 1 <= X <= 8 and 0 <= Y <= 10, optionally followed by a special-value policy
  (``ieee``, ``fn``, ``fnuz``, ``finite``), ``_b<bias>`` and ``_ftz`` (no subnormals). Defaults: bias
  2^(X-1)-1, subnormals on, policy ``finite`` (every code a number, saturating) for X <= 7 and ``ieee``
  for X = 8 (the only policy whose range fits fp32). A generic spelling equal to a named format
  resolves to that format: ``e2m1`` is ``fp4_e2m1``, ``e4m3fn`` is ``fp8_e4m3``;
* ``intN`` / ``uintN`` with an optional ``_narrow`` (symmetric range);
* ``codebook:v1,v2,...`` (an explicit value set).

The generic spellings are parsed by the format families themselves (each family's ``parse``, joined
with ``@register_family``, see :mod:`lowbit.formats.base`), so a new family adds its own grammar.
"""
from __future__ import annotations

from lowbit.registry import Registry

from .spec import BlockFormat, CodebookFormat, E8M0Format, FloatFormat, Format, IntFormat, families

FORMATS = Registry("format", ordered=True, allowed=lambda: allowed_names())
SHORTHANDS = {"fp8": "fp8_e4m3", "fp6": "fp6_e3m2", "fp4": "fp4_e2m1", "fp3": "e2m0", "fp2": "e1m0"}

# NF4 (Dettmers et al., QLoRA 2023, appendix E): the 16 quantiles of N(0, 1) normalised to [-1, 1].
NF4_VALUES = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
              -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
              0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
              0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0)

# The precision-comparison seed's FP2: 4 distinct levels in 2 bits (e1m0 = fp2 has 3: {-2, 0, 2}).
FP2_4LEVEL_VALUES = (-1.0, 0.0, 1.0, 4.0)


def register_format(fmt, name: str | None = None):
    """Register ``fmt`` under ``name`` (default ``fmt.name``); returns the format."""
    return FORMATS.add((name or fmt.name).lower(), fmt)


def _named(fmt, name):
    return type(fmt)(**{**fmt.__dict__, "name": name})


def _register_builtins():
    fp8_e4m3 = register_format(_named(FloatFormat(4, 3, specials="fn"), "fp8_e4m3"))
    fp8_e5m2 = register_format(_named(FloatFormat(5, 2, specials="ieee"), "fp8_e5m2"))
    fp6_e3m2 = register_format(_named(FloatFormat(3, 2), "fp6_e3m2"))
    fp6_e2m3 = register_format(_named(FloatFormat(2, 3), "fp6_e2m3"))
    fp4_e2m1 = register_format(_named(FloatFormat(2, 1), "fp4_e2m1"))
    register_format(_named(FloatFormat(5, 10, specials="ieee"), "fp16"))
    register_format(_named(FloatFormat(8, 7, specials="ieee"), "bf16"))
    register_format(_named(FloatFormat(8, 23, specials="ieee"), "fp32"))
    register_format(E8M0Format())
    for b in range(2, 17):
        register_format(IntFormat(b))
    for b in range(1, 17):
        register_format(IntFormat(b, signed=False))
    mx_int8 = IntFormat(8, narrow=True, frac_bits=6, name="int8_mx")
    for el, nm in [(fp8_e4m3, "mxfp8_e4m3"), (fp8_e5m2, "mxfp8_e5m2"), (fp6_e3m2, "mxfp6_e3m2"),
                   (fp6_e2m3, "mxfp6_e2m3"), (fp4_e2m1, "mxfp4"), (mx_int8, "mxint8")]:
        register_format(BlockFormat(el, 32, "e8m0", name=nm))
    register_format(BlockFormat(fp4_e2m1, 16, "e4m3", tensor_scale=True, name="nvfp4"))
    register_format(CodebookFormat(NF4_VALUES, name="nf4", scaling="tensor"))
    register_format(CodebookFormat(FP2_4LEVEL_VALUES, name="fp2_4level"))


_register_builtins()


def get_format(name):
    """Resolve a format name (or pass a format object through). Raises ValueError for unknown names."""
    if not isinstance(name, str):
        if isinstance(name, Format):
            return name
        raise ValueError(f"format {name!r} is not a format name; allowed: {', '.join(list_formats())}")
    original = name
    key = name.strip().lower()
    key = SHORTHANDS.get(key, key)
    if key in FORMATS:
        return FORMATS.get(key)
    registered = [f for _, f in FORMATS.items()]
    for family in families():
        fmt = family.parse(key, original, registered)
        if fmt is not None:
            return fmt
    raise ValueError(f"unknown format {original!r}; allowed: {allowed_names()}")


def allowed_names() -> str:
    """One line naming every accepted spelling, for error messages."""
    named = [k for k, f in FORMATS.items() if not f.names_by_grammar]
    grammars = [f.grammar for f in families() if f.grammar]
    return ", ".join(named + grammars + ["shorthands " + ", ".join(SHORTHANDS)])


def list_formats(kind: str | None = None) -> list[str]:
    """Canonical names of the registered formats, optionally only those of one ``kind``."""
    return [k for k, f in FORMATS.items() if kind is None or f.kind == kind]


def codebook(values, name: str = "", scaling: str = "none") -> CodebookFormat:
    """A codebook format from an explicit list of values (sorted for you)."""
    return CodebookFormat(tuple(values), name=name, scaling=scaling)


def canonical_name(name) -> str:
    return get_format(name).name
