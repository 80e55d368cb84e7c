"""Search strategies: a dict plus a decorator, each ``fn(problem, **options) -> Result``.

    @register_strategy("name")
    def name(problem, **options) -> Result: ...
    result = run_search(problem, "exhaustive", finetune_epochs=2, splits=splits)

Registered here: ``percentile``, ``exhaustive``, ``binary``; in :mod:`.ilp` ``ilp`` and in
:mod:`.evolutionary` ``evolutionary`` (imported by the package). Every strategy ends with
:meth:`Problem.finish`, so all share one selection rule (:func:`lowbit.search.pareto.select`):
under a budget the most accurate point within it, else the cheapest point within ``max_acc_drop``.
"""
from __future__ import annotations

import itertools

import numpy as np

from lowbit.registry import Registry

from .costing import CostTable
from .problem import Problem
from .result import Result

STRATEGIES = Registry("strategy")


def register_strategy(name: str):
    """Decorator registering ``fn(problem, **options) -> Result`` under ``name``."""
    return STRATEGIES.register(name)


def list_strategies() -> list[str]:
    return STRATEGIES.names()


def get_strategy(name: str):
    return STRATEGIES.get(name)


def run_search(problem: Problem, strategy: str, *, finetune_epochs: int = 0, splits=None,
               finetune_kwargs: dict | None = None, **options) -> Result:
    """Run ``strategy``; with ``finetune_epochs`` > 0, fine-tune the chosen recipe with QAT on ``splits``."""
    fn = get_strategy(strategy)
    start = problem.evaluator.n_evaluations
    result = fn(problem, **options)
    result.n_evaluations = problem.evaluator.n_evaluations - start
    if finetune_epochs:
        if splits is None:
            raise ValueError("finetune_epochs > 0 needs the dataset splits (splits=...)")
        from .finetune import finetune
        result.finetune = finetune(problem.model, result.recipe, splits, finetune_epochs, seed=problem.seed,
                                   **(finetune_kwargs or {}))
    return result


# ---- percentile (the energy-aware tool's rule) ------------------------------------------------------
SWEEP_GRID = (10.0, 25.0, 50.0, 75.0, 90.0)


def default_percentiles(k: int) -> tuple:
    """(25, 75) for three choices (the energy-aware tool); otherwise k evenly sized bins."""
    return (25.0, 75.0) if k == 3 else tuple(float(p) for p in np.linspace(0, 100, k + 1)[1:-1])


def default_sweep(k: int) -> tuple:
    """The percentile cut sets a sweep tries for ``k`` levels: every non-decreasing (k-1)-tuple of
    :data:`SWEEP_GRID` (15 pairs for three levels, from (10, 10): nearly all int8, to (90, 90): nearly
    all int4), so the points range from the dearest to the cheapest mixed assignments."""
    return tuple(itertools.combinations_with_replacement(SWEEP_GRID, k - 1)) if k > 1 else ()


def percentile_assign(scores, percentiles) -> np.ndarray:
    """Bin index per layer: score below the 1st percentile -> 0, ..., at or above the last -> k-1."""
    scores = np.asarray(scores, float)
    cuts = np.percentile(scores, percentiles)
    return np.digitize(scores, cuts, right=False)


def check_percentiles(percentiles, levels) -> tuple:
    percentiles = tuple(float(p) for p in percentiles)
    if len(percentiles) != len(levels) - 1 or list(percentiles) != sorted(percentiles) \
            or not all(0 <= p <= 100 for p in percentiles):
        raise ValueError(f"percentiles={list(percentiles)} is not allowed; allowed: {len(levels) - 1} non-decreasing "
                         f"numbers in [0, 100] (one fewer than the levels {', '.join(levels)})")
    return percentiles


def _cuts(percentiles) -> str:
    return ",".join(f"{p:g}" for p in percentiles)


@register_strategy("percentile")
def percentile(problem: Problem, method: str = "l2", percentiles=None, probe: str | None = None,
               levels=None, sweep=(), baselines: bool = False) -> Result:
    """Rank layers by ``method`` at the ``probe`` choice (default: the cheapest) and bin them by
    percentile: with choices {int4, int6, int8} and (25, 75), the top 25 % most sensitive layers get
    int8, the bottom 25 % int4, the rest int6. ``levels`` (choice labels, cheapest first, one more than
    ``percentiles``) picks which choices the bins map to (default: all choices). The chosen point is
    that rule's; ``sweep`` (cut sets, e.g. :func:`default_sweep`) adds one point per cut set and
    ``baselines`` one uniform point per choice (strategy ``uniform``), for the Pareto plot. One
    evaluation per distinct point; the ``percentiles`` column names each point's cuts."""
    space = problem.space
    labels = list(space.labels)
    levels = list(levels) if levels is not None else labels
    for lv in levels:
        if lv not in labels:
            raise ValueError(f"percentile level {lv!r} is not allowed; allowed: {', '.join(labels)}")
    percentiles = check_percentiles(percentiles if percentiles is not None else default_percentiles(len(levels)),
                                    levels)
    sweep = [check_percentiles(c, levels) for c in sweep]
    probe = probe or labels[0]
    if probe not in labels:
        raise ValueError(f"probe format {probe!r} is not allowed; allowed: {', '.join(labels)}")
    scores = problem.scores(method)[:, labels.index(probe)]

    def point(cuts):
        return tuple(labels.index(levels[b]) for b in percentile_assign(scores, cuts))

    rows = problem.evaluate([point(percentiles)], strategy="percentile")
    rows[0]["percentiles"] = _cuts(percentiles)
    if sweep:
        for row, cuts in zip(problem.evaluate([point(c) for c in sweep], strategy="percentile"), sweep):
            rows.append({**row, "percentiles": _cuts(cuts)})
    if baselines:   # first, so a uniform point found again by the sweep keeps its 'uniform' name
        rows = [*problem.evaluate([space.uniform(k) for k in range(len(labels))], strategy="uniform"), *rows]
    on = f" (on the {problem.sensitivity_on})" if method in ("l2", "sqnr") else ""
    notes = [f"percentile rule on {method} scores{on} at {probe}: cuts at {', '.join(f'{p:g}%' for p in percentiles)}"]
    if sweep:
        notes.append(f"percentile sweep: {len(sweep)} cut sets ({'; '.join(_cuts(c) for c in sweep)})")
    return problem.finish("percentile", rows, notes=notes, chosen=len(rows) - 1 - len(sweep),
                          extra={"scores": dict(zip(space.free, scores.tolist())), "percentiles": list(percentiles),
                                 "percentile_sweep": [list(c) for c in sweep], "uniform_baselines": bool(baselines),
                                 "sensitivity_method": method, "sensitivity_on": problem.sensitivity_on})


# ---- exhaustive (the RISC-V tool's DSE) ---------------------------------------------------------------
@register_strategy("exhaustive")
def exhaustive(problem: Problem, max_points: int = 1024, prune_pct: float = 1.0) -> Result:
    """Evaluate every assignment (after pruning tiny layers when K^L > ``max_points``), mark the
    staircase Pareto front and pick by the shared rule (cheapest within the accuracy drop)."""
    space, note = problem.space.pruned(max_points, prune_pct)
    idxs = list(space.enumerate())
    rows = problem.evaluate(idxs, space, strategy="exhaustive")
    return problem.finish("exhaustive", rows, space, notes=[note])


# ---- binary search over the cost-sorted list -------------------------------------------------------
def sorted_assignments(problem: Problem, space) -> np.ndarray:
    """All assignments of ``space`` (N, L), sorted by the objective's additive cost (ties: the other
    metrics), restricted to the budget."""
    table = problem.costs if space is problem.space else CostTable.build(space, problem.energy)
    idx = np.array(list(space.enumerate()), dtype=np.int64).reshape(-1, len(space.free))
    tot = table.total(idx)
    keep = np.broadcast_to(problem.within_budget(tot), len(idx))
    idx = idx[keep]
    tot = {m: v[keep] for m, v in tot.items()}
    others = [tot[m] for m in tot if m != problem.objective]
    order = np.lexsort((*reversed(others), tot[problem.objective]))
    return idx[order]


@register_strategy("binary")
def binary(problem: Problem, max_points: int = 1 << 20, prune_pct: float = 1.0) -> Result:
    """Binary search for the cheapest assignment within ``max_acc_drop`` over the cost-sorted list.

    A HEURISTIC (as the RISC-V tool's): it assumes accuracy is monotone in cost along the list,
    which mixed precision does not guarantee; it needs about log2(N) evaluations instead of N and
    may miss cheaper feasible points. ``result.n_evaluations`` reports how many it used.
    """
    if problem.max_acc_drop is None:
        raise ValueError("strategy binary needs max_acc_drop (percentage points), e.g. 1.0")
    space, note = problem.space.pruned(max_points, prune_pct)
    order = sorted_assignments(problem, space)
    if len(order) == 0:
        raise ValueError("no assignment fits the budget; allowed: a larger budget")
    base = 100 * problem.baseline["acc"]
    rows, best, lo, hi = [], None, 0, len(order) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        row = problem.evaluate([order[mid]], space, strategy="binary")[0]
        row["sorted_rank"] = mid
        rows.append(row)
        if 100 * row["acc"] >= base - problem.max_acc_drop - 1e-9:
            best, hi = len(rows) - 1, mid - 1
        else:
            lo = mid + 1
    notes = [note, f"binary search over {len(order)} cost-sorted assignments (heuristic: assumes accuracy "
                   f"monotone in {problem.objective}) used {len(rows)} evaluations"]
    err = (problem.costs if space is problem.space else CostTable.build(space, problem.energy)).max_rel_error
    if err > 1e-6:
        notes.append(f"the sort uses additive per-layer costs, off by up to {100 * err:.2g}% from lowbit.cost "
                     f"(e.g. energy when the weights move to another memory level)")
    return problem.finish("binary", rows, space, notes=notes, chosen=best,
                          extra={"n_sorted": int(len(order))})
