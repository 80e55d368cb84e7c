"""Sweeps: typed YAML configs, grid expansion, isolated resumable runs, a results store.

    cfg = load_sweep("configs/vit_fp8.yaml", ["epochs=2"])   # or sweep_from_dict({...})
    runs = run_sweep(cfg, jobs=2)                             # pandas DataFrame, one row per run
    # files: <out_dir>/results/{runs,epochs,summary}.{csv,parquet}, <out_dir>/runs/<id>/...

Executors (where runs execute): :mod:`lowbit.experiments.executors`; trackers:
:mod:`lowbit.experiments.tracking`; the command ``lowbit run``: :mod:`lowbit.cli.run`.
"""
from lowbit.experiments.grid import RunSpec, expand, flatten
from lowbit.experiments.runner import prepare, run_sweep
from lowbit.experiments.schema import (ConfigError, DataConfig, SweepConfig, apply_overrides,
                                       load_sweep, sweep_from_dict)
from lowbit.experiments.store import load_tables, rebuild_tables

__all__ = ["RunSpec", "expand", "flatten", "prepare", "run_sweep", "ConfigError",
           "DataConfig", "SweepConfig", "apply_overrides", "load_sweep", "sweep_from_dict",
           "load_tables", "rebuild_tables"]
