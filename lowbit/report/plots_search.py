"""Search, sensitivity and PTQ figures (matplotlib, Agg backend, PNG) and a small HTML page.

They live in the report layer: the search library (:mod:`lowbit.search`) computes and saves tables,
``lowbit search`` / ``lowbit sensitivity`` / ``lowbit ptq`` and ``lowbit report`` draw them from here.

Each ``plot_*`` saves one PNG and returns its path, or None when there is nothing to draw.
:func:`render_search_report` reads what ``lowbit search`` / ``lowbit sensitivity`` wrote into a
folder (results.csv, assignment.csv, sensitivity.csv, summary.json) and writes every figure that
applies plus ``search_report.html`` (a page; :func:`report_fragment` gives the embeddable part).
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lowbit.search.costing import UNITS  # noqa: E402
from lowbit.search.pareto import staircase  # noqa: E402
from lowbit.search.sensitivity import methods_in, score  # noqa: E402

DPI = 90
LABELS = {"size": "weight size (bytes)", "bitops": "BitOps per sample", "energy": "energy per sample (pJ)",
          "instructions": "instructions per sample"}
REL_ENERGY = "energy per sample (relative units)"


def energy_unit_of(unit) -> str:
    """'pJ' for an absolute energy model; 'relative units' for the seed's unitless one. ``unit``: an
    EnergyModel's ``unit`` ('pJ' / 'rel'), a summary.json units entry, or None (lowbit's default, pJ)."""
    if unit is None or (isinstance(unit, float) and np.isnan(unit)):
        return "pJ"
    return "pJ" if str(unit).split("/")[0] == "pJ" else "relative units"


def axis_label(metric: str, energy_unit=None) -> str:
    """The axis label of ``metric``; energy carries its model's unit (never 'pJ' for relative energies)."""
    if metric == "energy":
        return f"energy per sample ({energy_unit_of(energy_unit)})"
    return LABELS.get(metric, metric)


def _save(fig, path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


# ---- axes painters (shared by the single figures and the summary) ----------------------------------
def draw_pareto(ax, table: pd.DataFrame, metric: str = "size", baseline_acc: float | None = None,
                energy_unit=None) -> None:
    """Every evaluated point (grey), the staircase front (blue), the chosen point (red star); uniform
    baselines (strategy ``uniform``) as labelled black squares and percentile-sweep points (a
    ``percentiles`` column) as orange dots labelled with their cuts."""
    x, y = table[metric].to_numpy(float), 100 * table["acc"].to_numpy(float)
    ax.scatter(x, y, s=12, alpha=0.45, color="tab:gray", label="evaluated")
    sx, sy = staircase(x, y)
    ax.step(sx, sy, where="post", color="tab:blue", lw=1.5, label="Pareto front")
    ax.scatter(sx, sy, s=18, color="tab:blue")
    if "percentiles" in table and table["percentiles"].notna().any():
        sw = table[table["percentiles"].notna()]
        ax.scatter(sw[metric], 100 * sw["acc"], s=16, color="tab:orange", zorder=4, label="percentile cuts")
        for _, r in sw.iterrows():
            ax.annotate(str(r["percentiles"]), (r[metric], 100 * r["acc"]), fontsize=5, color="tab:orange",
                        xytext=(2, -6), textcoords="offset points")
    if "strategy" in table and (table["strategy"] == "uniform").any():
        uni = table[table["strategy"] == "uniform"]
        ax.scatter(uni[metric], 100 * uni["acc"], s=40, marker="s", color="k", zorder=5, label="uniform")
        for _, r in uni.iterrows():
            fmts = {v for k, v in r.items() if str(k).startswith("fmt:")}
            ax.annotate(f"all {'/'.join(sorted(fmts))}", (r[metric], 100 * r["acc"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
    if "chosen" in table and table["chosen"].any():
        c = table[table["chosen"]].iloc[0]
        ax.scatter([c[metric]], [100 * c["acc"]], s=90, marker="*", color="tab:red", zorder=6, label="chosen")
    if baseline_acc is not None:
        ax.axhline(100 * baseline_acc, color="k", ls="--", lw=0.8, label="fp32")
    ax.set_xlabel(axis_label(metric, energy_unit))
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7)


def draw_sensitivity(ax, sens: pd.DataFrame, method: str) -> None:
    piv = sens.assign(_s=score(sens, method)).pivot(index="layer", columns="format", values="_s")
    piv = piv.loc[list(dict.fromkeys(sens["layer"]))]
    fmts = list(dict.fromkeys(sens.sort_values("weight_bits")["format"]))
    width = 0.8 / len(fmts)
    pos = np.arange(len(piv))
    for i, f in enumerate(fmts):
        ax.bar(pos + i * width - 0.4 + width / 2, piv[f].to_numpy(float), width, label=f)
    ax.set_xticks(pos, piv.index, rotation=45, ha="right", fontsize=7)
    if (piv.to_numpy(float) > 0).all():
        ax.set_yscale("log")
    ax.set_ylabel(f"{method} score")
    on = sens["sensitivity_on"].iloc[0] if "sensitivity_on" in sens and method in ("l2", "sqnr") else None
    ax.set_title(f"sensitivity per layer ({method}" + (f" on the {on})" if on else ")"), fontsize=9)
    ax.legend(fontsize=7)


def draw_pie(ax, layers: pd.DataFrame, weight: str = "params") -> None:
    w = layers.groupby("format")[weight].sum() if weight in layers else layers["format"].value_counts()
    ax.pie(w.to_numpy(float), labels=[f"{f}\n({n} layers)" for f, n in
                                      zip(w.index, layers["format"].value_counts().reindex(w.index))],
           autopct="%1.0f%%", textprops={"fontsize": 7})
    ax.set_title(f"formats, share of {weight}", fontsize=9)


def draw_energy(ax, layers: pd.DataFrame) -> None:
    parts = ([c for c in ("energy_mac_pj", "energy_wmem_pj", "energy_amem_pj") if c in layers]
             if "energy_wmem_pj" in layers else [c for c in ("energy_mac_pj", "energy_mem_pj") if c in layers])
    parts = parts or ["energy_pj"]
    bottom = np.zeros(len(layers))
    for c in parts:
        v = layers[c].to_numpy(float)
        ax.bar(np.arange(len(layers)), v, bottom=bottom, label=c.replace("energy_", "").replace("_pj", ""))
        bottom += v
    ax.set_xticks(np.arange(len(layers)), [f"{n}\n{f}" for n, f in zip(layers["layer"], layers["format"])],
                  rotation=45, ha="right", fontsize=6)
    model = bool(layers.get("energy_is_model", pd.Series([False])).any())
    unit = energy_unit_of(layers["energy_unit"].iloc[0] if "energy_unit" in layers and len(layers) else None)
    ax.set_ylabel(f"{unit} per sample" + (" (modelled)" if model and unit == "pJ" else ""))
    ax.set_title("energy per layer", fontsize=9)
    ax.legend(fontsize=7)


# ---- single figures ---------------------------------------------------------------------------------
def plot_pareto(table: pd.DataFrame, path, metric: str = "size", baseline_acc=None,
                energy_unit=None) -> Path | None:
    if table is None or table.empty or metric not in table:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6))
    draw_pareto(ax, table, metric, baseline_acc, energy_unit)
    ax.set_title(f"accuracy vs {metric}", fontsize=9)
    return _save(fig, path)


def plot_sensitivity(sens: pd.DataFrame, path, method: str | None = None) -> Path | None:
    ms = methods_in(sens) if sens is not None else []
    if not ms:
        return None
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * sens["layer"].nunique() + 2), 3.6))
    draw_sensitivity(ax, sens, method or ms[0])
    return _save(fig, path)


def plot_score_histogram(sens: pd.DataFrame, path) -> Path | None:
    ms = methods_in(sens) if sens is not None else []
    if not ms:
        return None
    fig, axes = plt.subplots(1, len(ms), figsize=(2.8 * len(ms), 2.6), squeeze=False)
    for ax, m in zip(axes[0], ms):
        v = score(sens, m).to_numpy(float)
        v = v[np.isfinite(v)]
        log = len(v) > 0 and bool((v > 0).all())
        ax.hist(np.log10(v) if log else v, bins=min(20, max(3, len(v))), color="tab:blue", alpha=0.8)
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("log10 score" if log else "score", fontsize=7)
    return _save(fig, path)


def plot_bitwidth_pie(layers: pd.DataFrame, path) -> Path | None:
    if layers is None or layers.empty:
        return None
    fig, ax = plt.subplots(figsize=(4, 3.6))
    draw_pie(ax, layers)
    return _save(fig, path)


def plot_energy_breakdown(layers: pd.DataFrame, path) -> Path | None:
    if layers is None or layers.empty or not ({"energy_pj", "energy_mac_pj"} & set(layers)):
        return None
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(layers) + 2), 3.6))
    draw_energy(ax, layers)
    return _save(fig, path)


def plot_parallel_coordinates(df: pd.DataFrame, path, columns=None, color: str = "accuracy") -> Path | None:
    """One line per row across ``columns`` (default W, A, then ``color``), coloured by ``color``.
    Text columns (format names) become evenly spaced categories; numbers are min-max scaled."""
    if df is None or df.empty:
        return None
    cols = list(columns) if columns else [c for c in ("W", "A") if c in df] + [color]
    cols = [c for c in cols if c in df]
    if len(cols) < 2 or color not in df:
        return None
    fig, ax = plt.subplots(figsize=(1.8 * len(cols) + 1.5, 3.6))
    scaled, ticks = {}, {}
    for c in cols:
        v = df[c]
        if pd.api.types.is_numeric_dtype(v):
            lo, hi = float(v.min()), float(v.max())
            scaled[c] = (v.to_numpy(float) - lo) / (hi - lo or 1.0)
            ticks[c] = [(0.0, f"{lo:.3g}"), (1.0, f"{hi:.3g}")]
        else:
            cats = list(dict.fromkeys(v.astype(str)))
            pos = {k: i / max(len(cats) - 1, 1) for i, k in enumerate(cats)}
            scaled[c] = v.astype(str).map(pos).to_numpy(float)
            ticks[c] = [(p, k) for k, p in pos.items()]
    cval = df[color].to_numpy(float)
    cmap = plt.get_cmap("viridis")
    norm = plt.Normalize(np.nanmin(cval), np.nanmax(cval))
    xs = np.arange(len(cols))
    for i in range(len(df)):
        ax.plot(xs, [scaled[c][i] for c in cols], color=cmap(norm(cval[i])), alpha=0.8, lw=1.2)
    for x, c in zip(xs, cols):
        ax.axvline(x, color="k", lw=0.6)
        for p, t in ticks[c]:
            ax.text(x + 0.03, p, t, fontsize=7, va="center")
    ax.set_xticks(xs, cols)
    ax.set_yticks([])
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=color)
    ax.set_title("W / A sweep", fontsize=9)
    return _save(fig, path)


def plot_summary(table, sens, layers, path, metric: str = "size", baseline_acc=None,
                 energy_unit=None) -> Path | None:
    """4 panels: Pareto front, sensitivity per layer, format pie, energy per layer."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    filled = 0
    for ax, (ok, draw) in zip(axes.flat, [
            (table is not None and not table.empty, lambda a: draw_pareto(a, table, metric, baseline_acc, energy_unit)),
            (sens is not None and bool(methods_in(sens)), lambda a: draw_sensitivity(a, sens, methods_in(sens)[0]))
            if sens is not None and methods_in(sens) else
            (table is not None and metric != "energy" and "energy" in getattr(table, "columns", ()),
             lambda a: draw_pareto(a, table, "energy", baseline_acc, energy_unit)),
            (layers is not None and not layers.empty, lambda a: draw_pie(a, layers)),
            (layers is not None and "energy_pj" in getattr(layers, "columns", ()), lambda a: draw_energy(a, layers))]):
        if ok:
            draw(ax)
            filled += 1
        else:
            ax.axis("off")
    if filled < 2:   # one panel is already its own figure
        plt.close(fig)
        return None
    return _save(fig, path)


# ---- report -------------------------------------------------------------------------------------------
def _read(out: Path, name: str):
    p = out / name
    if not p.exists():
        return None
    return json.loads(p.read_text()) if name.endswith(".json") else pd.read_csv(p)


def render_figures(out_dir) -> dict:
    """Every figure the folder's files allow; {name: path}."""
    out = Path(out_dir)
    table, layers, sens = _read(out, "results.csv"), _read(out, "assignment.csv"), _read(out, "sensitivity.csv")
    summary = _read(out, "summary.json") or {}
    metric = summary.get("objective", "size")
    base = (summary.get("baseline") or {}).get("acc")
    unit = (summary.get("units") or {}).get("energy")
    figs = {"pareto": plot_pareto(table, out / "pareto.png", metric, base, unit),
            "sensitivity": plot_sensitivity(sens, out / "sensitivity.png"),
            "score_histogram": plot_score_histogram(sens, out / "sensitivity_hist.png"),
            "bitwidths": plot_bitwidth_pie(layers, out / "bitwidths.png"),
            "energy": plot_energy_breakdown(layers, out / "energy.png"),
            "summary": plot_summary(table, sens, layers, out / "summary.png", metric, base, unit)}
    if table is not None and len(table) > 1:
        for m in UNITS:
            if m != metric and m in table:
                figs[f"pareto_{m}"] = plot_pareto(table, out / f"pareto_{m}.png", m, base, unit)
    return {k: v for k, v in figs.items() if v is not None}


def report_fragment(out_dir, figures: dict | None = None, prefix: str = "") -> str:
    """An HTML ``<section>`` with the summary line and every figure; image paths are the file names
    with ``prefix`` in front (e.g. ``"search/"`` when the page lives one folder up)."""
    out = Path(out_dir)
    figures = figures if figures is not None else {p.stem: p for p in sorted(out.glob("*.png"))}
    summary = _read(out, "summary.json") or {}
    head = ""
    if summary:
        c = summary.get("chosen", {})
        head = (f"<p>strategy <b>{html.escape(str(summary.get('strategy')))}</b>, "
                f"{summary.get('n_evaluations')} evaluations; fp32 acc "
                f"{100 * (summary.get('baseline') or {}).get('acc', float('nan')):.2f}%, chosen acc "
                f"{100 * c.get('acc', float('nan')):.2f}% (drop {c.get('acc_drop_pp', float('nan')):.2f} pp)</p>")
    imgs = "\n".join(f'<figure><img src="{html.escape(prefix + Path(p).name)}" alt="{html.escape(k)}" '
                     f'style="max-width:100%">'
                     f"<figcaption>{html.escape(k)}</figcaption></figure>" for k, p in figures.items())
    title = "Mixed-precision search" if summary else "Layer sensitivity"
    return f'<section class="lowbit-search">\n<h2>{title}</h2>\n{head}\n{imgs}\n</section>'


def render_search_report(out_dir) -> Path:
    """Write the figures and ``search_report.html`` into ``out_dir``; returns the page's path."""
    out = Path(out_dir)
    figs = render_figures(out)
    page = out / "search_report.html"
    page.write_text("<!doctype html>\n<html><head><meta charset='utf-8'><title>lowbit search</title></head>"
                    f"<body>\n{report_fragment(out, figs)}\n</body></html>\n")
    return page
