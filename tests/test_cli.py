"""The command layer (lowbit.cli): one parser convention, --help everywhere, one-line errors, the shared
model/data source (checkpoints, run folders with provenance, --model-kwargs YAML/JSON, output checks)."""
import json
import os

import pytest
import torch

from lowbit import __version__
from lowbit.cli import COMMANDS, main
from lowbit.cli.source import build_model, parse_model_kwargs

SUBCOMMANDS = [[c] for c in COMMANDS] + [["export", t] for t in ("onnx", "packed", "c")]
LOADERS = [["sensitivity"], ["search"], ["ptq"], ["cost"], ["export", "onnx"], ["export", "packed"], ["export", "c"]]


@pytest.mark.parametrize("cmd", [[]] + SUBCOMMANDS, ids=lambda c: " ".join(c) or "lowbit")
def test_help_on_every_command_exits_0(cmd, capsys):
    assert main([*cmd, "--help"]) == 0
    assert "usage: lowbit" in capsys.readouterr().out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"lowbit {__version__}"


@pytest.mark.parametrize("argv,needle", [(["nope"], "invalid choice: 'nope'"),
                                         (["export"], "lowbit export: error: the following arguments are required"),
                                         (["export", "nope"], "invalid choice: 'nope'"),
                                         (["cost", "--bogus"], "lowbit cost: error: unrecognized arguments: --bogus")])
def test_usage_errors_are_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def _bad_checkpoints(d):
    (d / "empty.pt").write_bytes(b"")
    (d / "folder").mkdir()
    (d / "junk.pt").write_bytes(b"not a checkpoint at all")

    class Code:
        def __reduce__(self):
            return (os.getpid, ())
    torch.save({"w": Code()}, d / "code.pt")
    torch.save({"w": "no tensors"}, d / "strings.pt")
    return {"empty.pt": "is empty", "folder": "is a folder without model.pt", "junk.pt": "cannot be loaded",
            "code.pt": "cannot be loaded with weights_only=True", "strings.pt": "holds no state dict",
            "missing.pt": "does not exist"}


@pytest.mark.parametrize("cmd", LOADERS, ids=" ".join)
def test_every_checkpoint_load_is_a_one_line_error(cmd, tmp_path, capsys):
    cases = _bad_checkpoints(tmp_path)
    out = ["--out", str(tmp_path / ("o.onnx" if "onnx" in cmd else "o"))] if cmd != ["cost"] else []
    for name, needle in cases.items():
        assert main([*cmd, "--checkpoint", str(tmp_path / name), "--model", "mlp", *out]) == 2, name
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1 and "Traceback" not in err, (name, err)


@pytest.mark.parametrize("cmd,kind", [(["ptq"], "folder"), (["search"], "folder"), (["export", "c"], "folder"),
                                      (["export", "onnx"], "file"), (["run"], "folder"), (["report"], "folder")],
                         ids=lambda c: " ".join(c) if isinstance(c, list) else c)
def test_out_checks(cmd, kind, tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    src = ["--train-quick"] if cmd[0] not in ("run", "report") else []
    target = {"folder": f, "file": tmp_path}[kind]
    assert main([*cmd, *src, "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert ("is a file" if kind == "folder" else "is a folder") in err and err.count("\n") == 1
    assert main([*cmd, *src, "--out", str(f / "below")]) == 2
    err = capsys.readouterr().err
    assert "lies under the file" in err and err.count("\n") == 1
    assert not list(tmp_path.glob("**/model.pt"))       # rejected before any training


def test_model_kwargs_yaml_and_json_mean_the_same():
    assert parse_model_kwargs('{"channels": [8, 16]}') == parse_model_kwargs("{channels: [8, 16]}") == \
        {"channels": [8, 16]}
    for bad in ("[1, 2]", "{unclosed", "3"):
        with pytest.raises(ValueError, match="YAML"):
            parse_model_kwargs(bad)


def test_train_quick_writes_weights_with_provenance_that_a_run_folder_reuses(tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["ptq", "--train-quick", "--epochs", "1", "--model", "mlp", "--model-kwargs", "{hidden: [16]}",
                 "--weights", "int8", "--acts", "none", "--out", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert (out / "model.pt").exists() and (out / "model.yaml").exists()
    # the folder alone is enough: model name, kwargs and dataset come from model.yaml
    assert main(["ptq", "--checkpoint", str(out), "--weights", "int8", "--acts", "none",
                 "--out", str(tmp_path / "q"), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again[1]["acc"] == rows[1]["acc"] and again[1]["packed_bytes"] == rows[1]["packed_bytes"]
    assert json.loads(again[0]["model_kwargs"]) == {"hidden": [16]}
    # a sweep's run folder (config.yaml + best.pt) works the same way
    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    m = build_model("mlp", "digits", {"hidden": [8]}, "gelu")
    torch.save({"model": m.state_dict()}, run / "best.pt")
    (run / "config.yaml").write_text("model: mlp\nactivation: gelu\ndataset: digits\nmodel_kwargs: {hidden: [8]}\n")
    assert main(["cost", "--checkpoint", str(run), "--weights", "int4", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["model"] == "mlp" and d["total"]["params"] == sum(p.numel() for p in m.parameters())


def test_ddp_entry_point_bad_input_is_one_line(capsys):
    from lowbit.cli.ddp import main as ddp
    assert ddp(["--set", "epochs=x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m lowbit.cli.ddp: error: epochs: expected int") and err.count("\n") == 1
    assert ddp(["--help"]) == 0


def test_backend_flag_scopes_the_whole_command(tmp_path, capsys):
    """--backend reaches the kernels: the native kernels refuse codebooks, eager runs them; a bad name is one
    line before any work."""
    torch.manual_seed(0)
    ck = tmp_path / "m.pt"
    torch.save(build_model("mlp", "digits", {"hidden": [8]}).state_dict(), ck)
    base = ["sensitivity", "--checkpoint", str(ck), "--model", "mlp", "--model-kwargs", "{hidden: [8]}",
            "--formats", "nf4", "--methods", "l2", "--eval-samples", "50"]
    assert main([*base, "--backend", "native", "--out", str(tmp_path / "n")]) == 2
    err = capsys.readouterr().err
    assert "backend='native' cannot run this call" in err and err.count("\n") == 1
    assert main([*base, "--backend", "eager", "--out", str(tmp_path / "e")]) == 0
    assert (tmp_path / "e" / "sensitivity.csv").exists()
    capsys.readouterr()
    assert main(["export", "c", "--train-quick", "--backend", "fast", "--out", str(tmp_path / "c")]) == 2
    assert "backend='fast' is not allowed" in capsys.readouterr().err and not (tmp_path / "c").exists()
