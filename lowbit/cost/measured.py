"""Measured instruction and cycle counts: a per-layer, per-weight-width table from real runs of the exported C.

``lowbit export c --measure-instructions 2,4,8`` runs the integer-only model once per weight width,
as the plain RV32IMC program and as the RV32IMC + Xlbmac program, under unicorn, and writes
``instructions.json`` (version 2)::

    {"version": 2, "source": "...", "cycle_model": "...",
     "programs": {"rv32imc": {"layers": {"features.0.0": {"2": {"instructions": n, "cycles": c}, ...}},
                              "fixed": {"instructions": n, "cycles": c}},
                  "rv32imc_xlbmac": {...}}}

(layer names are module paths; ``fixed`` is what the other operations, e.g. pooling, cost in every
run). Version 1 files ({"layers": {name: {bits: instructions}}, "fixed": n}) still read, without
cycles. :func:`model_cost` with ``instructions=InstructionTable`` then reports, per weight layer, the
measured count for its integer weight width instead of the MACs / SIMD-lanes proxy (and the cycles);
the total adds ``fixed``. Layers or widths the table lacks are an error, never a silent fallback.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

PROGRAMS = ("rv32imc_xlbmac", "rv32imc")


@dataclass(frozen=True)
class InstructionTable:
    layers: dict = field(default_factory=dict)   # layer name -> {bits (int): instructions}
    fixed: float = 0.0
    source: str = ""
    cycles: dict = field(default_factory=dict)   # layer name -> {bits (int): cycles} (empty: not measured)
    fixed_cycles: float = 0.0
    program: str = ""

    @classmethod
    def from_file(cls, path, program: str = "rv32imc_xlbmac") -> "InstructionTable":
        """Read ``program``'s counts (version 2), or a version 1 file's instructions."""
        try:
            raw = json.loads(Path(path).read_text())
            if raw.get("version", 1) == 1:
                layers = {name: {int(b): float(n) for b, n in per.items()} for name, per in raw["layers"].items()}
                return cls(layers, float(raw.get("fixed", 0.0)), str(raw.get("source", path)))
            progs = raw["programs"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"instruction table {str(path)!r} cannot be read ({exc}); allowed: the "
                             f"instructions.json written by lowbit export c --measure-instructions") from None
        if program not in progs:
            raise ValueError(f"program {program!r} is not in the instruction table {str(path)!r}; allowed: "
                             f"{', '.join(sorted(progs))}")
        return cls.from_program(progs[program], f"{raw.get('source', path)} [{program}]", program)

    @classmethod
    def from_program(cls, p: dict, source: str = "", program: str = "") -> "InstructionTable":
        get = lambda key: {n: {int(b): float(v[key]) for b, v in per.items()} for n, per in p["layers"].items()}  # noqa: E731
        return cls(get("instructions"), float(p["fixed"]["instructions"]), source, get("cycles"),
                   float(p["fixed"]["cycles"]), program)

    def program_dict(self) -> dict:
        return {"layers": {n: {str(b): {"instructions": c, "cycles": self.cycles.get(n, {}).get(b, 0.0)}
                               for b, c in per.items()} for n, per in self.layers.items()},
                "fixed": {"instructions": self.fixed, "cycles": self.fixed_cycles}}

    def to_json(self) -> str:
        return json.dumps({"version": 1, "source": self.source, "fixed": self.fixed,
                           "layers": {n: {str(b): c for b, c in per.items()} for n, per in self.layers.items()}},
                          indent=1, sort_keys=True)

    def _get(self, table: dict, layer: str, weight_fmt, what: str) -> float:
        per = table.get(layer)
        if per is None:
            raise ValueError(f"layer {layer!r} is not in the measured {what} table; allowed: "
                             f"{', '.join(sorted(table))}")
        bits = getattr(weight_fmt, "bits", None) if getattr(weight_fmt, "kind", None) == "int" else None
        if bits not in per:
            name = getattr(weight_fmt, "name", "fp32")
            raise ValueError(f"no measured {what} count for layer {layer!r} with weights {name}; allowed: "
                             f"{', '.join(f'int{b}' for b in sorted(per))}")
        return per[bits]

    def lookup(self, layer: str, weight_fmt) -> float:
        """Measured instructions of ``layer`` with weights in ``weight_fmt`` (an integer format)."""
        return self._get(self.layers, layer, weight_fmt, "instruction")

    def lookup_cycles(self, layer: str, weight_fmt) -> float:
        """Cycles (lowbit.export.c.cycles table) of ``layer``; 0 when the table has no cycles."""
        return self._get(self.cycles, layer, weight_fmt, "cycle") if self.cycles else 0.0


def write_tables(path, tables: dict, source: str, cycle_model: str) -> None:
    """Write {program: InstructionTable} as a version 2 instructions.json."""
    Path(path).write_text(json.dumps({"version": 2, "source": source, "cycle_model": cycle_model,
                                      "programs": {k: t.program_dict() for k, t in tables.items()}},
                                     indent=1, sort_keys=True) + "\n")
