"""Tests for lowbit.report: tables, plots, the HTML page (and its rendering in headless Chromium).

The results dir is synthetic but real in form: result.json files with configs from expand() and
flatten(), combined by the store, as a sweep writes them.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from lowbit.experiments import expand, sweep_from_dict
from lowbit.experiments.grid import flatten
from lowbit.experiments.store import rebuild_tables, write_json
from lowbit.cli.report import main as cli_report
from lowbit.report import build_report, precision_table, terminal_summary
from lowbit.report.tables import comparison_table

ACC = {"fp32": 0.95, "fp8_e4m3": 0.93, "fp4_e2m1": 0.80}


def fake_result(spec, acc: float, epochs: int = 3) -> dict:
    rows = [{"epoch": e, "train_loss": 2.0 / e, "train_acc": acc * e / epochs + 0.02,
             "val_loss": 2.1 / e, "val_acc": acc * e / epochs, "test_loss": 2.2 / e,
             "test_acc": acc * e / epochs - 0.01, "epoch_lr": 0.01, "epoch_time_s": 0.5,
             "throughput": 1000.0, "peak_mem_mb": 300.0} for e in range(1, epochs + 1)]
    bits = {"fp32": 32, "fp8_e4m3": 8, "fp4_e2m1": 4}[spec.precision]
    summary = {"best_epoch": epochs, "best_val_acc": acc, "test_acc_at_best": acc - 0.01,
               "train_acc_at_best": acc + 0.02, "final_train_acc": acc + 0.02,
               "final_val_acc": acc, "final_test_acc": acc - 0.01, "final_val_loss": 0.7,
               "convergence_epoch": epochs, "gen_gap": 0.02, "gen_gap_test": 0.03,
               "total_time_s": 1.5 * 32 / bits, "mean_epoch_time_s": 0.5 * 32 / bits,
               "mean_throughput": 1000.0, "peak_mem_mb": 300.0, "cpu_util_mean": 50.0}
    return {"run_id": spec.run_id, "config": flatten(spec), "status": "completed", "error": None,
            "summary": summary, "epochs": rows,
            "footprint": {"footprint_weight_bytes": 4000 * bits, "footprint_compression": 32 / bits},
            "env": {"lowbit_version": "0.1.0", "git_commit": "abc", "torch_version": "2",
                    "hostname": "h"}}


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    cfg = sweep_from_dict({"models": ["cnn", "vit"], "precisions": list(ACC), "seeds": [0, 1]})
    specs = expand(cfg)
    for i, spec in enumerate(specs):
        result = fake_result(spec, ACC[spec.precision] - 0.01 * spec.seed)
        if i == len(specs) - 1:  # one crashed run
            result.update(status="failed", error="TypeError: bad kwarg", summary={}, epochs=[],
                          footprint={})
        write_json(out / "runs" / spec.run_id / "result.json", result)
    rebuild_tables(out, [s.run_id for s in specs])
    return out


def test_precision_table_and_terminal_summary(results_dir):
    runs = pd.read_csv(results_dir / "results" / "runs.csv")
    table = precision_table(runs)
    cnn = table[table.model == "cnn"].set_index("precision")
    assert list(cnn.index) == ["fp32", "fp8_e4m3", "fp4_e2m1"]  # widest first
    # mean over seeds 0 and 1: acc - 0.005 - 0.01 (test at best)
    assert cnn.loc["fp32", "accuracy_%"] == pytest.approx(100 * (0.95 - 0.015))
    assert cnn.loc["fp4_e2m1", "drop_vs_fp32_pts"] == pytest.approx(15.0)
    assert cnn.loc["fp8_e4m3", "compression_x"] == pytest.approx(4.0)
    assert "acc_std_%" in table
    text = terminal_summary(runs)
    for word in ("model", "activation", "precision", "accuracy_%", "drop_vs_fp32_pts",
                 "weights_kib", "time_s", "FAILED", "bad kwarg"):
        assert word in text, word


def test_comparison_table_speedup(results_dir):
    runs = pd.read_csv(results_dir / "results" / "runs.csv")
    table = comparison_table(runs[runs.model == "cnn"])
    assert table.index.name == "Metric"
    assert list(table.columns) == ["fp32", "fp8_e4m3", "fp4_e2m1"]
    assert table.loc["Speed-up vs FP32", "fp4_e2m1"] == "0.12x"
    assert table.loc["Best val accuracy", "fp32"] == "94.50%"


def test_build_report(results_dir, tmp_path):
    page = build_report(results_dir, tmp_path)
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["accuracy_heatmap.png", "accuracy_vs_epoch.png", "generalisation_gap.png",
                    "learning_rate.png", "loss_vs_epoch.png", "memory_comparison.png", "memory_usage.png",
                    "training_time.png"]  # no usage columns: no hardware plot
    assert all((tmp_path / p).stat().st_size > 5000 for p in pngs)
    html = page.read_text()
    assert html.count('src="data:image/png;base64,') == len(pngs)
    assert "Failed runs" in html and "bad kwarg" in html
    assert "Mean and std over seeds" in html and "Environment" in html
    assert (tmp_path / "comparison.csv").exists() and (tmp_path / "precision.csv").exists()


def test_cli_report(results_dir, tmp_path, capsys):
    assert cli_report([str(results_dir / "results"), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "index.html").exists()
    assert cli_report([str(tmp_path / "nothing")]) == 2
    assert "no results" in capsys.readouterr().err


def _fake_ptq(folder):
    from lowbit.ptq import write_csv
    rows = [dict(weights=w, acts=a, acc=acc, fp32_acc=0.95, drop=0.95 - acc, orig_bytes=40000, packed_bytes=pb,
                 ratio=40000 / pb, cost_bytes=pb, model="cnn", dataset="digits", calib="minmax")
            for w, a, acc, pb in (("fp32", "fp32", 0.95, 40000), ("int8", "int8", 0.94, 10500),
                                  ("int4", "int8", 0.90, 5500), ("int4", "int4", 0.85, 5500))]
    write_csv(rows, folder / "ptq_results.csv")
    return folder


def test_cli_report_sweep_with_ptq_sections(results_dir, tmp_path, capsys):
    """A ptq folder inside the sweep dir is found; --include adds another; the sweep part is unchanged."""
    sweep = tmp_path / "sweep"
    shutil.copytree(results_dir, sweep)
    _fake_ptq(sweep / "ptq")
    other = _fake_ptq(tmp_path / "other_ptq")
    assert cli_report([str(sweep), "--include", str(other), "--out", str(tmp_path / "r")]) == 0
    html = (tmp_path / "r" / "index.html").read_text()
    assert "Failed runs" in html and "Environment" in html          # the sweep report as before
    assert html.count('src="data:image/png;base64,') == 8 + 2      # 8 sweep figures + 1 per ptq section
    assert html.count("Post-training quantization: ") == 2 and "other_ptq" in html
    assert html.count('alt="W x A sweep (parallel coordinates)"') == 2
    assert len(re.findall(r"<td>int4</td>\s*<td>int8</td>", html)) == 2
    assert cli_report([str(sweep), "--include", str(tmp_path / "nothing")]) == 2
    assert "--include" in capsys.readouterr().err


def test_cli_report_on_a_ptq_folder(tmp_path):
    d = _fake_ptq(tmp_path / "p")
    assert cli_report([str(d)]) == 0
    html = (d / "report" / "index.html").read_text()
    assert html.count('src="data:image/png;base64,') == 1 and html.count("<td>int4</td>") == 3
    assert (d / "ptq_parallel.png").stat().st_size > 5000


def _chromium():
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)


CHECK = """<script>window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0).length;
  const rows = document.querySelectorAll('table tr').length;
  document.body.insertAdjacentHTML('beforeend',
    `<pre id="check">imgs=${imgs.length} loaded=${ok} rows=${rows}</pre>`);
});</script></body>"""


def test_html_renders_in_headless_chromium(results_dir, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not installed (apt-get install -y chromium) - rendering not checked")
    page = build_report(results_dir, tmp_path)
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", CHECK))
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                          "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    found = re.search(r"imgs=(\d+) loaded=(\d+) rows=(\d+)", dom)
    assert found, dom[-2000:]
    imgs, loaded, rows = map(int, found.groups())
    assert imgs == 8 and loaded == 8
    assert rows > 20
    assert "<td>fp4_e2m1</td>" in dom
