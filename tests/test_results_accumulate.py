"""Results accumulate in a sweep folder: a second sweep or a --set slice adds rows, never removes them."""
import pandas as pd

from lowbit.experiments.runner import run_sweep
from lowbit.experiments.schema import apply_overrides, sweep_from_dict
from lowbit.experiments.store import load_tables


def _cfg(out, **extra):
    raw = {"name": "acc", "out_dir": str(out), "models": ["mlp"], "datasets": ["digits"], "epochs": 1,
           "batch_size": 256, "model_kwargs": {"mlp": {"hidden": [16]}}, "data": {"train_subset": 300}}
    return raw | extra


def _ids(out) -> set:
    return set(pd.read_csv(out / "results" / "runs.csv")["run_id"])


def test_second_sweep_and_set_slice_accumulate(tmp_path):
    out = tmp_path / "sweep"
    first = run_sweep(sweep_from_dict(_cfg(out, precisions=["fp32", "int8"])), jobs=1, quiet=True)
    ids_first = set(first["run_id"])
    assert len(ids_first) == 2 and _ids(out) == ids_first
    second = run_sweep(sweep_from_dict(_cfg(out, precisions=["fp32"], amps=["bf16"])), jobs=1, quiet=True)
    assert len(second) == 3 and ids_first < set(second["run_id"])     # the returned table has all three
    assert len(_ids(out)) == 3 and ids_first < _ids(out)
    tables = load_tables(out)
    assert sorted(tables["runs"]["amp"]) == ["bf16", "off", "off"]
    assert set(tables["epochs"]["run_id"]) == _ids(out)
    # re-running a slice of the first sweep (already finished) keeps every row
    sliced = sweep_from_dict(apply_overrides(_cfg(out, precisions=["fp32", "int8"]), ["precisions=[int8]"]))
    run_sweep(sliced, jobs=1, quiet=True)
    assert len(_ids(out)) == 3
    # and a new slice point (a second seed of int8) is added next to them
    run_sweep(sweep_from_dict(apply_overrides(_cfg(out, precisions=["int8"]), ["seeds=[1]"])), jobs=1, quiet=True)
    assert len(_ids(out)) == 4 and len(load_tables(out)["runs"]) == 4
