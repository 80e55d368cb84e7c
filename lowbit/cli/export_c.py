"""``lowbit export c``: float model + calibration data -> integer-only C99 (host and RV32IMC), checked
bit for bit against the golden Python integer reference (library: :func:`lowbit.export.export_c`).

    lowbit export c --train-quick --model cnn --dataset digits --weights-bits 4 --out /tmp/c_cnn
    lowbit export c --checkpoint runs/xyz --model mlp --weights-bits fc1=2,8 --multiplier 7 --out DIR --riscv

Prints the report; exit code 1 on a C mismatch, 2 on bad input (one line on stderr).
"""
from __future__ import annotations

import sys
from pathlib import Path

from lowbit.cli.common import UsageError, add_command, check_out, positive
from lowbit.cli.source import add_backend_arg, add_calib_args, add_source_args, load_source


def add_parser(sub):
    p = add_command(sub, "c", run, "integer-only C99 (host, RV32IMC), checked bit for bit",
                    __doc__.split("\n\n")[0], errors=(ValueError, OSError, ImportError, RuntimeError))
    add_source_args(p)
    p.add_argument("--out", required=True, help="output directory for the C sources")
    p.add_argument("--weights-bits", default="8", help="2, 4, 8, or per layer: NAME=BITS,...[,DEFAULT] with NAME as "
                   "in the printed layer table (torch.fx node names: dots become underscores); depthwise convs stay "
                   "8 unless named")
    add_calib_args(p)
    add_backend_arg(p)
    p.add_argument("--eval-samples", type=int, default=None, help="test samples to score (default: all)")
    p.add_argument("--golden", type=int, default=100, help="golden inputs written to golden.h")
    p.add_argument("--multiplier", type=int, choices=(31, 7), default=31)
    p.add_argument("--riscv", action="store_true", help="also build for RV32IMC and run under QEMU")
    p.add_argument("--no-build", action="store_true", help="only write the sources")
    p.add_argument("--measure-instructions", default=None, metavar="BITS",
                   help="e.g. 2,4,8: run on RV32IMC at each weight width and write OUT/instructions.json, "
                        "the measured cost table for lowbit search --instructions-table")
    return p


def parse_bits(text: str):
    """'4' -> 4; 'conv1=2,fc=8,4' -> per-layer bits with a default (a bare number; else 8)."""
    if "=" not in text:
        return _bits(text)
    out = {}
    for part in text.split(","):
        name, _, val = part.rpartition("=")
        out[name.strip() or "*"] = _bits(val)
    return PerLayer({k: v for k, v in out.items() if k != "*"}, out.get("*", 8))


def _bits(v: str) -> int:
    if v.strip() not in ("2", "4", "8"):
        raise UsageError(f"--weights-bits value {v!r} is not allowed; allowed: 2, 4, 8 (or NAME=BITS,...)")
    return int(v)


class PerLayer(dict):
    """Per-layer bits with a default for names not listed (depthwise convs keep 8 unless named)."""

    def __init__(self, spec: dict, default: int):
        super().__init__(spec)
        self.default = default

    def get(self, key, _=None):
        return super().get(key, self.default)


def _widths(text: str) -> tuple:
    try:
        widths = tuple(int(b) for b in text.split(","))
    except ValueError:
        widths = ()
    if not widths or any(b not in (2, 4, 8) for b in widths):
        raise UsageError(f"--measure-instructions {text!r} is not allowed; allowed: comma-separated weight "
                         f"widths from 2, 4, 8")
    return widths


def run(args) -> int:
    from lowbit.data import normalize
    from lowbit.export import export_c
    from lowbit.ptq import calibration_inputs

    bits = parse_bits(args.weights_bits)
    widths = _widths(args.measure_instructions) if args.measure_instructions else None
    positive("--calib-samples", args.calib_samples)
    positive("--eval-samples", args.eval_samples)
    out = check_out(args.out)
    src = load_source(args, out)
    splits = src.splits
    cx = calibration_inputs(splits, args.calib_samples, args.seed)
    n = args.eval_samples
    ex, ey = normalize(splits.test.x[:n], splits.mean, splits.std), splits.test.y[:n]
    if widths:
        return _measure(src.model, cx, ex, out, widths, args.multiplier)
    rep = export_c(src.model, cx, ex, ey, out, bits, args.multiplier, args.golden,
                   build=not args.no_build, riscv=args.riscv)
    _print(rep)
    bad = any(rep.get(k, {}).get("mismatches", 0) != 0 for k in ("host", "riscv"))
    return 1 if bad else 0


def _measure(model, cx, ex, out: Path, widths, multiplier) -> int:
    from lowbit.export.c_export import measure_instructions
    table = measure_instructions(model, cx, ex, out, widths, multiplier)
    path = out / "instructions.json"
    path.write_text(table.to_json())
    for name, per in sorted(table.layers.items()):
        print(f"  {name:<20} " + "  ".join(f"int{b}: {int(n):>10,}" for b, n in sorted(per.items())))
    print(f"  {'(other operations)':<20} {int(table.fixed):,}\nwrote {path}")
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
    print("files: " + ", ".join(Path(f).name for f in rep["files"]))


def main(argv=None) -> int:
    from lowbit.cli import main as lowbit
    return lowbit(["export", "c", *(sys.argv[1:] if argv is None else argv)])
