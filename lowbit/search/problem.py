"""A search problem: the space, how to evaluate and cost a point, the objective and constraints.

Units: accuracies are fractions (as lowbit.train), ``max_acc_drop`` is in percentage points below
the float model (1.0 = one point, as the RISC-V tool's ``--max_acc_drop``), budgets are in the
metric's unit (bytes, bit-ops, pJ, instructions per sample; see :mod:`lowbit.search.costing`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from torch import nn

from . import pareto
from .costing import METRICS, CostTable, cost_columns, cost_of
from .evaluate import EvalData, Evaluator
from .result import Result
from .sensitivity import check_methods, layer_sensitivity, score_matrix
from .space import SearchSpace


def check_objective(objective: str) -> str:
    if objective not in METRICS:
        raise ValueError(f"objective {objective!r} is not allowed; allowed: {', '.join(METRICS)}")
    return objective


def check_budgets(budgets: dict | None) -> dict:
    out = {}
    for k, v in (budgets or {}).items():
        check_objective(k)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ValueError(f"budget {k}={v!r} is not allowed; allowed: a number > 0")
        out[k] = float(v)
    return out


@dataclass
class Problem:
    """Everything a strategy needs; ``sensitivity`` (a layer_sensitivity table) is computed on demand."""

    model: nn.Module
    space: SearchSpace
    evaluator: Evaluator
    objective: str = "size"
    budgets: dict = field(default_factory=dict)
    max_acc_drop: float | None = 1.0
    energy: object = None
    sensitivity: pd.DataFrame | None = None
    sensitivity_data: EvalData | None = None
    sensitivity_kwargs: dict = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self):
        check_objective(self.objective)
        self.budgets = check_budgets(self.budgets)
        drop = self.max_acc_drop
        if drop is not None and not (isinstance(drop, (int, float)) and drop >= 0):
            raise ValueError(f"max_acc_drop={self.max_acc_drop!r} is not allowed; allowed: a number >= 0 "
                             f"(percentage points) or None")

    @cached_property
    def costs(self) -> CostTable:
        return CostTable.build(self.space, self.energy)

    @property
    def sensitivity_on(self) -> str:
        """What the l2 / sqnr scores compare: "logits" or "output" (the layer's own output)."""
        return self.sensitivity_kwargs.get("on", "logits")

    @property
    def baseline(self) -> dict:
        return self.evaluator.baseline()

    def scores(self, method: str) -> np.ndarray:
        """(free layers, choices) sensitivity scores of ``method``, computing what is missing."""
        check_methods([method])
        df = self.sensitivity
        col = {"sqnr": "sqnr_db", "acc": "loss_delta"}.get(method, method)
        if df is None or col not in df:
            data = self.sensitivity_data or self.evaluator.data
            new = layer_sensitivity(self.model, self.space, data, [method], seed=self.seed, **self.sensitivity_kwargs)
            df = new if df is None else df.merge(new[["layer", "format"] + [c for c in new if c not in df]],
                                                 on=["layer", "format"])
            self.sensitivity = df
        return score_matrix(df, method, self.space)

    def within_budget(self, totals: dict) -> np.ndarray | bool:
        ok = True
        for m, b in self.budgets.items():
            ok = ok & (np.asarray(totals[m]) <= b * (1 + 1e-9))
        return ok

    def evaluate(self, idxs, space: SearchSpace | None = None, strategy: str = "") -> list[dict]:
        """Evaluate assignments (index tuples of ``space``); one results row each."""
        space = space or self.space
        idxs = [tuple(int(i) for i in idx) for idx in idxs]
        evals = self.evaluator([space.recipe(i) for i in idxs])
        base = self.baseline["acc"]
        rows = []
        for idx, ev in zip(idxs, evals):
            row = {"strategy": strategy, "assignment": space.describe(idx)}
            row.update({f"fmt:{n}": c.label for n, c in space.assignment(idx).items()})
            row.update(cost_columns(cost_of(space, idx, self.energy)))
            row.update(loss=ev["loss"], acc=ev["acc"], acc_drop_pp=100 * (base - ev["acc"]))
            row["_idx"] = idx
            rows.append(row)
        return rows

    def finish(self, strategy: str, rows: list[dict], space: SearchSpace | None = None,
               notes=(), chosen: int | None = None, extra: dict | None = None) -> Result:
        """Annotate the evaluated rows (pareto, budget, drop), pick the point and build the Result.

        ``chosen`` overrides the shared selection rule (:func:`lowbit.search.pareto.select`).
        """
        space = space or self.space
        df = pd.DataFrame(rows).drop_duplicates("assignment", ignore_index=True)
        cost, acc = df[self.objective].to_numpy(float), 100 * df["acc"].to_numpy(float)
        df["within_budget"] = np.broadcast_to(self.within_budget({m: df[m] for m in METRICS}), len(df))
        drop = self.max_acc_drop
        df["meets_drop"] = df["acc_drop_pp"] <= drop + 1e-9 if drop is not None else True
        df["pareto"] = pareto.pareto_mask(cost, acc)
        if chosen is None:
            chosen, feasible = pareto.select(cost, acc, drop, 100 * self.baseline["acc"],
                                             df["within_budget"].to_numpy() if self.budgets else None)
        else:
            chosen = int(np.flatnonzero(df["assignment"] == rows[chosen]["assignment"])[0])
            feasible = bool(df["within_budget"].iloc[chosen] and df["meets_drop"].iloc[chosen])
        df["chosen"] = np.arange(len(df)) == chosen
        idx = df["_idx"].iloc[chosen]
        df.insert(0, "point", np.arange(len(df)))
        df = df.drop(columns="_idx")
        return Result(strategy, space, idx, df, dict(self.baseline), self.evaluator.n_evaluations,
                      self.objective, bool(feasible), list(n for n in notes if n), energy=self.energy,
                      extra=dict(extra or {}))
