"""The resolved per-layer assignment that :func:`quantize_model` returns.

One :class:`LayerRow` per layer (every weight layer, quantized or not, and every other layer that
got a spec): name, type, kind, weight shape, parameter count and the resolved QuantSpec of each
slot. ``to_rows()`` gives flat dicts (format names) for results, cost, report and export;
``table()`` an aligned text table; ``undo()`` puts the original modules back and removes every hook
and quantizer, exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .hooks import detach
from .learnable import LearnableCodebook, LSQQuantizer
from .quantizers import describe
from .specs import SLOTS
from .walker import LayerInfo

COLUMNS = ("name", "type", "weight_shape", "params") + SLOTS


def _name(spec) -> str | None:
    """Format name of a resolved slot; composite slots give 'a/b/c' unless all parts agree."""
    if spec is None:
        return None
    if isinstance(spec, dict):
        names = [v.format.name if v is not None else "-" for v in spec.values()]
        if all(n == "-" for n in names):
            return None
        return names[0] if len(set(names)) == 1 else "/".join(names)
    return spec.format.name


@dataclass
class LayerRow:
    """A layer's record (:class:`lowbit.nn.walker.LayerInfo`, as walked before surgery) plus what the
    recipe resolved for it: the QuantSpec of each slot and the learnable quantizers."""

    layer: LayerInfo
    specs: dict = field(default_factory=dict)   # slot -> QuantSpec | {part: QuantSpec | None} | None
    learn: dict = field(default_factory=dict)   # slot -> 'lsq' | 'codebook'

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def type(self) -> str:
        """The class name of the module the recipe was applied to (before surgery)."""
        return type(self.layer.module).__name__

    @property
    def kind(self) -> str:
        return self.layer.kind

    @property
    def weight_shape(self) -> tuple | None:
        return self.layer.weight_shape if self.kind == "weight" else None

    @property
    def params(self) -> int:
        return self.layer.params

    def format(self, slot: str) -> str | None:
        return _name(self.specs.get(slot))

    @property
    def is_quantized(self) -> bool:
        return any(self.format(s) for s in SLOTS)

    def to_dict(self) -> dict:
        d = {"name": self.name, "type": self.type, "kind": self.kind,
             "weight_shape": list(self.weight_shape) if self.weight_shape else None, "params": self.params}
        for s in SLOTS:
            d[s] = self.format(s)
        w = self.specs.get("weight")
        d["weight_scaling"] = w.scaling if w is not None else None
        d["weight_spec"] = describe(w) if w is not None else None
        d["learn_weight"] = self.learn.get("weight")
        d["learn_act"] = self.learn.get("act")
        return d


class Assignment:
    """Rows plus what :meth:`undo` needs. ``model`` is the quantized model (the copy if not inplace)."""

    def __init__(self, model: nn.Module, rows: list[LayerRow], recipe=None):
        self.model, self.rows, self.recipe = model, rows, recipe
        self._replaced: list = []   # (refs [(parent, child name)], original, quantized)
        self._hooked: list = []     # (module, handles)
        self._counters: dict = {}   # layer name -> {slot: times its quantizer ran}
        self.active = True
        self.converted = None       # the ConvertReport once lowbit.nn.convert ran

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, name: str) -> LayerRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no layer {name!r} in the assignment; layers: {', '.join(r.name for r in self.rows)}")

    def to_rows(self) -> list[dict]:
        return [r.to_dict() for r in self.rows]

    def formats(self, slot: str) -> set:
        """The format names used in ``slot`` anywhere in the model."""
        return {r.format(slot) for r in self.rows if r.format(slot)}

    def live(self) -> dict:
        """{layer name: {slot: count}}: how often each assigned slot's quantizer ran since
        :func:`quantize_model` (or :meth:`reset_live`), measured in forward passes (a ``grad`` slot
        counts when its gradient quantizer is attached to the graph; it runs in the backward)."""
        out = {}
        for r in self.rows:
            hits = self._counters.get(r.name, {})
            out[r.name] = {s: hits.get(s, 0) for s in SLOTS if r.format(s)}
        return out

    def dead_slots(self) -> list[tuple[str, str]]:
        """(layer, slot) pairs assigned a format whose quantizer has not run in any forward so far."""
        return [(name, s) for name, slots in self.live().items() for s, n in slots.items() if n == 0]

    def reset_live(self):
        for hits in self._counters.values():
            hits.clear()

    def _measured(self) -> bool:
        return any(self._counters.get(r.name) for r in self.rows)

    def quantizer_parameters(self):
        """Parameters owned by the quantizers (LSQ scales, codebook values), for an optimizer group."""
        for mod in self.model.modules():
            if isinstance(mod, (LSQQuantizer, LearnableCodebook)):
                yield from mod.parameters()

    def table(self) -> str:
        """One line per layer; after a forward pass, a ``dead`` column lists the slots of the layer
        whose quantizer never ran ('-': every assigned slot is live)."""
        cells = [[r.name or "(root)", r.type, "x".join(map(str, r.weight_shape)) if r.weight_shape else "-",
                  str(r.params)] + [r.format(s) or "-" for s in SLOTS] for r in self.rows]
        head = list(COLUMNS)
        if self._measured():
            live = self.live()
            head.append("dead")
            for c, r in zip(cells, self.rows):
                c.append(",".join(s for s, n in live[r.name].items() if n == 0) or "-")
        widths = [max(len(head[i]), *(len(c[i]) for c in cells)) if cells else len(head[i])
                  for i in range(len(head))]
        fmt = lambda row: "  ".join(v.ljust(w) if i != 3 else v.rjust(w)  # noqa: E731
                                    for i, (v, w) in enumerate(zip(row, widths))).rstrip()
        lines = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(c) for c in cells]
        n_q = sum(r.is_quantized for r in self.rows)
        live = "slots not yet measured (run a forward pass)" if not self._measured() else \
            f"{len(self.dead_slots())} assigned slot(s) never ran"
        lines.append(f"{len(self.rows)} layers, {n_q} quantized, "
                     f"{sum(r.params for r in self.rows)} parameters in listed layers; {live}")
        return "\n".join(lines)

    def __str__(self):
        return self.table()

    def undo(self) -> nn.Module:
        """Restore the original modules and remove all hooks and quantizers; returns the model."""
        if self.converted is not None:
            raise ValueError("model was converted by lowbit.nn.convert: its fp32 weights are released, so it "
                             "cannot be dequantized; quantize a fresh copy of the float model instead")
        if not self.active:
            return self.model
        for module, handles in reversed(self._hooked):
            detach(module, handles)
        for refs, original, quantized in reversed(self._replaced):
            quantized.sync_to(original)
            for parent, child in refs:
                parent._modules[child] = original
        self._hooked, self._replaced, self.active = [], [], False
        self.model.__dict__.pop("_lowbit_assignment", None)
        return self.model
