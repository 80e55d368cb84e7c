"""Per-layer sensitivity: a deliberately fragile layer ranks first, Hutchinson is unbiased, outputs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from lowbit.cli.sensitivity import main as cli_sensitivity
from lowbit.data import load_dataset
from lowbit.models import create_model
from lowbit.nn import make_recipe, quantize_model
from lowbit.search import (EvalData, build_space, layer_sensitivity, profile_layers,
                           rank_agreement, ranking)
from lowbit.search.sensitivity import METHODS, hutchinson_traces, quantized_weight
from lowbit.train import TrainConfig, train


@pytest.fixture(scope="module")
def splits():
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def fragile(splits):
    """MLP 64 -> 32 -> 32 -> 10, trained 2 epochs; then hidden unit 0 of the first layer is killed
    (always 0 after ReLU) and the second layer gets a 1000x weight on that dead input. Its float
    output is unchanged, but per-channel int4 scales now come from the outlier, so every other
    weight of ``features.3`` rounds to zero: the layer is fragile by construction."""
    torch.manual_seed(0)
    m = create_model("mlp", num_classes=10, in_chans=1, img_size=8, hidden=(32, 32))
    train(m, splits, TrainConfig(epochs=2, optimizer="adamw", lr=1e-2, weight_decay=0.0, seed=0))
    with torch.no_grad():
        m.features[1].weight[0] = 0.0
        m.features[1].bias[0] = -1.0
        m.features[3].weight[:, 0] = 1000.0
    return m.eval()


def test_fragile_layer_ranks_first_for_every_method(fragile, splits):
    space = build_space(profile_layers(fragile, (1, 1, 8, 8)), "int4,int8")
    df = layer_sensitivity(fragile, space, EvalData.from_splits(splits, "val"), METHODS, hessian_probes=2)
    assert set(df["layer"]) == {"features.1", "features.3", "head"} and len(df) == 6
    rk = ranking(df, "int4").set_index("layer")
    for m in METHODS:
        assert rk.loc["features.3", f"rank_{m}"] == 1, (m, rk[m].to_dict())
    fr = df[(df["layer"] == "features.3") & (df["format"] == "int4")].iloc[0]
    assert fr["acc_drop"] > 0.3 and fr["sqnr_db"] < 10
    # more bits, less damage (the fragile layer rounds to zero even at int8: scale 1000 / 127)
    for name, g in df.groupby("layer"):
        g = g.set_index("format")
        assert g.loc["int8", "perturbation"] <= g.loc["int4", "perturbation"]
        if name != "features.3":
            assert g.loc["int8", "l2"] < g.loc["int4", "l2"]
    agree = rank_agreement(df, "int4")
    assert len(agree) == 10 and agree[["spearman", "kendall"]].abs().le(1 + 1e-9).all().all()


def test_hutchinson_matches_exact_hessian_trace():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    w = model[0].weight

    def loss_of(wv):
        return nn.functional.cross_entropy(nn.functional.linear(x, wv, model[0].bias), y)

    exact = torch.autograd.functional.hessian(loss_of, w.detach()).reshape(w.numel(), w.numel()).trace()
    est = hutchinson_traces(model, ["0"], x, y, probes=50, seed=0)["0"]
    assert est == pytest.approx(float(exact), rel=0.1)


def test_quantized_weight_is_what_quantize_model_uses(fragile):
    import copy
    m = copy.deepcopy(fragile)
    quantize_model(m, make_recipe(weights="int4"))
    q = m.features[3]
    expected = q.weight_quantizer(q.weight)
    from lowbit.search import Choice
    assert torch.equal(quantized_weight(fragile.features[3].weight, Choice("int4")), expected)


def test_rank_agreement_identical_methods_agree():
    df = pd.DataFrame({"layer": list("abcd"), "format": "int4", "weight_bits": 4,
                       "l2": [1.0, 2.0, 3.0, 4.0], "hessian": [10.0, 20.0, 30.0, 40.0], "fisher": [4.0, 3.0, 2.0, 1.0]})
    a = rank_agreement(df).set_index(["method_a", "method_b"])
    assert a.loc[("l2", "hessian"), "spearman"] == pytest.approx(1.0)
    assert a.loc[("l2", "fisher"), "kendall"] == pytest.approx(-1.0)


def test_cli_sensitivity_writes_table_plots_and_agreement(fragile, tmp_path, capsys):
    ckpt = tmp_path / "m.pt"
    torch.save(fragile.state_dict(), ckpt)
    out = tmp_path / "out"
    rc = cli_sensitivity(["--model", "mlp", "--model-kwargs", "{hidden: [32, 32]}", "--checkpoint", str(ckpt),
                          "--formats", "int4,int8", "--methods", "l2,sqnr,fisher", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "rank agreement" in text and "features.3" in text
    for f in ("sensitivity.csv", "ranking.csv", "rank_agreement.csv", "sensitivity.png", "sensitivity_hist.png",
              "search_report.html"):
        assert (out / f).exists(), f
    df = pd.read_csv(out / "sensitivity.csv")
    assert {"l2", "sqnr_db", "fisher"} <= set(df) and "hessian" not in df
    assert np.isfinite(df["l2"]).all()


@pytest.mark.parametrize("argv, word", [(["--methods", "l2,bogus"], "bogus"), (["--probe", "int3"], "int3"),
                                        (["--hessian-probes", "0"], "--hessian-probes")])
def test_cli_sensitivity_bad_input(argv, word, capsys, tmp_path):
    ckpt = tmp_path / "m.pt"
    torch.manual_seed(0)
    torch.save(create_model("mlp", num_classes=10, in_chans=1, img_size=8, hidden=(8,)).state_dict(), ckpt)
    rc = cli_sensitivity(["--model", "mlp", "--model-kwargs", "{hidden: [8]}", "--checkpoint", str(ckpt),
                          "--formats", "int4,int8", "--out", str(tmp_path)] + argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and word in err
