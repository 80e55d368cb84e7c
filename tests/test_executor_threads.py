"""A run's numbers depend on its config alone: torch threads are part of the config and the run id,
so local -j 1, local -j 2 and Ray give the same bits for one id; old run folders (ids from before
the thread count joined them) are adopted when they ran with the same threads, else reported."""
import json
import shutil

import pytest
import yaml

from lowbit.experiments import ConfigError, expand, run_sweep, sweep_from_dict

TINY = {"name": "threads", "models": ["mlp"], "datasets": ["digits"], "epochs": 1,
        "batch_size": 64, "lr": 0.01, "seeds": [0, 1], "quant_backend": "eager",
        "precisions": ["fp8_e4m3"], "data": {"train_subset": 300, "eval_subset": 100}}


def _numbers(out, run_id):
    result = json.loads((out / "runs" / run_id / "result.json").read_text())
    return result["summary"], [(r["train_loss"], r["val_acc"], r["test_acc"], r["val_loss"])
                               for r in result["epochs"]]


def test_threads_are_part_of_the_id_and_validated():
    one, two = (expand(sweep_from_dict({**TINY, "threads": t}))[0] for t in (1, 2))
    assert one.run_id != two.run_id and one.legacy_id == two.legacy_id
    assert expand(sweep_from_dict(TINY))[0].run_id == one.run_id  # default: 1 thread
    with pytest.raises(ConfigError, match=r"^threads: expected an int >= 1 .*got 0$"):
        sweep_from_dict({**TINY, "threads": 0})


# A CNN whose convolutions split differently over 1 and 2 threads (the tiny MLP's do not).
CNN = {**TINY, "models": ["cnn"], "model_kwargs": {"cnn": {"channels": [16, 32, 32]}},
       "data": {"train_subset": 600, "eval_subset": 200}}


def test_same_id_same_bits_under_every_executor(tmp_path):
    ray = pytest.importorskip("ray")
    cfg = {**CNN, "threads": 2}  # not what -j 2 (1 core each) or Ray (cpus: 1) would pick
    ids = [s.run_id for s in expand(sweep_from_dict(cfg))]
    got = {}
    for name, executor, jobs in (("j1", "local", 1), ("j2", "local", 2), ("ray", "ray", None)):
        out = tmp_path / name
        if executor == "ray":
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            rows = run_sweep(sweep_from_dict({**cfg, "out_dir": str(out)}), executor=executor,
                             jobs=jobs, quiet=True)
        finally:
            if executor == "ray":
                ray.shutdown()
        assert sorted(rows["run_id"]) == sorted(ids) and set(rows["status"]) == {"completed"}
        assert set(rows["threads"]) == {2}  # configured and used (torch.get_num_threads)
        got[name] = {i: _numbers(out, i) for i in ids}
    for name in ("j2", "ray"):
        for i in ids:
            (s1, e1), (s2, e2) = got["j1"][i], got[name][i]
            assert e1 == e2, (name, i)
            for key in ("best_val_acc", "test_acc_at_best", "final_train_loss", "final_test_loss"):
                assert s1[key] == s2[key], (name, i, key)
    # The thread count is live: at 1 thread the same runs give other bits (and other ids).
    one = sweep_from_dict({**CNN, "threads": 1, "out_dir": str(tmp_path / "t1")})
    run_sweep(one, jobs=1, quiet=True)
    assert [_numbers(tmp_path / "t1", s.run_id)[1] for s in expand(one)] != \
        [got["j1"][i][1] for i in ids]


def _make_legacy(out, spec, threads: int) -> None:
    """Turn run folder runs/<id> into what an older lowbit wrote: runs/<legacy id>, no threads in
    its config, and its log naming the thread count it ran with."""
    new, old = out / "runs" / spec.run_id, out / "runs" / spec.legacy_id
    shutil.move(new, old)
    config = yaml.safe_load((old / "config.yaml").read_text())
    del config["threads"]
    (old / "config.yaml").write_text(yaml.safe_dump(config))
    log = (old / "log.txt").read_text().replace(f"threads={spec.threads}", f"threads={threads}")
    (old / "log.txt").write_text(log.replace(spec.run_id, spec.legacy_id))


def test_legacy_folders_are_adopted_or_reported(tmp_path, capsys):
    cfg = sweep_from_dict({**TINY, "seeds": [0], "out_dir": str(tmp_path)})
    (spec,) = expand(cfg)
    first = run_sweep(cfg, jobs=1, quiet=True)
    _make_legacy(tmp_path, spec, threads=1)  # ran with the threads the run asks for: same run
    again = run_sweep(cfg, jobs=1, quiet=True)
    new = tmp_path / "runs" / spec.run_id
    assert (new / "log.txt").read_text().count(" start ") == 1  # adopted, not trained again
    assert json.loads((new / "result.json").read_text())["run_id"] == spec.run_id
    assert again["final_test_loss"].tolist() == first["final_test_loss"].tolist()
    assert "not reused" not in capsys.readouterr().err

    shutil.rmtree(new)
    shutil.rmtree(tmp_path / "runs" / spec.legacy_id)
    run_sweep(cfg, jobs=1, quiet=True)
    _make_legacy(tmp_path, spec, threads=2)  # ran with 2 threads: other bits, not this id's run
    run_sweep(cfg, jobs=1, quiet=True)
    err = capsys.readouterr().err
    assert f"old folder runs/{spec.legacy_id}" in err and "it ran with threads=2" in err
    assert f"trains again as runs/{spec.run_id}" in err
    assert (new / "log.txt").read_text().count(" start ") == 1  # trained anew under the new id
    assert (tmp_path / "runs" / spec.legacy_id / "result.json").exists()  # old folder kept
