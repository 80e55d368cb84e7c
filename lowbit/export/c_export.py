"""``lowbit export c``: float model + calibration data -> integer-only C99 (host and RV32IMC), checked
bit for bit against the golden Python integer reference.

    lowbit export c --train-quick --model cnn --dataset digits --weights-bits 4 --out /tmp/c_cnn
    lowbit export c runs/xyz --model mlp --dataset digits --weights-bits fc1=2,8 --multiplier 7 --out DIR --riscv

Output directory: model.h (versioned header: format version, layer table, packed weights, biases,
multipliers/shifts), model.c (kernels, ``int model_infer(const int8_t *in, int8_t *out)``), golden.h
(golden inputs and expected outputs), main.c (runs them, prints the mismatch count, exit code != 0 on
mismatch), manifest.json (scales, per-layer bits, accuracies, C/RISC-V results).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .c_build import host_cc, riscv_available, run_host, run_riscv
from .c_codegen import FORMAT_VERSION, write_sources
from .c_graph import trace
from .c_integer import build_qmodel, pack_weights
from .c_reference import run_float, run_integer


def export_c(model: torch.nn.Module, calib_x: torch.Tensor, eval_x: torch.Tensor, eval_y: torch.Tensor | None,
             out_dir, bits=8, width: int = 31, n_golden: int = 100, build: bool = True, riscv: bool = False) -> dict:
    """Export ``model`` (inputs already normalised) to C in ``out_dir``; returns the report (manifest).

    Accuracies (when ``eval_y`` is given) are for fp32, the fake-quantized graph and the integer model.
    ``build`` compiles and runs the golden diff with the host cc; ``riscv`` also runs it under QEMU.
    """
    model = model.eval()
    graph = trace(model, tuple(eval_x.shape[1:]))
    qm = build_qmodel(model, graph, calib_x, bits, width)
    xq = qm.quantize_input(eval_x)
    yq = run_integer(qm, xq)
    layers = [ql for ql in qm.layers if ql.kind != "flatten"]
    report = {
        "format_version": FORMAT_VERSION, "multiplier_bits": width, "input_shape": list(eval_x.shape[1:]),
        "input_scale": qm.values[qm.input].scale, "output_scale": qm.values[qm.output].scale,
        "output_signed": qm.values[qm.output].signed, "golden_inputs": min(n_golden, len(xq)),
        "weight_bytes": int(sum(pack_weights(ql.codes, ql.bits).nbytes for ql in layers if ql.kind == "conv")),
        "layers": [{"name": ql.name, "kind": ql.kind, "bits": ql.bits if ql.kind == "conv" else None,
                    "w_scale": ql.w_scale or None, "q": ql.q, "n": ql.n, "clamp": [ql.lo, ql.hi],
                    "out_scale": qm.values[ql.output].scale, "out_signed": qm.values[ql.output].signed,
                    "rq32": ql.kind in ("conv", "add") and ql.rq32()}
                   for ql in layers],
    }
    if eval_y is not None:
        with torch.no_grad():
            fp32 = model(eval_x).argmax(1)
            fake = run_float(graph, eval_x, qm).argmax(1)
        y = eval_y.numpy()
        report["accuracy"] = {"fp32": float((fp32.numpy() == y).mean()),
                              "fake_quant": float((fake.numpy() == y).mean()),
                              "integer": float((yq.argmax(1) == y).mean()), "samples": len(y)}
    g = slice(0, report["golden_inputs"])
    files = write_sources(qm, out_dir, xq[g].reshape(len(xq[g]), -1), yq[g], report)
    if build and host_cc():
        r = run_host(out_dir)
        report["host"] = {"mismatches": r.mismatches, "returncode": r.returncode}
    if riscv:
        missing = riscv_available()
        if missing:
            report["riscv"] = {"skipped": missing}
        else:
            r = run_riscv(out_dir)
            report["riscv"] = {"mismatches": r.mismatches, "returncode": r.returncode, "size": r.size,
                               "instret_per_inference": r.total_instret, "layer_instret": r.layer_instret}
    (Path(out_dir) / "manifest.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    report["files"] = [str(f) for f in files]
    return report


def parse_bits(text: str):
    """'4' -> 4; 'conv1=2,fc=8,4' -> {'conv1': 2, 'fc': 8, '*': 4} (per-layer, '*' or a bare number = default)."""
    if "=" not in text:
        b = _bits(text)
        return b
    out = {}
    for part in text.split(","):
        name, _, val = part.rpartition("=")
        out[name.strip() or "*"] = _bits(val)
    return out


def _bits(v: str) -> int:
    if v.strip() not in ("2", "4", "8"):
        raise ValueError(f"--weights-bits value {v!r} is not allowed; allowed: 2, 4, 8 (or NAME=BITS,...)")
    return int(v)


class _PerLayer(dict):
    """Per-layer bits with a default for names not listed (depthwise convs keep 8 unless named)."""

    def __init__(self, spec: dict, default: int):
        super().__init__(spec)
        self.default = default

    def get(self, key, _=None):
        return super().get(key, self.default)


def _load(args):
    from lowbit.data import load_dataset, normalize
    from lowbit.ptq.checkpoint import build_model, load_into, parse_model_kwargs, quick_model_kwargs, train_quick
    splits = load_dataset(args.dataset, seed=args.seed)
    kwargs = parse_model_kwargs(args.model_kwargs) if args.model_kwargs else (
        quick_model_kwargs(args.model) if args.train_quick else {})
    torch.manual_seed(args.seed)
    model = build_model(args.model, args.dataset, kwargs)
    if args.train_quick:
        train_quick(model, splits, epochs=args.epochs, seed=args.seed, run_dir=args.target)
    elif args.target:
        p = Path(args.target)
        if p.is_dir():
            p = next((p / n for n in ("best.pt", "checkpoint.pt") if (p / n).is_file()), p / "checkpoint.pt")
        load_into(model, p)
    else:
        raise ValueError("give MODEL_RUN_OR_CHECKPOINT (a run directory or checkpoint file) or --train-quick")

    def prep(split, n=None):
        x = split.x[:n] if n else split.x
        return normalize(x, splits.mean, splits.std), split.y[:n] if n else split.y
    cx, _ = prep(splits.train, args.calib_samples)
    ex, ey = prep(splits.test, args.eval_samples or None)
    return model, cx, ex, ey


def measure_instructions(model: torch.nn.Module, calib_x: torch.Tensor, eval_x: torch.Tensor, out_dir,
                         bits=(2, 4, 8), width: int = 31):
    """Measured RV32IMC instructions per weight layer and weight width -> :class:`InstructionTable`.

    Exports ``model`` once per width in ``bits`` (uniform weights; depthwise convs keep 8 bits), runs
    one golden inference under QEMU (``rdinstret`` around each layer) and keys the counts by module
    path (as lowbit.cost names layers). Non-weight operations go to ``fixed`` (their mean).
    """
    from lowbit.cost.measured import InstructionTable

    graph = trace(model.eval(), tuple(eval_x.shape[1:]))
    modules = {op.name: op.extra.get("module", op.name) for op in graph.ops}
    layers, fixed = {}, []
    for b in bits:
        rep = export_c(model, calib_x, eval_x[:1], None, Path(out_dir) / f"w{b}", b, width, 1, riscv=True)
        r = rep.get("riscv", {})
        if "layer_instret" not in r or r.get("mismatches", 1) != 0:
            raise RuntimeError(f"RV32IMC run at {b}-bit weights failed or was skipped: {r.get('skipped', r)}")
        kinds = {l["name"]: (l["kind"], l["bits"]) for l in rep["layers"]}
        rest = 0
        for name, count in r["layer_instret"].items():
            kind, lbits = kinds.get(name, ("other", None))
            if kind == "conv" and lbits is not None:
                layers.setdefault(modules.get(name, name), {})[int(lbits)] = float(count)
            else:
                rest += count
        fixed.append(rest)
    return InstructionTable(layers, sum(fixed) / len(fixed), f"RV32IMC under QEMU, {width}-bit multipliers")


def cli_c(argv=None) -> int:
    """``lowbit export c``: see the module docstring; prints the report, exit 1 on a C mismatch."""
    ap = argparse.ArgumentParser(prog="lowbit export c", description=__doc__.split("\n\n")[0])
    ap.add_argument("target", nargs="?", help="run directory (best.pt/checkpoint.pt) or checkpoint file; with "
                                              "--train-quick, the run directory to train into (optional)")
    ap.add_argument("--out", required=True, help="output directory for the C sources")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--model-kwargs", default=None, help="JSON object, e.g. '{\"channels\": [16, 32, 32]}'")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--weights-bits", default="8", help="2, 4, 8, or per layer: NAME=BITS,...[,DEFAULT] with NAME as in "
                    "the printed layer table "
                    "(torch.fx node names: dots become underscores); depthwise convs stay 8 unless named")
    ap.add_argument("--calib-samples", type=int, default=256)
    ap.add_argument("--eval-samples", type=int, default=0, help="test samples to score (0: all)")
    ap.add_argument("--golden", type=int, default=100, help="golden inputs written to golden.h")
    ap.add_argument("--multiplier", type=int, choices=(31, 7), default=31)
    ap.add_argument("--train-quick", action="store_true", help="train the model on --dataset first")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--riscv", action="store_true", help="also build for RV32IMC and run under QEMU")
    ap.add_argument("--no-build", action="store_true", help="only write the sources")
    ap.add_argument("--measure-instructions", default=None, metavar="BITS",
                    help="e.g. 2,4,8: run on RV32IMC at each weight width and write OUT/instructions.json, "
                         "the measured cost table for lowbit search --instructions-table")
    args = ap.parse_args(argv)
    try:
        bits = parse_bits(args.weights_bits)
        if isinstance(bits, dict):
            bits = _PerLayer({k: v for k, v in bits.items() if k != "*"}, bits.get("*", 8))
        model, cx, ex, ey = _load(args)
        if args.measure_instructions:
            return _measure(model, cx, ex, args)
        rep = export_c(model, cx, ex, ey, args.out, bits, args.multiplier, args.golden,
                       build=not args.no_build, riscv=args.riscv)
    except (ValueError, RuntimeError) as exc:
        print(f"lowbit export c: error: {exc}", file=sys.stderr)
        return 2
    _print(rep)
    bad = any(rep.get(k, {}).get("mismatches", 0) != 0 for k in ("host", "riscv"))
    return 1 if bad else 0


def _measure(model, cx, ex, args) -> int:
    try:
        widths = tuple(int(b) for b in args.measure_instructions.split(","))
    except ValueError:
        raise ValueError(f"--measure-instructions {args.measure_instructions!r} is not allowed; allowed: "
                         f"comma-separated weight widths from 2, 4, 8") from None
    if not widths or any(b not in (2, 4, 8) for b in widths):
        raise ValueError(f"--measure-instructions {args.measure_instructions!r} is not allowed; allowed: "
                         f"comma-separated weight widths from 2, 4, 8")
    table = measure_instructions(model, cx, ex, args.out, widths, args.multiplier)
    path = Path(args.out) / "instructions.json"
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
