"""Comparison tables from the runs table (``results/runs``).

Accuracy here is the test accuracy at the epoch of best validation accuracy
(``test_acc_at_best``): chosen on validation, reported on test. Multi-seed configs show the mean
(and ``±`` the std where the table is text). "Drop vs FP32" is the FP32 run of the same model,
activation, dataset and augmentation (trained without AMP) minus this run, in percentage points;
"speed-up vs FP32" is that FP32 run's time per epoch over this run's.
"""
from __future__ import annotations

import pandas as pd

GRID = ["model", "activation", "dataset", "precision", "softmax_precision", "quantize",
        "augmentation", "amp"]
BASELINE_KEYS = ["model", "activation", "dataset", "augmentation"]
FP32 = "fp32"
TRANSPOSE_MAX = 8  # comparison tables with at most this many experiments get one column each
OK = ("completed", "early_stopped")  # statuses whose accuracy is a usable baseline


def status_of(statuses) -> str:
    """One grid point's status: ``completed``, ``diverged``, ... or ``1 completed, 1 failed``."""
    counts = pd.Series(list(statuses), dtype=object).fillna("unknown").value_counts()
    if len(counts) == 1:
        return str(counts.index[0])
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def is_ok(status: str) -> bool:
    """Whether a :func:`status_of` string has only usable runs."""
    return all(part.split()[-1] in OK for part in str(status).split(", "))


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that produced metrics (not failed)."""
    if runs.empty or "status" not in runs:
        return runs.iloc[0:0]
    return runs[runs["status"] != "failed"]


def varying(df: pd.DataFrame, candidates=GRID) -> list[str]:
    """The grid columns that take more than one value in ``df`` (model and precision if none).

    ``quantize`` counts only over quantized runs: fp32 runs always have ``none`` there.
    """
    quantized = df[df["precision"] != FP32] if "precision" in df else df
    cols = []
    for c in candidates:
        src = quantized if c == "quantize" and len(quantized) else df
        if c in df and src[c].astype(str).nunique() > 1:
            cols.append(c)
    return cols or [c for c in ("model", "precision") if c in df]


def fp32_in_every_row(df: pd.DataFrame) -> pd.DataFrame:
    """Copy each fp32 run (quantize ``none``) once per quantize setting of the quantized runs,
    so a table with quantize as a row key shows the fp32 baseline in every row."""
    if "quantize" not in df or "precision" not in df:
        return df
    settings = df.loc[df["precision"] != FP32, "quantize"].unique()
    fp32 = df[df["precision"] == FP32]
    if fp32.empty or not len(settings):
        return df
    copies = [fp32.assign(quantize=q) for q in settings]
    return pd.concat([df[df["precision"] != FP32], *copies], ignore_index=True)


def precision_order(df: pd.DataFrame) -> list[str]:
    """Precisions from widest to narrowest (by bits per element), fp32 first."""
    if "precision" not in df or df.empty:
        return []
    bits = df.groupby("precision")["precision_bits"].first() if "precision_bits" in df \
        else pd.Series(0, index=df["precision"].unique())
    return sorted(bits.index, key=lambda p: (p != FP32, -float(bits[p]), p))


def _grouped(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per grid point (failed runs have no metrics), with ``*_std`` columns,
    ``n_seeds`` and ``status`` (:func:`status_of` over every run of the point, failed ones too)."""
    if runs.empty or "status" not in runs:
        return pd.DataFrame()
    keys = [c for c in GRID if c in runs]
    status = runs.groupby(keys, sort=False, dropna=False)["status"].agg(status_of).rename("status")
    done = finished(runs)
    if done.empty:
        return status.reset_index()
    metrics = [c for c in done.columns if c not in keys and pd.api.types.is_numeric_dtype(done[c])
               and c not in ("seed",)]
    g = done.groupby(keys, sort=False, dropna=False)
    mean = g[metrics].mean()
    std = g[["test_acc_at_best", "best_val_acc"]].std().add_suffix("_std")
    out = pd.concat([mean, std], axis=1)
    out["n_seeds"] = g.size()
    out = status.to_frame().join(out, how="left")
    return out.reset_index()


def _with_baseline(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``fp32_acc``, ``drop_vs_fp32`` (points), ``speedup_vs_fp32`` and ``drop_note``: a drop
    is computed only against an fp32 baseline whose runs all completed; against a diverged or
    failed one it is NaN and ``drop_note`` says ``n/a (baseline diverged)``."""
    keys = [k for k in BASELINE_KEYS if k in df]
    base = df[(df["precision"] == FP32) & (df.get("softmax_precision", "none") == "none")
              & (df.get("amp", "off") == "off")]
    base = base.groupby(keys, dropna=False).agg(
        fp32_acc=("test_acc_at_best", "mean"), fp32_time=("mean_epoch_time_s", "mean"),
        fp32_status=("status", lambda s: ", ".join(sorted(set(s)))))
    df = df.merge(base, left_on=keys, right_index=True, how="left")
    usable = df["fp32_status"].map(lambda s: isinstance(s, str) and is_ok(s))
    df.loc[~usable, ["fp32_acc", "fp32_time"]] = float("nan")
    df["drop_vs_fp32"] = 100 * (df["fp32_acc"] - df["test_acc_at_best"])
    df["speedup_vs_fp32"] = df["fp32_time"] / df["mean_epoch_time_s"]
    df["drop_note"] = [("" if ok else "n/a (no fp32 baseline)" if not isinstance(st, str)
                        else f"n/a (baseline {_worst(st)})") for ok, st in zip(usable,
                                                                                 df["fp32_status"])]
    return df


def _worst(status: str) -> str:
    parts = [p.split()[-1] for p in status.split(", ")]
    return next((p for p in ("failed", "diverged") if p in parts), parts[0])


def precision_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per grid point: accuracy (%), drop vs FP32 (points), footprint, time."""
    df = _grouped(runs)
    if df.empty:
        return df
    df = _with_baseline(df)
    order = {p: i for i, p in enumerate(precision_order(finished(runs)))}
    df = df.assign(_o=df["precision"].map(order)).sort_values(
        [c for c in ("dataset", "model", "activation") if c in df] + ["_o"], kind="stable")
    cols = ["model", "activation", "precision"]
    cols += [c for c in varying(df) if c not in cols]
    out = pd.DataFrame({c: df[c] for c in cols})
    out["status"] = df["status"]
    out["accuracy_%"] = 100 * df["test_acc_at_best"]
    if df["n_seeds"].max() > 1:
        out["acc_std_%"] = 100 * df["test_acc_at_best_std"]
    out["drop_vs_fp32_pts"] = df["drop_vs_fp32"]
    if (df["drop_note"] != "").any():
        out["drop_note"] = df["drop_note"]
    if "footprint_weight_bytes" in df:
        out["weights_kib"] = df["footprint_weight_bytes"] / 1024
    if "footprint_compression" in df:
        out["compression_x"] = df["footprint_compression"]
    out["time_s"] = df["total_time_s"]
    return out.reset_index(drop=True)


def comparison_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The ViT-study comparison: one column per experiment, one row per metric (text cells)."""
    df = _grouped(runs)
    if df.empty:
        return pd.DataFrame()
    df = _with_baseline(df)
    cols = varying(df)
    names = df[cols].astype(str).agg("/".join, axis=1)
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    drop = [note or f"{v:+.2f}" for v, note in zip(df["drop_vs_fp32"], df["drop_note"])]
    rows = {
        "Status": df["status"].astype(str),
        "Best val accuracy": df["best_val_acc"].map(pct),
        "Test accuracy at best": df["test_acc_at_best"].map(pct),
        "Final test accuracy": df["final_test_acc"].map(pct),
        "Final train accuracy": df["final_train_acc"].map(pct),
        "Generalisation gap (train - val)": df["gen_gap"].map(pct),
        "Final val loss": df["final_val_loss"].map("{:.4f}".format),
        "Convergence epoch (99% of best)": df["convergence_epoch"].map("{:.1f}".format),
        "Drop vs FP32 (points)": pd.Series(drop, index=df.index),
        "Overfitting score (best - final val)": df["overfit_score"].map(pct) if "overfit_score" in df
        else pd.Series("-", index=df.index),
        "Time per epoch (s)": [f"{m:.2f} ± {s:.2f}" if s == s else f"{m:.2f}" for m, s in zip(
            df["mean_epoch_time_s"], df.get("epoch_time_std_s", pd.Series(float("nan"), index=df.index)))],
        "Total time (s)": df["total_time_s"].map("{:.1f}".format),
        "Speed-up vs FP32": df["speedup_vs_fp32"].map("{:.2f}x".format),
        "Throughput (samples/s)": df["mean_throughput"].map("{:.0f}".format),
        "Peak memory (MiB)": df["peak_mem_mb"].map("{:.0f}".format),
    }
    if "alloc_peak_mb" in df:  # what one training step allocates (tensors), not the process RSS
        rows["Allocated per step, peak (MiB)"] = df["alloc_peak_mb"].map("{:.2f}".format)
    if "footprint_weight_bytes" in df:
        rows["Weight footprint (KiB)"] = (df["footprint_weight_bytes"] / 1024).map("{:.1f}".format)
    if "footprint_compression" in df:
        rows["Compression vs FP32"] = df["footprint_compression"].map("{:.2f}x".format)
    for key, label in (("cpu_util_mean", "CPU average (%)"),
                       ("ram_used_pct_mean", "RAM average (%)"),
                       ("gpu_util_mean", "GPU average (%)")):
        if key in df and df[key].notna().any():
            rows[label] = df[key].map(lambda v: "-" if pd.isna(v) else f"{v:.1f}")
    rows["Seeds"] = df["n_seeds"].map(lambda v: "0" if pd.isna(v) else f"{v:.0f}")
    table = pd.DataFrame({label: list(values) for label, values in rows.items()}, index=list(names))
    if len(table) <= TRANSPOSE_MAX:  # few experiments: one column each, as in the ViT study
        table = table.T
        table.index.name = "Metric"
    else:
        table.index.name = "/".join(cols)
    return table.replace({"nan%": "-", "nan": "-", "nanx": "-", "+nan": "-"})


def terminal_summary(runs: pd.DataFrame) -> str:
    """The table printed at the end of ``lowbit run`` (plus failed runs and their errors)."""
    if runs is None or runs.empty:
        return "no runs"
    table = precision_table(runs)
    text = table.to_string(index=False, float_format=lambda v: f"{v:.2f}") \
        if not table.empty else "no finished runs"
    bad = runs[runs["status"].isin(["failed", "diverged"])] if "status" in runs else runs.iloc[0:0]
    for _, row in bad.iterrows():
        why = f": {row['error']}" if row["status"] == "failed" else " (non-finite loss)"
        text += f"\n{row['status'].upper()} {row['run_id']} {row['model']}/{row['activation']}/" \
                f"{row['precision']} seed {row['seed']}{why}"
    return text
