"""Sweep grid axes added for the ViT study: AMP modes, excluded grid points, per-preset augmentation options."""
import pytest

from lowbit.experiments.grid import expand, flatten
from lowbit.experiments.schema import ConfigError, ConfigWarning, sweep_from_dict

BASE = {"models": ["mlp"], "datasets": ["digits"], "epochs": 1}


def test_amps_is_a_grid_axis_in_run_id_label_and_row():
    specs = expand(sweep_from_dict({**BASE, "precisions": ["fp32", "fp8_e4m3"], "amps": ["off", "fp16", "bf16"]}))
    assert len(specs) == 6
    assert sorted((s.precision, s.train.amp) for s in specs) == sorted(
        (p, a) for p in ("fp32", "fp8_e4m3") for a in ("off", "fp16", "bf16"))
    assert len({s.run_id for s in specs}) == 6
    by = {(s.precision, s.train.amp): s for s in specs}
    assert by[("fp32", "fp16")].label.endswith("/amp:fp16") and "amp" not in by[("fp32", "off")].label
    assert flatten(by[("fp32", "bf16")])["amp"] == "bf16"


def test_amp_off_keeps_the_run_id_of_a_sweep_without_the_axis():
    a = expand(sweep_from_dict(BASE))[0]
    b = expand(sweep_from_dict({**BASE, "amps": ["off"]}))[0]
    assert a.run_id == b.run_id and a.train.amp == "off"


def test_exclude_drops_matching_points_only():
    raw = {**BASE, "precisions": ["fp32", "fp8_e4m3"], "amps": ["off", "fp16", "bf16"],
           "exclude": [{"precisions": "fp8_e4m3", "amps": ["fp16", "bf16"]}]}
    got = sorted((s.precision, s.train.amp) for s in expand(sweep_from_dict(raw)))
    assert got == [("fp32", "bf16"), ("fp32", "fp16"), ("fp32", "off"), ("fp8_e4m3", "off")]


def test_exclude_outside_the_sweep_warns_and_matches_nothing():
    """A ``--set`` slice may take an excluded value out of its axis: the entry then matches no run,
    which a warning says (a typo shows up the same way), and every run stays in."""
    raw = {**BASE, "precisions": ["fp32"], "amps": ["off", "fp16"],
           "exclude": [{"precisions": ["fp8_e4m3", "fp8_e5m2"], "amps": "fp16"}]}
    with pytest.warns(ConfigWarning) as record:
        cfg = sweep_from_dict(raw)
    text = [str(w.message) for w in record]
    assert text == ["exclude[0].precisions: fp8_e4m3, fp8_e5m2 not in this sweep's precisions (fp32); "
                    "matches no run", "exclude[0] matches no run of this sweep; it leaves every run in"]
    assert sorted(s.train.amp for s in expand(cfg)) == ["fp16", "off"]


def test_exclude_warning_is_one_line_from_the_cli(tmp_path):
    import subprocess
    import sys
    path = tmp_path / "s.yaml"
    path.write_text("models: [mlp]\ndatasets: [digits]\nprecisions: [fp32, int8]\n"
                    "exclude: [{precisions: int8}]\n")
    proc = subprocess.run([sys.executable, "-m", "lowbit.cli", "run", str(path), "--set", "precisions=[fp32]",
                           "--dry-run"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert "lowbit: ConfigWarning: exclude[0].precisions: int8 not in this sweep's precisions (fp32); " \
           "matches no run\n" in err and "Traceback" not in err and "warnings.warn" not in err


@pytest.mark.parametrize("raw,message", [
    ({"amp": "bf16"}, "amp: the AMP mode is the grid key amps (a list); got amp: 'bf16', write amps: [bf16]"),
    ({"amps": ["fp8"]}, "amps[0]: unknown amp mode 'fp8'; allowed: off, auto, bf16, fp16"),
    ({"exclude": [{"precision": "fp32"}]}, "exclude[0]: unknown grid key 'precision'; allowed: models,"),
    ({"exclude": [{"amps": "fp8"}]}, "exclude[0].amps: unknown amp mode 'fp8'; allowed: off,"),
    ({"exclude": [{}]}, "exclude[0]: expected a non-empty mapping"),
    ({"augmentations": ["extended"], "augmentation_kwargs": {"extended": {"degree": 3}}},
     "augmentation_kwargs: extended: "),
    ({"augmentation_kwargs": {"extended": 3}}, "augmentation_kwargs.extended: expected a mapping"),
])
def test_bad_values_are_one_line_errors(raw, message):
    with pytest.raises(ConfigError) as info:
        sweep_from_dict({**BASE, **raw})
    assert str(info.value).startswith(message), str(info.value)


def test_augmentation_kwargs_per_preset():
    """Shared keys reach every preset, a preset's own mapping only that preset: the rotation of
    ``extended`` is set without touching ``basic`` (which has no rotation option)."""
    cfg = sweep_from_dict({**BASE, "augmentations": ["none", "basic", "extended"],
                           "augmentation_kwargs": {"flip": False, "extended": {"degrees": 15.0}}})
    kw = {s.train.augmentation: dict(s.train.augmentation_kwargs) for s in expand(cfg)}
    assert kw == {"none": {}, "basic": {"flip": False}, "extended": {"flip": False, "degrees": 15.0}}


def test_bare_off_in_yaml_is_the_amp_mode(tmp_path):
    """YAML 1.1 reads ``off`` as false; in amps (and exclude's amps) it is the mode "off"."""
    from lowbit.experiments.schema import load_sweep
    path = tmp_path / "s.yaml"
    path.write_text("models: [mlp]\ndatasets: [digits]\nprecisions: [fp32, int8]\namps: [off, bf16]\n"
                    "exclude: [{amps: off, precisions: int8}]\n")
    cfg = load_sweep(path, ["epochs=1"])
    assert cfg.amps == ("off", "bf16")
    assert sorted((s.precision, s.train.amp) for s in expand(cfg)) == [
        ("fp32", "bf16"), ("fp32", "off"), ("int8", "bf16")]
    assert load_sweep(path, ["amps=[off]"]).amps == ("off",)
