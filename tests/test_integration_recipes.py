"""lowbit search -> recipe.yaml -> lowbit ptq --recipe -> lowbit report, end to end through the CLIs.

The search scores on the whole test split (``--eval-split test``), the split ``lowbit ptq`` reports,
so the two accuracies of the chosen recipe are comparable. Weight-only recipes match exactly: the
search quantizes weights with per-tensor absmax scales computed on the fly, ``lowbit ptq`` fixes the
minmax observer's scale, which is the same number. With quantized activations the two can differ a
little (search: one dynamic scale per evaluation batch; ptq: one scale calibrated on 256 training
samples), so that case is compared with a tolerance. Sizes: the search's ``size`` is lowbit.cost's
weight bytes of the recipe; ptq's packed size is measured from the packed codes; they are equal.
"""
import json
import re

import pandas as pd
import pytest

from lowbit.cli.ptq import main as cli_ptq
from lowbit.cli.report import main as cli_report
from lowbit.cli.search import main as cli_search


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    argv = ["--model", "mlp", "--dataset", "digits", "--train-quick", "--epochs", "1", "--strategy", "exhaustive",
            "--formats", "int2,int4,int8", "--eval-split", "test", "--max-acc-drop", "1.0", "--out", str(out)]
    assert cli_search(argv) == 0
    return out


def _chosen(d):
    t = pd.read_csv(d / "results.csv")
    return t[t["chosen"]].iloc[0]


def _ptq(search_dir, out, capsys, recipe=None):
    argv = ["--checkpoint", str(search_dir / "model.pt"), "--model", "mlp", "--dataset", "digits",
            "--recipe", str(recipe or search_dir / "recipe.yaml"), "--out", str(out), "--json"]
    assert cli_ptq(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_ptq_recipe_row_matches_the_search(search_dir, tmp_path, capsys):
    capsys.readouterr()
    rows = _ptq(search_dir, tmp_path, capsys)
    assert [r["acts"] for r in rows] == ["fp32", "recipe"]
    row, c = rows[1], _chosen(search_dir)
    assert row["weights"] == "search:exhaustive"
    assert row["packed_bytes"] == c["size"] == row["cost_bytes"]
    assert row["acc"] == pytest.approx(c["acc"], abs=1e-9)
    assert rows[0]["acc"] == pytest.approx(json.loads((search_dir / "summary.json").read_text())["baseline"]["acc"])
    assert row["ratio"] == pytest.approx(row["orig_bytes"] / row["packed_bytes"])
    html = (tmp_path / "ptq_report.html").read_text()
    assert html.count("<img ") == 2 and "search:exhaustive" in html and "data:image/png;base64," in html
    assert (tmp_path / "ptq_parallel.png").exists() and (tmp_path / "ptq_energy.png").exists()
    layers = pd.read_csv(tmp_path / "ptq_layers.csv")
    assert layers["weight_bytes"].sum() == pytest.approx(c["size"])


def test_ptq_recipe_with_quantized_activations(search_dir, tmp_path, capsys):
    sdir = tmp_path / "s"
    argv = ["--model", "mlp", "--dataset", "digits", "--checkpoint", str(search_dir / "model.pt"), "--strategy",
            "exhaustive", "--formats", "int4,int8", "--acts", "int8", "--eval-split", "test", "--out", str(sdir)]
    assert cli_search(argv) == 0
    capsys.readouterr()
    rows = _ptq(search_dir, tmp_path / "p", capsys, recipe=sdir / "recipe.yaml")
    c = _chosen(sdir)
    assert rows[1]["packed_bytes"] == c["size"]
    assert abs(rows[1]["acc"] - c["acc"]) < 0.02      # dynamic (search) vs calibrated (ptq) act scales


def test_report_on_search_ptq_and_both(search_dir, tmp_path, capsys):
    capsys.readouterr()
    _ptq(search_dir, tmp_path / "p", capsys)
    assert cli_report([str(search_dir), "--out", str(tmp_path / "rs")]) == 0
    html = (tmp_path / "rs" / "index.html").read_text()
    alts = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', html)
    assert {"pareto", "bitwidths", "energy", "summary"} <= set(alts)
    assert "Mixed-precision search" in html and "chosen assignment" in html
    n_front = int(pd.read_csv(search_dir / "results.csv")["pareto"].sum())
    assert f"Pareto points ({n_front} of" in html
    assert cli_report([str(tmp_path / "p"), "--include", str(search_dir), "--out", str(tmp_path / "rb")]) == 0
    html = (tmp_path / "rb" / "index.html").read_text()
    assert "Post-training quantization" in html and "Mixed-precision search" in html
    assert "W x A sweep (parallel coordinates)" in html and html.count("<img ") >= 6
    assert re.search(r"<td>search:exhaustive</td>\s*<td>recipe</td>", html)
    assert "src=\"data:image/png;base64," in html and 'src="pareto.png"' not in html


@pytest.mark.parametrize("content,needle", [(None, "does not exist"), ("rules: 3\n", "is not a valid recipe")])
def test_ptq_bad_recipe(search_dir, tmp_path, capsys, content, needle):
    path = tmp_path / "r.yaml"
    if content is not None:
        path.write_text(content)
    argv = ["--checkpoint", str(search_dir / "model.pt"), "--model", "mlp", "--recipe", str(path),
            "--out", str(tmp_path)]
    assert cli_ptq(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_combined_page_renders_in_headless_chromium(search_dir, tmp_path, capsys):
    import shutil
    import subprocess
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                   None)
    if browser is None:
        pytest.skip("chromium not installed - rendering not checked")
    capsys.readouterr()
    _ptq(search_dir, tmp_path / "p", capsys)
    assert cli_report([str(tmp_path / "p"), "--include", str(search_dir), "--out", str(tmp_path / "r")]) == 0
    page = tmp_path / "r" / "index.html"
    check = ("<script>window.addEventListener('load', () => { const imgs = Array.from(document.images);"
             "const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;"
             "document.body.insertAdjacentHTML('beforeend', `<pre id=\"check\">imgs=${imgs.length} loaded=${ok}"
             "</pre>`); });</script></body>")
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", check))
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    found = re.search(r"imgs=(\d+) loaded=(\d+)", dom)
    assert found, dom[-2000:]
    imgs, loaded = map(int, found.groups())
    assert imgs >= 6 and loaded == imgs


def test_sweep_precision_can_be_a_recipe_file(tmp_path, capsys):
    """A recipe file (as lowbit search writes) is a precision of lowbit run; its content hash is in the
    run id, a missing file is a one-line config error, and the run really uses the recipe."""
    import pandas as pd
    import yaml as _yaml

    from lowbit.cli.run import main as cli_run
    from lowbit.experiments import expand, load_sweep
    from lowbit.nn import make_recipe

    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(make_recipe(weights="int2", activations="int4").to_yaml())
    cfg = {"name": "rec", "models": ["mlp"], "datasets": ["digits"], "epochs": 1, "batch_size": 256,
           "precisions": ["fp32", f"recipe:{recipe_path}"], "model_kwargs": {"mlp": {"hidden": [32]}},
           "quant_backend": "eager"}
    path = tmp_path / "sweep.yaml"
    path.write_text(_yaml.safe_dump(cfg))
    ids = [r.run_id for r in expand(load_sweep(path, []))]
    recipe_path.write_text(make_recipe(weights="int4").to_yaml())
    assert [r.run_id for r in expand(load_sweep(path, []))][1] != ids[1]  # content change -> new id
    out = tmp_path / "out"
    assert cli_run([str(path), "--out", str(out), "-q", "--no-report", "-j", "1"]) == 0
    runs = pd.read_csv(out / "results" / "runs.csv")
    rec = runs[runs.precision.str.startswith("recipe:")].iloc[0]
    assert rec.precision_format == "recipe" and rec.status == "completed"
    assert rec.footprint_compression > 6  # int4 weights, not fp32
    bad = tmp_path / "bad.yaml"
    bad.write_text(_yaml.safe_dump({**cfg, "precisions": [f"recipe:{tmp_path / 'missing.yaml'}"]}))
    capsys.readouterr()
    assert cli_run([str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.yaml" in err[0]
