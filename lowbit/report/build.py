"""Build the report directory: PNG figures, table CSVs and a self-contained ``index.html``.

The HTML page embeds every image as base64 and every table as HTML, so the one file can be
mailed or archived on its own.
"""
from __future__ import annotations

import html
import time
from pathlib import Path

import pandas as pd

from lowbit.experiments.store import load_tables
from lowbit.experiments.store import write_json
from lowbit.report import plots
from lowbit.report.analysis import analysis_summary, summary_lines
from lowbit.report.plots_training import training_figures
from lowbit.report.page import CSS, html_table, img_tag
from lowbit.report.tables import comparison_table, precision_table

def _environment(runs: pd.DataFrame) -> pd.DataFrame:
    cols = ["lowbit_version", "git_commit", "git_dirty", "torch_version", "numpy_version",
            "python_version", "hostname", "device_name", "device_used", "threads"]
    cols = [c for c in cols if c in runs]
    if runs.empty or not cols:
        return pd.DataFrame()
    values = {c: ", ".join(sorted(runs[c].dropna().astype(str).unique())) for c in cols}
    return pd.DataFrame({"key": list(values), "value": list(values.values())})


def render_html(title: str, runs: pd.DataFrame, figures: dict[str, Path],
                tables: dict[str, pd.DataFrame], extra: list[str] = ()) -> str:
    """The report page as one HTML string."""
    counts = runs["status"].value_counts().to_dict() if "status" in runs else {}
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p>{len(runs)} runs: " + ", ".join(f"{v} {html.escape(str(k))}"
                                                 for k, v in counts.items())
             + f". Generated {time.strftime('%Y-%m-%d %H:%M:%S')}. Accuracy = test accuracy at "
             "the epoch of best validation accuracy.</p>"]
    for name, df in tables.items():
        parts.append(f"<h2>{html.escape(name)}</h2>")
        parts.append(html_table(df, index=df.index.name is not None))
    for name, path in figures.items():
        parts.append(f"<h2>{html.escape(name)}</h2>{img_tag(path, name)}")
    parts.extend(extra)     # sections of ptq / search folders (lowbit.report.sections)
    parts.append("</body></html>")
    return "\n".join(parts)


def build_report(results_dir: str | Path, out_dir: str | Path | None = None,
                 title: str | None = None, include=()) -> Path:
    """Figures, ``comparison.csv``, ``precision.csv``, ``analysis.json`` / ``analysis.txt``
    (:mod:`lowbit.report.analysis`) and ``index.html`` into ``out_dir``
    (default ``<results_dir>/report``); returns the path of ``index.html``. ``include``: ptq / search
    output folders added to the page as extra sections (:mod:`lowbit.report.sections`)."""
    results_dir = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else results_dir / "report"
    data = load_tables(results_dir)
    runs, epochs = data["runs"], data["epochs"]
    if runs.empty or not {"run_id", "status"} <= set(runs.columns):
        raise ValueError(f"no runs in {str(results_dir)!r}: its runs table (results/runs.csv or "
                         ".parquet) is missing, empty, corrupt or not a lowbit runs table; re-run "
                         "`lowbit run` on the sweep to rebuild it")
    out.mkdir(parents=True, exist_ok=True)
    figures = plots.make_all(runs, epochs, out)
    figures.update(training_figures(epochs, out))
    summary = analysis_summary(runs)
    write_json(out / "analysis.json", summary)
    lines = summary_lines(summary)
    (out / "analysis.txt").write_text("\n".join(lines) + "\n")
    analysis = "<h2>Analysis summary</h2><ul>" + "".join(
        f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"
    tables = {"Accuracy, footprint and time by precision": precision_table(runs),
              "Comparison": comparison_table(runs)}
    tables["Comparison"].to_csv(out / "comparison.csv")
    tables["Accuracy, footprint and time by precision"].to_csv(out / "precision.csv", index=False)
    if not data["summary"].empty and data["summary"].get("n_seeds", pd.Series([1])).max() > 1:
        tables["Mean and std over seeds"] = data["summary"]
    if "status" in runs and (runs["status"] == "failed").any():
        failed = runs[runs["status"] == "failed"]
        tables["Failed runs"] = failed[[c for c in ("run_id", "model", "activation", "precision",
                                                    "error") if c in failed]]
    tables["Environment"] = _environment(runs)
    name = runs["sweep"].iloc[0] if "sweep" in runs and len(runs) else results_dir.name
    page = out / "index.html"
    tmp = out / ".index.html.tmp"
    from lowbit.report.sections import section
    extra = [analysis] + [section(f) for f in include]
    tmp.write_text(render_html(title or f"lowbit report: {name}", runs, figures, tables, extra))
    tmp.replace(page)
    return page
