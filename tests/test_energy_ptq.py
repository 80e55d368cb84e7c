"""The energy-aware PTQ seed's study: percentile sweep + uniform baselines, ILP sweeps, energy units,
and the seed's finding that energy falls along the accuracy/energy Pareto front (built-in digits)."""
from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from lowbit.cli.search import main as cli_search
from lowbit.cost import EnergyModel
from lowbit.models import create_model
from lowbit.report.plots_search import axis_label, draw_energy, draw_pareto, render_search_report
from lowbit.search import EvalData, Evaluator, Problem, build_space, profile_layers, run_search
from lowbit.search.pareto import pareto_mask
from lowbit.search.strategies import default_sweep
from lowbit.train import TrainConfig, train


@pytest.fixture(scope="module")
def splits(digits):
    return digits                      # conftest: digits, seed 0


@pytest.fixture(scope="module")
def mlp(splits):
    """64 -> 32 -> 16 -> 10 MLP, 3 epochs on digits (three weight layers to mix)."""
    torch.manual_seed(0)
    m = create_model("mlp", num_classes=10, in_chans=1, img_size=8, hidden=(32, 16))
    train(m, splits, TrainConfig(epochs=3, optimizer="adamw", lr=1e-2, weight_decay=0.0, seed=0))
    return m.eval()


def _problem(mlp, splits, formats="int2,int4,int8", energy="relative", **kw):
    space = build_space(profile_layers(mlp, (1, 1, 8, 8)), formats, "int8")
    ev = Evaluator(mlp, EvalData.from_splits(splits, "val"))
    return Problem(mlp, space, ev, energy=EnergyModel.get(energy), **kw)


def test_default_sweep_covers_the_cut_grid():
    assert len(default_sweep(3)) == 15 and default_sweep(3)[0] == (10.0, 10.0) and default_sweep(3)[-1] == (90.0, 90.0)
    assert len(default_sweep(2)) == 5 and default_sweep(1) == ()


def test_percentile_sweep_adds_uniform_baselines_and_cut_points(mlp, splits):
    p = _problem(mlp, splits, objective="energy")
    res = run_search(p, "percentile", sweep=default_sweep(3), baselines=True)
    t = res.table
    uni = t[t["strategy"] == "uniform"]
    fmts = [c for c in t if c.startswith("fmt:")]
    assert len(uni) == 3
    assert sorted(uni[fmts].nunique(axis=1).tolist()) == [1, 1, 1]          # one format per baseline
    assert set(uni[fmts[0]]) == {"int2/int8", "int4/int8", "int8/int8"}
    sweep = t[t["strategy"] == "percentile"]
    assert len(sweep) >= 3 and sweep["percentiles"].notna().all()        # duplicates of the grid dropped
    assert t.loc[t["chosen"], "percentiles"].item() == "25,75"              # the seed's rule stays chosen
    assert res.extra["uniform_baselines"] and len(res.extra["percentile_sweep"]) == 15
    assert len(t) == res.n_evaluations                                       # one evaluation per point


def test_percentile_sweep_rejects_bad_cut_sets(mlp, splits):
    with pytest.raises(ValueError, match="percentiles"):
        run_search(_problem(mlp, splits), "percentile", sweep=[(90, 10)])


def test_energy_falls_along_the_pareto_front(mlp, splits):
    """The seed's finding on built-in data: along the accuracy/energy front, every step down in
    accuracy buys a step down in energy, from uniform int8 to uniform int2, with mixed points between."""
    res = run_search(_problem(mlp, splits, objective="energy"), "percentile", sweep=default_sweep(3),
                     baselines=True)
    t = res.table
    front = t[pareto_mask(t["energy"], t["acc"])].sort_values("acc", ascending=False)
    assert len(front) >= 3
    assert (np.diff(front["energy"].to_numpy()) < 0).all()               # energy strictly falls
    e = {r["fmt:" + res.space.free[0]]: r["energy"] for _, r in t[t["strategy"] == "uniform"].iterrows()}
    assert e["int2/int8"] < e["int4/int8"] < e["int8/int8"]
    mixed = front[front["strategy"] == "percentile"]
    assert len(mixed) >= 1                                                  # mixed precision is on the front
    assert ((mixed["energy"] < e["int8/int8"]) & (mixed["energy"] > e["int2/int8"])).all()


def test_ilp_sweep_with_the_budget_on_the_plotted_metric_gives_distinct_points(mlp, splits):
    p = _problem(mlp, splits, objective="energy")
    lo = p.costs.total(p.space.uniform(0))["energy"][0]
    hi = p.costs.total(p.space.uniform(2))["energy"][0]
    p.budgets = {"energy": float(lo + 0.6 * (hi - lo))}
    res = run_search(p, "ilp", method="l2", sweep=6)
    t = res.table
    assert t["energy"].nunique() >= 3 and len(t) >= 3
    assert (t["energy"] <= p.budgets["energy"] * (1 + 1e-9)).all()           # the sweep stays within the budget
    assert any("distinct assignments" in n for n in res.notes)


def test_energy_labels_follow_the_energy_model(mlp, splits, tmp_path):
    assert "pJ" in axis_label("energy", "pJ/sample")
    assert axis_label("energy", "relative units/sample") == "energy per sample (relative units)"
    for energy, unit in (("relative", "relative units"), ("horowitz", "pJ")):
        res = run_search(_problem(mlp, splits, energy=energy, objective="energy"), "percentile", baselines=True)
        out = tmp_path / energy
        res.save(out)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["units"]["energy"] == f"{unit}/sample" and summary["energy_model"] == energy
        fig, (a, b) = plt.subplots(1, 2)
        draw_pareto(a, pd.read_csv(out / "results.csv"), "energy", energy_unit=summary["units"]["energy"])
        draw_energy(b, pd.read_csv(out / "assignment.csv"))
        assert a.get_xlabel() == f"energy per sample ({unit})"
        assert b.get_ylabel().startswith(f"{unit} per sample")
        if energy == "relative":
            assert "pJ" not in a.get_xlabel() + b.get_ylabel()
        plt.close(fig)
        assert render_search_report(out).exists()


def test_cli_percentile_prints_units_and_the_sweep(mlp, tmp_path, capsys):
    path = tmp_path / "mlp.pt"
    torch.save(mlp.state_dict(), path)
    base = ["--model", "mlp", "--dataset", "digits", "--model-kwargs", "{hidden: [32, 16]}", "--checkpoint", str(path),
            "--strategy", "percentile", "--formats", "int2,int4,int8", "--acts", "int8", "--objective", "energy"]
    assert cli_search(base + ["--energy", "relative", "--percentile-sweep", "10,90;50,50",
                              "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "relative units/sample" in out and "energy_rel" in out and "energy_pj" not in out
    t = pd.read_csv(tmp_path / "r" / "results.csv")
    assert (t["strategy"] == "uniform").sum() == 3 and set(t["percentiles"].dropna()) <= {"25,75", "10,90", "50,50"}
    assert cli_search(base + ["--percentile-sweep", "x;y", "--out", str(tmp_path / "b")]) == 2
    assert "--percentile-sweep 'x;y'" in capsys.readouterr().err


# ---- S_l on the layer's output or on the logits ------------------------------------------------------
def test_sensitivity_on_output_and_logits_both_work_and_differ(mlp, splits):
    from lowbit.search import layer_sensitivity
    space = build_space(profile_layers(mlp, (1, 1, 8, 8)), "int2,int4,int8", "int8")
    data = EvalData.from_splits(splits, "val")
    dfs = {on: layer_sensitivity(mlp, space, data, ["l2", "sqnr", "acc"], on=on) for on in ("logits", "output")}
    lo, out = (dfs[k].set_index(["layer", "format"]) for k in ("logits", "output"))
    assert (lo["sensitivity_on"] == "logits").all() and (out["sensitivity_on"] == "output").all()
    assert dfs["output"].attrs["sensitivity_on"] == "output"
    assert not np.allclose(lo["l2"], out["l2"]) and not np.allclose(lo["sqnr_db"], out["sqnr_db"])
    pd.testing.assert_series_equal(lo["acc"], out["acc"])                      # accuracy is always on the logits
    assert out.loc[("head", "int4/int8"), "l2"] == pytest.approx(lo.loc[("head", "int4/int8"), "l2"], rel=1e-5)
    # an independent oracle for the first layer: its own output, float vs int2 weights, by hand
    from lowbit.search.sensitivity import quantized_weight
    lin = mlp.features[1]
    xin = torch.flatten(data.normalized(), 1)
    c = space.choices[0]
    ref = torch.nn.functional.linear(xin, lin.weight, lin.bias).detach()
    assert c.act is not None
    from lowbit.nn.defaults import resolve
    from lowbit.nn.specs import slot
    from lowbit.ops import quantize
    qx = quantize(xin, resolve(slot(c.act), "act"))
    q = torch.nn.functional.linear(qx, quantized_weight(lin.weight, c), lin.bias).detach()
    assert out.loc[("features.1", c.label), "l2"] == pytest.approx(float((ref - q).norm(dim=1).mean()), rel=1e-4)
    for b in (4, 8):                                                           # more bits, less error at the output
        assert out.loc[("features.1", f"int{b}/int8"), "l2"] < out.loc[("features.1", "int2/int8"), "l2"]
    with pytest.raises(ValueError, match="logits, output"):
        layer_sensitivity(mlp, space, data, ["l2"], on="input")


def test_cli_sensitivity_on_is_stated(mlp, tmp_path, capsys):
    from lowbit.cli.sensitivity import main as cli_sens
    path = tmp_path / "mlp.pt"
    torch.save(mlp.state_dict(), path)
    base = ["--model", "mlp", "--dataset", "digits", "--model-kwargs", "{hidden: [32, 16]}", "--checkpoint", str(path),
            "--formats", "int2,int8"]
    assert cli_sens(base + ["--methods", "l2", "--sensitivity-on", "output", "--out", str(tmp_path / "s")]) == 0
    assert "on each layer's own output" in capsys.readouterr().out
    assert set(pd.read_csv(tmp_path / "s" / "sensitivity.csv")["sensitivity_on"]) == {"output"}
    assert cli_search(base + ["--strategy", "percentile", "--sensitivity-on", "output", "--percentile-sweep", "none",
                              "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "l2 scores (on the output)" in out
    assert json.loads((tmp_path / "p" / "summary.json").read_text())["sensitivity_on"] == "output"
    assert cli_sens(base + ["--sensitivity-on", "input", "--out", str(tmp_path / "x")]) == 2


# ---- --train-quick learns DeiT-Tiny -------------------------------------------------------------------
def test_train_quick_schedule_of_deit_tiny_has_warmup():
    from lowbit.cli.source import QUICK, quick_settings
    s = quick_settings("deit_tiny")
    assert s["warmup_epochs"] >= 1 and s["lr"] < QUICK["lr"] and s["grad_clip"] == 1.0
    assert quick_settings("cnn") == QUICK


@pytest.mark.slow
def test_train_quick_deit_tiny_learns_well_above_chance(splits, tmp_path):
    from lowbit.cli.source import build_model, train_quick
    torch.manual_seed(0)
    model = build_model("deit_tiny", "digits", splits=splits)
    res = train_quick(model, splits, epochs=3, seed=0, name="deit_tiny")
    assert res["summary"]["final_test_acc"] > 0.3                           # chance 0.1; QUICK alone stays ~0.11
