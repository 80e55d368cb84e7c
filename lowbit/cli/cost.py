"""``lowbit cost``: size, BitOps, energy and instruction cost of a zoo model under a precision.

    lowbit cost --model cnn --dataset digits --weights int4 --acts int8 --per-layer
    lowbit cost --model cnn --dataset digits --weights mxfp4 --acts fp8_e4m3 --energy relative --json
    lowbit cost --checkpoint runs/sens --weights int8 --acts int8 --energy my_28nm.yaml

Costs depend on the architecture only: without ``--checkpoint`` the model is freshly initialised (no
data is read for the registered datasets). Bad input: one line on stderr, exit code 2.
"""
from __future__ import annotations

import json
import sys

from lowbit.cli.common import UsageError, add_command, optional_format, positive
from lowbit.cli.source import add_source_args, load_source


def add_parser(sub):
    p = add_command(sub, "cost", run, "size, BitOps, energy and instruction cost of a model", (
        "Per-layer and total MACs, storage (with scale overhead), compression, BitOps, activation memory, "
        "energy (Horowitz ISSCC 2014 by default) and a SIMD instruction proxy."))
    add_source_args(p, train_quick=False)
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


def run(args) -> int:
    from lowbit.cost import EnergyModel, model_cost, plan_from_assignment, profile_layers
    from lowbit.nn import quantize_model
    from lowbit.ptq import ptq_recipe

    if args.per_channel and args.per_tensor:
        raise UsageError("--per-channel and --per-tensor exclude each other; allowed: one of them")
    positive("--batch", args.batch)
    energy = EnergyModel.get(args.energy)
    w, a = optional_format("--weights", args.weights), optional_format("--acts", args.acts)
    scaling = "channel" if args.per_channel else "tensor" if args.per_tensor else None
    src = load_source(args, need_data=False, required=False)
    _, c, size, _ = src.input_shape
    layers = profile_layers(src.model, (args.batch, c, size, size))
    asg = quantize_model(src.model, ptq_recipe(w, a, scaling, keep_first_last=args.keep_first_last))
    report = model_cost(layers, plan_from_assignment(asg), energy)
    if args.json:
        print(json.dumps({"model": src.name, "dataset": src.dataset, "weights": args.weights, "acts": args.acts,
                          **report.to_dict()}, indent=1, default=str))
    else:
        print(f"{src.name} on {src.dataset} (input 1x{c}x{size}x{size}), weights {w or 'fp32'}, "
              f"acts {a or 'fp32'}{', first/last layer fp32' if args.keep_first_last else ''}")
        print(report.table(per_layer=args.per_layer))
    return 0


def main(argv=None) -> int:
    from lowbit.cli import main as lowbit
    return lowbit(["cost", *(sys.argv[1:] if argv is None else argv)])
