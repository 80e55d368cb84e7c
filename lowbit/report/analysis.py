"""The analysis summary of a sweep (the ViT study's "ANALYSIS SUMMARY"), as a dict and as text lines.

Over the grid points (mean over seeds) that completed or stopped early:

* best accuracy: the highest test accuracy at the best validation epoch;
* best generalisation: the smallest generalisation gap (train minus validation accuracy at the
  best epoch, in absolute value);
* fastest: the smallest total training time;
* speed-up vs FP32: for every AMP point, the FP32 (no-AMP) run's time per epoch over its own, and
  the same for the fastest point;
* recommendation: the fastest point whose accuracy is within ``TOLERANCE_PTS`` points of the best.
"""
from __future__ import annotations

import math

import pandas as pd

from lowbit.report.tables import OK, _grouped, _with_baseline, varying

TOLERANCE_PTS = 1.0


def _name(row, cols) -> str:
    return "/".join(str(row[c]) for c in cols)


def analysis_summary(runs: pd.DataFrame) -> dict:
    """The summary dict (see the module doc); ``{}`` without usable runs."""
    df = _grouped(runs)
    if df.empty or "test_acc_at_best" not in df:
        return {}
    df = _with_baseline(df)
    df = df[df["status"].isin(OK) & df["test_acc_at_best"].notna()]
    if df.empty:
        return {}
    cols = varying(df)
    best = df.loc[df["test_acc_at_best"].idxmax()]
    gen = df.loc[df["gen_gap"].abs().idxmin()]
    fast = df.loc[df["total_time_s"].idxmin()]
    near = df[100 * (best["test_acc_at_best"] - df["test_acc_at_best"]) <= TOLERANCE_PTS]
    rec = near.loc[near["total_time_s"].idxmin()]
    amp = df[df["amp"] != "off"] if "amp" in df else df.iloc[0:0]
    fin = lambda v: None if v is None or not math.isfinite(float(v)) else float(v)  # noqa: E731
    return {
        "best_accuracy": {"name": _name(best, cols), "test_acc": float(best["test_acc_at_best"])},
        "best_generalisation": {"name": _name(gen, cols), "gen_gap": float(gen["gen_gap"])},
        "fastest": {"name": _name(fast, cols), "total_time_s": float(fast["total_time_s"]),
                    "speedup_vs_fp32": fin(fast["speedup_vs_fp32"])},
        "amp_speedup_vs_fp32": {_name(r, cols): fin(r["speedup_vs_fp32"]) for _, r in amp.iterrows()},
        "recommended": {"name": _name(rec, cols), "test_acc": float(rec["test_acc_at_best"]),
                        "total_time_s": float(rec["total_time_s"]),
                        "rule": f"fastest within {TOLERANCE_PTS:g} point(s) of the best accuracy"},
    }


def summary_lines(summary: dict) -> list[str]:
    """The summary as plain text lines (``analysis.txt`` and the report's list)."""
    if not summary:
        return ["no finished runs to analyse"]
    x = lambda v: "n/a" if v is None else f"{v:.2f}x"  # noqa: E731
    b, g, f, r = (summary[k] for k in ("best_accuracy", "best_generalisation", "fastest", "recommended"))
    lines = [f"Best accuracy: {b['name']} ({100 * b['test_acc']:.2f}%)",
             f"Best generalisation: {g['name']} ({100 * g['gen_gap']:.2f}% train - val gap)",
             f"Fastest training: {f['name']} ({f['total_time_s']:.1f} s, {x(f['speedup_vs_fp32'])} vs FP32)"]
    lines += [f"AMP speed-up vs FP32: {n}: {x(v)}" for n, v in summary["amp_speedup_vs_fp32"].items()]
    lines.append(f"Recommended: {r['name']} ({100 * r['test_acc']:.2f}%, {r['total_time_s']:.1f} s; {r['rule']})")
    return lines
