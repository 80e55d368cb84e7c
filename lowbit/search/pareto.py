"""Pareto fronts of (cost, accuracy) points and the selection rule every strategy shares.

A point is Pareto-optimal when no other point is at most as costly and at least as accurate with
one of the two strictly better. Sorted by cost, the front's accuracy rises strictly: the
*staircase* of the RISC-V tool (each step is the cheapest way to reach that accuracy). Duplicate
points (equal cost and accuracy) are all on the front when one is.
"""
from __future__ import annotations

import numpy as np


def pareto_mask(cost, acc) -> np.ndarray:
    """Boolean mask of the Pareto-optimal points (minimise ``cost``, maximise ``acc``)."""
    cost, acc = np.asarray(cost, float), np.asarray(acc, float)
    order = np.lexsort((-acc, cost))          # by cost, then most accurate first
    mask = np.zeros(len(cost), bool)
    best = -np.inf
    i = 0
    while i < len(order):
        j = i
        c = cost[order[i]]
        while j < len(order) and cost[order[j]] == c:
            j += 1
        group = order[i:j]                    # equal cost: the group's best accuracy may qualify
        top = acc[group].max()
        if top > best:
            mask[group[acc[group] == top]] = True
            best = top
        i = j
    return mask


def staircase(cost, acc) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the front drawn as steps (``plt.step(x, y, where="post")``), sorted by cost."""
    cost, acc = np.asarray(cost, float), np.asarray(acc, float)
    m = pareto_mask(cost, acc)
    order = np.argsort(cost[m], kind="stable")
    return cost[m][order], acc[m][order]


def select(cost, acc, max_drop=None, baseline=None, within_budget=None) -> tuple[int, bool]:
    """(index, feasible) of the point a search returns.

    With a budget (``within_budget``: mask of points under it): the most accurate such point (ties:
    cheapest), feasible when it also meets ``max_drop``. Otherwise: the cheapest point whose
    accuracy drop from ``baseline`` is at most ``max_drop`` (ties: most accurate). ``max_drop``
    and the drop are in the accuracy's own units. With no feasible point: the most accurate point
    overall (ties: cheapest), flagged infeasible.
    """
    cost, acc = np.asarray(cost, float), np.asarray(acc, float)
    if len(cost) == 0:
        raise ValueError("no evaluated points to select from")
    meets_drop = np.ones(len(acc), bool) if max_drop is None or baseline is None \
        else acc >= baseline - max_drop - 1e-12
    if within_budget is not None:
        ok = np.asarray(within_budget, bool)
        if ok.any():
            cand = np.flatnonzero(ok)
            best = cand[np.lexsort((cost[cand], -acc[cand]))[0]]
            return int(best), bool(meets_drop[best])
    elif meets_drop.any():
        cand = np.flatnonzero(meets_drop)
        return int(cand[np.lexsort((-acc[cand], cost[cand]))[0]]), True
    return int(np.lexsort((cost, -acc))[0]), False
