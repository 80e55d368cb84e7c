"""Costs of assignments through :mod:`lowbit.cost`: exact reports and an additive per-layer table.

Metrics (the search objectives and budgets):

    size          weight_bytes  (CostReport total: weights incl. scale overhead, other parameters fp32)
    bitops        bitops        (sum over layers of MACs x weight bits x activation bits, per sample)
    energy        energy_pj     (per sample, from the EnergyModel; see lowbit.cost)
    instructions  instructions  (MACs / SIMD packing factor per sample, or counts measured on RV32IMC
                                 when the space carries an InstructionTable: lowbit export c
                                 --measure-instructions, lowbit search --instructions-table)
    cycles        cycles        (measured with that table only: the program's cycles on the stated
                                 core model, lowbit.export.c.cycles; 0 without a table)

:func:`cost_of` asks ``lowbit.cost.model_cost`` for one assignment (exact). :class:`CostTable`
decomposes the totals per layer and choice (``per_layer[m][l, k]`` plus a constant ``base[m]``)
so that strategies can sort millions of assignments or pose an ILP without calling the cost model
for each; ``max_rel_error`` records how far that additive decomposition is from exact (0 when
every metric is a sum of per-layer terms).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowbit.cost import LayerPlan, model_cost, profile_layers

METRICS = {"size": "weight_bytes", "bitops": "bitops", "energy": "energy_pj", "instructions": "instructions",
           "cycles": "cycles"}
UNITS = {"size": "bytes", "bitops": "bit-ops/sample", "energy": "pJ/sample", "instructions": "instr/sample",
         "cycles": "cycles/sample"}
# energy is not exactly additive: lowbit.cost reads the weights from the memory level that holds the
# whole model (8 KB / 32 KB / 1 MB SRAM or DRAM), so a layer's memory energy depends on the others.

__all__ = ["METRICS", "UNITS", "CostTable", "cost_of", "plan_of", "profile_layers", "cost_columns", "units"]


def units(energy=None) -> dict:
    """:data:`UNITS` with the energy unit of ``energy`` (an EnergyModel or its name): pJ/sample for an
    absolute model (Horowitz, a constants file), ``relative units/sample`` for the seed's unitless one."""
    from lowbit.cost import EnergyModel
    unit = EnergyModel.get(energy).unit
    return {**UNITS, "energy": "pJ/sample" if unit == "pJ" else "relative units/sample"}


def plan_of(space, idx) -> dict:
    """{layer name: LayerPlan(weight, act)} of an assignment (see lowbit.cost)."""
    return {n: LayerPlan(weight=c.weight, act=c.act) for n, c in space.assignment(idx).items()}


def cost_of(space, idx, energy=None):
    """The exact :class:`lowbit.cost.CostReport` of assignment ``idx``."""
    kw = {} if energy is None else {"energy": energy}
    layers = space.profile if space.profile is not None else list(space.layers)
    return model_cost(layers, plan_of(space, idx), instructions=space.instructions, **kw)


def cost_columns(report) -> dict:
    """The metric columns of a results row, from a CostReport's totals."""
    t = report.total
    return {m: float(t[k]) for m, k in METRICS.items()}


@dataclass
class CostTable:
    """Additive costs: ``per_layer[metric]`` is (free layers, choices), ``base[metric]`` a constant."""

    per_layer: dict
    base: dict
    max_rel_error: float = 0.0

    def total(self, idx) -> dict:
        """{metric: array} for assignments ``idx`` (shape (N, L) or (L,))."""
        a = np.atleast_2d(np.asarray(idx, dtype=np.int64))
        rows = np.arange(a.shape[1])
        return {m: self.base[m] + t[rows, a].sum(axis=1) for m, t in self.per_layer.items()}

    @classmethod
    def build(cls, space, energy=None) -> "CostTable":
        free = space.free
        k = len(space.choices)
        per = {m: np.zeros((len(free), k)) for m in METRICS}
        bases = []
        for j in range(k):
            rep = cost_of(space, space.uniform(j), energy)
            rows = {r["name"]: r for r in rep.rows}
            for m, key in METRICS.items():
                per[m][:, j] = [float(rows[n][key]) for n in free]
            bases.append({m: float(rep.total[key]) - per[m][:, j].sum() for m, key in METRICS.items()})
        base = bases[0]
        table = cls(per, base)
        table.max_rel_error = table._check(space, energy, bases)
        return table

    def _check(self, space, energy, bases) -> float:
        """Largest relative gap between additive and exact totals over the uniform and one mixed point."""
        err = max(abs(b[m] - self.base[m]) / max(abs(self.base[m]) + abs(self.per_layer[m]).max(), 1e-12)
                  for b in bases for m in METRICS)
        if len(space.free) > 1:
            idx = tuple(i % len(space.choices) for i in range(len(space.free)))
            exact = cost_columns(cost_of(space, idx, energy))
            approx = {m: float(v[0]) for m, v in self.total(idx).items()}
            err = max(err, *(abs(exact[m] - approx[m]) / max(abs(exact[m]), 1e-12) for m in METRICS))
        return float(err)
