"""Does a ready config reproduce its seed's qualitative finding? Run it (or read a finished sweep) and check.

    python scripts/seed_findings.py configs/mobilenet_wa.yaml          # ~8 min on 2 cores
    python scripts/seed_findings.py configs/vit_fp8.yaml               # ~16 min (FP16-AMP is emulated on CPU)
    python scripts/seed_findings.py configs/vit_fp8.yaml --results runs/vit_fp8   # check a finished sweep
    python scripts/seed_findings.py configs/mobilenet_wa.yaml --set epochs=5 --set "quantize=[[weights], [activations]]"

Each config runs with ``lowbit run CONFIG --out DIR`` (default ``runs/<name>``; finished runs are
skipped, so a second call only checks), then every claim of its seed's README is checked on the
results table (test accuracy at the best validation epoch, in points) and printed with its numbers as
PASS, FAIL or n/a (the slice ran without the rows the claim compares). Exit 1 if any claim fails or
none could be checked. tests/test_seed_findings.py runs the same checks on short slices.

    mobilenet_wa   (MobileNet compression) W8 ~ FP32 > W4 >> W2; activation bits matter (A8 > A4 > A2)
    vit_fp8        (ViT FP8) FP16-AMP ~ FP32 and BF16-AMP ~ FP32 under each augmentation; FP8 close to FP32
precision_comparison's ladder (fp32 ~ fp8 ~ fp6 > fp4 > fp3 >> fp2, in accuracy and logit SQNR) and
the energy-aware PTQ finding (energy falls along the Pareto front) are asserted in
tests/test_seed_findings.py and tests/test_energy_ptq.py.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _acc(runs, **match) -> float | None:
    """Test accuracy (points) of the one completed run whose columns equal ``match``; None if absent."""
    rows = runs
    for key, value in match.items():
        rows = rows[rows[key].astype(str) == str(value)]
    rows = rows[rows["status"].isin(["completed", "early_stopped"])]
    if len(rows) > 1:
        raise ValueError(f"{len(rows)} runs match {match}: slice the sweep to one seed and one setting")
    return None if rows.empty else round(100 * float(rows["test_acc_at_best"].iloc[0]), 2)


def _claim(text: str, values: dict, test) -> tuple[str, str, str]:
    shown = ", ".join(f"{k} {'-' if v is None else v}" for k, v in values.items())
    if any(v is None for v in values.values()):
        return "n/a", text, shown
    return ("PASS" if test(**values) else "FAIL"), text, shown


def mobilenet_wa(runs) -> list[tuple[str, str, str]]:
    w = {b: _acc(runs, precision=b, quantize="weights") for b in ("int8", "int4", "int2")}
    a = {b: _acc(runs, precision=b, quantize="activations") for b in ("int8", "int4", "int2")}
    fp32 = _acc(runs, precision="fp32")
    return [
        _claim("FP32 learns (>= 85%)", {"FP32": fp32}, lambda FP32: FP32 >= 85),
        _claim("W8 ~ FP32 (within 2 points)", {"FP32": fp32, "W8": w["int8"]},
               lambda FP32, W8: W8 >= FP32 - 2),
        _claim("FP32 > W4 and W8 > W4", {"FP32": fp32, "W8": w["int8"], "W4": w["int4"]},
               lambda FP32, W8, W4: W4 < min(FP32, W8)),
        _claim("W4 >> W2 (3 points or more)", {"W4": w["int4"], "W2": w["int2"]}, lambda W4, W2: W2 <= W4 - 3),
        _claim("activation bits matter: A8 > A4 > A2", {"A8": a["int8"], "A4": a["int4"], "A2": a["int2"]},
               lambda A8, A4, A2: A8 > A4 > A2),
        _claim("A2 collapses (20 points or more below FP32)", {"FP32": fp32, "A2": a["int2"]},
               lambda FP32, A2: A2 <= FP32 - 20),
    ]


def vit_fp8(runs) -> list[tuple[str, str, str]]:
    out = []
    for aug in sorted(set(runs["augmentation"])):
        fp32 = _acc(runs, precision="fp32", amp="off", augmentation=aug)
        out.append(_claim(f"[{aug}] FP32 learns (>= 60%)", {"FP32": fp32}, lambda FP32: FP32 >= 60))
        for amp in ("fp16", "bf16"):
            got = _acc(runs, precision="fp32", amp=amp, augmentation=aug)
            out.append(_claim(f"[{aug}] {amp.upper()}-AMP ~ FP32 (within 2 points)",
                              {"FP32": fp32, amp.upper(): got}, lambda FP32, **v: abs(next(iter(v.values())) - FP32) <= 2))
        for fmt, tol in (("fp8_e4m3", 3), ("fp8_e5m2", 5)):
            for soft in ("none", fmt):
                got = _acc(runs, precision=fmt, softmax_precision=soft, augmentation=aug)
                out.append(_claim(f"[{aug}] {fmt} (softmax {soft}) within {tol} points of FP32",
                                  {"FP32": fp32, fmt: got}, lambda FP32, tol=tol, **v: next(iter(v.values())) >= FP32 - tol))
    return out


FINDINGS = {"mobilenet_wa": mobilenet_wa, "vit_fp8": vit_fp8}


def check(name: str, results: Path) -> list[tuple[str, str, str]]:
    """The claims of the ready config ``name`` checked on the finished sweep in ``results``."""
    from lowbit.experiments.store import load_tables
    if name not in FINDINGS:
        raise ValueError(f"no findings for config {name!r}; allowed: {', '.join(FINDINGS)}")
    return FINDINGS[name](load_tables(results)["runs"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", type=Path, help="a ready config: " + ", ".join(f"configs/{n}.yaml" for n in FINDINGS))
    p.add_argument("--results", type=Path, help="check this finished sweep folder instead of running")
    p.add_argument("--out", type=Path, help="output folder of the run (default runs/<name>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to lowbit run")
    p.add_argument("-j", "--jobs", type=int, default=2)
    args = p.parse_args(argv)
    try:
        name = (yaml.safe_load(args.config.read_text()) or {}).get("name", args.config.stem)
    except (OSError, yaml.YAMLError) as err:
        p.error(f"config: cannot read {args.config}: {err}")
    if name not in FINDINGS:
        p.error(f"config: no findings for {name!r}; allowed: {', '.join(FINDINGS)}")
    results, t0 = args.results, time.time()
    if results is None:
        results = args.out or Path("runs") / name
        cmd = [sys.executable, "-m", "lowbit.cli", "run", str(args.config), "--out", str(results),
               "-j", str(args.jobs), "-q", "--no-report"]
        for s in args.set:
            cmd += ["--set", s]
        if subprocess.run(cmd).returncode != 0:
            return 1
        print(f"{name}: sweep took {time.time() - t0:.0f} s (-j {args.jobs}; finished runs were reused)")
    claims = check(name, results)
    width = max(len(t) for _, t, _ in claims)
    for verdict, text, shown in claims:
        print(f"{verdict:4}  {text:{width}}  {shown}")
    failed = sum(v == "FAIL" for v, _, _ in claims)
    checked = sum(v != "n/a" for v, _, _ in claims)
    print(f"{name}: {checked - failed}/{checked} claims hold" + (f", {len(claims) - checked} n/a" if checked < len(claims) else ""))
    return 1 if failed or not checked else 0


if __name__ == "__main__":
    sys.exit(main())
