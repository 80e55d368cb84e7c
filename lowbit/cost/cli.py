"""``lowbit cost``: size, BitOps, energy and instruction cost of a zoo model under a precision.

    lowbit cost --model cnn --dataset digits --weights int4 --acts int8 --per-layer
    lowbit cost --model cnn --dataset digits --weights mxfp4 --acts fp8_e4m3 --energy relative --json
    lowbit cost --model cnn --dataset digits --weights int8 --acts int8 --energy my_28nm.yaml

Bad input: one line on stderr naming the value and what is allowed, exit code 2.
"""
from __future__ import annotations

import argparse
import json

from lowbit.cli_util import OneLineParser, run_cli




def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="lowbit cost", description=(
        "Per-layer and total MACs, storage (with scale overhead), compression, BitOps, activation memory, "
        "energy (Horowitz ISSCC 2014 by default) and a SIMD instruction proxy."))
    p.add_argument("--model", default="cnn", help="zoo model name (default cnn)")
    p.add_argument("--dataset", default="digits", help="dataset that sets input shape and classes (default digits)")
    p.add_argument("--model-kwargs", default=None,
                   help="JSON object of model options, e.g. '{\"channels\": [16,32,64,64]}'")
    p.add_argument("--checkpoint", default=None,
                   help="weights to load (checks the architecture; costs do not depend on values)")
    p.add_argument("--weights", default="fp32",
                   help="weight format, e.g. int8, int4, mxfp4, nvfp4, fp8_e4m3 (default fp32)")
    p.add_argument("--acts", default="fp32", help="activation (layer input) format, or none/fp32 (default fp32)")
    p.add_argument("--per-channel", action="store_true", help="per-channel scales for integer/float weights "
                   "(default: lowbit.nn's defaults: per-channel ints, per-tensor minifloats)")
    p.add_argument("--per-tensor", action="store_true", help="one scale per weight tensor")
    p.add_argument("--keep-first-last", action="store_true", help="first and last weight layer stay fp32")
    p.add_argument("--energy", default="horowitz", help="horowitz | relative | PATH to a YAML/JSON constants file")
    p.add_argument("--batch", type=int, default=1, help="batch size of the profiling pass (costs are per sample)")
    p.add_argument("--per-layer", action="store_true", help="show every layer, not only the total")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def cli_cost(argv=None) -> int:
    return run_cli("lowbit cost", _parser(), _run, argv)


def _run(args) -> int:
    from lowbit.nn import quantize_model
    from lowbit.ptq.calibrate import ptq_recipe
    from lowbit.ptq.checkpoint import build_model, dataset_shape, load_into, parse_model_kwargs

    from . import EnergyModel, model_cost, plan_from_assignment, profile_layers

    if args.per_channel and args.per_tensor:
        raise ValueError("--per-channel and --per-tensor exclude each other; allowed: one of them")
    if args.batch < 1:
        raise ValueError(f"--batch {args.batch} is not allowed; allowed: an integer >= 1")
    energy = EnergyModel.get(args.energy)
    w = _checked("--weights", args.weights, _name)
    a = _checked("--acts", args.acts, _name)
    scaling = "channel" if args.per_channel else "tensor" if args.per_tensor else None
    model = build_model(args.model, args.dataset, parse_model_kwargs(args.model_kwargs))
    if args.checkpoint:
        load_into(model, args.checkpoint)
    c, size, _ = dataset_shape(args.dataset)
    layers = profile_layers(model, (args.batch, c, size, size))
    asg = quantize_model(model, ptq_recipe(w, a, scaling, keep_first_last=args.keep_first_last))
    report = model_cost(layers, plan_from_assignment(asg), energy)
    if args.json:
        print(json.dumps({"model": args.model, "dataset": args.dataset, "weights": args.weights, "acts": args.acts,
                          **report.to_dict()}, indent=1, default=str))
    else:
        print(f"{args.model} on {args.dataset} (input 1x{c}x{size}x{size}), weights {w or 'fp32'}, "
              f"acts {a or 'fp32'}{', first/last layer fp32' if args.keep_first_last else ''}")
        print(report.table(per_layer=args.per_layer))
    return 0


def _name(fmt):
    from lowbit.formats.registry import get_format
    return None if fmt.lower() in ("none", "fp32") else get_format(fmt).name


def _checked(flag: str, value, fn):
    try:
        return fn(value)
    except ValueError as exc:
        raise ValueError(f"{flag} {value!r}: {exc}") from None
