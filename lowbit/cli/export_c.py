"""``lowbit export c``: float model + calibration data -> integer-only C99 (host, RV32IMC, RV32IMC + Xlbmac),
checked bit for bit against the golden Python integer reference (library: :func:`lowbit.export.export_c`).

    lowbit export c --train-quick --model cnn --dataset digits --weights-bits 4 --out /tmp/c_cnn
    lowbit export c --checkpoint runs/xyz --model mlp --weights-bits fc1=2,8 --multiplier 7 --out DIR --riscv
    lowbit export c --checkpoint search --recipe search/recipe.yaml --emulate --out DIR
    lowbit export c --train-quick --model cnn --measure-instructions 2,4,8 --out DIR

Output: DIR (plain program: model.h, model.c, golden.h, main.c, manifest.json) and DIR/ext (the
RV32IMC + Xlbmac program); see :mod:`lowbit.export.c.export`. Prints the report; exit code 1 on a C
mismatch, 2 on bad input (one line on stderr).
"""
from __future__ import annotations

import sys
from pathlib import Path

from lowbit.cli.common import UsageError, add_command, check_out, positive
from lowbit.cli.source import add_backend_arg, add_calib_args, add_source_args, load_source


def add_parser(sub):
    p = add_command(sub, "c", run, "integer-only C99 (host, RV32IMC, RV32IMC + Xlbmac), checked bit for bit",
                    __doc__.split("\n\n")[0], errors=(ValueError, OSError, ImportError, RuntimeError))
    add_source_args(p)
    p.add_argument("--out", required=True, help="output directory for the C sources")
    p.add_argument("--weights-bits", default=None, help="2, 4, 8 (default 8), or per layer: NAME=BITS,...[,DEFAULT] "
                   "with NAME a module path (features.0.0) or the printed layer table's name (features_0_0); "
                   "depthwise convs stay 8 unless named")
    p.add_argument("--recipe", default=None, metavar="FILE",
                   help="a lowbit recipe (YAML/JSON, e.g. lowbit search's recipe.yaml): int2/int4/int8 weights "
                        "per layer (instead of --weights-bits)")
    add_calib_args(p)
    add_backend_arg(p)
    p.add_argument("--eval-samples", type=int, default=None, help="test samples to score (default: all)")
    p.add_argument("--golden", type=int, default=100, help="golden inputs written to golden.h")
    p.add_argument("--multiplier", type=int, choices=(31, 7), default=31)
    p.add_argument("--riscv", action="store_true", help="also build the plain program for RV32IMC and run it under QEMU")
    p.add_argument("--emulate", action="store_true", help="run the plain and the Xlbmac programs under unicorn: "
                   "bit-exact check, instructions and cycles per layer, the speed-up")
    p.add_argument("--memory", default=None, help="RISC-V memory, e.g. flash=16M,ram=4M (default: sized from the model)")
    p.add_argument("--no-build", action="store_true", help="only write the sources")
    p.add_argument("--measure-instructions", default=None, metavar="BITS",
                   help="e.g. 2,4,8: run both programs at each weight width and write OUT/instructions.json "
                        "(instructions and cycles), the measured cost table for lowbit search --instructions-table")
    return p


def _bits(args):
    from lowbit.export.c.bits import parse_bits
    if args.recipe and args.weights_bits:
        raise UsageError("give --recipe or --weights-bits, not both")
    if args.recipe:
        from lowbit.nn import Recipe
        try:
            text = Path(args.recipe).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--recipe {args.recipe!r} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
        return Recipe.from_yaml(text)
    return parse_bits(args.weights_bits or "8")


def _widths(text: str) -> tuple:
    msg = f"--measure-instructions {text!r} is not allowed; allowed: comma-separated weight widths from 2, 4, 8"
    try:
        widths = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise UsageError(msg) from None
    if not widths or any(b not in (2, 4, 8) for b in widths):
        raise UsageError(msg)
    return widths


def c_check(model, input_shape) -> None:
    """Refuse layers the C export cannot express, before any training (one-line UnsupportedLayerError)."""
    from lowbit.export.c.graph import trace
    trace(model, tuple(input_shape[1:]))


def run(args) -> int:
    from lowbit.data import normalize
    from lowbit.export import export_c
    from lowbit.export.c.build import parse_memory
    from lowbit.ptq import calibration_inputs

    bits = _bits(args)
    memory = parse_memory(args.memory)
    widths = _widths(args.measure_instructions) if args.measure_instructions else None
    positive("--calib-samples", args.calib_samples)
    positive("--eval-samples", args.eval_samples)
    out = check_out(args.out)
    src = load_source(args, out, check=c_check)
    splits = src.splits
    cx = calibration_inputs(splits, args.calib_samples, args.seed)
    n = args.eval_samples
    ex, ey = normalize(splits.test.x[:n], splits.mean, splits.std), splits.test.y[:n]
    if widths:
        return _measure(src.model, cx, ex, out, widths, args.multiplier, memory)
    rep = export_c(src.model, cx, ex, ey, out, bits, args.multiplier, args.golden,
                   build=not args.no_build, riscv=args.riscv, emulate=args.emulate, memory=memory)
    _print(rep)
    bad = any(rep.get(k, {}).get("mismatches", 0) != 0 for k in ("host", "riscv"))
    bad |= any(v.get("mismatches", 0) != 0 for v in rep.get("emulated", {}).values())
    return 1 if bad else 0


def _measure(model, cx, ex, out: Path, widths, multiplier, memory) -> int:
    from lowbit.export.c.measure import measure_instructions
    tables = measure_instructions(model, cx, ex, out, widths, multiplier, memory)
    for prog, t in tables.items():
        print(f"{prog}: instructions / cycles per inference, by layer and weight width")
        for name, per in sorted(t.layers.items()):
            print(f"  {name:<20} " + "  ".join(f"int{b}: {int(n):>10,} / {int(t.cycles[name][b]):>10,}"
                                              for b, n in sorted(per.items())))
        print(f"  {'(other operations)':<20} {int(t.fixed):,} / {int(t.fixed_cycles):,}")
    print(f"wrote {out / 'instructions.json'}")
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


def main(argv=None) -> int:
    from lowbit.cli import main as lowbit
    return lowbit(["export", "c", *(sys.argv[1:] if argv is None else argv)])
