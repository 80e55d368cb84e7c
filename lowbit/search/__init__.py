"""Sensitivity analysis and mixed-precision search: one format per weight layer.

    from lowbit.search import (EvalData, Evaluator, Problem, build_space, layer_sensitivity,
                               profile_layers, run_search)
    space = build_space(profile_layers(model, (1, 1, 8, 8)), "int2,int4,int8")
    data = EvalData.from_splits(splits, "val")
    sens = layer_sensitivity(model, space, data)              # l2, sqnr, acc, hessian, fisher
    with Evaluator(model, data, workers=1) as ev:
        problem = Problem(model, space, ev, objective="size", max_acc_drop=1.0)
        result = run_search(problem, "exhaustive")          # or binary, percentile, ilp, evolutionary
    result.recipe                  # a lowbit Recipe: quantize_model(model, result.recipe)
    result.save("runs/search")     # recipe.yaml, results.csv, assignment.csv, summary.json
    # figures and an HTML page: lowbit.report.plots_search.render_search_report("runs/search")

Files: space (Choice, SearchSpace, pruning), costing (lowbit.cost bridge, additive CostTable),
evaluate (EvalData, Evaluator, process pool), sensitivity, pareto (front, staircase, selection),
problem (Problem), result (Result), strategies (registry, percentile, exhaustive, binary), ilp,
evolutionary (Optuna NSGA-II), finetune (QAT). Figures: :mod:`lowbit.report.plots_search`;
the commands: :mod:`lowbit.cli.search`, :mod:`lowbit.cli.sensitivity`.
"""
from . import evolutionary, ilp  # noqa: F401  (register their strategies)
from .costing import METRICS, CostTable, cost_of, profile_layers
from .evaluate import EvalData, Evaluator, evaluate_recipe
from .finetune import finetune
from .ilp import solve_ilp
from .pareto import pareto_mask, select, staircase
from .problem import Problem
from .result import Result
from .sensitivity import (METHODS, layer_scores, layer_sensitivity, rank_agreement, ranking, score,
                          write_sensitivity)
from .space import Choice, SearchSpace, build_space, parse_choices
from .strategies import get_strategy, list_strategies, register_strategy, run_search

__all__ = ["METHODS", "METRICS", "Choice", "CostTable", "EvalData", "Evaluator", "Problem", "Result", "SearchSpace",
           "build_space", "cost_of", "evaluate_recipe", "finetune", "get_strategy",
           "layer_scores", "layer_sensitivity", "list_strategies", "pareto_mask", "parse_choices", "profile_layers",
           "rank_agreement", "ranking", "register_strategy", "run_search", "score", "select", "solve_ilp", "staircase",
           "write_sensitivity"]
