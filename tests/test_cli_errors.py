"""The malformed-input suite: every command on inputs a user gets wrong, run for real.

Each case asserts a non-zero exit, exactly one line on stderr (Python's and file descriptor 2,
every warning shown) naming the bad value, and that nothing already written changed: a prior
sweep's results, its checkpoints and earlier outputs stay byte-identical. The cases run in one
driver process (tests/cli_cases_driver.py) so the suite stays fast; models are tiny and come from
checkpoint files, never --train-quick.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ["--model", "mlp", "--dataset", "digits"]


class Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _world(t: Path) -> dict[str, Path]:
    """Files a user has (good and bad) and a folder of earlier results that must not change."""
    from lowbit.experiments import expand, sweep_from_dict
    from lowbit.experiments.store import rebuild_tables, write_json
    from lowbit.models import create_model
    from test_report import fake_result
    f = {"good": t / "good.pt", "empty": t / "empty.pt", "corrupt": t / "corrupt.pt",
         "evil": t / "evil.pt", "evil_in_dict": t / "evil_dict.pt", "truncated": t / "trunc.pt",
         "bad_st": t / "bad.safetensors", "empty_st": t / "empty.safetensors",
         "not_sd": t / "list.pt", "file": t / "afile", "binary_cfg": t / "bin.yaml",
         "evil_recipe": t / "evil_recipe.yaml", "written": t / "written"}
    torch.manual_seed(0)
    torch.save(create_model("mlp", num_classes=10, in_chans=1, img_size=8).state_dict(), f["good"])
    f["empty"].write_bytes(b"")
    f["corrupt"].write_bytes(b"\x80\x02 this is not a pickle" * 8)
    f["evil"].write_bytes(pickle.dumps(Evil()))
    f["evil_in_dict"].write_bytes(pickle.dumps({"model": {"w": Evil()}}))
    f["truncated"].write_bytes(f["good"].read_bytes()[:200])
    f["bad_st"].write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}xxxxxx")
    f["empty_st"].write_bytes(b"")
    torch.save([torch.zeros(2)], f["not_sd"])
    f["file"].write_text("a file, not a folder")
    f["binary_cfg"].write_bytes(bytes(range(256)) * 4)
    f["evil_recipe"].write_text("!!python/object/apply:os.system ['touch PWNED']\n")
    w = f["written"]
    cfg = sweep_from_dict({"models": ["cnn"], "precisions": ["fp32", "fp8_e4m3"], "out_dir": str(w)})
    for spec in expand(cfg):
        write_json(w / "runs" / spec.run_id / "result.json", fake_result(spec, 0.9))
        (w / "runs" / spec.run_id / "checkpoint.pt").write_bytes(f["good"].read_bytes())
    rebuild_tables(w, [s.run_id for s in expand(cfg)])
    (w / "sweep.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    (w / "ptq").mkdir()
    (w / "ptq" / "ptq_results.csv").write_text("weights,acts,acc\nint8,none,0.9\n")
    return f


def _sweep(t: Path, name: str, text: str) -> str:
    (t / name).write_text(text)
    return str(t / name)


def _cases(t: Path, f: dict[str, Path]) -> dict[str, tuple[list[str], str]]:
    """case id -> (argv, a text the one stderr line must contain)."""
    w, g = f["written"], str(f["good"])
    cases: dict[str, tuple[list[str], str]] = {}
    per_cmd = {
        "sensitivity": lambda c: ["sensitivity", "--checkpoint", c, *SRC, "--formats", "int8",
                                  "--out", str(w / "ptq")],
        "search": lambda c: ["search", "--checkpoint", c, *SRC, "--out", str(w / "ptq")],
        "ptq": lambda c: ["ptq", "--checkpoint", c, *SRC, "--out", str(w / "ptq")],
        "cost": lambda c: ["cost", "--checkpoint", c, *SRC],
        "export-packed": lambda c: ["export", "packed", "--checkpoint", c, *SRC, "--out",
                                    str(w / "ptq" / "m.safetensors")],
        "export-onnx": lambda c: ["export", "onnx", "--checkpoint", c, *SRC, "--out",
                                  str(w / "ptq" / "m.onnx")],
        "export-c": lambda c: ["export", "c", "--checkpoint", c, *SRC, "--out", str(w / "ptq")],
    }
    for kind in ("empty", "corrupt", "evil", "evil_in_dict", "truncated", "bad_st", "empty_st",
                 "not_sd"):
        for cmd, make in per_cmd.items():
            cases[f"{cmd}-{kind}-checkpoint"] = (make(str(f[kind])), str(f[kind]))
    for cmd in ("ptq", "cost", "export-c"):
        cases[f"{cmd}-missing-checkpoint"] = (per_cmd[cmd](str(t / "nope.pt")), "nope.pt")
        cases[f"{cmd}-folder-checkpoint"] = (per_cmd[cmd](str(t)), str(t))
    cases["ptq-wrong-model"] = (["ptq", "--checkpoint", g, "--model", "cnn", "--dataset", "digits",
                                 "--out", str(w / "ptq")], "does not fit this model")
    cases["cost-wrong-model"] = (["cost", "--checkpoint", g, "--model", "cnn"], "does not fit")
    for out_kind, out in (("is-a-file", f["file"]), ("under-a-file", f["file"] / "sub")):
        for cmd, argv in {
            "sensitivity": ["sensitivity", "--checkpoint", g, *SRC, "--formats", "int8"],
            "search": ["search", "--checkpoint", g, *SRC], "ptq": ["ptq", "--checkpoint", g, *SRC],
            "export-c": ["export", "c", "--checkpoint", g, *SRC],
            "run": ["run", "--set", "epochs=1"], "report": ["report", str(w)],
        }.items():
            cases[f"{cmd}-out-{out_kind}"] = ([*argv, "--out", str(out)], str(f["file"]))
    cases["export-onnx-out-is-a-folder"] = (["export", "onnx", "--checkpoint", g, *SRC, "--out",
                                             str(w)], str(w))
    cases["run-binary-config"] = (["run", str(f["binary_cfg"])], str(f["binary_cfg"]))
    cases["run-folder-config"] = (["run", str(t)], str(t))
    cases["run-missing-config"] = (["run", str(t / "nope.yaml")], "nope.yaml")
    cases["run-recipe-python-tag"] = (["run", _sweep(t, "rec.yaml", f"models: [mlp]\nprecisions: "
                                       f"['recipe:{f['evil_recipe']}']\n"), "--out", str(w)],
                                      str(f["evil_recipe"]))
    sweeps = {"lr-inf": ("lr: .inf\n", "lr"), "lr-nan": ("lr: .nan\n", "lr"),
              "lr-zero": ("lr: 0\n", "lr"), "lr-string": ("lr: fast\n", "lr"),
              "warmup-negative": ("warmup_epochs: -1\n", "warmup_epochs"),
              "weight-decay-inf": ("weight_decay: .inf\n", "weight_decay"),
              "grad-clip-inf": ("grad_clip: .inf\n", "grad_clip"),
              "channels-x": ("model_kwargs: {cnn: {channels: x}}\n", "model_kwargs.cnn"),
              "model-kwargs-typo": ("model_kwargs: {cnn: {chanels: [4]}}\n", "chanels"),
              "model-kwargs-not-mapping": ("model_kwargs: {cnn: 3}\n", "model_kwargs.cnn"),
              "model-kwargs-unknown-model": ("model_kwargs: {nosuch: {a: 1}}\n", "nosuch"),
              "unknown-key": ("modls: [cnn]\n", "modls"), "unknown-model": ("models: [nosuch]\n", "nosuch"),
              "unknown-format": ("precisions: [int99]\n", "int99"),
              "unknown-dataset": ("datasets: [imagenet22k]\n", "imagenet22k"),
              "unknown-data-key": ("data: {subset: 3}\n", "subset"),
              "on-bad-file": ("data: {on_bad_file: ignore}\n", "on_bad_file"),
              "epochs-zero": ("epochs: 0\n", "epochs"), "epochs-float": ("epochs: 2.5\n", "epochs"),
              "batch-negative": ("batch_size: -8\n", "batch_size"),
              "seeds-string": ("seeds: [a]\n", "seeds"), "top-level-list": ("- a\n- b\n", "mapping"),
              "empty-grid": ("models: []\n", "models"), "bad-yaml": ("models: [cnn\n", "YAML"),
              "optimizer": ("optimizer: adamax\n", "adamax"), "val-fraction": ("data: {val_fraction: 1.5}\n",
                                                                          "val_fraction")}
    for name, (text, needle) in sweeps.items():
        cases[f"run-config-{name}"] = (["run", _sweep(t, f"{name}.yaml", text), "--out", str(w)],
                                       needle)
    cases["run-set-lr-inf"] = (["run", "--set", "lr=.inf", "--out", str(w)], "lr")
    cases["run-set-no-value"] = (["run", "--set", "lr", "--out", str(w)], "'lr'")
    cases["run-jobs-zero"] = (["run", "-j", "0", "--out", str(w)], "-j/--jobs")
    cases["ptq-bad-weights"] = (["ptq", "--checkpoint", g, *SRC, "--weights", "int99", "--out",
                                 str(w / "ptq")], "int99")
    cases["ptq-bad-model-kwargs"] = (["ptq", "--checkpoint", g, *SRC, "--model-kwargs", "[oops",
                                      "--out", str(w / "ptq")], "[oops")
    cases["ptq-calib-zero"] = (["ptq", "--checkpoint", g, *SRC, "--calib-samples", "0", "--out",
                                str(w / "ptq")], "--calib-samples")
    cases["ptq-unknown-dataset"] = (["ptq", "--checkpoint", g, "--model", "mlp", "--dataset", "nosuch",
                                     "--out", str(w / "ptq")], "nosuch")
    cases["ptq-data-root-is-file"] = (["ptq", "--checkpoint", g, "--model", "mlp", "--dataset",
                                       "imagefolder", "--data-root", str(f["file"]), "--out",
                                       str(w / "ptq")], str(f["file"]))
    cases["cost-energy-missing"] = (["cost", "--checkpoint", g, *SRC, "--energy", str(t / "e.yaml")],
                                    "e.yaml")
    cases["report-nothing"] = (["report", str(t / "nothing")], "nothing")
    cases["report-empty-runs-table"] = (["report", str(_empty_results(t)), "--out", str(t / "r")],
                                        "no runs in")
    cases["formats-unknown"] = (["formats", "nosuch"], "nosuch")
    cases["unknown-command"] = (["frobnicate"], "frobnicate")
    return cases


def _empty_results(t: Path) -> Path:
    (t / "emptyres" / "results").mkdir(parents=True, exist_ok=True)
    (t / "emptyres" / "results" / "runs.csv").write_bytes(b"")
    return t / "emptyres"


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _drive(t: Path, argvs: list[list[str]], cwd: Path) -> list[dict]:
    (t / "cases.json").write_text(json.dumps(argvs))
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "cli_cases_driver.py"),
                           str(t / "cases.json")], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    t = tmp_path_factory.mktemp("malformed")
    f = _world(t)
    before = _snapshot(t / "written")
    cases = _cases(t, f)
    rows = _drive(t, [argv for argv, _ in cases.values()], cwd=t)
    assert len(rows) == len(cases)
    return {"t": t, "before": before, "after": _snapshot(t / "written"),
            "rows": dict(zip(cases, rows)), "needles": {k: v[1] for k, v in cases.items()}}


def _case_ids():
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        return list(_cases(Path(d), {k: Path(d) / k for k in (
            "good", "empty", "corrupt", "evil", "evil_in_dict", "truncated", "bad_st", "empty_st",
            "not_sd", "file", "binary_cfg", "evil_recipe", "written")}))


@pytest.mark.parametrize("case", _case_ids())
def test_one_line_and_nonzero_exit(outcome, case):
    row = outcome["rows"][case]
    assert isinstance(row["rc"], int) and row["rc"] != 0, row
    assert len(row["stderr"]) == 1, row["stderr"]
    assert "Traceback" not in row["stderr"][0]
    assert outcome["needles"][case] in row["stderr"][0], row["stderr"][0]


def test_nothing_already_written_changed(outcome):
    assert outcome["after"] == outcome["before"]
    assert not list(outcome["t"].rglob("PWNED"))  # no pickle or YAML tag ran code


@pytest.fixture
def read_only(tmp_path):
    """A folder of earlier results that cannot be written: chmod for a normal user, a read-only
    bind mount for root (root ignores permissions)."""
    f = _world(tmp_path)
    folder = f["written"]
    if os.geteuid() != 0:
        for p in [folder, *folder.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        yield f
        for p in [folder, *folder.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        return
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True)
    if mounted.returncode or ro.returncode:
        if not mounted.returncode:
            subprocess.run(["umount", str(folder)])
        pytest.skip("running as root without mount: a folder cannot be made read-only")
    try:
        yield f
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_read_only_output_and_results_folders(read_only, tmp_path):
    w, g = read_only["written"], str(read_only["good"])
    before = _snapshot(w)
    cases = {
        "ptq": (["ptq", "--checkpoint", g, *SRC, "--out", str(w / "ptq")], str(w / "ptq")),
        "ptq-new-sub": (["ptq", "--checkpoint", g, *SRC, "--out", str(w / "new")], str(w)),
        "sensitivity": (["sensitivity", "--checkpoint", g, *SRC, "--formats", "int8", "--out",
                         str(w / "ptq")], str(w / "ptq")),
        "export-packed": (["export", "packed", "--checkpoint", g, *SRC, "--out",
                           str(w / "m.safetensors")], str(w)),
        "report": (["report", str(w)], str(w)),
        "run": (["run", str(w / "sweep.yaml"), "--out", str(w)], str(w)),
    }
    rows = _drive(tmp_path, [argv for argv, _ in cases.values()], cwd=tmp_path)
    for (name, (_, needle)), row in zip(cases.items(), rows):
        assert isinstance(row["rc"], int) and row["rc"] != 0, (name, row)
        assert len(row["stderr"]) == 1 and needle in row["stderr"][0], (name, row["stderr"])
    assert _snapshot(w) == before
