"""The mixed-precision design space: per weight layer, one :class:`Choice` out of a candidate list.

A :class:`Choice` is a weight format plus an optional activation format for the layer's input
("int4" or "int4/int8"; the act part defaults to the space-wide ``act``, None = fp32 inputs). An
*assignment* is a tuple of choice indices, one per free layer (the order of ``space.free``);
:meth:`SearchSpace.recipe` turns it into a :class:`lowbit.nn.Recipe` with one exact-name rule per
layer, so ``quantize_model(model, recipe)`` and ``recipe.yaml`` reproduce it. Layers not listed
stay fp32. Choices are ordered from cheapest to most expensive (weight bits per element, then
activation bits), so index 0 is the most aggressive and index -1 the safest.

Pruning (as the RISC-V tool): when K^L exceeds ``max_points``, layers below ``prune_pct`` % of the
model's MACs are fixed at the most expensive choice; if the space is still too large, the free
layers with the fewest MACs are fixed one by one until it fits.
"""
from __future__ import annotations

import glob
import itertools
import math
from dataclasses import dataclass, field, replace

from lowbit.formats.registry import get_format
from lowbit.nn import LayerSpec, Recipe, Rule


@dataclass(frozen=True)
class Choice:
    """Weight format ``weight`` and input-activation format ``act`` (None: fp32) of one layer.

    ``weight`` / ``act`` are canonical names (labels, tables, recipes); the formats are parsed once
    here and kept as ``weight_format`` / ``act_format``.
    """

    weight: str
    act: str | None = None
    weight_format: object = field(init=False, compare=False, repr=False, default=None)
    act_format: object = field(init=False, compare=False, repr=False, default=None)

    def __post_init__(self):
        w = get_format(self.weight)
        object.__setattr__(self, "weight", w.name)
        object.__setattr__(self, "weight_format", w)
        if self.act is not None:
            a = get_format(self.act)
            object.__setattr__(self, "act", None if a.name == "fp32" else a.name)
            object.__setattr__(self, "act_format", None if a.name == "fp32" else a)

    @classmethod
    def parse(cls, text: str, act: str | None = None) -> "Choice":
        """``"int4"`` (act from ``act``) or ``"int4/int8"`` (weight / activation)."""
        w, _, a = str(text).strip().partition("/")
        try:
            return cls(w, a or act)
        except ValueError as exc:
            raise ValueError(f"candidate format {text!r}: {exc}") from None

    @property
    def label(self) -> str:
        return self.weight if self.act is None else f"{self.weight}/{self.act}"

    @property
    def weight_bits(self) -> float:
        return float(self.weight_format.bits_per_element)

    @property
    def act_bits(self) -> float:
        return 32.0 if self.act_format is None else float(self.act_format.bits_per_element)

    def layer_spec(self) -> LayerSpec:
        return LayerSpec(weight=self.weight_format, input=self.act_format)

    def __str__(self):
        return self.label


def parse_choices(formats, act: str | None = None) -> tuple[Choice, ...]:
    """Comma-separated text or a list -> distinct Choices sorted cheapest first."""
    items = [s for s in (formats.split(",") if isinstance(formats, str) else formats) if str(s).strip()]
    if not items:
        raise ValueError("formats='' is not allowed; allowed: a comma-separated list such as int2,int4,int8")
    out = []
    for it in items:
        c = it if isinstance(it, Choice) else Choice.parse(it, act)
        if c not in out:
            out.append(c)
    return tuple(sorted(out, key=lambda c: (c.weight_bits, c.act_bits)))


@dataclass(frozen=True)
class SearchSpace:
    """``layers`` (lowbit.cost LayerInfo, module order), ``choices`` (cheapest first), ``fixed``
    ({layer name: Choice} for pruned layers), ``profile`` (the whole profile_layers list, which
    also carries the parameters outside weight layers, for the cost model), ``instructions`` (an
    optional lowbit.cost.InstructionTable of measured counts for the ``instructions`` metric)."""

    layers: tuple
    choices: tuple
    fixed: dict = field(default_factory=dict)
    profile: list | None = field(default=None, compare=False, repr=False)  # lowbit.cost.profile_layers output
    instructions: object = field(default=None, compare=False, repr=False)  # lowbit.cost.InstructionTable

    @property
    def names(self) -> tuple:
        return tuple(li.name for li in self.layers)

    @property
    def free(self) -> tuple:
        return tuple(n for n in self.names if n not in self.fixed)

    @property
    def free_layers(self) -> tuple:
        return tuple(li for li in self.layers if li.name not in self.fixed)

    @property
    def labels(self) -> tuple:
        return tuple(c.label for c in self.choices)

    @property
    def size(self) -> int:
        return len(self.choices) ** len(self.free)

    def assignment(self, idx) -> dict:
        """{layer name: Choice} for every layer (free ones from ``idx``, pruned ones fixed)."""
        idx = tuple(int(i) for i in idx)
        if len(idx) != len(self.free):
            raise ValueError(f"assignment has {len(idx)} entries; the space has {len(self.free)} free layers")
        free = dict(zip(self.free, (self.choices[i] for i in idx)))
        return {n: self.fixed.get(n) or free[n] for n in self.names}

    def index(self, assignment: dict) -> tuple:
        """Inverse of :meth:`assignment` (labels or Choices per free layer)."""
        lookup = {c.label: i for i, c in enumerate(self.choices)}
        return tuple(lookup[getattr(assignment[n], "label", assignment[n])] for n in self.free)

    def uniform(self, k: int) -> tuple:
        return (k % len(self.choices),) * len(self.free)

    def enumerate(self):
        """Every assignment, as index tuples (itertools.product order)."""
        return itertools.product(range(len(self.choices)), repeat=len(self.free))

    def recipe(self, idx, name: str = "") -> Recipe:
        """One rule per layer, matching its exact name (glob-escaped): weight + input format."""
        rules = tuple(Rule(pattern=glob.escape(n), spec=c.layer_spec())
                      for n, c in self.assignment(idx).items())
        return Recipe(rules, name=name)

    def describe(self, idx) -> str:
        return " ".join(f"{n}={c.label}" for n, c in self.assignment(idx).items())

    def pruned(self, max_points: int, prune_pct: float = 1.0) -> tuple["SearchSpace", str]:
        """(space, note): this space, or one with small layers fixed (module docstring)."""
        if self.size <= max_points:
            return self, ""
        top = self.choices[-1]
        total = sum(li.macs for li in self.layers) or 1
        fixed = dict(self.fixed)
        small = [li for li in self.free_layers if li.macs < prune_pct / 100 * total]
        fixed.update({li.name: top for li in small})
        rest = sorted((li for li in self.layers if li.name not in fixed), key=lambda li: li.macs)
        k = len(self.choices)
        while rest and k ** len(rest) > max_points:
            fixed[rest.pop(0).name] = top
        space = replace(self, fixed=fixed)
        note = (f"space of {self.size} assignments > max_points={max_points}: fixed "
                f"{len(fixed) - len(self.fixed)} small layer(s) at {top.label} "
                f"({', '.join(n for n in fixed if n not in self.fixed)}); {space.size} remain")
        return space, note


def build_space(layers, formats, act: str | None = None) -> SearchSpace:
    """A space over every weight layer in ``layers`` (from lowbit.cost.profile_layers)."""
    choices = parse_choices(formats, act)
    profile = layers
    layers = tuple(li for li in layers if li.weight_shape is not None)
    if not layers:
        raise ValueError("the model has no weight layers (Linear, Conv1d, Conv2d, Embedding) to search over")
    return SearchSpace(layers, choices, profile=profile)


def space_size_text(space: SearchSpace) -> str:
    k, n = len(space.choices), len(space.free)
    return f"{k}^{n} = {space.size}" if space.size < 10 ** 7 else f"{k}^{n} ~ 10^{math.log10(space.size):.1f}"
