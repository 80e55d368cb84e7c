"""Report sections for ``lowbit ptq`` and ``lowbit search`` / ``lowbit sensitivity`` output folders.

A folder is recognised by the files in it (:func:`detect`):

    ptq          ptq_results.csv (+ ptq_layers.csv: per-layer costs of the selected row)
    search       results.csv + recipe.yaml (+ assignment.csv, summary.json, sensitivity.csv)
    sensitivity  sensitivity*.csv without results.csv

Each ``*_section`` returns an HTML ``<section>`` with the tables and every figure embedded as base64,
so the page it goes into is self-contained. :func:`ptq_figures` draws the PTQ figures (the W x A
parallel-coordinates plot, the energy breakdown of the selected row) with :mod:`lowbit.report.plots_search`.
:func:`build_folder_report` writes one page for a ptq or search folder; ``lowbit report`` calls it,
and adds these sections to a sweep's page for folders found inside it or passed with ``--include``.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from lowbit.report.page import html_page, html_table, img_tag

PTQ_CSV, PTQ_LAYERS = "ptq_results.csv", "ptq_layers.csv"


def detect(folder) -> str | None:
    """"ptq", "search", "sensitivity" or None (see the module docstring)."""
    d = Path(folder)
    if not d.is_dir():
        return None
    if (d / PTQ_CSV).exists():
        return "ptq"
    if (d / "results.csv").exists() and (d / "recipe.yaml").exists():
        return "search"
    if any(d.glob("sensitivity*.csv")):
        return "sensitivity"
    return None


def find_sections(root) -> list[Path]:
    """Folders directly inside ``root`` (or ``root`` itself) that :func:`detect` recognises."""
    root = Path(root)
    found = [root] if detect(root) else []
    if root.is_dir():
        found += [d for d in sorted(root.iterdir()) if d.is_dir() and d.name != "report" and detect(d)]
    return found


def _unit(rows: pd.DataFrame):
    return (2 ** 20, "MiB") if rows.empty or rows["orig_bytes"].iloc[0] >= 2 ** 20 else (1024, "KiB")


def ptq_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The ``lowbit ptq`` table (W, A, acc %, drop, orig / packed / cost-model size, ratio)."""
    unit, name = _unit(rows)
    return pd.DataFrame({"W": rows["weights"].astype(str), "A": rows["acts"].astype(str),
                         "acc %": 100 * rows["acc"], "drop (pp)": 100 * rows["drop"],
                         f"orig {name}": rows["orig_bytes"] / unit, f"packed {name}": rows["packed_bytes"] / unit,
                         "ratio": rows["ratio"], f"cost-model {name}": rows["cost_bytes"] / unit})


def ptq_figures(folder) -> dict:
    """ptq_parallel.png (W x A sweep) and ptq_energy.png (from ptq_layers.csv); {name: path}."""
    from lowbit.report.plots_search import plot_energy_breakdown, plot_parallel_coordinates
    d = Path(folder)
    rows = pd.read_csv(d / PTQ_CSV)
    figs = {}
    if len(rows) > 1:
        df = pd.DataFrame({"W": rows["weights"].astype(str), "A": rows["acts"].astype(str),
                           "ratio": rows["ratio"].astype(float), "accuracy": 100 * rows["acc"].astype(float)})
        figs["W x A sweep (parallel coordinates)"] = plot_parallel_coordinates(
            df, d / "ptq_parallel.png", columns=["W", "A", "ratio", "accuracy"], color="accuracy")
    if (d / PTQ_LAYERS).exists():
        figs["energy per layer (selected row)"] = plot_energy_breakdown(pd.read_csv(d / PTQ_LAYERS),
                                                                        d / "ptq_energy.png")
    return {k: v for k, v in figs.items() if v is not None}


def _figures_html(figs: dict) -> str:
    return "\n".join(f"<h3>{html.escape(k)}</h3>{img_tag(Path(p), k)}" for k, p in figs.items())


def ptq_section(folder, redraw: bool = True) -> str:
    d = Path(folder)
    rows = pd.read_csv(d / PTQ_CSV)
    figs = ptq_figures(d) if redraw else {k: d / f for k, f in (("W x A sweep (parallel coordinates)",
                                                                 "ptq_parallel.png"),
                                                                ("energy per layer (selected row)",
                                                                 "ptq_energy.png")) if (d / f).exists()}
    r0 = rows.iloc[0] if len(rows) else {}
    info = ", ".join(f"{k}={html.escape(str(r0[k]))}" for k in ("model", "dataset", "calib", "weight_calib",
                                                                 "calib_samples", "per_channel", "checkpoint")
                     if k in rows)
    parts = ['<section class="lowbit-ptq">', f"<h2>Post-training quantization: {html.escape(d.name)}</h2>",
             f"<p>{info}. packed = measured from lowbit.encode + lowbit.pack; cost-model = lowbit.cost.</p>",
             html_table(ptq_table(rows)), _figures_html(figs)]
    if (d / PTQ_LAYERS).exists():
        lay = pd.read_csv(d / PTQ_LAYERS)
        cols = [c for c in ("layer", "format", "macs", "weight_bytes", "bitops", "energy_pj") if c in lay]
        parts += ["<h3>per-layer cost of the selected row</h3>", html_table(lay[cols])]
    parts.append("</section>")
    return "\n".join(parts)


def search_section(folder) -> str:
    """Tables (chosen point, assignment, Pareto points or sensitivity) and every search figure."""
    from lowbit.report.plots_search import render_figures
    d = Path(folder)
    figs = render_figures(d)
    summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
    kind = detect(d)
    title = "Mixed-precision search" if kind == "search" else "Layer sensitivity"
    parts = ['<section class="lowbit-search">', f"<h2>{title}: {html.escape(d.name)}</h2>"]
    if summary:
        c = summary.get("chosen", {})
        parts.append(f"<p>strategy <b>{html.escape(str(summary.get('strategy')))}</b>, "
                     f"{summary.get('n_evaluations')} evaluations, objective {html.escape(str(summary.get('objective')))}"
                     f"; fp32 acc {100 * (summary.get('baseline') or {}).get('acc', float('nan')):.2f}%, chosen acc "
                     f"{100 * c.get('acc', float('nan')):.2f}% (drop {c.get('acc_drop_pp', float('nan')):.2f} pp); "
                     f"recipe {html.escape(str(summary.get('recipe_hash')))}</p>")
    if (d / "assignment.csv").exists():
        parts += ["<h3>chosen assignment</h3>", html_table(pd.read_csv(d / "assignment.csv"), float_format="{:.4g}")]
    if (d / "results.csv").exists():
        res = pd.read_csv(d / "results.csv")
        front = res[res["pareto"].astype(bool)] if "pareto" in res else res
        cols = [c for c in ("assignment", "size", "bitops", "energy", "acc", "acc_drop_pp", "chosen") if c in front]
        parts += [f"<h3>Pareto points ({len(front)} of {len(res)} evaluated)</h3>",
                  html_table(front[cols], float_format="{:.4g}")]
    for p in sorted(d.glob("sensitivity*.csv")):
        parts += [f"<h3>{html.escape(p.name)}</h3>", html_table(pd.read_csv(p), float_format="{:.4g}")]
    parts += [_figures_html(figs), "</section>"]
    return "\n".join(parts)


def section(folder) -> str:
    """The section of a folder :func:`detect` recognises ("" otherwise)."""
    kind = detect(folder)
    return ptq_section(folder) if kind == "ptq" else search_section(folder) if kind else ""


def render_ptq_report(folder) -> Path:
    """Figures and ``ptq_report.html`` (self-contained) into a ``lowbit ptq`` output folder."""
    d = Path(folder)
    out = d / "ptq_report.html"
    out.write_text(html_page(f"lowbit ptq: {d.name}", [ptq_section(d)]))
    return out


def build_folder_report(folders, out_dir, title: str | None = None) -> Path:
    """One self-contained ``index.html`` in ``out_dir`` with a section per ptq / search folder."""
    folders = [Path(f) for f in folders]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "index.html"
    tmp = out / ".index.html.tmp"
    tmp.write_text(html_page(title or f"lowbit report: {folders[0].name}", [section(f) for f in folders]))
    tmp.replace(target)
    return target
