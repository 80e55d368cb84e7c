"""``lowbit sensitivity``: per-layer sensitivity to quantization (one layer quantized at a time).

    lowbit sensitivity --model cnn --dataset digits --train-quick --formats int2,int4,int8 --out runs/sens

Writes OUT/sensitivity.csv, ranking.csv, rank_agreement.csv, the figures and search_report.html; with
``--train-quick`` also OUT/model.pt + model.yaml, so ``lowbit search --checkpoint runs/sens`` reuses it.
"""
from __future__ import annotations

import sys

from lowbit.cli.common import UsageError, add_command, positive
from lowbit.cli.search import add_space_args, check_space_args, space_and_data, table


def add_parser(sub):
    from lowbit.search.sensitivity import METHODS
    p = add_command(sub, "sensitivity", run, "per-layer sensitivity to quantization",
                    "Per-layer sensitivity to quantization (only one layer quantized at a time).")
    add_space_args(p)
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {', '.join(METHODS)}")
    p.add_argument("--probe", default=None, help="format whose scores are ranked (default: the cheapest)")
    p.add_argument("--hessian-probes", type=int, default=4, help="Rademacher probes for Hutchinson (default 4)")
    p.add_argument("--calib-samples", type=int, default=256, help="samples for Hessian / Fisher (default 256)")
    return p


def run(args) -> int:
    from lowbit.report.plots_search import render_search_report
    from lowbit.search import layer_sensitivity, rank_agreement, ranking, write_sensitivity
    from lowbit.search.sensitivity import check_methods

    args.out = args.out or "runs/sensitivity"
    methods = check_methods(args.methods)
    check_space_args(args)
    positive("--hessian-probes", args.hessian_probes)
    positive("--calib-samples", args.calib_samples)
    src, space, data = space_and_data(args)
    if args.probe is not None and args.probe not in space.labels:
        raise UsageError(f"--probe {args.probe!r} is not allowed; allowed: {', '.join(space.labels)}")
    df = layer_sensitivity(src.model, space, data, methods, hessian_probes=args.hessian_probes,
                           calib_samples=args.calib_samples, seed=args.seed, on=args.sensitivity_on)
    paths = write_sensitivity(df, args.out, args.probe)
    page = render_search_report(args.out)
    probe = args.probe or space.labels[0]
    on = {"logits": "the model's logits", "output": "each layer's own output"}[args.sensitivity_on]
    print(f"sensitivity of {len(space.free)} layers x {len(space.choices)} formats on {len(data)} {args.eval_split} "
          f"samples, at {probe}; l2 / sqnr on {on} (rank 1 = most sensitive):")
    print(table(ranking(df, probe)))
    agree = rank_agreement(df, probe)
    if len(agree):
        print("\nrank agreement between methods:")
        print(table(agree[["method_a", "method_b", "spearman", "kendall"]]))
    print(f"\nwrote {', '.join(str(v) for v in paths.values())}, {page}")
    return 0


def main(argv=None) -> int:
    from lowbit.cli import main as lowbit
    return lowbit(["sensitivity", *(sys.argv[1:] if argv is None else argv)])
