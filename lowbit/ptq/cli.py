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

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

from lowbit.cli_util import OneLineParser, run_cli, tensor_format

from .observers import METHODS




def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="lowbit ptq", description=(
        "Post-training quantization: calibrate fixed scales on training samples, evaluate every weight x "
        "activation format pair on the test split, report accuracy, drop vs FP32 and the packed size."))
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint",
                     help="trained weights: lowbit.train's best.pt/checkpoint.pt, a state dict, .safetensors")
    src.add_argument("--train-quick", action="store_true",
                     help="train the model on the dataset first (lowbit.train; without --model-kwargs, at the "
                          "small size of the built-in sweep, e.g. cnn channels [16, 32, 32])")
    p.add_argument("--model", default="cnn", help="zoo model name (default cnn)")
    p.add_argument("--model-kwargs", default=None,
                   help="JSON object of model options, e.g. '{\"channels\": [16,32,64,64]}'")
    p.add_argument("--dataset", default="digits", help="dataset name (default digits)")
    p.add_argument("--recipe", default=None,
                   help="a mixed-precision recipe YAML (e.g. lowbit search's recipe.yaml): calibrate and "
                        "evaluate the model with its per-layer formats instead of the --weights x --acts sweep")
    p.add_argument("--weights", default="int8,int4,int2", help="comma-separated weight formats; none = fp32")
    p.add_argument("--acts", default="int8", help="comma-separated activation formats; none = fp32 (weight-only)")
    p.add_argument("--calib", default="minmax", help=f"activation observer: {', '.join(METHODS)}")
    p.add_argument("--weight-calib", default="minmax", help=f"weight observer: {', '.join(METHODS)}")
    p.add_argument("--percentile", type=float, default=99.99, help="percentile for --calib percentile (default 99.99)")
    p.add_argument("--calib-samples", type=int, default=256, help="calibration samples from the train split")
    p.add_argument("--per-channel", action="store_true",
                   help="one weight scale per output channel (default per tensor)")
    p.add_argument("--bias-correction", action="store_true", help="empirical bias correction (Nagel et al. 2019)")
    p.add_argument("--keep-first-last", action="store_true", help="first and last weight layer stay fp32")
    p.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the preceding conv before quantizing")
    p.add_argument("--direct-cast", action="store_true", help="minifloat formats without any scale (a plain cast)")
    p.add_argument("--epochs", type=int, default=5, help="--train-quick epochs (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of training, data split and calibration subset")
    p.add_argument("--backend", default="auto",
                   help="quantize kernels: auto (default: the native CPU kernels where they apply), eager, compiled, "
                        "native; all agree bit for bit")
    p.add_argument("--out", default="runs/ptq", help="output directory for ptq_results.csv (default runs/ptq)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    return p


def cli_ptq(argv=None) -> int:
    return run_cli("lowbit ptq", _parser(), _run, argv)


def _formats(flag: str, text: str) -> list:
    out = []
    for item in [t.strip() for t in text.split(",") if t.strip()]:
        if item.lower() in ("none", "fp32"):
            out.append(None)
            continue
        out.append(tensor_format(flag, item, also=", or none"))
    if not out:
        raise ValueError(f"{flag} {text!r} names no format; allowed: a comma-separated list such as int8,int4")
    return out


def _config(args):
    from .calibrate import PTQConfig
    for flag, v in (("--calib", args.calib), ("--weight-calib", args.weight_calib)):
        if v not in METHODS:
            raise ValueError(f"{flag} {v!r} is not allowed; allowed: {', '.join(METHODS)}")
    if args.calib_samples < 1:
        raise ValueError(f"--calib-samples {args.calib_samples} is not allowed; allowed: an integer >= 1")
    if args.epochs < 1:
        raise ValueError(f"--epochs {args.epochs} is not allowed; allowed: an integer >= 1")
    return PTQConfig(calib=args.calib, weight_calib=args.weight_calib, percentile=args.percentile,
                     calib_samples=args.calib_samples, per_channel=args.per_channel,
                     bias_correction=args.bias_correction, keep_first_last=args.keep_first_last,
                     fold_bn=args.fold_bn, direct_cast=args.direct_cast, backend=args.backend)


def _model(args, splits, kwargs):
    import torch

    from .checkpoint import build_model, load_into, train_quick
    torch.manual_seed(args.seed)
    model = build_model(args.model, args.dataset, kwargs)
    if args.checkpoint:
        return load_into(model, args.checkpoint)
    key = json.dumps([args.model, args.dataset, kwargs, args.epochs, args.seed], sort_keys=True)
    run_dir = Path(args.out) / f"train_quick_{args.model}_{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    t0 = time.perf_counter()
    out = train_quick(model, splits, epochs=args.epochs, seed=args.seed, run_dir=run_dir)
    s = out["summary"]
    print(f"trained {args.model} {json.dumps(kwargs)} on {args.dataset}: {s.get('epochs_run')} epochs, test acc "
          f"{100 * s.get('final_test_acc', float('nan')):.2f}% ({time.perf_counter() - t0:.1f}s; "
          f"weights in {run_dir}/best.pt)", file=sys.stderr)
    return model


def _run(args) -> int:
    from lowbit.data import load_dataset

    from .checkpoint import parse_model_kwargs, quick_model_kwargs
    from .sweep import format_table, ptq_sweep, recipe_rows, write_csv

    if not args.checkpoint and not args.train_quick:
        raise ValueError("no model given; allowed: --checkpoint PATH or --train-quick")
    weights, acts = _formats("--weights", args.weights), _formats("--acts", args.acts)
    recipe = _recipe(args.recipe) if args.recipe else None
    cfg = _config(args)
    kwargs = parse_model_kwargs(args.model_kwargs)
    if args.train_quick and args.model_kwargs is None:
        kwargs = quick_model_kwargs(args.model)     # a small model: the built-in sweep's size
    splits = load_dataset(args.dataset, seed=args.seed)
    model = _model(args, splits, kwargs)
    meta = {"model": args.model, "model_kwargs": json.dumps(kwargs, sort_keys=True),
            "checkpoint": args.checkpoint or "train-quick"}
    if recipe is not None:
        meta["recipe"] = str(args.recipe)
        rows = recipe_rows(model, splits, recipe, cfg, seed=args.seed, meta=meta,
                           label=recipe.name or Path(args.recipe).stem)
    else:
        rows = ptq_sweep(model, splits, weights, acts, cfg, seed=args.seed, meta=meta)
    path = write_csv(rows, Path(args.out) / "ptq_results.csv")
    page = _report(model, splits, rows, recipe, weights, acts, cfg, Path(args.out))
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
    else:
        print(f"PTQ of {args.model} on {args.dataset}: calib={cfg.calib} (weights {cfg.weight_calib}), "
              f"{len(rows) and rows[0]['calib_samples']} samples, {'per-channel' if cfg.per_channel else 'per-tensor'} "
              f"weights{', bias correction' if cfg.bias_correction else ''}"
              f"{', first/last fp32' if cfg.keep_first_last else ''}{', BN folded' if cfg.fold_bn else ''}"
              f"{', minifloats direct-cast (no scale)' if cfg.direct_cast else ''}")
        print(format_table(rows))
        print(f"packed: measured from lowbit.encode + lowbit.pack of every quantized weight, plus scales, plus "
              f"other parameters in fp32; cost-model: lowbit.cost from the formats. Saved {path}, {page}")
    return 0


def _recipe(path):
    from lowbit.nn import Recipe
    if not Path(path).is_file():
        raise ValueError(f"--recipe {str(path)!r} does not exist; allowed: a recipe YAML file "
                         f"(e.g. the recipe.yaml written by lowbit search)")
    try:
        return Recipe.from_yaml(Path(path))
    except Exception as exc:  # noqa: BLE001 - yaml / recipe errors: one line
        raise ValueError(f"--recipe {str(path)!r} is not a valid recipe ({' '.join(str(exc).split())[:200]})") \
            from None


def _report(model, splits, rows, recipe, weights, acts, cfg, out: Path) -> Path:
    """ptq_layers.csv of the selected row, the figures and ptq_report.html (lowbit.report.sections)."""
    import pandas as pd

    from lowbit.report.sections import PTQ_LAYERS, render_ptq_report

    from .calibrate import ptq_recipe
    from .sweep import layer_costs, select_row
    sel = rows[-1] if recipe is not None else select_row(rows)
    if sel is not None:
        if recipe is None:
            recipe = ptq_recipe(None if sel["weights"] == "fp32" else sel["weights"],
                                None if sel["acts"] == "fp32" else sel["acts"],
                                "channel" if cfg.per_channel else "tensor", cfg.direct_cast, cfg.keep_first_last)
        shape = (1, splits.in_chans, splits.img_size, splits.img_size)
        pd.DataFrame(layer_costs(model, shape, recipe)).assign(selected=f"{sel['weights']} x {sel['acts']}") \
            .to_csv(out / PTQ_LAYERS, index=False)
    elif (out / PTQ_LAYERS).exists():
        (out / PTQ_LAYERS).unlink()
    return render_ptq_report(out)
