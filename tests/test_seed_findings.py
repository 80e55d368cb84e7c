"""Each ready config reproduces its seed's qualitative finding on built-in data.

precision_comparison.yaml (the precision-comparison framework): fp32 ~ fp8 ~ fp6 > fp4 > fp3 >> fp2.
On 8x8 digits the task is too easy for fp8..fp3 to differ in accuracy beyond a few test images, so
the ladder is shown where it is measurable: the SQNR of the fp32 run's logits when its weights and
activations are quantized to each precision, strictly falling from fp8 to fp2; accuracy shows the
cliff (fp2 far below fp32, fp8/fp6 within a few images of it) in the config's own QAT runs.

mobilenet_wa.yaml (MobileNet compression): W8 ~ FP32 > W4 >> W2 and A8 > A4 > A2, checked by
scripts/seed_findings.py on a 5-epoch slice with weights-only and activations-only runs (7 runs).
vit_fp8.yaml's full sweep takes ~16 minutes (FP16-AMP is emulated on CPU); its claims are checked by
``python scripts/seed_findings.py configs/vit_fp8.yaml``, and FP16-AMP ~ FP32 by tests/test_train_amp.py.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
LADDER = ["fp8_e4m3", "fp6_e3m2", "fp4_e2m1", "fp3", "fp2"]


@pytest.fixture(scope="module")
def comparison_slice(tmp_path_factory):
    """configs/precision_comparison.yaml for cnn x relu (its 6 precisions), as a user runs a slice."""
    out = tmp_path_factory.mktemp("pc")
    subprocess.run([sys.executable, "-m", "lowbit.cli", "run", str(ROOT / "configs" / "precision_comparison.yaml"),
                    "--set", "models=[cnn]", "--set", "activations=[relu]", "--out", str(out), "--no-report", "-q"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    from lowbit.experiments.store import load_tables
    runs = load_tables(out)["runs"]
    assert len(runs) == 6 and set(runs["status"]) == {"completed"}
    return out, runs


def test_precision_ladder_in_accuracy(comparison_slice):
    _, runs = comparison_slice
    acc = dict(zip(runs["precision"], 100 * runs["test_acc_at_best"]))
    assert acc["fp32"] > 90                                         # the model learns
    for p in ("fp8_e4m3", "fp6_e3m2"):
        assert abs(acc[p] - acc["fp32"]) <= 2.0, acc               # fp32 ~ fp8 ~ fp6
    for p in ("fp4_e2m1", "fp3"):
        assert acc[p] >= acc["fp2"] + 20, acc                      # fp4, fp3 >> fp2
    assert acc["fp2"] <= acc["fp32"] - 10, acc                      # the cliff at 2 bits


def test_precision_ladder_in_sqnr(comparison_slice):
    from lowbit.checkpoint import load_into
    from lowbit.cli.source import build_model
    from lowbit.data import load_dataset, normalize
    from lowbit.nn import quantize_model, recipe_for_precision
    out, runs = comparison_slice
    run = runs[runs["precision"] == "fp32"].iloc[0]
    folder = out / "runs" / run["run_id"]
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    splits = load_dataset("digits")
    x = normalize(splits.test.x, splits.mean, splits.std)

    def logits(quant: str | None):
        torch.manual_seed(0)
        m = build_model("cnn", "digits", cfg["model_kwargs"], "relu", splits)
        load_into(m, folder / "best.pt")
        if quant:
            quantize_model(m, recipe_for_precision(quant))
        with torch.no_grad():
            return m.eval()(x)

    ref = logits(None)
    sqnr = {p: float(10 * torch.log10(ref.pow(2).sum() / (logits(p) - ref).pow(2).sum())) for p in LADDER}
    assert all(sqnr[a] > sqnr[b] for a, b in zip(LADDER, LADDER[1:])), sqnr   # strictly falling
    assert sqnr["fp8_e4m3"] > 20 and sqnr["fp2"] < 10, sqnr


def test_mobilenet_wa_ladder(tmp_path):
    """The script's own check on a slice of the ready config: every claim is checked and holds."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "seed_findings.py"),
                           str(ROOT / "configs" / "mobilenet_wa.yaml"), "--out", str(tmp_path / "mw"),
                           "--set", "epochs=5", "--set", "quantize=[[weights], [activations]]"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "mobilenet_wa: 6/6 claims hold", proc.stdout
    assert all(line.startswith("PASS") for line in lines[-7:-1]), proc.stdout   # after lowbit run's table


def test_seed_findings_script_says_what_it_cannot_check(tmp_path):
    """A slice without the compared rows is n/a, never a silent pass; an unknown config is one line."""
    bad = tmp_path / "x.yaml"
    bad.write_text("name: nothing\nmodels: [mlp]\n")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "seed_findings.py"), str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no findings for 'nothing'; allowed: mobilenet_wa, vit_fp8" in proc.stderr
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import pandas as pd
        from seed_findings import vit_fp8
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    runs = pd.DataFrame([{"precision": "fp32", "amp": "off", "augmentation": "basic", "softmax_precision": "none",
                          "status": "completed", "test_acc_at_best": 0.9},
                         {"precision": "fp32", "amp": "fp16", "augmentation": "basic", "softmax_precision": "none",
                          "status": "completed", "test_acc_at_best": 0.85}])
    verdicts = {text: v for v, text, _ in vit_fp8(runs)}
    assert verdicts["[basic] FP32 learns (>= 60%)"] == "PASS"
    assert verdicts["[basic] FP16-AMP ~ FP32 (within 2 points)"] == "FAIL"      # 5 points apart
    assert verdicts["[basic] BF16-AMP ~ FP32 (within 2 points)"] == "n/a"
