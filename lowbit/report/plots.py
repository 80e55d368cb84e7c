"""Report figures (matplotlib, Agg backend, PNG). Each function saves one file and returns its
path, or None when the data has nothing to show (e.g. no finished runs)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lowbit.report.tables import (finished, fp32_in_every_row, is_ok,  # noqa: E402
                                  precision_order, status_of, varying)

DPI = 90


def _panels(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One panel per model/activation/dataset combination present."""
    keys = [k for k in ("model", "activation", "dataset") if k in df]
    if df.empty:
        return []
    return [("/".join(map(str, k if isinstance(k, tuple) else (k,))), g)
            for k, g in df.groupby(keys, sort=True)]


def _grid(n: int, size=(3.6, 2.8)):
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _line_label(df: pd.DataFrame) -> list[str]:
    cols = [c for c in varying(df) if c not in ("model", "activation", "dataset")]
    return cols or ["precision"]


def curves(epochs: pd.DataFrame, path: Path, metric: str = "acc") -> Path | None:
    """``val_<metric>`` (solid) and ``train_<metric>`` (dashed) vs epoch, one line per precision
    (mean over seeds), one panel per model/activation/dataset."""
    if epochs.empty or f"val_{metric}" not in epochs:
        return None
    panels = _panels(epochs)
    labels = _line_label(epochs)
    order = {p: i for i, p in enumerate(precision_order(epochs))}
    fig, axes = _grid(len(panels))
    for ax, (title, g) in zip(axes, panels):
        groups = sorted(g.groupby(labels, sort=False), key=lambda kv: order.get(
            kv[0][0] if isinstance(kv[0], tuple) else kv[0], 0))
        for i, (key, lg) in enumerate(groups):
            name = "/".join(map(str, key if isinstance(key, tuple) else (key,)))
            if "status" in lg and _mark(status_of(lg.drop_duplicates("run_id")["status"])):
                name += " " + _mark(status_of(lg.drop_duplicates("run_id")["status"]))
            mean = lg.groupby("epoch")[[f"val_{metric}", f"train_{metric}"]].mean()
            color = f"C{i % 10}"
            ax.plot(mean.index, mean[f"val_{metric}"], "-o", ms=3, color=color, label=name)
            ax.plot(mean.index, mean[f"train_{metric}"], "--", color=color, alpha=0.5)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{metric} (solid val, dashed train)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(f"{'Accuracy' if metric == 'acc' else 'Loss'} vs epoch", fontsize=10)
    return _save(fig, path)


def _mark(status: str) -> str:
    """Short mark of a grid point's status ('' when every run completed)."""
    return "" if is_ok(status) else f"[{status}]"


def accuracy_heatmap(runs: pd.DataFrame, path: Path) -> Path | None:
    """Test accuracy (at best val, mean over seeds): rows model/activation, columns precision.
    A cell whose runs diverged or failed is marked with that status (failed: no value)."""
    if runs.empty or "status" not in runs:
        return None
    done = runs
    rows = [c for c in ("model", "activation", "dataset", "softmax_precision", "quantize",
                        "augmentation") if c in varying(done) or c in ("model", "activation")]
    if "quantize" in rows:
        done = fp32_in_every_row(done)
    table = done.pivot_table(index=rows, columns="precision", values="test_acc_at_best",
                             aggfunc="mean", dropna=False)
    status = done.pivot_table(index=rows, columns="precision", values="status",
                              aggfunc=status_of, dropna=False)
    cols = [p for p in precision_order(done) if p in status.columns]
    status = status[cols]
    table = table.reindex(index=status.index, columns=cols)
    data = 100 * table.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * data.shape[1], 1.0 + 0.4 * data.shape[0]))
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(data.shape[1]), table.columns, rotation=45, ha="right", fontsize=8)
    ylabels = ["/".join(map(str, k if isinstance(k, tuple) else (k,))) for k in table.index]
    ax.set_yticks(range(data.shape[0]), ylabels, fontsize=8)
    for (i, j), v in np.ndenumerate(data):
        st = status.iat[i, j]
        mark = _mark(st) if isinstance(st, str) else ""
        text = "\n".join(t for t in (f"{v:.1f}" if np.isfinite(v) else "", mark) if t)
        if text:
            ax.text(j, i, text, ha="center", va="center", fontsize=6 if mark else 7,
                    color="white" if not np.isfinite(v) or v < 60 else "black")
    fig.colorbar(im, ax=ax, label="test accuracy (%)")
    ax.set_title("Accuracy by precision", fontsize=10)
    return _save(fig, path)


def _bars(ax, done: pd.DataFrame, value: str, ylabel: str, scale: float = 1.0,
          runs_status: pd.DataFrame | None = None) -> None:
    """Bars of ``value`` per precision; a bar whose runs (``runs_status``: all runs, failed too)
    diverged or failed carries that status in red."""
    order = precision_order(done)
    series = [c for c in ("model", "activation") if c in varying(done)] or ["model"]
    table = done.pivot_table(index="precision", columns=series, values=value, aggfunc="mean")
    table = table.reindex([p for p in order if p in table.index]) * scale
    marks = runs_status.pivot_table(index="precision", columns=series, values="status",
                                    aggfunc=status_of) if runs_status is not None else pd.DataFrame()
    width = 0.8 / max(1, table.shape[1])
    x = np.arange(len(table.index))
    for i, col in enumerate(table.columns):
        name = "/".join(map(str, col if isinstance(col, tuple) else (col,)))
        bars = ax.bar(x + i * width - 0.4 + width / 2, table[col].to_numpy(float), width,
                      label=name)
        for bar, st in zip(bars, marks.reindex(table.index)[col] if col in marks else []):
            if isinstance(st, str) and _mark(st):
                ax.annotate(_mark(st), (bar.get_x() + bar.get_width() / 2, 0), rotation=90,
                            ha="center", va="bottom", fontsize=6, color="crimson")
    ax.set_xticks(x, table.index, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def resources(runs: pd.DataFrame, path: Path) -> Path | None:
    """Time per epoch, peak memory and weight footprint per precision (bars per model/act)."""
    done = finished(runs)
    if done.empty:
        return None
    panels = [("mean_epoch_time_s", "time per epoch (s)", 1.0),
              ("peak_mem_mb", "peak memory (MiB)", 1.0),
              ("footprint_weight_bytes", "weight footprint (KiB)", 1 / 1024)]
    panels = [p for p in panels if p[0] in done and done[p[0]].notna().any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (col, label, scale) in zip(axes[0], panels):
        _bars(ax, done, col, label, scale, runs)
        ax.set_title(label, fontsize=9)
    axes[0][0].legend(fontsize=6)
    return _save(fig, path)


def gap(runs: pd.DataFrame, path: Path) -> Path | None:
    """Generalisation gap (train - val accuracy at the best epoch, points) per precision."""
    done = finished(runs)
    if done.empty or "gen_gap" not in done:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    _bars(ax, done, "gen_gap", "train - val accuracy (points)", 100.0, runs)
    ax.axhline(0, color="black", lw=0.8)
    ax.legend(fontsize=6)
    ax.set_title("Generalisation gap at the best epoch", fontsize=10)
    return _save(fig, path)


def make_all(runs: pd.DataFrame, epochs: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """Every figure of the report into ``out_dir``; returns {title: path} of those produced."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if {"run_id", "status"} <= set(runs) and "run_id" in epochs and "status" not in epochs:
        epochs = epochs.merge(runs[["run_id", "status"]], on="run_id", how="left")
    figures = {
        "Accuracy vs epoch": curves(epochs, out_dir / "accuracy_vs_epoch.png", "acc"),
        "Loss vs epoch": curves(epochs, out_dir / "loss_vs_epoch.png", "loss"),
        "Accuracy by precision": accuracy_heatmap(runs, out_dir / "accuracy_heatmap.png"),
        "Time and memory by precision": resources(runs, out_dir / "resources.png"),
        "Generalisation gap": gap(runs, out_dir / "generalisation_gap.png"),
    }
    return {k: v for k, v in figures.items() if v is not None}
