"""The ViT study's outputs: analysis summary, overfitting score, time per epoch +- std, LR and hardware plots."""
import json

import pandas as pd
import pytest

from lowbit.experiments.runner import run_sweep
from lowbit.experiments.schema import sweep_from_dict
from lowbit.report import build_report
from lowbit.report.analysis import analysis_summary, summary_lines
from lowbit.report.tables import comparison_table
from lowbit.train import summarize


def test_summary_overfit_score_and_epoch_time_std():
    rows = [{"epoch": e, "train_loss": 1.0, "train_acc": a + 0.1, "val_loss": 1.0, "val_acc": a,
             "test_loss": 1.0, "test_acc": a, "epoch_time_s": t, "throughput": 1.0}
            for e, (a, t) in enumerate([(0.5, 1.0), (0.8, 2.0), (0.7, 3.0)], 1)]
    s = summarize(rows, "completed")
    assert s["overfit_score"] == pytest.approx(0.1)           # best 0.8 - final 0.7
    assert s["epoch_time_std_s"] == pytest.approx(1.0)        # std of 1, 2, 3 (n - 1)
    assert s["mean_epoch_time_s"] == pytest.approx(2.0)


def _runs(**over):
    base = {"model": "vit", "activation": "gelu", "dataset": "d", "precision": "fp32", "softmax_precision": "none",
            "quantize": "none", "augmentation": "basic", "amp": "off", "seed": 0, "run_id": "a",
            "status": "completed", "test_acc_at_best": 0.90, "best_val_acc": 0.9, "gen_gap": 0.05,
            "total_time_s": 100.0, "mean_epoch_time_s": 10.0, "precision_bits": 32}
    return base | over


def test_analysis_summary_picks_and_recommends():
    runs = pd.DataFrame([_runs(), _runs(run_id="b", amp="fp16", test_acc_at_best=0.895, gen_gap=-0.01,
                                       total_time_s=60.0, mean_epoch_time_s=6.0),
                         _runs(run_id="c", precision="fp8_e4m3", quantize="weights", precision_bits=8,
                               test_acc_at_best=0.92, gen_gap=0.08, total_time_s=150.0, mean_epoch_time_s=15.0)])
    s = analysis_summary(runs)
    assert s["best_accuracy"]["name"] == "fp8_e4m3/off" and s["best_accuracy"]["test_acc"] == 0.92
    assert s["best_generalisation"]["name"] == "fp32/fp16"
    assert s["fastest"]["name"] == "fp32/fp16" and s["fastest"]["speedup_vs_fp32"] == pytest.approx(10 / 6)
    assert s["amp_speedup_vs_fp32"] == {"fp32/fp16": pytest.approx(10 / 6)}
    # fp16 is 2.5 points below the best: outside 1 point, so the best itself is recommended
    assert s["recommended"]["name"] == "fp8_e4m3/off"
    lines = summary_lines(s)
    assert lines[0] == "Best accuracy: fp8_e4m3/off (92.00%)" and lines[-1].startswith("Recommended: fp8_e4m3/off")
    assert summary_lines({}) == ["no finished runs to analyse"]


def test_sweep_report_has_the_study_outputs(tmp_path):
    """A real two-run sweep (fp32 and fp32 + bf16 AMP): the report holds the analysis (page and files),
    the learning-rate and hardware figures, the overfitting score and time per epoch mean +- std."""
    cfg = sweep_from_dict({"name": "rep", "out_dir": str(tmp_path), "models": ["mlp"], "datasets": ["digits"],
                           "epochs": 3, "warmup_epochs": 1, "batch_size": 128, "amps": ["off", "bf16"],
                           "model_kwargs": {"mlp": {"hidden": [16]}}})
    runs = run_sweep(cfg, jobs=1, quiet=True)
    assert sorted(runs["amp"]) == ["bf16", "off"] and (runs["status"] == "completed").all()
    page = build_report(tmp_path)
    report = page.parent
    for name in ("learning_rate.png", "hardware_stats.png", "analysis.json", "analysis.txt"):
        assert (report / name).stat().st_size > 0, name
    text = page.read_text()
    assert "Analysis summary" in text and "Recommended: " in text and "AMP speed-up vs FP32: mlp" not in text
    summary = json.loads((report / "analysis.json").read_text())
    assert set(summary["amp_speedup_vs_fp32"]) == {"bf16"}
    table = comparison_table(runs)
    assert list(table.columns) == ["off", "bf16"]
    assert " ± " in table.loc["Time per epoch (s)", "off"]
    assert table.loc["Overfitting score (best - final val)", "off"].endswith("%")
