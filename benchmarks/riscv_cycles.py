"""Measured instructions and cycles of the zoo models on RV32IMC and RV32IMC + Xlbmac, per layer and width.

    python benchmarks/riscv_cycles.py                 # zoo cnn and mlp (as --train-quick builds them), 2/4/8 bits
    python benchmarks/riscv_cycles.py --models mlp --bits 2,8

Exports each model (random weights: the counts do not depend on the weight values except through
the clamps' data-dependent branches), runs one inference of both programs under unicorn and prints a
markdown table: instructions and cycles (the stated table of lowbit.export.c.cycles) per weight layer,
and the whole-inference speed-up of the Xlbmac program at each uniform width. docs/riscv-extension.md
quotes its output.
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import tempfile

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="cnn,mlp")
    ap.add_argument("--bits", default="2,4,8")
    args = ap.parse_args(argv)
    from lowbit.export.c.cycles import CORE
    from lowbit.export.c.measure import measure_instructions
    from lowbit.cli.source import build_model, quick_model_kwargs
    bits = tuple(int(b) for b in args.bits.split(","))
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"git {git}, host {platform.machine()}, core model: {CORE}\n")
    for name in args.models.split(","):
        torch.manual_seed(0)
        m = build_model(name, "digits", quick_model_kwargs(name)).eval()
        x = torch.randn(4, 1, 8, 8)
        with tempfile.TemporaryDirectory() as d:
            t = measure_instructions(m, x, x, d, bits)
        print(f"### {name} {quick_model_kwargs(name) or ''} (digits, 1 x 8 x 8 input)\n")
        print("| layer | program | " + " | ".join(f"int{b} instr | int{b} cycles" for b in bits) + " |")
        print("|---|---|" + "---|---|" * len(bits))
        for layer in t["rv32imc"].layers:
            for prog, tab in t.items():
                cells = " | ".join(f"{int(tab.layers[layer][b]):,} | {int(tab.cycles[layer][b]):,}" for b in bits)
                print(f"| {layer} | {prog} | {cells} |")
        tot = {p: {b: tab.fixed_cycles + sum(c[b] for c in tab.cycles.values()) for b in bits} for p, tab in t.items()}
        print("\nwhole inference, cycles: " + ", ".join(
            f"int{b}: {tot['rv32imc'][b]:,.0f} -> {tot['rv32imc_xlbmac'][b]:,.0f} "
            f"({tot['rv32imc'][b] / tot['rv32imc_xlbmac'][b]:.1f}x)" for b in bits) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
