"""``lowbit ptq``: calibrate a trained model, sweep weight x activation formats, print and save the table.

    lowbit ptq --train-quick --model cnn --dataset digits --weights int8,int4,int2 --acts none,int8,int4
    lowbit ptq --checkpoint runs/x/best.pt --model cnn --dataset digits --weights int4 --acts int8 \\
               --calib mse --per-channel --bias-correction
    lowbit ptq --train-quick --weights fp8_e4m3,mxfp8_e4m3,mxfp4,nvfp4 --acts none
    lowbit ptq --checkpoint runs/search/model.pt --model cnn --dataset digits --recipe runs/search/recipe.yaml

Writes OUT/ptq_results.csv, OUT/ptq_layers.csv (lowbit.cost per layer of the selected row: the recipe
row, else the smallest row within 1 pp of fp32, else the most accurate), the figures ptq_parallel.png
(W x A parallel coordinates) and ptq_energy.png, and the self-contained page OUT/ptq_report.html.

Bad input: one line on stderr naming the value and what is allowed, exit code 2.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from lowbit.cli.common import UsageError, add_command, check_out, format_list, positive
from lowbit.cli.source import add_backend_arg, add_calib_args, add_source_args, load_source, provenance


def add_parser(sub):
    from lowbit.ptq.observers import METHODS
    p = add_command(sub, "ptq", run, "post-training quantization: calibrate, W x A sweep, packed size", (
        "Post-training quantization: calibrate fixed scales on training samples, evaluate every weight x "
        "activation format pair on the test split, report accuracy, drop vs FP32 and the packed size."))
    add_source_args(p)
    p.add_argument("--recipe", default=None,
                   help="a mixed-precision recipe YAML (e.g. lowbit search's recipe.yaml): calibrate and "
                        "evaluate the model with its per-layer formats instead of the --weights x --acts sweep")
    p.add_argument("--weights", default="int8,int4,int2", help="comma-separated weight formats; none = fp32")
    p.add_argument("--acts", default="int8", help="comma-separated activation formats; none = fp32 (weight-only)")
    p.add_argument("--calib", default="minmax", help=f"activation observer: {', '.join(METHODS)}")
    p.add_argument("--weight-calib", default="minmax", help=f"weight observer: {', '.join(METHODS)}")
    p.add_argument("--percentile", type=float, default=99.99, help="percentile for --calib percentile (default 99.99)")
    add_calib_args(p)
    p.add_argument("--per-channel", action="store_true",
                   help="one weight scale per output channel (default per tensor)")
    p.add_argument("--bias-correction", action="store_true", help="empirical bias correction (Nagel et al. 2019)")
    p.add_argument("--keep-first-last", action="store_true", help="first and last weight layer stay fp32")
    p.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the preceding conv before quantizing")
    p.add_argument("--direct-cast", action="store_true", help="minifloat formats without any scale (a plain cast)")
    add_backend_arg(p, default="auto")
    p.add_argument("--out", default="runs/ptq", help="output directory for ptq_results.csv (default runs/ptq)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    p.add_argument("--log", choices=("tensorboard", "mlflow", "wandb"), default=None,
                   help="also log each W x A row as a tracker run under --out (parallel coordinates "
                   "in the tracker's UI; needs that package; wandb runs offline)")
    return p


def _config(args):
    from lowbit.ptq.calibrate import PTQConfig
    from lowbit.ptq.observers import METHODS
    for flag, v in (("--calib", args.calib), ("--weight-calib", args.weight_calib)):
        if v not in METHODS:
            raise UsageError(f"{flag} {v!r} is not allowed; allowed: {', '.join(METHODS)}")
    positive("--calib-samples", args.calib_samples)
    positive("--epochs", args.epochs)
    return PTQConfig(calib=args.calib, weight_calib=args.weight_calib, percentile=args.percentile,
                     calib_samples=args.calib_samples, per_channel=args.per_channel,
                     bias_correction=args.bias_correction, keep_first_last=args.keep_first_last,
                     fold_bn=args.fold_bn, direct_cast=args.direct_cast, backend=args.backend)


def run(args) -> int:
    from lowbit.ptq import format_table, ptq_sweep, recipe_rows, write_csv

    if not args.checkpoint and not args.train_quick:
        raise UsageError("no model given; allowed: --checkpoint PATH or --train-quick "
                         "(PATH: a checkpoint file or a run folder)")
    weights, acts = format_list("--weights", args.weights), format_list("--acts", args.acts)
    recipe = read_recipe("--recipe", args.recipe) if args.recipe else None
    cfg = _config(args)
    out = check_out(args.out)
    if args.log:
        from lowbit.experiments.tracking import make_logger
        make_logger(args.log, out)    # a missing tracker package fails now, not after the sweep
    src = load_source(args, out)
    model, splits = src.model, src.splits
    meta = {**src.meta(), **provenance()}
    if recipe is not None:
        meta["recipe"] = str(args.recipe)
        rows = recipe_rows(model, splits, recipe, cfg, seed=args.seed, meta=meta,
                           label=recipe.name or Path(args.recipe).stem)
    else:
        rows = ptq_sweep(model, splits, weights, acts, cfg, seed=args.seed, meta=meta)
    path = write_csv(rows, out / "ptq_results.csv")
    page = _report(src, rows, recipe, cfg, out)
    if args.log:
        from lowbit.experiments.tracking import log_ptq
        log_ptq(rows, args.log, out, sweep=f"ptq-{src.name}")
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
    else:
        print(f"PTQ of {src.name} on {src.dataset}: calib={cfg.calib} (weights {cfg.weight_calib}), "
              f"{len(rows) and rows[0]['calib_samples']} samples, {'per-channel' if cfg.per_channel else 'per-tensor'} "
              f"weights{', bias correction' if cfg.bias_correction else ''}"
              f"{', first/last fp32' if cfg.keep_first_last else ''}{', BN folded' if cfg.fold_bn else ''}"
              f"{', minifloats direct-cast (no scale)' if cfg.direct_cast else ''}")
        print(format_table(rows))
        print(f"packed: measured from lowbit.encode + lowbit.pack of every quantized weight, plus scales, plus "
              f"other parameters in fp32; cost-model: lowbit.cost from the formats. Saved {path}, {page}")
    return 0


def read_recipe(flag: str, path):
    """A :class:`lowbit.nn.Recipe` from a YAML file; one-line UsageError when missing or invalid."""
    from lowbit.nn import Recipe
    if not Path(path).is_file():
        raise UsageError(f"{flag} {str(path)!r} does not exist; allowed: a recipe YAML file "
                         f"(e.g. the recipe.yaml written by lowbit search)")
    try:
        return Recipe.from_yaml(Path(path))
    except Exception as exc:  # noqa: BLE001 - yaml / recipe errors: one line
        raise UsageError(f"{flag} {str(path)!r} is not a valid recipe ({' '.join(str(exc).split())[:200]})") \
            from None


def _report(src, rows, recipe, cfg, out: Path) -> Path:
    """ptq_layers.csv of the selected row, the figures and ptq_report.html (lowbit.report.sections)."""
    import pandas as pd

    from lowbit.ptq import layer_costs, ptq_recipe, select_row
    from lowbit.report.sections import PTQ_LAYERS, render_ptq_report
    sel = rows[-1] if recipe is not None else select_row(rows)
    if sel is not None:
        if recipe is None:
            recipe = ptq_recipe(None if sel["weights"] == "fp32" else sel["weights"],
                                None if sel["acts"] == "fp32" else sel["acts"],
                                "channel" if cfg.per_channel else "tensor", cfg.direct_cast, cfg.keep_first_last)
        pd.DataFrame(layer_costs(src.model, src.input_shape, recipe)) \
            .assign(selected=f"{sel['weights']} x {sel['acts']}").to_csv(out / PTQ_LAYERS, index=False)
    elif (out / PTQ_LAYERS).exists():
        (out / PTQ_LAYERS).unlink()
    return render_ptq_report(out)


def main(argv=None) -> int:
    from lowbit.cli import main as lowbit
    return lowbit(["ptq", *(sys.argv[1:] if argv is None else argv)])
