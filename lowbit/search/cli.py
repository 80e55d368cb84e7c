"""``lowbit sensitivity`` and ``lowbit search``.

    lowbit sensitivity --model cnn --dataset digits --train-quick --formats int2,int4,int8 --out runs/sens
    lowbit search --model cnn --dataset digits --checkpoint runs/sens/model.pt --strategy exhaustive \\
        --formats int2,int4,int8 --max-acc-drop 1.0 --out runs/search

Bad input (an unknown name, a bad number, a missing budget...) prints one line on stderr naming the
value and what is allowed, and returns 2. ``--train-quick`` trains the model on the dataset first
(lowbit.train, AdamW) and saves its weights as OUT/model.pt for later ``--checkpoint`` runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .costing import METRICS
from .space import parse_choices


class UsageError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(message)


def _common(prog: str, description: str) -> _Parser:
    from lowbit.data import list_datasets
    from lowbit.models import list_models
    p = _Parser(prog=prog, description=description)
    p.add_argument("--model", default="cnn", choices=list_models(), help="model name (default cnn)")
    p.add_argument("--dataset", default="digits", choices=list_datasets(), help="dataset (default digits)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="float weights (a state_dict, or lowbit.train's checkpoint.pt/best.pt)")
    src.add_argument("--train-quick", action="store_true", help="train the model first (see --epochs)")
    p.add_argument("--epochs", type=int, default=3, help="epochs for --train-quick (default 3)")
    p.add_argument("--model-kwargs", default=None,
                   help="YAML mapping for the model, e.g. '{channels: [8, 16, 16, 16]}'")
    p.add_argument("--formats", default="int2,int4,int8",
                   help="candidate formats per layer, comma-separated; 'W/A' sets a layer's input format too")
    p.add_argument("--act", default=None, help="input-activation format of every searched layer (default fp32)")
    p.add_argument("--eval-split", default="val", choices=("train", "val", "test"),
                   help="data to score on (default val)")
    p.add_argument("--eval-samples", type=int, default=None, help="use only the first N samples of the split")
    p.add_argument("--energy", default="horowitz", help="energy model: horowitz, relative, or a YAML/JSON file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder")
    return p


def _model_and_data(args, check=None):
    if args.eval_samples is not None and args.eval_samples < 1:
        raise UsageError(f"--eval-samples {args.eval_samples} is not allowed; allowed: an integer >= 1")
    import yaml

    from lowbit.data import load_dataset
    from lowbit.models import create_model
    splits = load_dataset(args.dataset, seed=args.seed)
    kwargs = {}
    if args.model_kwargs:
        try:
            kwargs = yaml.safe_load(args.model_kwargs)
        except yaml.YAMLError:
            kwargs = None
        if not isinstance(kwargs, dict):
            raise UsageError(f"--model-kwargs {args.model_kwargs!r} is not allowed; allowed: a YAML mapping "
                             f"such as '{{channels: [8, 16]}}'")
    torch.manual_seed(args.seed)
    try:
        model = create_model(args.model, num_classes=splits.num_classes, in_chans=splits.in_chans,
                             img_size=splits.img_size, **kwargs)
    except TypeError as exc:
        raise UsageError(f"--model-kwargs {args.model_kwargs!r} does not fit model {args.model}: {exc}") from None
    if check is not None:
        check(model, splits)      # e.g. the C export's supported layers, before any training
    if args.checkpoint:
        _load(model, args.checkpoint)
    elif args.train_quick:
        _train(model, splits, args)
    else:
        raise UsageError("no weights given; allowed: --checkpoint PATH or --train-quick")
    return model.eval(), splits


def _load(model, path):
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise UsageError(f"--checkpoint {path!r} cannot be read ({' '.join(str(exc).split())[:150]})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise UsageError(f"--checkpoint {path!r} does not fit this model ({' '.join(str(exc).split())[:150]}); "
                         f"allowed: weights of the same model and --model-kwargs") from None


def _train(model, splits, args):
    from lowbit.train import TrainConfig, train
    if args.epochs < 1:
        raise UsageError(f"--epochs {args.epochs} is not allowed; allowed: an integer >= 1")
    res = train(model, splits, TrainConfig(epochs=args.epochs, optimizer="adamw", lr=1e-2, weight_decay=1e-4,
                                           seed=args.seed))
    last = res["epochs"][-1]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    print(f"trained {args.model} on {args.dataset} for {args.epochs} epochs: val acc {100 * last['val_acc']:.2f}%, "
          f"test acc {100 * last['test_acc']:.2f}% (weights: {out / 'model.pt'})")


def _space(model, splits, args):
    from .costing import profile_layers
    from .space import build_space
    prof = profile_layers(model, (1, splits.in_chans, splits.img_size, splits.img_size))
    space = build_space(prof, args.formats, args.act)
    if getattr(args, "instructions_table", None):
        import dataclasses

        from lowbit.cost import InstructionTable
        table = InstructionTable.from_file(args.instructions_table, getattr(args, "program", "rv32imc_xlbmac"))
        space = dataclasses.replace(space, instructions=table)
    return space


def _energy(spec):
    from lowbit.cost import EnergyModel
    return EnergyModel.get(spec)


def _run(fn, argv, prog) -> int:
    try:
        return fn(argv)
    except (ValueError, ImportError) as exc:   # UsageError included; ImportError: an optional extra is missing
        print(f"{prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


def _table(df) -> str:
    return df.to_string(index=False, float_format=lambda v: f"{v:.4g}")


# ---- lowbit sensitivity -------------------------------------------------------------------------------
def cli_sensitivity(argv: list[str] | None = None) -> int:
    """Entry point of ``lowbit sensitivity``; returns the exit code."""
    return _run(_sensitivity, argv, "lowbit sensitivity")


def _sensitivity(argv) -> int:
    from .evaluate import EvalData
    from .sensitivity import METHODS, check_methods, layer_sensitivity, rank_agreement, ranking, write_sensitivity
    from .plots import render_search_report
    p = _common("lowbit sensitivity", "Per-layer sensitivity to quantization (only one layer quantized at a time).")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {', '.join(METHODS)}")
    p.add_argument("--probe", default=None, help="format whose scores are ranked (default: the cheapest)")
    p.add_argument("--hessian-probes", type=int, default=4, help="Rademacher probes for Hutchinson (default 4)")
    p.add_argument("--calib-samples", type=int, default=256, help="samples for Hessian / Fisher (default 256)")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:   # --help
        return int(exc.code or 0)
    args.out = args.out or "runs/sensitivity"
    methods = check_methods(args.methods)
    parse_choices(args.formats, args.act)
    for key in ("hessian_probes", "calib_samples"):
        if getattr(args, key) < 1:
            raise UsageError(f"--{key.replace('_', '-')} {getattr(args, key)} is not allowed; allowed: an integer >= 1")
    model, splits = _model_and_data(args)
    space = _space(model, splits, args)
    if args.probe is not None and args.probe not in space.labels:
        raise UsageError(f"--probe {args.probe!r} is not allowed; allowed: {', '.join(space.labels)}")
    data = EvalData.from_splits(splits, args.eval_split, args.eval_samples)
    df = layer_sensitivity(model, space, data, methods, hessian_probes=args.hessian_probes,
                           calib_samples=args.calib_samples, seed=args.seed)
    paths = write_sensitivity(df, args.out, args.probe)
    page = render_search_report(args.out)
    probe = args.probe or space.labels[0]
    print(f"sensitivity of {len(space.free)} layers x {len(space.choices)} formats on {len(data)} {args.eval_split} "
          f"samples, at {probe} (rank 1 = most sensitive):")
    print(_table(ranking(df, probe)))
    agree = rank_agreement(df, probe)
    if len(agree):
        print("\nrank agreement between methods:")
        print(_table(agree[["method_a", "method_b", "spearman", "kendall"]]))
    print(f"\nwrote {', '.join(str(v) for v in paths.values())}, {page}")
    return 0


# ---- lowbit search ------------------------------------------------------------------------------------
def _search_parser() -> _Parser:
    from .strategies import list_strategies
    p = _common("lowbit search", "Mixed-precision search: one format per layer, chosen by a strategy.")
    p.add_argument("--strategy", default="exhaustive", choices=list_strategies())
    p.add_argument("--max-acc-drop", type=float, default=1.0,
                   help="largest accuracy drop below fp32, percentage points (default 1.0)")
    p.add_argument("--budget-size-kb", type=float, help="weight size budget, KiB (1024 bytes)")
    p.add_argument("--budget-bitops", type=float, help="BitOps per sample budget")
    p.add_argument("--budget-energy", type=float, help="energy per sample budget (pJ)")
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
                        "on the first --calib-samples train samples as lowbit export c); default c with "
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
    p.add_argument("--max-points", type=int, default=None,
                   help="exhaustive (default 1024) / binary (default 2^20): prune tiny layers above this many points")
    p.add_argument("--prune-pct", type=float, default=1.0,
                   help="layers below this %% of MACs are pruned first, fixed at the dearest format (default 1)")
    p.add_argument("--n-trials", type=int, default=40, help="evolutionary: trials to run (default 40)")
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
    if s in ("exhaustive", "binary"):
        if args.max_points is not None:
            opt["max_points"] = args.max_points
        opt["prune_pct"] = args.prune_pct
    if s == "evolutionary":
        opt.update(n_trials=args.n_trials, storage=args.storage, study_name=args.study_name)
    if s == "ilp" and args.ilp_sweep:
        opt["sweep"] = args.ilp_sweep
    return opt


def cli_search(argv: list[str] | None = None) -> int:
    """Entry point of ``lowbit search``; returns the exit code."""
    return _run(_search, argv, "lowbit search")


def _search(argv) -> int:
    from .evaluate import EvalData, Evaluator
    from .plots import render_search_report
    from .problem import Problem
    from .strategies import run_search
    p = _search_parser()
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    args.out = args.out or "runs/search"
    budgets = {"size": args.budget_size_kb * 1024 if args.budget_size_kb is not None else None,
               "bitops": args.budget_bitops, "energy": args.budget_energy, "instructions": args.budget_instructions}
    budgets = {k: v for k, v in budgets.items() if v is not None}
    for flag in ("budget_size_kb", "budget_bitops", "budget_energy", "budget_instructions", "max_acc_drop"):
        v = getattr(args, flag)
        if v is not None and not (v > 0 or (flag == "max_acc_drop" and v == 0)):
            raise UsageError(f"--{flag.replace('_', '-')} {v:g} is not allowed; allowed: a number "
                             f"{'>= 0' if flag == 'max_acc_drop' else '> 0'}")
    objective = args.objective or (next(iter(budgets)) if len(budgets) == 1 else "size")
    for key, lo in (("workers", 1), ("finetune_epochs", 0), ("n_trials", 1), ("ilp_sweep", 0)):
        if getattr(args, key) < lo:
            raise UsageError(f"--{key.replace('_', '-')} {getattr(args, key)} is not allowed; "
                             f"allowed: an integer >= {lo}")
    options = _options(args)
    parse_choices(args.formats, args.act)
    target = _target(args, objective)
    energy = _energy(args.energy)
    model, splits = _model_and_data(args, _c_check if target == "c" else None)
    space = _space(model, splits, args)
    data = EvalData.from_splits(splits, args.eval_split, args.eval_samples)
    with _evaluator(target, model, splits, data, args) as ev:
        problem = Problem(model, space, ev, objective, budgets, args.max_acc_drop, energy, seed=args.seed)
        result = run_search(problem, args.strategy, finetune_epochs=args.finetune_epochs, splits=splits, **options)
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
    target = args.target or ("c" if objective == "cycles" else "fake-quant")
    if objective in ("cycles",) and not args.instructions_table:
        raise UsageError("--objective cycles needs --instructions-table FILE (lowbit export c --measure-instructions)")
    if target == "c":
        bad = [c.label for c in parse_choices(args.formats, args.act) if c.act is not None or c.weight not in
               ("int2", "int4", "int8")]
        if bad:
            raise UsageError(f"--formats {bad[0]!r} is not allowed with --target c; allowed: int2, int4, int8 "
                             f"(weights; the C export's activations are 8-bit)")
        if args.workers != 1 or args.executor != "local" or args.finetune_epochs:
            raise UsageError("--target c evaluates in this process; allowed: --workers 1, --executor local, "
                             "--finetune-epochs 0")
    return target


def _c_check(model, splits):
    from lowbit.export.c.graph import trace
    trace(model, (splits.in_chans, splits.img_size, splits.img_size))


def _evaluator(target, model, splits, data, args):
    from .evaluate import Evaluator
    if target != "c":
        return Evaluator(model, data, workers=args.workers, executor=args.executor, address=args.address)
    from lowbit.data import normalize
    from lowbit.export.c.evaluate import IntegerEvaluator
    calib = normalize(splits.train.x[:args.calib_samples], splits.mean, splits.std)
    return IntegerEvaluator(model, data, calib)


def _print_speedup(result, space, path):
    """Cycles of the chosen assignment in both programs of a version 2 table, and their ratio."""
    from lowbit.cost import InstructionTable, model_cost
    from .costing import plan_of
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
    layers = result.layer_table()
    cols = [c for c in ("layer", "type", "macs", "params", "format", "weight_bytes", "bitops", "energy_pj")
            if c in layers]
    print(f"chosen assignment ({args.strategy}, {len(space.free)} free layers, formats {', '.join(space.labels)}):")
    print(_table(layers[cols]))
    c = result.chosen
    print(str(result))
    print("cost: " + ", ".join(f"{m} {c[m]:.4g}" for m in METRICS if m in c))
    ft = result.finetune
    if ft:
        print(f"QAT fine-tuning {ft['epochs']} epochs: val acc {100 * ft['val_acc_before']:.2f}% -> "
              f"{100 * ft['val_acc_after']:.2f}%, test acc {100 * ft['test_acc_before']:.2f}% -> "
              f"{100 * ft['test_acc_after']:.2f}%")
