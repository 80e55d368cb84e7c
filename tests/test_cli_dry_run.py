"""``lowbit run --dry-run``: writes nothing, and its lines show every setting that differs."""
from pathlib import Path

import pytest

from lowbit.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("config,overrides", [
    ("mobilenet_wa.yaml", []),
    ("precision_comparison.yaml", ["augmentations=[none, basic]", "seeds=[0, 1]",
                                   "activations=[relu, gelu]"]),
])
def test_dry_run_writes_nothing_and_lines_differ(config, overrides, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    argv = ["run", str(CONFIGS / config), "--dry-run", "--out", str(out)]
    for o in overrides:
        argv += ["--set", o]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert not out.exists() and list(tmp_path.iterdir()) == []      # no sweep.yaml, no run folders
    bodies = [line.split(" ", 1)[1] for line in lines]
    assert len(set(bodies)) == len(bodies) == len({line.split()[0] for line in lines})
    if config == "mobilenet_wa.yaml":
        assert len(lines) == 10
        assert sum("quantize=weights+activations" in b for b in bodies) == 3
        assert sum("quantize=activations" in b for b in bodies) == 3
    else:
        assert all("augmentation=" in b and "seed=" in b for b in bodies)
        assert "model_kwargs" not in lines[0]           # follows from the model: not an axis
