"""Recipes: an ordered list of rules mapping layer names / layer types to :class:`LayerSpec`.

A :class:`Rule` matches a layer when its ``pattern`` (``fnmatch`` glob on the qualified module name,
e.g. ``"features.*"``, ``"*attn*"``; ``*`` also crosses dots) matches and one of its ``types``
matches one of the layer's type tags. Tags: the module's class name (``Linear``, ``Conv2d``,
``ReLU``...) and its kind (see :data:`TYPE_TAGS`). A rule with neither pattern nor types matches
everything. The first matching rule wins; no match or ``spec=None`` keeps the layer in fp32.

``spec`` is a :class:`LayerSpec`, or a single spec (a format name, QuantSpec or dict of its fields)
that is expanded per layer kind (:func:`expand_single`): weight layers quantize weight and input,
activations their output, softmax modules every softmax stage, attention modules both matmuls'
operands, their softmax and functional activations. ``keep_first_last=True`` keeps the first and last
weight layer (in module order) entirely in fp32, as the MobileNet compression tool does.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
from dataclasses import dataclass

from .specs import LayerSpec, MatmulSpec, SlotSpec, SoftmaxSpec, slot

KINDS = ("weight", "activation", "softmax", "attention", "functional", "other")
TYPE_TAGS = KINDS + ("conv", "depthwise")


def _fail(msg: str):
    raise ValueError(msg)


def _check_type(t):
    if not isinstance(t, str) or not t:
        _fail(f"layer type {t!r} is not allowed; allowed: {', '.join(TYPE_TAGS)}, or a module class name")
    if t not in TYPE_TAGS and not t[0].isupper():
        _fail(f"unknown layer type {t!r}; allowed: {', '.join(TYPE_TAGS)}, or a module class name "
              f"such as Linear, Conv2d, ReLU, Softmax")


def expand_single(s: SlotSpec, kind: str) -> LayerSpec:
    """The LayerSpec a single spec means for a layer of ``kind`` (module docstring)."""
    if kind == "weight":
        return LayerSpec(weight=s, input=s)
    if kind == "activation":
        return LayerSpec(output=s)
    if kind == "softmax":
        return LayerSpec(softmax=SoftmaxSpec.all(s))
    if kind == "attention":
        m = MatmulSpec(s, s, None)
        return LayerSpec(softmax=SoftmaxSpec.all(s), attn_qk=m, attn_av=m, output=s)
    if kind == "functional":
        return LayerSpec(softmax=SoftmaxSpec.all(s), output=s)
    return LayerSpec()


def _spec_value(v):
    if v is None or isinstance(v, (LayerSpec, SlotSpec)):
        return v
    if isinstance(v, dict) and "format" not in v:
        return LayerSpec.from_dict(v)
    return slot(v)


@dataclass(frozen=True)
class Rule:
    """``pattern`` (glob on the module name), ``types`` (tags), ``spec`` (LayerSpec, single spec or None)."""

    pattern: str | None = None
    types: tuple | None = None
    spec: LayerSpec | SlotSpec | None = None

    def __post_init__(self):
        if self.pattern is not None and not isinstance(self.pattern, str):
            _fail(f"rule pattern {self.pattern!r} is not allowed; allowed: a glob string such as 'features.*'")
        types = self.types
        if isinstance(types, str):
            types = (types,)
        if types is not None:
            types = tuple(types)
            for t in types:
                _check_type(t)
        object.__setattr__(self, "types", types)
        object.__setattr__(self, "spec", _spec_value(self.spec))

    def matches(self, name: str, tags) -> bool:
        if self.pattern is not None and not fnmatch.fnmatchcase(name, self.pattern):
            return False
        return self.types is None or any(t in tags for t in self.types)

    def spec_for(self, kind: str) -> LayerSpec | None:
        if isinstance(self.spec, SlotSpec):
            return expand_single(self.spec, kind)
        return self.spec

    @classmethod
    def from_dict(cls, d: dict) -> "Rule":
        if not isinstance(d, dict):
            _fail(f"a rule must be a mapping with keys pattern, types, spec (got {d!r})")
        for k in d:
            if k not in ("pattern", "types", "spec"):
                _fail(f"unknown rule key {k!r}; allowed: pattern, types, spec")
        return cls(**d)

    def to_dict(self) -> dict:
        d = {}
        if self.pattern is not None:
            d["pattern"] = self.pattern
        if self.types is not None:
            d["types"] = list(self.types)
        d["spec"] = None if self.spec is None else self.spec.to_dict()
        return d

    def __str__(self):
        where = []
        if self.pattern is not None:
            where.append(f"pattern={self.pattern}")
        if self.types is not None:
            where.append("types=" + ",".join(self.types))
        spec = "float" if self.spec is None else str(self.spec)
        if isinstance(self.spec, SlotSpec):
            spec = f"all={spec}"
        return f"{' '.join(where) or '*'} -> {spec}"


@dataclass(frozen=True)
class Recipe:
    """Ordered rules (first match wins) plus ``keep_first_last``; ``name`` is a free label."""

    rules: tuple = ()
    keep_first_last: bool = False
    name: str = ""

    def __post_init__(self):
        rules = tuple(r if isinstance(r, Rule) else Rule.from_dict(r) for r in self.rules)
        object.__setattr__(self, "rules", rules)
        if not isinstance(self.keep_first_last, bool):
            _fail(f"keep_first_last={self.keep_first_last!r} is not allowed; allowed: true, false")
        if not isinstance(self.name, str):
            _fail(f"recipe name {self.name!r} is not allowed; allowed: a string")

    def lookup(self, name: str, tags, kind: str) -> LayerSpec | None:
        """The LayerSpec of the first rule matching ``name``/``tags`` (None: fp32)."""
        i = self.match(name, tags)
        return None if i is None else self.rules[i].spec_for(kind)

    def match(self, name: str, tags) -> int | None:
        """Index of the first rule matching ``name``/``tags`` (None: no rule matches)."""
        for i, r in enumerate(self.rules):
            if r.matches(name, tags):
                return i
        return None

    # ---- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"rules": [r.to_dict() for r in self.rules], "keep_first_last": self.keep_first_last}
        if self.name:
            d["name"] = self.name
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        if not isinstance(d, dict):
            _fail(f"a recipe must be a mapping with keys rules, keep_first_last, name (got {type(d).__name__})")
        for k in d:
            if k not in ("rules", "keep_first_last", "name"):
                _fail(f"unknown recipe key {k!r}; allowed: rules, keep_first_last, name")
        rules = d.get("rules") or ()
        if not isinstance(rules, (list, tuple)):
            _fail(f"recipe rules must be a list (got {type(rules).__name__})")
        return cls(tuple(Rule.from_dict(r) for r in rules), d.get("keep_first_last", False), d.get("name", ""))

    def to_json(self, indent=None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=indent is not None)

    @classmethod
    def from_json(cls, path_or_str) -> "Recipe":
        return cls.from_dict(json.loads(_read(path_or_str)))

    def to_yaml(self) -> str:
        import yaml
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, path_or_str) -> "Recipe":
        import yaml
        return cls.from_dict(yaml.safe_load(_read(path_or_str)))

    def hash(self) -> str:
        """sha256 (first 16 hex digits) of the canonical JSON; ``name`` is not part of it."""
        d = self.to_dict()
        d.pop("name", None)
        canon = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    def replace(self, **kw) -> "Recipe":
        return dataclasses.replace(self, **kw)

    def __str__(self):
        head = f"Recipe{' ' + repr(self.name) if self.name else ''} (keep_first_last={self.keep_first_last}, " \
               f"{len(self.rules)} rule{'s' if len(self.rules) != 1 else ''}, hash {self.hash()})"
        return "\n".join([head] + [f"  {i + 1}. {r}" for i, r in enumerate(self.rules)])


def _read(path_or_str) -> str:
    """File contents when given a path (str or PathLike) of an existing file, else the string itself."""
    if isinstance(path_or_str, os.PathLike):
        with open(path_or_str) as f:
            return f.read()
    s = str(path_or_str)
    if "\n" not in s and len(s) < 4096 and os.path.isfile(s):
        with open(s) as f:
            return f.read()
    return s
