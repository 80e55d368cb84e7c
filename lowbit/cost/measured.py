"""Measured instruction counts: a per-layer, per-weight-width table from real runs of the exported C.

``lowbit export c --measure-instructions 2,4,8 --riscv`` runs the integer-only model on RV32IMC
under QEMU once per weight width and writes ``instructions.json``::

    {"version": 1, "source": "...", "layers": {"features.0.0": {"2": 12345, "4": ..., "8": ...}, ...},
     "fixed": 9876}

(layer names are module paths; ``fixed`` is what the other operations, e.g. pooling, cost in every
run). :func:`model_cost` with ``instructions=InstructionTable`` then reports, per weight layer, the
measured count for its integer weight width instead of the MACs / SIMD-lanes proxy, and the total
adds ``fixed``. Layers or widths the table lacks are an error, never a silent fallback.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class InstructionTable:
    layers: dict = field(default_factory=dict)   # layer name -> {bits (int): instructions}
    fixed: float = 0.0
    source: str = ""

    @classmethod
    def from_file(cls, path) -> "InstructionTable":
        try:
            raw = json.loads(Path(path).read_text())
            layers = {name: {int(b): float(n) for b, n in per.items()} for name, per in raw["layers"].items()}
            return cls(layers, float(raw.get("fixed", 0.0)), str(raw.get("source", path)))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"instruction table {str(path)!r} cannot be read ({exc}); allowed: the "
                             f"instructions.json written by lowbit export c --measure-instructions") from None

    def to_json(self) -> str:
        return json.dumps({"version": 1, "source": self.source, "fixed": self.fixed,
                           "layers": {n: {str(b): c for b, c in per.items()} for n, per in self.layers.items()}},
                          indent=1, sort_keys=True)

    def lookup(self, layer: str, weight_fmt) -> float:
        """Measured instructions of ``layer`` with weights in ``weight_fmt`` (an integer format)."""
        per = self.layers.get(layer)
        if per is None:
            raise ValueError(f"layer {layer!r} is not in the measured instruction table; allowed: "
                             f"{', '.join(sorted(self.layers))}")
        bits = getattr(weight_fmt, "bits", None) if getattr(weight_fmt, "kind", None) == "int" else None
        if bits not in per:
            name = getattr(weight_fmt, "name", "fp32")
            raise ValueError(f"no measured instruction count for layer {layer!r} with weights {name}; allowed: "
                             f"{', '.join(f'int{b}' for b in sorted(per))}")
        return per[bits]
