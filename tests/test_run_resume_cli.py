"""``lowbit run CONFIG --resume FILE``: a run restarts from its checkpoint_epoch_N.pt and ends as before."""
import json

import torch

from lowbit.cli import main


def _config(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(f"name: r\nout_dir: {tmp_path / 'out'}\nmodels: [mlp]\ndatasets: [digits]\nepochs: 3\n"
                    "batch_size: 128\ncheckpoint_every: 1\nmodel_kwargs: {mlp: {hidden: [16]}}\n")
    return path


def test_resume_cli_restarts_the_run_and_reproduces_it(tmp_path, capsys):
    cfg = _config(tmp_path)
    assert main(["run", str(cfg), "-q", "--no-report", "-j", "1"]) == 0
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    first = json.loads((run_dir / "result.json").read_text())
    w_first = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    assert sorted(p.name for p in run_dir.glob("checkpoint_epoch_*.pt")) == [
        f"checkpoint_epoch_{i}.pt" for i in (1, 2, 3)]
    assert main(["run", str(cfg), "-q", "--no-report", "-j", "1",
                 "--resume", str(run_dir / "checkpoint_epoch_1.pt")]) == 0
    assert f"{run_dir.name}: resumes from epoch 1" in capsys.readouterr().out
    assert len(list(run_dir.glob("result.json.before-resume-*"))) == 1
    again = json.loads((run_dir / "result.json").read_text())
    assert again["finished"] > first["finished"] and len(again["epochs"]) == 3
    assert [r["val_loss"] for r in again["epochs"]] == [r["val_loss"] for r in first["epochs"]]
    w_again = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(w_first[k], w_again[k]) for k in w_first)


def test_resume_cli_errors_are_one_line(tmp_path, capsys):
    cfg = _config(tmp_path)
    assert main(["run", str(cfg), "--resume", str(tmp_path / "nope.pt")]) == 2
    assert "--resume " in capsys.readouterr().err
    stray = tmp_path / "stray.pt"
    torch.save({"model": {}}, stray)
    assert main(["run", str(cfg), "--resume", str(stray)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not in a run folder of this sweep" in err[0]
