"""Per-epoch training figures of a sweep: the learning-rate schedule and the machine's utilisation.

One line per run (the run's config that varies in the sweep as label), one panel per quantity:

* ``learning_rate.png``: ``epoch_lr``, the learning rate at the start of each epoch (warm-up then
  cosine decay, :func:`lowbit.train.lr_factor`).
* ``hardware_stats.png``: whole-machine CPU utilisation (%), machine RAM in use (%), the run
  process's resident memory (MiB) and GPU utilisation (%, only with pynvml on CUDA), each sampled
  once per epoch by :class:`lowbit.train_usage.UsageSampler`.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from lowbit.report.tables import GRID, varying  # noqa: E402

DPI = 90
HARDWARE = (("cpu_util_pct", "CPU utilisation (%)"), ("ram_used_pct", "RAM in use (%)"),
            ("rss_mb", "process memory (MiB)"), ("gpu_util_pct", "GPU utilisation (%)"))
MAX_LEGEND = 16


def _labels(epochs: pd.DataFrame) -> pd.Series:
    cols = varying(epochs.drop_duplicates("run_id"), GRID + ["seed"]) if "run_id" in epochs else ["precision"]
    return epochs[cols].astype(str).agg("/".join, axis=1)


def epoch_series(epochs: pd.DataFrame, path: Path, panels, title: str) -> Path | None:
    """One panel per (column, y label) of ``panels`` that holds data, one line per run."""
    panels = [(c, y) for c, y in panels if c in epochs and epochs[c].notna().any()]
    if epochs.empty or not panels or "run_id" not in epochs:
        return None
    df = epochs.assign(_label=_labels(epochs))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (col, ylabel) in zip(axes[0], panels):
        for i, (run, g) in enumerate(df.groupby("run_id", sort=False)):
            g = g.sort_values("epoch")
            ax.plot(g["epoch"], g[col], "-o", ms=2, lw=1, color=f"C{i % 10}", label=g["_label"].iloc[0])
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
        if df["run_id"].nunique() <= MAX_LEGEND:
            ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def training_figures(epochs: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """``learning_rate.png`` and ``hardware_stats.png`` into ``out_dir``; {title: path} of those drawn."""
    figs = {"Learning-rate schedule": epoch_series(epochs, out_dir / "learning_rate.png",
                                                   [("epoch_lr", "learning rate at epoch start")],
                                                   "Learning-rate schedule"),
            "Hardware utilisation": epoch_series(epochs, out_dir / "hardware_stats.png", HARDWARE,
                                                 "Hardware utilisation per epoch")}
    return {k: v for k, v in figs.items() if v is not None}
