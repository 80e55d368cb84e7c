"""Report figures stay readable at the full study size of configs/precision_comparison.yaml
(6 models x 8 activations x 6 precisions, softmax in the run's precision, 5 epochs): one figure per
question of the seed (accuracy vs epoch, loss vs epoch, memory usage, training time, memory
comparison), each of bounded size, with small multiples instead of 48 overlapping series."""
import itertools

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lowbit.experiments import expand, load_sweep
from lowbit.report import plots
from lowbit.report.build import build_report

MAX_PX = (plots.MAX_INCHES[0] * plots.DPI + 1, plots.MAX_INCHES[1] * plots.DPI + 1)
FIGURES = {"Accuracy vs epoch": "accuracy_vs_epoch.png", "Loss vs epoch": "loss_vs_epoch.png",
           "Memory usage": "memory_usage.png", "Training time": "training_time.png",
           "Memory comparison": "memory_comparison.png", "Accuracy by precision": "accuracy_heatmap.png"}


@pytest.fixture(scope="module")
def full_study(tmp_path_factory):
    cfg = load_sweep("configs/precision_comparison.yaml")
    specs = expand(cfg)
    assert len(specs) == 288
    rng = np.random.default_rng(0)
    runs, epochs = [], []
    for s in specs:
        acc = rng.uniform(0.1, 0.95)
        runs.append({"run_id": s.run_id, "sweep": "pc", "model": s.model, "activation": s.activation,
                     "dataset": s.dataset, "precision": s.precision,
                     "softmax_precision": s.softmax_precision or "none",
                     "quantize": "+".join(s.quantize) or "none", "augmentation": "none", "seed": 0,
                     "status": "completed", "test_acc_at_best": acc, "best_val_acc": acc,
                     "final_test_acc": acc, "final_val_acc": acc, "final_train_acc": acc + 0.02,
                     "gen_gap": 0.02, "final_val_loss": 1 - acc, "convergence_epoch": 3.0,
                     "mean_epoch_time_s": rng.uniform(0.1, 2), "total_time_s": rng.uniform(1, 10),
                     "mean_throughput": 1000.0, "peak_mem_mb": 360.0,
                     "alloc_peak_mb": rng.uniform(1, 20), "footprint_weight_bytes": 1e5,
                     "footprint_activation_bytes": 2e4, "footprint_compression": 4.0})
        for e in range(1, 6):
            epochs.append({"run_id": s.run_id, "model": s.model, "activation": s.activation,
                           "dataset": s.dataset, "precision": s.precision,
                           "softmax_precision": s.softmax_precision or "none", "epoch": e,
                           "val_acc": acc * e / 5, "train_acc": acc * e / 5 + 0.01,
                           "val_loss": 2 - acc * e / 5, "train_loss": 2 - acc * e / 5})
    root = tmp_path_factory.mktemp("pc")
    (root / "results").mkdir()
    pd.DataFrame(runs).to_csv(root / "results" / "runs.csv", index=False)
    pd.DataFrame(epochs).to_csv(root / "results" / "epochs.csv", index=False)
    return root


def test_every_figure_exists_and_is_bounded(full_study):
    page = build_report(full_study)
    out = page.parent
    html = page.read_text()
    for title, name in FIGURES.items():
        assert (out / name).exists(), name
        assert f"<h2>{title}</h2>" in html
        w, h = Image.open(out / name).size
        assert w <= MAX_PX[0] and h <= MAX_PX[1], (name, w, h)
        assert w >= 600 and h >= 300, (name, w, h)    # not a thumbnail either


def test_curves_are_small_multiples_not_48_series(full_study, tmp_path, monkeypatch):
    runs = pd.read_csv(full_study / "results" / "runs.csv")
    epochs = pd.read_csv(full_study / "results" / "epochs.csv")
    lines_per_axes = []
    real = plots.plt.Figure.savefig

    def spy(fig, *a, **k):
        lines_per_axes.extend(len([ln for ln in ax.get_lines() if not ln.get_label().startswith("_")])
                              for ax in fig.axes if ax.get_lines())
        return real(fig, *a, **k)
    monkeypatch.setattr(plots.plt.Figure, "savefig", spy)
    assert plots.curves(epochs, tmp_path / "a.png", "acc") is not None
    assert len(lines_per_axes) == 48 and max(lines_per_axes) == 6   # one labelled line per precision
    lines_per_axes.clear()
    assert plots.accuracy_heatmap(runs, tmp_path / "h.png") is not None
    w, h = Image.open(tmp_path / "h.png").size
    assert h <= MAX_PX[1]                                            # was 10,458 px tall
