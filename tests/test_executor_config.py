"""Sweep executors and trackers: config and CLI plumbing that needs no optional package."""
import sys

import pytest

from lowbit.cli.run import main as cli_run
from lowbit.experiments import ConfigError, run_sweep, sweep_from_dict


def test_resources_default_and_validation():
    assert sweep_from_dict({}).resources == {"cpus": 1.0, "gpus": 0.0}
    assert sweep_from_dict({"resources": {"cpus": 2, "gpus": 0.5}}).resources == {
        "cpus": 2.0, "gpus": 0.5}
    with pytest.raises(ConfigError, match="resources: unknown resource 'tpus'; allowed: cpus, "):
        sweep_from_dict({"resources": {"tpus": 1}})
    with pytest.raises(ConfigError, match="resources.gpus: expected a number >= 0, got -1.0"):
        sweep_from_dict({"resources": {"gpus": -1}})


def test_resources_do_not_change_run_ids():
    from lowbit.experiments import expand
    a = [s.run_id for s in expand(sweep_from_dict({}))]
    assert a == [s.run_id for s in expand(sweep_from_dict({"resources": {"cpus": 4}}))]


def test_unknown_executor():
    with pytest.raises(ValueError, match="executor: expected one of local, ray, got 'slurm'"):
        run_sweep(sweep_from_dict({}), executor="slurm")


def test_ray_executor_without_ray_is_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    code = cli_run(["--executor", "ray", "--out", str(tmp_path), "--set", "models=[mlp]",
                    "--set", "activations=[relu]", "--set", "precisions=[fp32]"])
    assert code == 2
    assert "pip install" in capsys.readouterr().err


def test_log_without_package_is_exit_2(tmp_path, monkeypatch, capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    code = cli_run(["--log", "wandb", "--out", str(tmp_path), "--set", "models=[mlp]"])
    assert code == 2
    assert "pip install wandb" in capsys.readouterr().err
