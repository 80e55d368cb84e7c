"""``lowbit export c``: float model + calibration data -> integer-only C99 (host, RV32IMC, RV32IMC + Xlbmac),
checked bit for bit against the golden Python integer reference.

    lowbit export c --train-quick --model cnn --dataset digits --weights-bits 4 --out /tmp/c_cnn
    lowbit export c runs/xyz --model mlp --dataset digits --weights-bits fc1=2,8 --multiplier 7 --out DIR --riscv
    lowbit export c search/model.pt --model cnn --recipe search/recipe.yaml --emulate --out DIR
    lowbit export c --train-quick --model cnn --measure-instructions 2,4,8 --out DIR

Output: DIR (plain program: model.h, model.c, golden.h, main.c, manifest.json) and DIR/ext (the
RV32IMC + Xlbmac program); see :mod:`lowbit.export.c.export`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .bits import parse_bits
from .build import parse_memory
from .export import export_c
from .graph import trace


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lowbit export c", description=__doc__.split("\n\n")[0])
    ap.add_argument("target", nargs="?", help="run directory (best.pt/checkpoint.pt) or checkpoint file; with "
                                              "--train-quick, the run directory to train into (optional)")
    ap.add_argument("--out", required=True, help="output directory for the C sources")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--model-kwargs", default=None, help="JSON object, e.g. '{\"channels\": [16, 32, 32]}'")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--weights-bits", default=None, help="2, 4, 8 (default 8), or per layer: NAME=BITS,...[,DEFAULT] "
                    "with NAME a module path (features.0.0) or the printed layer table's name (features_0_0); "
                    "depthwise convs stay 8 unless named")
    ap.add_argument("--recipe", default=None, metavar="FILE",
                    help="a lowbit recipe (YAML/JSON, e.g. lowbit search's recipe.yaml): int2/int4/int8 weights "
                         "per layer (instead of --weights-bits)")
    ap.add_argument("--calib-samples", type=int, default=256)
    ap.add_argument("--eval-samples", type=int, default=0, help="test samples to score (0: all)")
    ap.add_argument("--golden", type=int, default=100, help="golden inputs written to golden.h")
    ap.add_argument("--multiplier", type=int, choices=(31, 7), default=31)
    ap.add_argument("--train-quick", action="store_true", help="train the model on --dataset first")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--riscv", action="store_true", help="also build the plain program for RV32IMC and run it under QEMU")
    ap.add_argument("--emulate", action="store_true", help="run the plain and the Xlbmac programs under unicorn: "
                    "bit-exact check, instructions and cycles per layer, the speed-up")
    ap.add_argument("--memory", default=None, help="RISC-V memory, e.g. flash=16M,ram=4M (default: sized from the model)")
    ap.add_argument("--no-build", action="store_true", help="only write the sources")
    ap.add_argument("--measure-instructions", default=None, metavar="BITS",
                    help="e.g. 2,4,8: run both programs at each weight width and write OUT/instructions.json "
                         "(instructions and cycles), the measured cost table for lowbit search --instructions-table")
    return ap


def _load(args):
    from lowbit.data import load_dataset, normalize
    from lowbit.ptq.checkpoint import build_model, load_into, parse_model_kwargs, quick_model_kwargs, train_quick
    splits = load_dataset(args.dataset, seed=args.seed)
    kwargs = parse_model_kwargs(args.model_kwargs) if args.model_kwargs else (
        quick_model_kwargs(args.model) if args.train_quick else {})
    torch.manual_seed(args.seed)
    model = build_model(args.model, args.dataset, kwargs)
    trace(model, (splits.in_chans, splits.img_size, splits.img_size))   # unsupported layers: refused before training
    if args.train_quick:
        train_quick(model, splits, epochs=args.epochs, seed=args.seed, run_dir=args.target)
    elif args.target:
        p = Path(args.target)
        if p.is_dir():
            p = next((p / n for n in ("best.pt", "checkpoint.pt", "model.pt") if (p / n).is_file()), p / "checkpoint.pt")
        load_into(model, p)
    else:
        raise ValueError("give MODEL_RUN_OR_CHECKPOINT (a run directory or checkpoint file) or --train-quick")

    def prep(split, n=None):
        x = split.x[:n] if n else split.x
        return normalize(x, splits.mean, splits.std), split.y[:n] if n else split.y
    cx, _ = prep(splits.train, args.calib_samples)
    ex, ey = prep(splits.test, args.eval_samples or None)
    return model, cx, ex, ey


def _bits(args):
    if args.recipe and args.weights_bits:
        raise ValueError("give --recipe or --weights-bits, not both")
    if args.recipe:
        from lowbit.nn import Recipe
        try:
            text = Path(args.recipe).read_text()
        except OSError as exc:
            raise ValueError(f"--recipe {args.recipe!r} cannot be read ({exc.strerror})") from None
        return Recipe.from_yaml(text)
    return parse_bits(args.weights_bits or "8")


def cli_c(argv=None) -> int:
    """``lowbit export c``: see the module docstring; prints the report, exit 1 on a C mismatch."""
    args = _parser().parse_args(argv)
    try:
        bits = _bits(args)
        memory = parse_memory(args.memory)
        widths = _widths(args.measure_instructions) if args.measure_instructions else None
        model, cx, ex, ey = _load(args)
        if widths:
            return _measure(model, cx, ex, args, widths, memory)
        rep = export_c(model, cx, ex, ey, args.out, bits, args.multiplier, args.golden,
                       build=not args.no_build, riscv=args.riscv, emulate=args.emulate, memory=memory)
    except (ValueError, RuntimeError) as exc:
        print(f"lowbit export c: error: {' '.join(str(exc).split())[:600]}", file=sys.stderr)
        return 2
    _print(rep)
    bad = any(rep.get(k, {}).get("mismatches", 0) != 0 for k in ("host", "riscv"))
    bad |= any(v.get("mismatches", 0) != 0 for v in rep.get("emulated", {}).values())
    return 1 if bad else 0


def _widths(text: str) -> tuple:
    msg = (f"--measure-instructions {text!r} is not allowed; allowed: comma-separated weight widths from 2, 4, 8")
    try:
        widths = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise ValueError(msg) from None
    if not widths or any(b not in (2, 4, 8) for b in widths):
        raise ValueError(msg)
    return widths


def _measure(model, cx, ex, args, widths, memory) -> int:
    from .measure import measure_instructions
    tables = measure_instructions(model, cx, ex, args.out, widths, args.multiplier, memory)
    for prog, t in tables.items():
        print(f"{prog}: instructions / cycles per inference, by layer and weight width")
        for name, per in sorted(t.layers.items()):
            print(f"  {name:<20} " + "  ".join(f"int{b}: {int(n):>10,} / {int(t.cycles[name][b]):>10,}"
                                              for b, n in sorted(per.items())))
        print(f"  {'(other operations)':<20} {int(t.fixed):,} / {int(t.fixed_cycles):,}")
    print(f"wrote {Path(args.out) / 'instructions.json'}")
    return 0


def _print(rep: dict) -> None:
    print(f"format {rep['format_version']}, {rep['multiplier_bits']}-bit multipliers, "
          f"{len(rep['layers'])} layers, weight bytes {rep['weight_bytes']}")
    for l in rep["layers"]:
        print(f"  {l['name']:<16} {l['kind']:<9} bits={l['bits'] or '-':<2} clamp={l['clamp']}")
    if "accuracy" in rep:
        a = rep["accuracy"]
        print(f"accuracy on {a['samples']}: fp32 {a['fp32']:.4f}  fake-quant {a['fake_quant']:.4f}  "
              f"integer {a['integer']:.4f}")
    if "host" in rep:
        print(f"host cc: {rep['host']['mismatches']} mismatches on {rep['golden_inputs']} golden inputs")
    if "riscv" in rep:
        r = rep["riscv"]
        if "skipped" in r:
            print(f"riscv: skipped ({r['skipped']})")
        else:
            print(f"riscv (rv32imc, qemu): {r['mismatches']} mismatches; instret/inference "
                  f"{r['instret_per_inference']}; size {r['size']}")
            for k, v in r["layer_instret"].items():
                print(f"  {k:<16} {v}")
    for prog, e in rep.get("emulated", {}).items():
        if "skipped" in e:
            print(f"{prog} (unicorn): skipped ({e['skipped']})")
            continue
        print(f"{prog} (unicorn): {e['mismatches']} mismatches on {rep['golden_inputs']} golden inputs; "
              f"per inference {e.get('instructions', 0):,} instructions, {e.get('cycles', 0):,} cycles")
    if "speedup_cycles" in rep:
        print(f"speed-up of rv32imc_xlbmac over rv32imc: {rep['speedup_cycles']:.2f}x cycles")
    print("files: " + ", ".join(Path(f).name for f in rep["files"][:5]) + " (+ ext/)")
