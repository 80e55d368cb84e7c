"""``lowbit search``: mixed-precision search, one format per weight layer, chosen by a strategy.

    lowbit search --model cnn --dataset digits --checkpoint runs/sens --strategy exhaustive \\
        --formats int2,int4,int8 --max-acc-drop 1.0 --out runs/search

Writes OUT/recipe.yaml (a lowbit Recipe: ``lowbit ptq --recipe``, ``lowbit run`` precision
``recipe:PATH``), results.csv, assignment.csv, summary.json, the figures and search_report.html.
The flags shared with ``lowbit sensitivity`` (search space, evaluation data) are :func:`add_space_args`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from lowbit.cli.common import UsageError, add_command, check_out, positive
from lowbit.cli.source import add_backend_arg, add_source_args, load_source

BUDGETS = ("budget_size_kb", "budget_bitops", "budget_energy", "budget_instructions")


def add_space_args(p) -> None:
    """--formats, --acts, --eval-split, --eval-samples, --energy, --out (sensitivity and search)."""
    add_source_args(p)
    p.add_argument("--formats", default="int2,int4,int8",
                   help="candidate formats per layer, comma-separated; 'W/A' sets a layer's input format too")
    p.add_argument("--acts", default=None, help="input-activation format of every searched layer (default fp32)")
    p.add_argument("--eval-split", default="val", choices=("train", "val", "test"),
                   help="data to score on (default val)")
    p.add_argument("--eval-samples", type=int, default=None, help="use only the first N samples of the split")
    p.add_argument("--energy", default="horowitz", help="energy model: horowitz, relative, or a YAML/JSON file")
    p.add_argument("--sensitivity-on", default="logits", choices=("logits", "output"),
                   help="what the l2 / sqnr sensitivity compares: the model's logits (default) or the layer's "
                        "own output y_l (the energy-aware seed's S_l = ||y_l^full - y_l^quant||_2)")
    p.add_argument("--out", default=None, help="output folder")
    add_backend_arg(p)


def space_and_data(args, check=None):
    """(source, search space, EvalData) of the flags of :func:`add_space_args`; ``check`` as in
    :func:`lowbit.cli.source.load_source` (runs before any training)."""
    from lowbit.search import EvalData, build_space, profile_layers

    src = load_source(args, Path(args.out), check=check)
    space = build_space(profile_layers(src.model, src.input_shape), args.formats, args.acts)
    if getattr(args, "instructions_table", None):
        import dataclasses

        from lowbit.cost import InstructionTable
        table = InstructionTable.from_file(args.instructions_table, getattr(args, "program", "rv32imc_xlbmac"))
        space = dataclasses.replace(space, instructions=table)
    return src, space, EvalData.from_splits(src.splits, args.eval_split, args.eval_samples)


def check_space_args(args) -> None:
    from lowbit.search import parse_choices
    positive("--eval-samples", args.eval_samples)
    parse_choices(args.formats, args.acts)
    check_out(args.out)


def table(df) -> str:
    return df.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def add_parser(sub):
    from lowbit.search.costing import METRICS
    from lowbit.search.strategies import list_strategies
    p = add_command(sub, "search", run, "mixed-precision bit assignment search",
                    "Mixed-precision search: one format per layer, chosen by a strategy.")
    add_space_args(p)
    p.add_argument("--strategy", default="exhaustive", choices=list_strategies())
    p.add_argument("--max-acc-drop", type=float, default=1.0,
                   help="largest accuracy drop below fp32, percentage points (default 1.0)")
    p.add_argument("--budget-size-kb", type=float, help="weight size budget, KiB (1024 bytes)")
    p.add_argument("--budget-bitops", type=float, help="BitOps per sample budget")
    p.add_argument("--budget-energy", type=float, help="energy per sample budget: pJ (--energy horowitz or a constants file), relative units "
                        "(--energy relative)")
    p.add_argument("--budget-instructions", type=float, help="instructions per sample budget")
    p.add_argument("--objective", choices=tuple(METRICS), default=None,
                   help="cost axis (default: the budget's metric, else size)")
    p.add_argument("--workers", type=int, default=1, help="evaluation processes (default 1)")
    p.add_argument("--instructions-table", default=None, metavar="FILE",
                   help="measured instruction counts (lowbit export c --measure-instructions) for the "
                        "instructions objective/budget, instead of the MACs / SIMD-lanes proxy")
    p.add_argument("--target", choices=("fake-quant", "c"), default=None,
                   help="what is scored: fake-quant (default) or c, the integer-only C export's arithmetic "
                        "(per-tensor int2/4/8 weights, 8-bit activations, integer requantization; calibrated "
                        "on --calib-samples train samples exactly as lowbit export c); default c with "
                        "--objective cycles")
    p.add_argument("--calib-samples", type=int, default=256, help="--target c: calibration samples (default 256)")
    p.add_argument("--program", choices=("rv32imc_xlbmac", "rv32imc"), default="rv32imc_xlbmac",
                   help="which program's counts of a version 2 --instructions-table to use (default the Xlbmac one)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where evaluations run: local processes (--workers) or Ray tasks (pip install 'lowbit[ray]')")
    p.add_argument("--address", default=None, help="Ray cluster address for --executor ray (default: start Ray here)")
    p.add_argument("--finetune-epochs", type=int, default=0, help="QAT epochs for the chosen recipe (default 0)")
    p.add_argument("--method", default=None,
                   help="sensitivity method for percentile (default l2) / ilp (default hessian)")
    p.add_argument("--percentiles", default=None, help="percentile cut points, e.g. 25,75")
    p.add_argument("--percentile-sweep", default="default", metavar="SETS",
                   help="percentile: more cut sets to evaluate for the Pareto plot, ';'-separated (e.g. "
                        "'10,90;25,75;50,50'); 'default': every non-decreasing set from 10,25,50,75,90 "
                        "(15 for three formats); 'none': only --percentiles. The uniform baselines (every "
                        "layer in one format) are always evaluated too")
    p.add_argument("--max-points", type=int, default=None,
                   help="exhaustive (default 1024) / binary (default 2^20): prune tiny layers above this many points")
    p.add_argument("--prune-pct", type=float, default=1.0,
                   help="layers below this %% of MACs are pruned first, fixed at the dearest format (default 1)")
    p.add_argument("--n-trials", type=int, default=40, help="evolutionary: complete trials in total, "
                   "across resumes of a --storage study (a resumed search runs the missing ones; default 40)")
    p.add_argument("--storage", default=None, help="evolutionary: Optuna storage, e.g. sqlite:///runs/study.db")
    p.add_argument("--study-name", default="lowbit-search", help="evolutionary: study name")
    p.add_argument("--ilp-sweep", type=int, default=0, help="ilp: also solve this many budgets to trace a front")
    return p


def _options(args) -> dict:
    s = args.strategy
    opt = {}
    if s in ("percentile", "ilp") and args.method:
        opt["method"] = args.method
    if s == "percentile" and args.percentiles:
        try:
            opt["percentiles"] = tuple(float(v) for v in args.percentiles.split(","))
        except ValueError:
            raise UsageError(f"--percentiles {args.percentiles!r} is not allowed; "
                             f"allowed: numbers such as 25,75") from None
    if s == "percentile":
        opt.update(sweep=_percentile_sweep(args), baselines=True)
    if s in ("exhaustive", "binary"):
        if args.max_points is not None:
            opt["max_points"] = args.max_points
        opt["prune_pct"] = args.prune_pct
    if s == "evolutionary":
        opt.update(n_trials=args.n_trials, storage=args.storage, study_name=args.study_name)
    if s == "ilp" and args.ilp_sweep:
        opt["sweep"] = args.ilp_sweep
    return opt


def _percentile_sweep(args) -> tuple:
    """``--percentile-sweep``: 'none', 'default' (:func:`lowbit.search.strategies.default_sweep`) or sets."""
    from lowbit.search import parse_choices
    from lowbit.search.strategies import default_sweep
    text = args.percentile_sweep.strip()
    if text == "none":
        return ()
    if text == "default":
        return default_sweep(len(parse_choices(args.formats, args.acts)))
    try:
        return tuple(tuple(float(v) for v in part.split(",")) for part in text.split(";") if part.strip())
    except ValueError:
        raise UsageError(f"--percentile-sweep {args.percentile_sweep!r} is not allowed; allowed: 'default', "
                         f"'none' or ';'-separated cut sets such as '10,90;25,75'") from None


def _budgets(args) -> dict:
    for flag in (*BUDGETS, "max_acc_drop"):
        v = getattr(args, flag)
        if v is not None and not (v > 0 or (flag == "max_acc_drop" and v == 0)):
            raise UsageError(f"--{flag.replace('_', '-')} {v:g} is not allowed; allowed: a number "
                             f"{'>= 0' if flag == 'max_acc_drop' else '> 0'}")
    budgets = {"size": args.budget_size_kb * 1024 if args.budget_size_kb is not None else None,
               "bitops": args.budget_bitops, "energy": args.budget_energy, "instructions": args.budget_instructions}
    return {k: v for k, v in budgets.items() if v is not None}


def run(args) -> int:
    from lowbit.cost import EnergyModel
    from lowbit.report.plots_search import render_search_report
    from lowbit.search import Evaluator, Problem, run_search

    args.out = args.out or "runs/search"
    budgets = _budgets(args)
    objective = args.objective or (next(iter(budgets)) if len(budgets) == 1 else "size")
    for key, lo in (("workers", 1), ("finetune_epochs", 0), ("n_trials", 1), ("ilp_sweep", 0)):
        positive(f"--{key.replace('_', '-')}", getattr(args, key), lo)
    options = _options(args)
    check_space_args(args)
    energy = EnergyModel.get(args.energy)
    target = _target(args, objective)
    positive("--calib-samples", args.calib_samples)
    from lowbit.cli.export_c import c_check
    src, space, data = space_and_data(args, c_check if target == "c" else None)
    with _evaluator(target, src, data, args) as ev:
        problem = Problem(src.model, space, ev, objective, budgets, args.max_acc_drop, energy, seed=args.seed,
                          sensitivity_kwargs={"on": args.sensitivity_on})
        result = run_search(problem, args.strategy, finetune_epochs=args.finetune_epochs, splits=src.splits,
                            **options)
    paths = result.save(args.out)
    if problem.sensitivity is not None:
        problem.sensitivity.to_csv(Path(args.out) / "sensitivity.csv", index=False)
    page = render_search_report(args.out)
    _print_result(result, args, space)
    if args.instructions_table:
        _print_speedup(result, space, args.instructions_table)
    print(f"wrote {', '.join(str(v) for v in paths.values())}, {page}")
    return 0


def _target(args, objective) -> str:
    from lowbit.search import parse_choices
    target = args.target or ("c" if objective == "cycles" else "fake-quant")
    if objective == "cycles" and not args.instructions_table:
        raise UsageError("--objective cycles needs --instructions-table FILE (lowbit export c --measure-instructions)")
    if target == "c":
        bad = [c.label for c in parse_choices(args.formats, args.acts) if c.act is not None or
               str(c.weight) not in ("int2", "int4", "int8")]
        if bad:
            raise UsageError(f"--formats {bad[0]!r} is not allowed with --target c; allowed: int2, int4, int8 "
                             f"(weights; the C export's activations are 8-bit)")
        if args.workers != 1 or args.executor != "local" or args.finetune_epochs:
            raise UsageError("--target c evaluates in this process; allowed: --workers 1, --executor local, "
                             "--finetune-epochs 0")
    return target


def _evaluator(target, src, data, args):
    from lowbit.search import Evaluator
    if target != "c":
        return Evaluator(src.model, data, workers=args.workers, executor=args.executor, address=args.address)
    from lowbit.export.c.evaluate import IntegerEvaluator
    from lowbit.ptq import calibration_inputs
    # the same calibration inputs as lowbit export c, so the exported accuracy is the searched one
    return IntegerEvaluator(src.model, data, calibration_inputs(src.splits, args.calib_samples, args.seed))


def _print_speedup(result, space, path):
    """Cycles of the chosen assignment in both programs of a version 2 table, and their ratio."""
    from lowbit.cost import InstructionTable, model_cost
    from lowbit.search.costing import plan_of
    plan = plan_of(space, result.choice)
    layers = space.profile if space.profile is not None else list(space.layers)
    try:
        tabs = {p: InstructionTable.from_file(path, p) for p in ("rv32imc", "rv32imc_xlbmac")}
    except ValueError:
        return   # a version 1 table: one program only
    cyc = {p: model_cost(layers, plan, instructions=t).total["cycles"] for p, t in tabs.items()}
    print(f"chosen assignment, measured cycles per inference: RV32IMC {cyc['rv32imc']:,.0f}, RV32IMC + Xlbmac "
          f"{cyc['rv32imc_xlbmac']:,.0f}: speed-up {cyc['rv32imc'] / cyc['rv32imc_xlbmac']:.2f}x ({path})")


def _print_result(result, args, space):
    from lowbit.search.costing import METRICS, units
    layers = result.layer_table()
    cols = [c for c in ("layer", "type", "macs", "params", "format", "weight_bytes", "bitops", "energy_pj")
            if c in layers]
    print(f"chosen assignment ({args.strategy}, {len(space.free)} free layers, formats {', '.join(space.labels)}):")
    unit = units(result.energy)
    rel = {"energy_pj": "energy_rel"} if unit["energy"].startswith("relative") else {}
    print(table(layers[cols].rename(columns=rel)))
    c = result.chosen
    print(str(result))
    print("cost: " + ", ".join(f"{m} {c[m]:.4g} {unit[m]}" for m in METRICS if m in c)
          + f" (energy model {getattr(result.energy, 'name', 'horowitz')})")
    if args.strategy == "percentile":
        cols = [k for k in ("strategy", "percentiles", "size", "energy", "acc", "pareto", "chosen") if k in result.table]
        print(f"points for the Pareto plot (energy in {unit['energy']}):")
        print(table(result.table[cols]))
    ft = result.finetune
    if ft:
        print(f"QAT fine-tuning {ft['epochs']} epochs: val acc {100 * ft['val_acc_before']:.2f}% -> "
              f"{100 * ft['val_acc_after']:.2f}%, test acc {100 * ft['test_acc_before']:.2f}% -> "
              f"{100 * ft['test_acc_after']:.2f}%")


def main(argv=None) -> int:
    from lowbit.cli import main as lowbit
    return lowbit(["search", *(sys.argv[1:] if argv is None else argv)])
