"""Measured cost tables: instructions and cycles per weight layer and weight width, for both programs.

:func:`measure_instructions` exports the model once per width (uniform weights; depthwise convs
keep 8 bits), runs one golden inference of the plain RV32IMC program and of the RV32IMC + Xlbmac
program under unicorn, counting every executed instruction by class, and turns the classes into
cycles with the stated table of :mod:`lowbit.export.c.cycles`. Counts are keyed by module path (as
lowbit.cost names layers); non-weight operations go to ``fixed`` (their mean over the widths).
"""
from __future__ import annotations

from pathlib import Path

import torch

from lowbit.cost.measured import InstructionTable, write_tables

from .cycles import CORE
from .export import PROGRAMS, export_c
from .graph import trace


def measure_instructions(model: torch.nn.Module, calib_x: torch.Tensor, eval_x: torch.Tensor, out_dir,
                         bits=(2, 4, 8), width: int = 31, memory: dict | None = None) -> dict:
    """{program: :class:`InstructionTable`} for ``rv32imc`` and ``rv32imc_xlbmac``; also writes
    ``out_dir/instructions.json`` (version 2, see lowbit.cost.measured)."""
    graph = trace(model.eval(), tuple(eval_x.shape[1:]))
    modules = {op.name: op.extra.get("module", op.name) for op in graph.ops}
    acc = {p: {"layers": {}, "cycles": {}, "fixed": [], "fixed_cycles": []} for p in PROGRAMS}
    for b in bits:
        rep = export_c(model, calib_x, eval_x[:1], None, Path(out_dir) / f"w{b}", b, width, 1, build=False,
                       emulate=True, memory=memory)
        kinds = {l["name"]: (l["kind"], l["bits"]) for l in rep["layers"]}
        for prog in PROGRAMS:
            r = rep["emulated"].get(prog, {})
            if "layers" not in r or r.get("mismatches", 1) != 0:
                raise RuntimeError(f"{prog} run at {b}-bit weights failed or was skipped: {r.get('skipped', r)}")
            a, rest, rest_c = acc[prog], 0, 0
            for name, c in r["layers"].items():
                kind, lbits = kinds.get(name, ("other", None))
                if kind == "conv" and lbits is not None:
                    a["layers"].setdefault(modules.get(name, name), {})[int(lbits)] = float(c["instructions"])
                    a["cycles"].setdefault(modules.get(name, name), {})[int(lbits)] = float(c["cycles"])
                else:
                    rest, rest_c = rest + c["instructions"], rest_c + c["cycles"]
            a["fixed"].append(rest)
            a["fixed_cycles"].append(rest_c)
    source = f"unicorn {_uc_version()}, {width}-bit multipliers"
    tables = {p: InstructionTable(a["layers"], sum(a["fixed"]) / len(a["fixed"]), f"{source} [{p}]", a["cycles"],
                                  sum(a["fixed_cycles"]) / len(a["fixed_cycles"]), p) for p, a in acc.items()}
    write_tables(Path(out_dir) / "instructions.json", tables, source, CORE)
    return tables


def _uc_version() -> str:
    import unicorn
    return unicorn.__version__
