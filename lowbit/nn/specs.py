"""Per-layer quantization specs: which tensors of a layer are quantized, and how.

A :class:`SlotSpec` is a format plus the :class:`lowbit.QuantSpec` fields the user gave explicitly;
the fields left out are filled when the layer is known (:mod:`lowbit.nn.defaults`), because a good
default depends on the role (weight, activation, gradient) and on the layer (the channel axis of a
conv input is 1, of a linear input -1). A :class:`lowbit.QuantSpec` passed in is used verbatim: all of
its fields count as given. A :class:`LayerSpec` holds one entry per slot of a layer; ``None`` keeps
that tensor in full precision. Every type here is frozen, hashable and round-trips through plain
dicts (``to_dict`` / ``from_value``), so recipes serialise to YAML/JSON and hash stably.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lowbit.formats.registry import get_format
from lowbit.ops import QuantSpec

SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(QuantSpec) if f.name != "format")
LEARN_WEIGHT = ("lsq", "codebook")
LEARN_ACT = ("lsq", "codebook")


def _fail(msg: str):
    raise ValueError(msg)


def _canonical(fmt) -> tuple[object, dict]:
    """The format a recipe names (its name parses back to it) plus any field needed to rebuild ``fmt``
    (a block-size override)."""
    name = fmt.name
    try:
        named = get_format(name)
        if named == fmt:
            return named, {}
    except ValueError:
        pass
    base, fields = fmt.recipe_entry()
    if fields:
        return get_format(base), fields
    _fail(f"format {name!r} cannot be named in a recipe; allowed: a registered or parseable "
          f"format name (see lowbit.list_formats())")


@dataclass(frozen=True)
class SlotSpec:
    """One quantized tensor: ``format`` (a format object, parsed once here; it serialises to its
    canonical name) and the explicit QuantSpec ``fields``.

    ``fields`` is a sorted tuple of (name, value) pairs; the rest come from the role/layer defaults.
    """

    format: object
    fields: tuple = ()

    def __post_init__(self):
        fmt, extra = _canonical(get_format(self.format))
        fields = dict(self.fields)
        for k in fields:
            if k not in SPEC_FIELDS:
                _fail(f"unknown quantization field {k!r}; allowed: format, {', '.join(SPEC_FIELDS)}")
        fields.update(extra)
        object.__setattr__(self, "format", fmt)
        object.__setattr__(self, "fields", tuple(sorted(fields.items())))
        QuantSpec(fmt, **fields)  # validate the explicit fields now, with a clear message

    @property
    def format_obj(self):
        """The format object (kept for callers of the former name-holding SlotSpec)."""
        return self.format

    @property
    def format_name(self) -> str:
        return self.format.name

    def get(self, key, default=None):
        return dict(self.fields).get(key, default)

    def to_dict(self):
        """The format name alone when no field is explicit, else a dict."""
        name = self.format.name
        return name if not self.fields else {"format": name, **dict(self.fields)}

    def __str__(self):
        if not self.fields:
            return self.format.name
        return f"{self.format.name}(" + ", ".join(f"{k}={v}" for k, v in self.fields) + ")"


def slot(entry) -> SlotSpec | None:
    """Normalise a format name, format object, QuantSpec, dict of QuantSpec fields or SlotSpec."""
    if entry is None or isinstance(entry, SlotSpec):
        return entry
    if isinstance(entry, QuantSpec):
        d = entry.to_dict()
        d["format"] = entry.format
        return slot(d)
    if isinstance(entry, dict):
        if "format" not in entry:
            _fail(f"a quantization spec dict needs a 'format' key (got keys {sorted(entry)}); "
                  f"allowed keys: format, {', '.join(SPEC_FIELDS)}")
        d = dict(entry)
        fmt = get_format(d.pop("format"))
        if fmt.name == "fp32" and not d:
            return None
        return SlotSpec(fmt, tuple(d.items()))
    if isinstance(entry, str) or hasattr(entry, "kind"):
        fmt = get_format(entry)
        return None if fmt.name == "fp32" else SlotSpec(fmt)
    _fail(f"quantization spec {entry!r} is not allowed; allowed: a format name, a QuantSpec, "
          f"a dict of QuantSpec fields, or None")


def _slot_dict(s):
    return None if s is None else s.to_dict()


@dataclass(frozen=True)
class SoftmaxSpec:
    """Precision of each stage of softmax(x) = exp(x - max) / sum(exp(x - max)).

    ``input`` the logits, ``exp`` the exponentials (after max subtraction, so in (0, 1]), ``sum``
    their sum (in [1, n]), ``output`` the probabilities. ``None`` keeps a stage in fp32.
    """

    input: SlotSpec | None = None
    exp: SlotSpec | None = None
    sum: SlotSpec | None = None
    output: SlotSpec | None = None

    def __post_init__(self):
        for f in ("input", "exp", "sum", "output"):
            object.__setattr__(self, f, slot(getattr(self, f)))

    @classmethod
    def all(cls, s) -> "SoftmaxSpec":
        """The same spec for all four stages."""
        return cls(s, s, s, s)

    def parts(self) -> dict:
        return {f: getattr(self, f) for f in ("input", "exp", "sum", "output")}

    def to_dict(self):
        return {k: _slot_dict(v) for k, v in self.parts().items() if v is not None}

    def __str__(self):
        vals = {str(v) if v else "-" for v in self.parts().values()}
        if len(vals) == 1:
            return vals.pop()
        return "/".join(str(v) if v else "-" for v in self.parts().values())


@dataclass(frozen=True)
class MatmulSpec:
    """A matmul a @ b: ``lhs`` quantizes a, ``rhs`` b, ``out`` the result (None: fp32).

    A single spec given for an attention matmul fills ``lhs`` and ``rhs`` (the operands, as FP8
    attention kernels hold Q, K, V and P in FP8 and accumulate in fp32) and leaves ``out`` fp32.
    """

    lhs: SlotSpec | None = None
    rhs: SlotSpec | None = None
    out: SlotSpec | None = None

    def __post_init__(self):
        for f in ("lhs", "rhs", "out"):
            object.__setattr__(self, f, slot(getattr(self, f)))

    def parts(self) -> dict:
        return {"lhs": self.lhs, "rhs": self.rhs, "out": self.out}

    def to_dict(self):
        return {k: _slot_dict(v) for k, v in self.parts().items() if v is not None}

    def __str__(self):
        vals = {str(v) if v else "-" for v in self.parts().values()}
        if len(vals) == 1:
            return vals.pop()
        return "/".join(str(v) if v else "-" for v in self.parts().values())


def _composite(entry, cls, keys, single):
    if entry is None or isinstance(entry, cls):
        return entry
    if isinstance(entry, dict) and "format" not in entry:
        bad = [k for k in entry if k not in keys]
        if bad:
            _fail(f"unknown {cls.__name__} key {bad[0]!r}; allowed: {', '.join(keys)}")
        return cls(**entry)
    s = slot(entry)
    return None if s is None else single(s)


def softmax_spec(entry) -> SoftmaxSpec | None:
    """A SoftmaxSpec, a dict of its stages, or a single spec (used for all four stages)."""
    return _composite(entry, SoftmaxSpec, ("input", "exp", "sum", "output"), SoftmaxSpec.all)


def matmul_spec(entry) -> MatmulSpec | None:
    """A MatmulSpec, a dict of lhs/rhs/out, or a single spec (used for both operands)."""
    return _composite(entry, MatmulSpec, ("lhs", "rhs", "out"), lambda s: MatmulSpec(s, s, None))


SLOTS = ("weight", "input", "output", "softmax", "attn_qk", "attn_av", "grad")


@dataclass(frozen=True)
class LayerSpec:
    """What to quantize in one layer. Every entry ``None`` (the default) keeps it in fp32.

    Entries take a format name, a dict of QuantSpec fields (missing fields: the role defaults of
    :mod:`lowbit.nn.defaults`, filled per layer), a QuantSpec (verbatim) or a SlotSpec.

    ``weight``   the layer's weight (Linear, Conv1d/2d, Embedding); bias stays fp32.
    ``input``    the layer's input (weight layers, activation and other leaf modules).
    ``output``   the layer's output; for modules with functional activations (F.gelu, torch.tanh...)
                 in their own forward, the outputs of those calls.
    ``softmax``  a :class:`SoftmaxSpec` for softmax modules and functional softmax / SDPA calls.
    ``attn_qk``  the Q @ K^T matmul of an attention module (a :class:`MatmulSpec`).
    ``attn_av``  the P @ V matmul (P = softmax output).
    ``grad``     the gradient flowing backward into the layer's output (low-precision training).
    ``learn_weight``  ``None`` (fixed, dynamic scales), ``"lsq"`` (learnable scale) or ``"codebook"``
                      (learnable codebook values initialised from the weight format's value set).
    ``learn_act``     ``None``, ``"lsq"`` (learnable scales for input/output quantizers) or ``"codebook"``
                      (learnable codebook values for them, initialised from the slot format's values).
    """

    weight: SlotSpec | None = None
    input: SlotSpec | None = None
    output: SlotSpec | None = None
    softmax: SoftmaxSpec | None = None
    attn_qk: MatmulSpec | None = None
    attn_av: MatmulSpec | None = None
    grad: SlotSpec | None = None
    learn_weight: str | None = None
    learn_act: str | None = None

    def __post_init__(self):
        for f in ("weight", "input", "output", "grad"):
            object.__setattr__(self, f, slot(getattr(self, f)))
        object.__setattr__(self, "softmax", softmax_spec(self.softmax))
        object.__setattr__(self, "attn_qk", matmul_spec(self.attn_qk))
        object.__setattr__(self, "attn_av", matmul_spec(self.attn_av))
        if self.learn_weight not in (None, *LEARN_WEIGHT):
            _fail(f"learn_weight={self.learn_weight!r} is not allowed; allowed: None, {', '.join(LEARN_WEIGHT)}")
        if self.learn_act not in (None, *LEARN_ACT):
            _fail(f"learn_act={self.learn_act!r} is not allowed; allowed: None, {', '.join(LEARN_ACT)}")

    @classmethod
    def from_dict(cls, d: dict) -> "LayerSpec":
        allowed = SLOTS + ("learn_weight", "learn_act")
        for k in d:
            if k not in allowed:
                _fail(f"unknown LayerSpec key {k!r}; allowed: {', '.join(allowed)}")
        return cls(**d)

    def slots(self) -> dict:
        return {f: getattr(self, f) for f in SLOTS}

    @property
    def is_float(self) -> bool:
        return all(v is None for v in self.slots().values())

    def replace(self, **kw) -> "LayerSpec":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        d = {k: (v.to_dict()) for k, v in self.slots().items() if v is not None}
        for k in ("learn_weight", "learn_act"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d

    def __str__(self):
        parts = [f"{k}={v}" for k, v in self.slots().items() if v is not None]
        parts += [f"{k}={getattr(self, k)}" for k in ("learn_weight", "learn_act") if getattr(self, k)]
        return ", ".join(parts) if parts else "float"
