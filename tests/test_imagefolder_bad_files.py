"""imagefolder with unreadable files: skipped with a warning naming them, or one-line errors by
``on_bad_file``; every model command takes ``--dataset imagefolder --data-root DIR``."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lowbit.data import load_dataset
from lowbit.experiments import expand, load_sweep
from lowbit.experiments.worker import load_run_data
from test_data import write_imagefolder

ROOT = Path(__file__).resolve().parents[1]


def _damage(root: Path) -> list[Path]:
    bad = [root / "cat" / "broken.png", root / "dog" / "empty.jpg", root / "eel" / "text.png"]
    bad[0].write_bytes((root / "cat" / "0.png").read_bytes()[:30])  # truncated PNG
    bad[1].write_bytes(b"")
    bad[2].write_text("not an image")
    return bad


def test_bad_files_are_skipped_with_a_warning_naming_each(tmp_path):
    write_imagefolder(tmp_path)
    bad = _damage(tmp_path)
    with pytest.warns(UserWarning) as record:
        s = load_dataset("imagefolder", root=tmp_path, img_size=8)
    messages = [str(w.message) for w in record if "imagefolder: skipping" in str(w.message)]
    assert len(messages) == 3
    for path in bad:
        assert sum(str(path) in m for m in messages) == 1
    assert sum(s.sizes.values()) == 15  # exactly the good ones
    clean = load_dataset("imagefolder", root=tmp_path, img_size=8, on_bad_file="skip")
    assert torch.equal(clean.train.x, s.train.x)


def test_on_bad_file_error_is_one_line_naming_the_file(tmp_path):
    write_imagefolder(tmp_path)
    bad = _damage(tmp_path)
    with pytest.raises(ValueError) as err:
        load_dataset("imagefolder", root=tmp_path, img_size=8, on_bad_file="error")
    assert str(bad[0]) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="on_bad_file: expected one of skip, error, got 'ignore'"):
        load_dataset("imagefolder", root=tmp_path, on_bad_file="ignore")


def test_sweep_config_on_bad_file(tmp_path):
    write_imagefolder(tmp_path / "imgs")
    bad = _damage(tmp_path / "imgs")
    base = [f"out_dir={tmp_path}", "models=[cnn]", "datasets=[imagefolder]", "precisions=[fp32]",
            f"data.root={tmp_path / 'imgs'}"]
    spec = expand(load_sweep(None, base))[0]
    spec_err = expand(load_sweep(None, base + ["data.on_bad_file=error"]))[0]
    assert spec.run_id != spec_err.run_id
    with pytest.warns(UserWarning, match="skipping"):
        assert sum(load_run_data(spec).sizes.values()) == 15
    with pytest.raises(ValueError, match=str(bad[0]).replace(".", r"\.")):
        load_run_data(spec_err)
    from lowbit.experiments.schema import ConfigError
    with pytest.raises(ConfigError, match="data.on_bad_file: expected one of skip, error, got 'x'"):
        load_sweep(None, base + ["data.on_bad_file=x"])


def _lowbit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lowbit.cli", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=cwd,
                          timeout=300)


def test_every_model_command_takes_the_data_root(tmp_path):
    write_imagefolder(tmp_path / "imgs", per_class=6)
    _damage(tmp_path / "imgs")
    from lowbit.models import create_model
    model = create_model("mlp", num_classes=3, in_chans=3, img_size=32)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    common = ["--checkpoint", tmp_path / "m.pt", "--model", "mlp", "--dataset", "imagefolder",
              "--data-root", tmp_path / "imgs"]
    commands = {
        "cost": ["cost", *common],
        "ptq": ["ptq", *common, "--weights", "int8", "--acts", "none", "--out", tmp_path / "ptq"],
        "sensitivity": ["sensitivity", *common, "--formats", "int4,int8", "--out", tmp_path / "sens"],
        "export": ["export", "packed", *common, "--weights", "int8", "--out", tmp_path / "m.safetensors"],
    }
    for name, argv in commands.items():
        proc = _lowbit(*argv)
        assert proc.returncode == 0, (name, proc.stderr[-2000:])
        assert "skipping" in proc.stderr and "broken.png" in proc.stderr, (name, proc.stderr)
    proc = _lowbit("cost", "--checkpoint", tmp_path / "m.pt", "--model", "mlp", "--dataset",
                   "imagefolder", "--data-root", tmp_path / "nowhere")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "nowhere" in proc.stderr
