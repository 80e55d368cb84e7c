"""Mixed-precision search: Pareto fronts, every strategy, recipes, plots and the CLI (tiny models)."""
from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch

from lowbit.cli.search import main as cli_search
from lowbit.models import create_model
from lowbit.nn import Recipe, quantize_model
from lowbit.search import (EvalData, Evaluator, Problem, build_space, cost_of,
                           evaluate_recipe, pareto_mask, profile_layers, run_search, select, solve_ilp, staircase)
from lowbit.report.plots_search import plot_parallel_coordinates, render_search_report
from lowbit.search.strategies import list_strategies, percentile_assign
from lowbit.train import TrainConfig, train


@pytest.fixture(scope="module")
def splits(digits):
    return digits                      # conftest: digits, seed 0


@pytest.fixture(scope="module")
def mlp(splits):
    """A two-layer MLP (64 -> 16 -> 10) trained 2 epochs on digits (~90 % val accuracy)."""
    torch.manual_seed(0)
    m = create_model("mlp", num_classes=10, in_chans=1, img_size=8, hidden=(16,))
    train(m, splits, TrainConfig(epochs=2, optimizer="adamw", lr=1e-2, weight_decay=0.0, seed=0))
    return m.eval()


def _problem(mlp, splits, formats="int2,int4,int8", **kw):
    space = build_space(profile_layers(mlp, (1, 1, 8, 8)), formats)
    ev = Evaluator(mlp, EvalData.from_splits(splits, "val"))
    return Problem(mlp, space, ev, **kw)


# ---- Pareto front -----------------------------------------------------------------------------------
def _dominated(i, cost, acc):
    return any(cost[j] <= cost[i] and acc[j] >= acc[i] and (cost[j] < cost[i] or acc[j] > acc[i])
               for j in range(len(cost)))


@pytest.mark.parametrize("seed", range(5))
def test_pareto_mask_is_the_set_of_non_dominated_points(seed):
    g = np.random.default_rng(seed)
    cost = g.integers(0, 12, 40).astype(float)
    acc = g.integers(0, 12, 40).astype(float)
    mask = pareto_mask(cost, acc)
    assert list(mask) == [not _dominated(i, cost, acc) for i in range(40)]
    x, y = staircase(cost, acc)
    assert np.all(np.diff(x) >= 0) and np.all(np.diff(y[np.r_[True, np.diff(x) > 0]]) > 0)  # staircase
    assert x[0] == cost.min() and y[-1] == acc.max()


def test_pareto_staircase_named_cases():
    cost = [1, 2, 3, 4, 4, 5]
    acc = [50, 40, 60, 60, 70, 70]
    assert list(pareto_mask(cost, acc)) == [True, False, True, False, True, False]
    assert list(pareto_mask([1, 1], [5, 5])) == [True, True]          # duplicates both kept


def test_select_rule():
    cost, acc = [1, 2, 3, 4], [80, 89, 90, 91]
    assert select(cost, acc, max_drop=1.0, baseline=91) == (2, True)   # cheapest within 1 pp
    assert select(cost, acc, max_drop=0.5, baseline=95) == (3, False)  # none: most accurate
    assert select(cost, acc, 1.0, 91, within_budget=[True, True, False, False]) == (1, False)


# ---- strategies -------------------------------------------------------------------------------------
def test_registry_lists_every_strategy():
    assert set(list_strategies()) >= {"percentile", "exhaustive", "binary", "ilp", "evolutionary"}


def test_exhaustive_finds_true_optimum(mlp, splits):
    p = _problem(mlp, splits, max_acc_drop=2.0)
    res = run_search(p, "exhaustive")
    assert len(res.table) == 9 and res.n_evaluations == 9
    data = EvalData.from_splits(splits, "val")
    base = evaluate_recipe(mlp, None, data)["acc"]
    best = None
    for idx in itertools.product(range(3), repeat=2):   # brute force, independent of the search code
        acc = evaluate_recipe(mlp, p.space.recipe(idx), data)["acc"]
        size = cost_of(p.space, idx).total["weight_bytes"]
        if 100 * (base - acc) <= 2.0 and (best is None or (size, -acc) < best[:2]):
            best = (size, -acc, idx)
    assert res.choice == best[2] and res.feasible
    assert list(res.table["pareto"]) == list(pareto_mask(res.table["size"], res.table["acc"]))


def test_exhaustive_prunes_tiny_layers(mlp, splits):
    p = _problem(mlp, splits)
    space, note = p.space.pruned(max_points=3, prune_pct=5.0)   # head has ~15% of MACs: forced out by size
    assert space.size <= 3 and space.fixed and "fixed" in note
    assert all(c.label == "int8" for c in space.fixed.values())


def test_binary_returns_feasible_point_and_counts_evaluations(mlp, splits):
    p = _problem(mlp, splits, max_acc_drop=3.0)
    res = run_search(p, "binary")
    assert res.feasible and res.chosen["acc_drop_pp"] <= 3.0
    assert res.n_evaluations == len(res.table) <= math.ceil(math.log2(9)) + 1
    assert any("heuristic" in n for n in res.notes)


def test_cost_table_matches_cost_model(mlp, splits):
    p = _problem(mlp, splits)
    for idx in itertools.product(range(3), repeat=2):
        exact = cost_of(p.space, idx).total
        approx = p.costs.total(idx)
        assert approx["size"][0] == pytest.approx(exact["weight_bytes"])
        assert approx["bitops"][0] == pytest.approx(exact["bitops"])


@pytest.mark.parametrize("seed", range(4))
def test_ilp_matches_brute_force(seed):
    g = np.random.default_rng(seed)
    n_l, n_k = 4, 3
    scores = g.random((n_l, n_k)) * np.array([4, 2, 1])          # more bits, less sensitive
    size = g.integers(1, 10, (n_l, 1)) * np.array([2, 4, 8])       # more bits, more bytes
    bitops = g.integers(1, 10, (n_l, 1)) * np.array([1, 3, 9])
    budgets = {"size": float(size.sum(axis=1).mean() * 1.6), "bitops": float(bitops.sum() / 2)}
    base = {"size": 5.0, "bitops": 0.0}
    best = min((sum(scores[l, k] for l, k in enumerate(c)), c) for c in itertools.product(range(n_k), repeat=n_l)
               if base["size"] + sum(size[l, k] for l, k in enumerate(c)) <= budgets["size"]
               and sum(bitops[l, k] for l, k in enumerate(c)) <= budgets["bitops"])
    got = solve_ilp(scores, {"size": size, "bitops": bitops}, budgets, base)
    assert sum(scores[l, k] for l, k in enumerate(got)) == pytest.approx(best[0])
    with pytest.raises(ValueError, match="below the smallest achievable"):
        solve_ilp(scores, {"size": size}, {"size": 1.0}, base)


def test_ilp_strategy_respects_budget(mlp, splits):
    p = _problem(mlp, splits)
    budget = 0.5 * (p.costs.total(p.space.uniform(0))["size"][0] + p.costs.total(p.space.uniform(2))["size"][0])
    p.budgets = {"size": float(budget)}
    res = run_search(p, "ilp", method="l2")
    assert res.chosen["size"] <= budget and res.chosen["within_budget"] and res.n_evaluations == 1
    with pytest.raises(ValueError, match="needs a budget"):
        run_search(_problem(mlp, splits), "ilp")


def test_percentile_thresholds():
    scores = np.arange(1, 9, dtype=float)                        # 8 layers
    assert list(percentile_assign(scores, (25, 75))) == [0, 0, 1, 1, 1, 1, 2, 2]


def test_percentile_strategy_follows_scores(mlp, splits):
    p = _problem(mlp, splits, formats="int4,int6,int8")
    names = p.space.free
    rows = [{"layer": n, "format": f, "weight_bits": b, "l2": s}
            for n, s in zip(names, (5.0, 1.0)) for f, b in (("int4", 4), ("int6", 6), ("int8", 8))]
    p.sensitivity = pd.DataFrame(rows)
    res = run_search(p, "percentile", percentiles=(50,), levels=("int4", "int8"))
    assert res.assignment == {names[0]: "int8", names[1]: "int4"}
    assert res.n_evaluations == 1
    with pytest.raises(ValueError, match="percentiles"):
        run_search(p, "percentile", percentiles=(75, 25))


def test_evolutionary_resumes_from_sqlite(mlp, splits, tmp_path):
    pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    p = _problem(mlp, splits)
    r1 = run_search(p, "evolutionary", n_trials=3, storage=storage, study_name="t")
    r2 = run_search(_problem(mlp, splits), "evolutionary", n_trials=5, storage=storage, study_name="t")
    assert r1.extra["n_trials_total"] == 3 and r2.extra["n_trials_total"] == 5   # n_trials: the total
    assert r2.n_evaluations <= 2                 # stored trials are not evaluated again
    r3 = run_search(_problem(mlp, splits), "evolutionary", n_trials=4, storage=storage, study_name="t")
    assert r3.extra["n_trials_total"] == 5 and r3.n_evaluations == 0   # enough already: none new
    with pytest.raises(ValueError, match="another search space"):
        run_search(_problem(mlp, splits, formats="int4,int8"), "evolutionary", n_trials=1, storage=storage,
                   study_name="t")


OPTIONS = {"evolutionary": {"n_trials": 4}, "ilp": {"method": "l2"}, "percentile": {"method": "l2"}}


@pytest.mark.parametrize("name", list_strategies())
def test_every_strategy_returns_a_loadable_recipe(name, mlp, splits, tmp_path):
    if name == "evolutionary":
        pytest.importorskip("optuna")
    p = _problem(mlp, splits, max_acc_drop=5.0)
    p.budgets = {"size": float(p.costs.total(p.space.uniform(1))["size"][0])}
    res = run_search(p, name, **OPTIONS.get(name, {}))
    paths = res.save(tmp_path)
    rec = Recipe.from_yaml(paths["recipe"])
    assert rec.hash() == res.recipe.hash()
    asg = quantize_model(copy.deepcopy(mlp), rec)
    assert {r.name: r.format("weight") for r in asg.rows} == res.assignment
    table = pd.read_csv(paths["results"])
    assert table["chosen"].sum() == 1 and len(table) >= 1 and res.n_evaluations >= 1
    assert {"size", "bitops", "energy", "instructions", "acc", "acc_drop_pp", "pareto"} <= set(table)
    if name != "percentile":      # the percentile rule ignores budgets (as the energy-aware tool)
        # NSGA-II with 4 trials may find no point within budget: then the most accurate is returned
        assert res.chosen["within_budget"] or (name == "evolutionary" and not table["within_budget"].any())


def test_parallel_workers_match_serial(mlp, splits):
    space = build_space(profile_layers(mlp, (1, 1, 8, 8)), "int2,int8")
    recipes = [space.recipe(i) for i in space.enumerate()][:3]
    data = EvalData.from_splits(splits, "val", limit=100)
    serial = Evaluator(mlp, data)(recipes)
    with Evaluator(mlp, data, workers=2) as ev:
        assert ev(recipes) == serial and ev.n_evaluations == 3


def test_ray_executor_matches_serial(mlp, splits):
    """lowbit search --executor ray: the same evaluations as Ray tasks give the same numbers."""
    ray = pytest.importorskip("ray", reason="ray not installed (pip install 'lowbit[ray]')")
    space = build_space(profile_layers(mlp, (1, 1, 8, 8)), "int2,int8")
    recipes = [space.recipe(i) for i in space.enumerate()][:3]
    data = EvalData.from_splits(splits, "val", limit=100)
    serial = Evaluator(mlp, data)(recipes)
    try:
        with Evaluator(mlp, data, executor="ray") as ev:
            assert ev(recipes) == serial and ev.n_evaluations == 3
            assert ev(recipes) == serial and ev.n_evaluations == 3  # cached: no new tasks
    finally:
        ray.shutdown()
    with pytest.raises(ValueError, match="executor='dask'.*allowed: local, ray"):
        Evaluator(mlp, data, executor="dask")


def test_finetune_runs_qat(mlp, splits):
    p = _problem(mlp, splits, formats="int2,int4")
    res = run_search(p, "percentile", method="l2", finetune_epochs=1, splits=splits)
    ft = res.finetune
    assert ft["epochs"] == 1 and 0 <= ft["val_acc_after"] <= 1 and "state_dict" in ft


# ---- plots, report, CLI -----------------------------------------------------------------------------
def test_parallel_coordinates_and_report(mlp, splits, tmp_path):
    df = pd.DataFrame({"W": ["int2", "int4", "int8", "int8"], "A": ["int8", "int8", "int4", "int8"],
                       "accuracy": [0.2, 0.8, 0.85, 0.9]})
    assert plot_parallel_coordinates(df, tmp_path / "pc.png").stat().st_size > 0
    run_search(_problem(mlp, splits), "exhaustive").save(tmp_path)
    page = render_search_report(tmp_path)
    text = page.read_text()
    assert "pareto.png" in text and "summary.png" in text and (tmp_path / "energy.png").exists()


@pytest.fixture(scope="module")
def ckpt(mlp, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "mlp.pt"
    torch.save(mlp.state_dict(), path)
    return str(path)


BASE = ["--model", "mlp", "--dataset", "digits", "--model-kwargs", "{hidden: [16]}"]


def test_cli_search_end_to_end(ckpt, tmp_path, capsys):
    rc = cli_search(BASE + ["--checkpoint", ckpt, "--strategy", "binary", "--formats", "int2,int8",
                            "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0 and "chosen assignment" in out and "features.1" in out
    for f in ("recipe.yaml", "results.csv", "assignment.csv", "summary.json", "pareto.png", "search_report.html"):
        assert (tmp_path / f).exists(), f


@pytest.mark.parametrize("argv, words", [
    (["--strategy", "nope"], ["nope", "exhaustive"]),
    (["--formats", "int2,int99x"], ["int99x"]),
    (["--max-acc-drop", "x"], ["--max-acc-drop", "'x'"]),
    (["--workers", "0"], ["--workers", ">= 1"]),
    (["--budget-size-kb", "-1"], ["--budget-size-kb", "> 0"]),
    (["--strategy", "ilp"], ["budget", "size"]),
    (["--model-kwargs", "{hidden: [16]}", "--model", "mlp"], ["--checkpoint", "--train-quick"]),
    (["--checkpoint", "/nonexistent.pt"], ["/nonexistent.pt"]),
])
def test_cli_bad_input_exits_2_with_one_line(ckpt, argv, words, capsys):
    args = BASE + (["--checkpoint", ckpt] if "ilp" in argv else []) + argv
    assert cli_search(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for w in words:
        assert w in err, (w, err)


def test_evolutionary_cli_killed_mid_trial_then_resumed(tmp_path):
    """A real SIGKILL while a trial runs: the resumed search marks that trial failed and runs only
    the trials still missing from the --n-trials total."""
    pytest.importorskip("optuna")
    import signal
    import sqlite3
    import subprocess
    import sys
    import time
    db = tmp_path / "study.db"
    cmd = [sys.executable, "-m", "lowbit.cli", "search", "--model", "mlp", "--dataset", "digits", "--train-quick",
           "--formats", "int2,int4,int8", "--strategy", "evolutionary", "--n-trials", "8",
           "--storage", f"sqlite:///{db}", "--out", str(tmp_path / "out")]

    def states():
        try:
            with sqlite3.connect(db) as con:
                return dict(con.execute("select state, count(*) from trials group by state").fetchall())
        except sqlite3.Error:
            return {}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            s = states()
            if s.get("COMPLETE", 0) >= 2 and s.get("RUNNING", 0) >= 1:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        proc.wait(30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
    killed = states()
    assert killed.get("RUNNING", 0) >= 1 and killed.get("COMPLETE", 0) < 8  # left mid-trial
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    after = states()
    assert after.get("COMPLETE") == 8 and "RUNNING" not in after
    assert after.get("FAIL", 0) == killed["RUNNING"]
    assert f"{8 - killed['COMPLETE']} new trials ({killed['COMPLETE']} complete before" in out.stdout
    assert "interrupted by an earlier kill marked failed" in out.stdout
