"""Diverged and failed runs in the report: a status in every table and plot, no drop computed
against an unusable fp32 baseline, one-line errors for corrupt or empty results tables."""
from __future__ import annotations

import pandas as pd
import pytest

from lowbit.experiments import expand, sweep_from_dict
from lowbit.experiments.store import rebuild_tables, write_json
from lowbit.report import build_report, precision_table, terminal_summary
from lowbit.report import plots
from lowbit.report.tables import comparison_table
from test_report import fake_result

# cnn: fp32 diverged; vit: fp32 failed; mlp: fp32 completed, fp4 diverged
STATUS = {("cnn", "fp32"): "diverged", ("vit", "fp32"): "failed", ("mlp", "fp4_e2m1"): "diverged"}
ACC = {"fp32": 0.95, "fp4_e2m1": 0.80}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("status")
    cfg = sweep_from_dict({"models": ["cnn", "vit", "mlp"], "precisions": list(ACC)})
    specs = expand(cfg)
    for spec in specs:
        result = fake_result(spec, ACC[spec.precision])
        status = STATUS.get((spec.model, spec.precision), "completed")
        result["status"] = status
        if status == "failed":
            result.update(error="RuntimeError: boom", summary={}, epochs=[], footprint={})
        write_json(out / "runs" / spec.run_id / "result.json", result)
    rebuild_tables(out, [s.run_id for s in specs])
    return out


def test_precision_table_marks_status_and_unusable_baselines(runs_dir):
    runs = pd.read_csv(runs_dir / "results" / "runs.csv")
    table = precision_table(runs).set_index(["model", "precision"])
    assert table.loc[("cnn", "fp32"), "status"] == "diverged"
    assert table.loc[("vit", "fp32"), "status"] == "failed"  # a failed point is a row too
    assert table.loc[("mlp", "fp4_e2m1"), "status"] == "diverged"
    assert pd.isna(table.loc[("cnn", "fp4_e2m1"), "drop_vs_fp32_pts"])
    assert table.loc[("cnn", "fp4_e2m1"), "drop_note"] == "n/a (baseline diverged)"
    assert pd.isna(table.loc[("vit", "fp4_e2m1"), "drop_vs_fp32_pts"])
    assert table.loc[("vit", "fp4_e2m1"), "drop_note"] == "n/a (baseline failed)"
    assert table.loc[("mlp", "fp4_e2m1"), "drop_vs_fp32_pts"] == pytest.approx(15.0)
    assert table.loc[("mlp", "fp4_e2m1"), "drop_note"] == ""
    text = terminal_summary(runs)
    assert "n/a (baseline diverged)" in text and "n/a (baseline failed)" in text


def test_comparison_table_marks_status(runs_dir):
    runs = pd.read_csv(runs_dir / "results" / "runs.csv")
    table = comparison_table(runs[runs.model == "cnn"])
    assert table.loc["Status"].tolist() == ["diverged", "completed"]
    assert table.loc["Drop vs FP32 (points)", "fp4_e2m1"] == "n/a (baseline diverged)"
    assert table.loc["Speed-up vs FP32", "fp4_e2m1"] == "-"  # no speed-up vs a diverged run
    mixed = comparison_table(runs[runs.model != "vit"])
    assert "diverged" in " ".join(mixed.loc["Status"])


def test_plots_carry_status(runs_dir, tmp_path, monkeypatch):
    runs = pd.read_csv(runs_dir / "results" / "runs.csv")
    epochs = pd.read_csv(runs_dir / "results" / "epochs.csv")
    texts = []
    real = plots.plt.Axes.text

    def spy(self, x, y, s, *a, **k):
        texts.append(str(s))
        return real(self, x, y, s, *a, **k)
    monkeypatch.setattr(plots.plt.Axes, "text", spy)
    assert plots.accuracy_heatmap(runs, tmp_path / "h.png") is not None
    assert "[failed]" in texts and any("[diverged]" in t for t in texts)
    notes = []
    real_annotate = plots.plt.Axes.annotate
    monkeypatch.setattr(plots.plt.Axes, "annotate", lambda self, s, *a, **k: (
        notes.append(s), real_annotate(self, s, *a, **k))[1])
    assert plots.training_time(runs, tmp_path / "r.png") is not None
    assert "[diverged]" in notes  # mlp fp4's bars
    legends = []
    real_legend = plots.plt.Axes.legend

    def spy_legend(self, *a, **k):
        legends.extend(t.get_label() for t in self.get_lines())
        return real_legend(self, *a, **k)
    monkeypatch.setattr(plots.plt.Axes, "legend", spy_legend)
    figs = plots.make_all(runs, epochs, tmp_path / "all")
    assert "Accuracy vs epoch" in figs
    assert any("[diverged]" in name for name in legends)
    page = build_report(runs_dir, tmp_path / "rep").read_text()
    assert "n/a (baseline diverged)" in page and "Status" in page


@pytest.mark.parametrize("content", [b"", b"\x00\xff\xfe garbage \x89PNG", b"a,b\n1,2\n",
                                     b'run_id,status\n"unterminated'])
def test_report_over_corrupt_or_empty_tables_is_one_line(tmp_path, capsys, content):
    from lowbit.cli.report import main as cli_report
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "runs.csv").write_bytes(content)
    assert cli_report([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no runs in" in err[0] and str(tmp_path) in err[0], err
    assert not (tmp_path / "report").exists()
