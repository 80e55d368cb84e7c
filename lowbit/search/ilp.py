"""``ilp``: the least total sensitivity under cost budgets, solved exactly (HAWQ-V3 style).

Variables x[l, k] in {0, 1}: layer l takes choice k. Minimise sum_lk s[l, k] x[l, k] subject to
sum_k x[l, k] = 1 for every layer and, per budget metric m, base_m + sum_lk c_m[l, k] x[l, k] <= B_m,
with s the per-layer sensitivity scores (:func:`lowbit.search.sensitivity.score`; Hessian-weighted
perturbation by default, as HAWQ-V3) and c the additive per-layer costs
(:class:`lowbit.search.costing.CostTable`). Solved by ``scipy.optimize.milp`` (HiGHS
branch-and-bound): the optimum of this model, not a heuristic. Sensitivities are assumed
additive across layers, which is the model's approximation, not the solver's.
"""
from __future__ import annotations

import numpy as np

from .costing import METRICS, UNITS, units
from .problem import Problem
from .result import Result
from .strategies import register_strategy


def solve_ilp(scores, costs: dict, budgets: dict, base: dict | None = None) -> tuple[int, ...]:
    """Choice index per layer minimising ``sum scores`` under ``costs`` <= ``budgets``.

    ``scores``: (L, K); ``costs``: {metric: (L, K)}; ``budgets``: {metric: max total};
    ``base``: {metric: constant added to every total}. Raises ValueError when infeasible.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    s = np.asarray(scores, float)
    n_l, n_k = s.shape
    one_hot = np.kron(np.eye(n_l), np.ones((1, n_k)))
    cons = [LinearConstraint(one_hot, 1, 1)]
    base = base or {}
    for m, b in budgets.items():
        c = np.asarray(costs[m], float)
        lo = base.get(m, 0.0) + c.min(axis=1).sum()
        if lo > b * (1 + 1e-9):
            raise ValueError(f"budget {m}={b:g} is below the smallest achievable {lo:g} {UNITS.get(m, '')}; "
                             f"allowed: a budget >= {lo:g}")
        cons.append(LinearConstraint(c.reshape(1, -1), -np.inf, b - base.get(m, 0.0)))
    res = milp(s.ravel(), constraints=cons, integrality=np.ones(s.size), bounds=Bounds(0, 1))
    if res.x is None:
        raise ValueError(f"the integer program has no solution ({res.message})")
    x = np.round(res.x).reshape(n_l, n_k)
    return tuple(int(k) for k in x.argmax(axis=1))


@register_strategy("ilp")
def ilp(problem: Problem, method: str = "hessian", sweep: int = 0) -> Result:
    """Solve the integer program under ``problem.budgets`` (at least one is required) and evaluate
    the solution. ``sweep`` > 0 also solves for that many budgets on the objective metric, evenly
    spaced from the cheapest achievable total up to the problem's own budget on that metric (the
    dearest assignment when it has none), to trace a front: budgets above the problem's budget would
    all be capped to it and return the same point. The note says how many distinct points came out."""
    if not problem.budgets:
        raise ValueError(f"strategy ilp needs a budget; allowed: one or more of {', '.join(METRICS)} "
                         f"(CLI: --budget-size-kb, --budget-bitops, --budget-energy, --budget-instructions)")
    table = problem.costs
    scores = problem.scores(method)
    idx = solve_ilp(scores, table.per_layer, problem.budgets, table.base)
    idxs = [idx]
    notes = []
    if sweep:
        idxs += _sweep(problem, scores, sweep)
        n = len(set(idxs))
        notes.append(f"ILP sweep: {len(set(idxs))} distinct assignments from {len(idxs)} solved budgets" +
                     ("" if n > 1 else " (ONE point only: every budget of the sweep has the same optimum)"))
    rows = problem.evaluate(idxs, strategy="ilp")
    unit = units(problem.energy)
    on = f" (on the {problem.sensitivity_on})" if method in ("l2", "sqnr") else ""
    note = (f"ILP on {method} scores{on}: minimal total sensitivity {float(scores[np.arange(len(idx)), idx].sum()):.4g} "
            f"under " + ", ".join(f"{m} <= {b:g} {unit[m]}" for m, b in problem.budgets.items()))
    if table.max_rel_error > 1e-6:
        note += f" (additive cost model off by up to {100 * table.max_rel_error:.2g}% from lowbit.cost)"
    return problem.finish("ilp", rows, notes=[note, *notes], chosen=0, extra={"ilp_method": method, "sensitivity_on": problem.sensitivity_on})


def _sweep(problem: Problem, scores, n: int) -> list:
    """The ILP solutions of ``n`` budgets on the objective metric (see :func:`ilp`)."""
    table, m = problem.costs, problem.objective
    lo = table.base[m] + table.per_layer[m].min(axis=1).sum()
    top = min(table.base[m] + table.per_layer[m].max(axis=1).sum(), problem.budgets.get(m, np.inf))
    out = []
    for b in np.linspace(lo, top, n + 1)[:-1]:
        try:
            out.append(solve_ilp(scores, table.per_layer, {**problem.budgets, m: max(b, lo)}, table.base))
        except ValueError:   # another metric's budget makes this one infeasible
            continue
    return out
