"""The result tables in README.md and docs/, generated from fresh runs, and checked against them.

    python scripts/readme_tables.py            # regenerate every block from fresh runs; exit 1 on drift
    python scripts/readme_tables.py --write    # rewrite the blocks in README.md from fresh runs
    python scripts/readme_tables.py --main-results runs/default   # reuse a sweep of configs/default.yaml

A block sits between ``<!-- generated: NAME ... -->`` and ``<!-- /generated: NAME -->`` in README.md
or a docs/ page:

    main   the table ``lowbit run`` prints for the built-in default sweep (configs/default.yaml), less
           the time column (times are measured, not reproducible)
    ptq    ``lowbit ptq --train-quick --model cnn --dataset digits``: weights x fp32 activations, and
           int8 weights x A8/A4/A2
    riscv  (docs/riscv-extension.md) cycles of the zoo cnn and mlp on RV32IMC and RV32IMC + Xlbmac
           (benchmarks/riscv_cycles.py's measurement): exact for one RISC-V compiler and unicorn

``--write`` also redraws docs/images/accuracy_heatmap.png (README's figure) from the same main run.

The first line of a block records what its numbers depend on: for main and ptq the machine (CPU, its x86-64 level, cache
sizes, cores, torch version; torch's CPU kernels (ATen, oneDNN) accumulate in an order that
depends on the vector ISA and blocking, so a run is bit-reproducible only on the same kind of
machine), for riscv the compiler and emulator versions. Where those differ, a difference is reported
as expected (exit 0) unless ``--strict``.
"""
from __future__ import annotations

import argparse
import difflib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
FIGURE = ROOT / "docs" / "images" / "accuracy_heatmap.png"   # redrawn by --write from the main run
BLOCK = re.compile(r"<!-- generated: (\w+) (.*?) -->\n(.*?)<!-- /generated: \1 -->\n", re.S)

MAIN_ROWS = [("cnn", "relu", None), ("vit", "gelu", ("fp32", "fp8_e4m3", "fp2"))]   # (model, act, precisions)
PTQ_WEIGHTS = ["int8", "int4", "int2", "fp8_e4m3", "fp4_e2m1", "mxfp8_e4m3", "mxfp4", "nvfp4"]
PTQ_ACTS = ["none", "int8", "int4", "int2"]


# ---- the machine ------------------------------------------------------------------------------------
def _cache(level: str) -> str:
    for idx in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (idx / "level").read_text().strip() == level and (idx / "type").read_text().strip() != "Instruction":
                return (idx / "size").read_text().strip()
        except OSError:
            continue
    return "?"


def machine() -> str:
    """The kind of machine a run's numbers belong to (one line)."""
    import torch

    from lowbit.ops import native_build
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor() or platform.machine()) \
        if Path("/proc/cpuinfo").exists() else platform.machine()
    levels = native_build.supported_levels()
    isa = f"x86-64-{levels[-1]}" if levels else platform.machine()
    return (f"machine: {cpu}, {isa}, L2 {_cache('2')}, L3 {_cache('3')}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}")


# ---- fresh runs ---------------------------------------------------------------------------------------
def _git_head() -> str:
    r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return r.stdout.strip()


def _git_dirty() -> bool:
    r = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                       capture_output=True, text=True, check=False)
    return bool(r.stdout.strip())


def reusable(folder: Path) -> str | None:
    """Why the default sweep in ``folder`` cannot stand for a fresh run (None: it can)."""
    from lowbit.experiments.store import load_tables
    runs = load_tables(folder)["runs"]
    if runs.empty:
        return f"{folder}: no results"
    expected = len(_default_runs())
    if len(runs) != expected:
        return f"{folder}: {len(runs)} runs, the default sweep has {expected}"
    commits = set(runs["git_commit"].astype(str))
    if commits != {_git_head()} or runs["git_dirty"].astype(str).isin(["True", "true", "1"]).any() or _git_dirty():
        return f"{folder}: made by code {', '.join(sorted(commits))}, not by the clean HEAD {_git_head()}"
    return None


def _default_runs():
    from lowbit.experiments.grid import expand
    from lowbit.experiments.schema import load_sweep
    return expand(load_sweep(None))


def run_default(out: Path) -> None:
    subprocess.run([sys.executable, "-m", "lowbit.cli", "run", "--out", str(out), "--no-report", "-q"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def run_ptq(out: Path) -> None:
    subprocess.run([sys.executable, "-m", "lowbit.cli", "ptq", "--train-quick", "--model", "cnn", "--dataset",
                    "digits", "--weights", ",".join(PTQ_WEIGHTS), "--acts", ",".join(PTQ_ACTS), "--out", str(out)],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


# ---- blocks ----------------------------------------------------------------------------------------------
def main_block(folder: Path) -> str:
    from lowbit.experiments.store import load_tables
    from lowbit.report import precision_table
    runs = load_tables(folder)["runs"]
    table = precision_table(runs).drop(columns=["time_s", "status"], errors="ignore")
    parts = []
    for model, act, precs in MAIN_ROWS:
        sel = table[(table["model"] == model) & (table["activation"] == act)]
        if precs:
            sel = sel[sel["precision"].isin(precs)]
        parts.append(sel)
    lines = []
    for i, sel in enumerate(parts):
        text = sel.to_string(index=False, float_format=lambda v: f"{v:.2f}").splitlines()
        lines += text if i == 0 else ["     ...", *text[1:]]
    return "```\n" + "\n".join(lines) + f"\n({len(runs)} runs; each run's time is left out: it varies)\n```\n"


def ptq_block(folder: Path) -> str:
    import pandas as pd
    df = pd.read_csv(folder / "ptq_results.csv")
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    fp32 = df["fp32_acc"].iloc[0]
    w_only = df[df["acts"] == "fp32"].set_index("weights")
    head = "| weights (activations fp32) | fp32 | " + " | ".join(PTQ_WEIGHTS) + " |"
    sep = "|---" * (len(PTQ_WEIGHTS) + 2) + "|"
    row = f"| test accuracy % | {pct(fp32)} | " + " | ".join(pct(w_only.loc[w, "acc"]) for w in PTQ_WEIGHTS) + " |"
    a8 = df[df["weights"] == "int8"].set_index("acts")
    accs = "/".join(pct(a8.loc[a, "acc"]) for a in PTQ_ACTS[1:])
    return (f"{head}\n{sep}\n{row}\n\nWith int8 weights, activations at A8/A4/A2 give {accs}: activation bits "
            f"change the numerics.\n")


def toolchain() -> str:
    """What the riscv block's counts depend on: the RISC-V compiler and the emulator."""
    from importlib import metadata

    from lowbit.export.c.build import RV_CC
    cc = shutil.which(RV_CC)
    ver = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[0] if cc else "none"
    try:
        uc = metadata.version("unicorn")
    except metadata.PackageNotFoundError:
        uc = "none"
    return f"toolchain: {ver}, unicorn {uc}"


def riscv_block() -> str:
    import torch

    from lowbit.cli.source import build_model, quick_model_kwargs
    from lowbit.export.c.measure import measure_instructions
    bits = (2, 4, 8)
    rows, totals = [], []
    for name in ("cnn", "mlp"):
        torch.manual_seed(0)
        m = build_model(name, "digits", quick_model_kwargs(name)).eval()
        x = torch.randn(4, 1, 8, 8)
        with tempfile.TemporaryDirectory() as d:
            t = measure_instructions(m, x, x, d, bits)
        for layer in t["rv32imc"].layers:
            for prog, tab in t.items():
                rows.append(f"| {name} {layer} | {prog} | " + " | ".join(f"{int(tab.cycles[layer][b]):,}" for b in bits) + " |")
        tot = {p: {b: tab.fixed_cycles + sum(c[b] for c in tab.cycles.values()) for b in bits} for p, tab in t.items()}
        totals.append(f"* {name}: " + ", ".join(f"int{b}: {tot['rv32imc'][b]:,.0f} -> {tot['rv32imc_xlbmac'][b]:,.0f} "
                                               f"({tot['rv32imc'][b] / tot['rv32imc_xlbmac'][b]:.1f}x)" for b in bits))
    head = "| model, layer | program | " + " | ".join(f"int{b} cycles" for b in bits) + " |\n|---|---|" + "---|" * len(bits)
    return (head + "\n" + "\n".join(rows) + "\n\nWhole inference, cycles (rv32imc -> rv32imc_xlbmac, speed-up):\n\n"
            + "\n".join(totals) + "\n")


# name -> (the file holding it, what its numbers depend on)
BLOCKS = {"main": (README, machine), "ptq": (README, machine), "riscv": (DOCS / "riscv-extension.md", toolchain)}


def fresh_blocks(main_results: Path | None, figure: Path | None = None, names=None) -> dict[str, str]:
    """The blocks ``names`` (default all) from fresh runs; ``figure``: also redraw README's heatmap there."""
    names = list(names or BLOCKS)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "main" in names or figure is not None:
            why = reusable(main_results) if main_results is not None else "none given"
            if why:
                if main_results is not None:
                    print(f"not reused: {why}", file=sys.stderr)
                main_results = tmp / "default"
                run_default(main_results)
            if figure is not None:
                from lowbit.experiments.store import load_tables
                from lowbit.report.plots import accuracy_heatmap
                accuracy_heatmap(load_tables(main_results)["runs"], figure)
            out["main"] = main_block(main_results)
        if "ptq" in names:
            run_ptq(tmp / "ptq")
            out["ptq"] = ptq_block(tmp / "ptq")
    if "riscv" in names:
        out["riscv"] = riscv_block()
    return {n: out[n] for n in names}


def file_blocks(text: str) -> dict[str, tuple[str, str]]:
    """NAME -> (provenance line, body) of every generated block in ``text``."""
    return {m.group(1): (m.group(2), m.group(3)) for m in BLOCK.finditer(text)}


def provenance(name: str) -> str:
    return f"(python scripts/readme_tables.py; {BLOCKS[name][1]()})"


def write(text: str, blocks: dict[str, str], wheres: dict[str, str]) -> str:
    def repl(m):
        name = m.group(1)
        if name not in blocks:
            return m.group(0)
        return f"<!-- generated: {name} {wheres[name]} -->\n{blocks[name]}<!-- /generated: {name} -->\n"
    return BLOCK.sub(repl, text)


def compare(text: str, blocks: dict[str, str], wheres: dict[str, str], file: str = "README.md") -> list[str]:
    """Differences between the blocks of ``text`` and ``blocks`` (messages; empty: none)."""
    have, problems = file_blocks(text), []
    for name, fresh in blocks.items():
        if name not in have:
            problems.append(f"{file} has no generated block {name!r}")
            continue
        where, body = have[name]
        if body != fresh:
            diff = "".join(difflib.unified_diff(body.splitlines(True), fresh.splitlines(True),
                                                f"{file} ({name})", "fresh run"))
            problems.append(f"block {name!r} {where} differs from a fresh run here {wheres[name]}:\n{diff}")
    return problems


def same_kind(text: str, wheres: dict[str, str]) -> bool:
    """Every block of ``text`` that is in ``wheres`` was generated where its numbers depend on the same things."""
    return all(w == wheres[n] for n, (w, _) in file_blocks(text).items() if n in wheres)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite the blocks from fresh runs")
    ap.add_argument("--strict", action="store_true", help="a difference where the numbers' dependencies differ fails too")
    ap.add_argument("--main-results", type=Path, help="a sweep of configs/default.yaml by this code to reuse")
    ap.add_argument("--only", action="append", choices=list(BLOCKS), help="only these blocks (repeatable)")
    a = ap.parse_args(argv)
    names = a.only or list(BLOCKS)
    blocks = fresh_blocks(a.main_results, FIGURE if a.write and "main" in names else None, names)
    wheres = {n: provenance(n) for n in names}
    status = 0
    for file in sorted({BLOCKS[n][0] for n in names}):
        mine = {n: b for n, b in blocks.items() if BLOCKS[n][0] == file}
        text, rel = file.read_text(), file.relative_to(ROOT)
        if a.write:
            file.write_text(write(text, mine, wheres))
            print(f"{rel}: {', '.join(mine)} rewritten")
            continue
        problems = compare(text, mine, wheres, str(rel))
        for msg in problems:
            print(msg)
        if not problems:
            print(f"{rel}: {', '.join(mine)} equal a fresh run")
        elif same_kind(text, wheres) or a.strict:
            status = 1
        else:
            print(f"({rel}: generated where the numbers depend on other versions or hardware: a difference is expected)")
    return status


if __name__ == "__main__":
    sys.exit(main())
