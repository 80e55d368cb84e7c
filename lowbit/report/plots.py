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


MAX_PANELS = 48           # small multiples per figure; beyond that panels merge (mean over activations)
MAX_INCHES = (20.0, 15.0)  # every figure fits (width, height) = 1800 x 1350 px at DPI


def _panels(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One panel per model/activation/dataset combination present; above :data:`MAX_PANELS`, one per
    model/dataset (lines then average over the activations)."""
    keys = [k for k in ("model", "activation", "dataset") if k in df]
    if df.empty:
        return []
    if df.groupby(keys).ngroups > MAX_PANELS:
        keys = [k for k in keys if k != "activation"]
    return [("/".join(map(str, k if isinstance(k, tuple) else (k,))), g)
            for k, g in df.groupby(keys, sort=True)]


def _grid(n: int, size=(3.6, 2.8)):
    cols = min(n, 3 if n <= 9 else 8)
    rows = -(-n // cols)
    shrink = min(1.0, MAX_INCHES[0] / (size[0] * cols), MAX_INCHES[1] / (size[1] * rows))
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols * shrink, size[1] * rows * shrink),
                             squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat)


def _save(fig, path: Path, tight: bool = True) -> Path:
    w, h = fig.get_size_inches()
    fig.set_size_inches(min(w, MAX_INCHES[0]), min(h, MAX_INCHES[1]))
    if tight:
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
        ax.set_title(title, fontsize=9 if len(panels) <= 9 else 7)
        ax.set_xlabel("epoch", fontsize=7)
        ax.set_ylabel(f"{metric} (solid val, dashed train)", fontsize=8 if len(panels) <= 9 else 6)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
        if len(panels) <= 12:
            ax.legend(fontsize=6)
    if len(panels) > 12:  # one legend for all panels (same colour = same line label everywhere)
        handles, names = _unique_handles(axes)
        fig.legend(handles, names, loc="lower center", ncol=min(8, len(names)), fontsize=7)
        fig.subplots_adjust(bottom=0.08)
    fig.suptitle(f"{'Accuracy' if metric == 'acc' else 'Loss'} vs epoch", fontsize=10)
    return _save(fig, path)


def _unique_handles(axes):
    seen: dict = {}
    for ax in axes:
        for line in ax.get_lines():
            name = line.get_label()
            if not name.startswith("_"):
                seen.setdefault(name, line)
    return list(seen.values()), list(seen)


def _mark(status: str) -> str:
    """Short mark of a grid point's status ('' when every run completed)."""
    return "" if is_ok(status) else f"[{status}]"


def _derived(df: pd.DataFrame, col: str) -> bool:
    """Whether ``col`` follows from the precision (``softmax: same``, fp32's quantize 'none')."""
    return col in df and bool((df.groupby("precision")[col].nunique(dropna=False) <= 1).all())


MAX_HEAT_ROWS = 40  # rows per heatmap panel; more rows are split into one panel per model


def accuracy_heatmap(runs: pd.DataFrame, path: Path) -> Path | None:
    """Test accuracy (at best val, mean over seeds): rows model/activation, columns precision; one
    panel per model when there are more than :data:`MAX_HEAT_ROWS` rows. A cell whose runs diverged
    or failed is marked with that status (failed: no value)."""
    if runs.empty or "status" not in runs:
        return None
    done = runs
    rows = [c for c in ("model", "activation", "dataset", "softmax_precision", "quantize",
                        "augmentation") if (c in varying(done) and not _derived(done, c))
            or c in ("model", "activation")]
    if "quantize" in rows:
        done = fp32_in_every_row(done)
    table = done.pivot_table(index=rows, columns="precision", values="test_acc_at_best",
                             aggfunc="mean", dropna=False)
    status = done.pivot_table(index=rows, columns="precision", values="status",
                              aggfunc=status_of, dropna=False)
    cols = [p for p in precision_order(done) if p in status.columns]
    status = status[cols]
    table = table.reindex(index=status.index, columns=cols)
    if len(table) > MAX_HEAT_ROWS:
        parts = [(str(k), table.xs(k, level=0, drop_level=True), status.xs(k, level=0, drop_level=True))
                 for k in table.index.get_level_values(0).unique()]
    else:
        parts = [("", table, status)]
    n_rows = max(len(t) for _, t, _ in parts)
    w, h = 1.0 + 0.6 * len(cols), 1.0 + 0.28 * n_rows
    fig, axes = _grid(len(parts), size=(w + 1.2, h)) if len(parts) > 1 else plt.subplots(
        figsize=(w + 1.6, 1.0 + 0.4 * n_rows))
    axes = axes if isinstance(axes, list) else [axes]
    for ax, (name, t, st) in zip(axes, parts):
        im = _heat(ax, t, st, small=len(parts) > 1)
        ax.set_title(name or "Accuracy by precision", fontsize=9)
    fig.colorbar(im, ax=axes[:len(parts)], label="test accuracy (%)", shrink=0.6)
    if len(parts) > 1:
        fig.subplots_adjust(hspace=0.55, wspace=0.45, right=0.85)
        fig.suptitle("Accuracy by precision (test accuracy %, one panel per model)", fontsize=10)
    return _save(fig, path, tight=False)


def _heat(ax, table: pd.DataFrame, status: pd.DataFrame, small: bool):
    data = 100 * table.to_numpy(dtype=float)
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(data.shape[1]), table.columns, rotation=45, ha="right", fontsize=7)
    ylabels = ["/".join(map(str, k if isinstance(k, tuple) else (k,))) for k in table.index]
    ax.set_yticks(range(data.shape[0]), ylabels, fontsize=6 if small else 8)
    for (i, j), v in np.ndenumerate(data):
        st = status.iat[i, j]
        mark = _mark(st) if isinstance(st, str) else ""
        text = "\n".join(t for t in (f"{v:.0f}" if small and np.isfinite(v) else
                                      f"{v:.1f}" if np.isfinite(v) else "", mark) if t)
        if text:
            ax.text(j, i, text, ha="center", va="center", fontsize=5 if small or mark else 7,
                    color="white" if not np.isfinite(v) or v < 60 else "black")
    return im


def _bars(ax, done: pd.DataFrame, value: str, ylabel: str, scale: float = 1.0,
          runs_status: pd.DataFrame | None = None) -> None:
    """Bars of ``value`` per precision; a bar whose runs (``runs_status``: all runs, failed too)
    diverged or failed carries that status in red."""
    order = precision_order(done)
    series = [c for c in ("model", "activation") if c in varying(done)] or ["model"]
    if len(series) > 1 or (done.groupby(series).ngroups if len(done) else 0) > 8:
        series = ["model"]   # many series: bars of the mean over the rest
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


def _facet_bars(runs: pd.DataFrame, path: Path, metrics, title: str) -> Path | None:
    """Bars per precision: one row of panels per metric ``(column, label, scale)``, one column per
    model (series: the activations, or one bar when only the model varies)."""
    done = finished(runs)
    metrics = [m for m in metrics if m[0] in done and done[m[0]].notna().any()]
    if done.empty or not metrics:
        return None
    models = sorted(done["model"].unique()) if "model" in done else [None]
    fig, axes = plt.subplots(len(metrics), len(models), squeeze=False,
                             figsize=(min(4.2 * len(models), MAX_INCHES[0]),
                                      min(3.0 * len(metrics) + 0.6, MAX_INCHES[1])))
    for i, (col, label, scale) in enumerate(metrics):
        for j, model in enumerate(models):
            ax = axes[i][j]
            sel = (lambda d: d) if model is None else (lambda d, m=model: d[d["model"] == m])
            _bars(ax, sel(done), col, label, scale, sel(runs))
            ax.set_title(f"{model}: {label}" if model is not None else label, fontsize=8)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def training_time(runs: pd.DataFrame, path: Path) -> Path | None:
    """Time per epoch and total training time per precision, one panel per model."""
    return _facet_bars(runs, path, [("mean_epoch_time_s", "time per epoch (s)", 1.0),
                                    ("total_time_s", "total time (s)", 1.0)], "Training time")


def memory_usage(runs: pd.DataFrame, path: Path) -> Path | None:
    """Measured memory per precision: what one training step allocates (tensors, at the peak;
    ``alloc_peak_mb``) and the process peak (RSS on CPU, the allocator's peak on CUDA)."""
    return _facet_bars(runs, path, [("alloc_peak_mb", "allocated per step, peak (MiB)", 1.0),
                                    ("peak_mem_mb", "process peak (MiB)", 1.0)], "Memory usage")


def memory_comparison(runs: pd.DataFrame, path: Path) -> Path | None:
    """Estimated footprint (weights, activations between layers) beside the measured allocation."""
    return _facet_bars(runs, path, [("footprint_weight_bytes", "weights, estimated (KiB)", 1 / 1024),
                                    ("footprint_activation_bytes", "activations, estimated (KiB)", 1 / 1024),
                                    ("alloc_peak_mb", "training step, measured (KiB)", 1024.0)],
                       "Memory comparison: estimated footprint vs measured allocation")


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
        "Memory usage": memory_usage(runs, out_dir / "memory_usage.png"),
        "Training time": training_time(runs, out_dir / "training_time.png"),
        "Memory comparison": memory_comparison(runs, out_dir / "memory_comparison.png"),
        "Generalisation gap": gap(runs, out_dir / "generalisation_gap.png"),
    }
    return {k: v for k, v in figures.items() if v is not None}
