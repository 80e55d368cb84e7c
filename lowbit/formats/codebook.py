"""Codebooks: an explicit sorted value set (NF4, or ``codebook:v1,v2,...``); codes are indices."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .base import ElementFormat, _fail, register_family
from .cast import codebook_cast
from .codec import code_dtype, noise_for
from .reference import nearest
from .tables import values as table_values


@register_family
@dataclass(frozen=True)
class CodebookFormat(ElementFormat):
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
    label = "codebook"
    grammar = "codebook:v1,v2,..."

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

    # ---- the format interface -------------------------------------------------------------------
    @classmethod
    def parse(cls, key, original, registered):
        if not key.startswith("codebook:"):
            return None
        try:
            vals = [float(v) for v in key[len("codebook:"):].split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"format {original!r}: codebook values must be numbers, "
                             f"e.g. codebook:-1,0,1,4") from None
        return cls(tuple(vals))

    @property
    def mac_operand(self):
        from .registry import get_format
        return get_format("fp16")

    @property
    def value_range(self):
        return self.points[0], self.points[-1]

    def cast(self, y, rounding, saturate, noise, values=None):
        if values is None:
            values = self.cast_values(y.device)
        return codebook_cast(y, values, rounding, noise)[0]

    def cast_values(self, device=None):
        return torch.tensor(self.points, dtype=torch.float32, device=device)

    def cast_bounds(self, values=None):
        vals = values if values is not None else self.points
        return vals[0], vals[-1]

    def codes(self, xf, rounding, saturate):
        if bool(torch.isnan(xf).any()):
            raise ValueError(f"codebook {self.name!r} has no NaN code; the input holds NaN")
        vals = self.cast_values(xf.device)
        return codebook_cast(xf, vals, rounding, noise_for(xf, rounding))[1].to(code_dtype(self))

    def code_table(self):
        return np.asarray(self.points, dtype=np.float64)

    def reference(self, x, saturate):
        vals = table_values(self)
        q = nearest(x, vals, ties_by_index=True)
        return np.where(np.isnan(x), np.nan, np.where(x >= vals[-1], vals[-1], q))
