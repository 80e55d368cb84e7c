"""lowbit.ptq: observers, fixed calibrated scales, packed sizes, bias correction, BN folding, checkpoints,
the CLI, and the published PTQ behaviour on a small CNN trained on digits (once per module)."""
import json

import pytest
import torch
from torch import nn

import lowbit
from lowbit.cost import model_cost, plan_from_assignment, profile_layers
from lowbit.data import load_dataset
from lowbit.ops import QuantSpec
from lowbit.checkpoint import load_state_dict
from lowbit.cli.ptq import main as cli_ptq
from lowbit.cli.source import build_model, train_quick
from lowbit.ptq import (CalibratedQuantizer, PTQConfig, accuracy, calibration_inputs, fold_bn,
                        hist_threshold, packed_size, ptq_sweep, quantize_ptq,
                        weight_codes, weight_scale)
from lowbit.ptq.packed import decode_codes

KW = {"channels": [16, 32, 64, 64]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small CNN trained 5 epochs on digits with lowbit.train (~98% test accuracy), and its best.pt."""
    splits = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    model = build_model("cnn", "digits", KW)
    run = tmp_path_factory.mktemp("train")
    out = train_quick(model, splits, epochs=5, seed=0, run_dir=run)
    assert out["status"] == "completed"
    return model.eval(), splits, run / "best.pt"


@pytest.fixture(scope="module")
def calib(trained):
    return calibration_inputs(trained[1], 256)


# ---- observers and fixed scales -------------------------------------------------------------------
def test_hist_thresholds():
    spec = QuantSpec("int8")
    torch.manual_seed(0)
    x = torch.cat([torch.randn(100_000).abs(), torch.tensor([40.0])])        # one far outlier
    amax = float(x.max())
    h = torch.histc(x, 2048, 0, amax)
    assert hist_threshold(h, amax, spec, "minmax") == amax
    p = hist_threshold(h, amax, spec, "percentile", 99.0)
    assert p == pytest.approx(float(torch.quantile(x, 0.99)), abs=2 * amax / 2048)
    assert hist_threshold(h, amax, spec, "percentile", 99.9) > p
    for method in ("mse", "kl"):
        t = hist_threshold(h, amax, QuantSpec("int4"), method)
        assert 2.0 < t < 0.5 * amax, method                                # clips the outlier, keeps the bulk


def test_weight_scale_minmax_equals_dynamic_and_mse_is_no_worse():
    torch.manual_seed(0)
    w = torch.randn(8, 4, 3, 3) * torch.linspace(0.1, 2, 8)[:, None, None, None]
    w[0, 0, 0, 0] = 9.0
    for scaling in ("tensor", "channel"):
        spec = QuantSpec("int4", scaling=scaling, axis=0)
        s = weight_scale(w, spec, "minmax")
        assert torch.equal(lowbit.quantize(w, spec, scale=s), lowbit.quantize(w, spec))
        err = {m: float(((lowbit.quantize(w, spec, scale=weight_scale(w, spec, m)) - w) ** 2).sum())
               for m in ("minmax", "mse", "percentile", "kl")}
        assert err["mse"] <= err["minmax"] and err["mse"] < err["minmax"] * 0.9
    s, zp = weight_scale(w, QuantSpec("uint4", scaling="channel", axis=0), "minmax")
    assert s.shape == (8, 1, 1, 1) and zp.shape == (8, 1, 1, 1)


def test_calibrated_quantizer_scale_is_fixed():
    q = CalibratedQuantizer(QuantSpec("int8"), torch.tensor(1.0 / 127))
    x = torch.linspace(-3, 3, 101)
    y = q(x)
    assert y.max() == pytest.approx(1.0) and y.min() == pytest.approx(-128 / 127)   # clipped at the fixed range
    assert not torch.equal(y, lowbit.quantize(x, "int8"))                               # dynamic would rescale
    assert "scale" in q.state_dict()


@pytest.mark.parametrize("fmt,scaling,method", [("int8", "channel", "mse"), ("uint4", "tensor", "percentile"),
                                                 ("fp8_e4m3", "tensor", "minmax"), ("int2", "tensor", "kl")])
def test_codes_decode_to_the_quantized_weight(fmt, scaling, method):
    torch.manual_seed(1)
    w = torch.randn(6, 40)
    spec = QuantSpec(fmt, scaling=scaling, axis=0)
    s = weight_scale(w, spec, method)
    codes, scales = weight_codes(w, spec, s)
    assert torch.equal(decode_codes(codes, spec, scales), lowbit.quantize(w, spec, scale=s))


@pytest.mark.parametrize("fmt", ["mxfp4", "nvfp4", "mxfp8_e4m3"])
def test_block_codes_round_trip(fmt):
    w = torch.randn(4, 64)
    spec = QuantSpec(fmt, axis=1)
    codes, scales = weight_codes(w, spec)
    assert codes.shape == w.shape and len(scales) >= 1
    assert len(lowbit.pack(codes.reshape(-1), spec.format.element.bits)) == 4 * 64 * spec.format.element.bits // 8


# ---- the quantized model ----------------------------------------------------------------------------
def test_packed_size_matches_cost_model(trained, calib):
    model, splits, _ = trained
    for w in ("int4", "int2", "mxfp4", "nvfp4", "fp8_e4m3"):
        res = quantize_ptq(model, w, "int8", calib, PTQConfig(per_channel=w == "int4"))
        size = packed_size(res.model)
        rep = model_cost(profile_layers(res.model, (1, 1, 8, 8)), plan_from_assignment(res.assignment))
        assert abs(size["bytes"] - rep.total["weight_bytes"]) <= len(size["rows"]), w   # <1 byte padding per tensor
        assert size["fp32_bytes"] == 4 * sum(p.numel() for p in model.parameters())
    assert packed_size(quantize_ptq(model, "int4", None, calib).model)["weight_bytes"] == \
        sum((p.numel() + 1) // 2 for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1)


def test_all_quantizers_have_fixed_scales(trained, calib):
    res = quantize_ptq(trained[0], "int4", "int8", calib, PTQConfig(calib="kl"))
    qs = [m for m in res.model.modules() if isinstance(m, CalibratedQuantizer)]
    assert len(qs) == 10 and all(q.scale is not None for q in qs)
    assert all(0 < t <= a for a, t in res.act_thresholds.values())
    assert any(t < a for a, t in res.act_thresholds.values())                  # KL clips somewhere
    assert sum(p.numel() for p in trained[0].parameters()) == sum(p.numel() for p in res.model.parameters())


def test_keep_first_last(trained, calib):
    res = quantize_ptq(trained[0], "int4", "int4", calib, PTQConfig(keep_first_last=True))
    names = [r.name for r in res.assignment.rows if r.kind == "weight" and r.is_quantized]
    assert names == ["features.2.0", "features.4.0", "features.5.0"]


def test_calibration_methods_are_live(trained, calib):
    model, splits, _ = trained
    acc = {m: accuracy(quantize_ptq(model, "int8", "int3", calib, PTQConfig(calib=m)).model, splits)
           for m in ("minmax", "percentile", "mse", "kl")}
    assert len(set(acc.values())) > 1
    assert max(acc["mse"], acc["kl"], acc["percentile"]) >= acc["minmax"]     # clipping helps at 3 bits


def test_bias_correction_removes_the_mean_shift(trained, calib):
    model = trained[0]
    plain = quantize_ptq(model, "int3", None, calib)
    corr = quantize_ptq(model, "int3", None, calib, PTQConfig(bias_correction=True))
    assert set(corr.bias_shift) == {"features.0.0", "features.2.0", "features.4.0", "features.5.0", "head"}
    assert corr.model.features[0][0].bias is not None and model.features[0][0].bias is None   # float untouched
    with torch.no_grad():
        ref, y0, y1 = model(calib), plain.model(calib), corr.model(calib)
    assert ((y1 - ref).mean(0).abs().mean()) < ((y0 - ref).mean(0).abs().mean())


def test_fold_bn_keeps_the_function(trained, calib):
    import copy
    model = trained[0]
    folded = fold_bn(copy.deepcopy(model)).eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(calib), model(calib), rtol=1e-4, atol=1e-4)


# ---- published behaviour (ordering, not exact numbers) ------------------------------------------------
def test_integer_weight_bits_follow_published_behaviour(trained):
    model, splits, _ = trained
    rows = ptq_sweep(model, splits, ["int8", "int4", "int2"], ["none"], PTQConfig())
    acc = {r["weights"]: r["acc"] for r in rows}
    assert acc["fp32"] > 0.95
    assert acc["int8"] >= acc["fp32"] - 0.01                 # W8 PTQ: within a fraction of a point
    assert acc["fp32"] - 0.05 <= acc["int4"] <= acc["int8"] + 0.006   # W4: drops a little at most
    assert acc["int2"] < 0.5                                  # W2 per-tensor min-max collapses
    ratio = {r["weights"]: r["ratio"] for r in rows}
    assert 3.5 < ratio["int8"] < ratio["int4"] < ratio["int2"]


def test_mx_direct_cast_follows_published_behaviour(trained, calib):
    model, splits, _ = trained
    fp32 = accuracy(model, splits)
    with torch.no_grad():
        ref = model(calib)
    acc, err = {}, {}
    for f in ("mxfp8_e4m3", "mxfp4"):
        q = quantize_ptq(model, f, None, calib).model
        acc[f] = accuracy(q, splits)
        with torch.no_grad():
            err[f] = float(((q(calib) - ref) ** 2).mean())
    assert abs(acc["mxfp8_e4m3"] - fp32) <= 0.01             # MXFP8: within about half a point (1 pt slack)
    assert err["mxfp4"] > 4 * err["mxfp8_e4m3"]               # MXFP4 loses more
    assert acc["mxfp4"] <= acc["mxfp8_e4m3"] + 0.003


def test_activation_bits_change_accuracy(trained, calib):
    model, splits, _ = trained
    outs, acc = {}, {}
    for a in ("int8", "int4", "int2"):
        q = quantize_ptq(model, "int8", a, calib).model
        acc[a] = accuracy(q, splits)
        with torch.no_grad():
            outs[a] = q(calib)
    assert not torch.equal(outs["int8"], outs["int4"]) and not torch.equal(outs["int4"], outs["int2"])
    assert acc["int2"] < acc["int8"] - 0.05


# ---- checkpoints and CLI ----------------------------------------------------------------------------
def test_checkpoint_formats(trained, tmp_path):
    model, _, best = trained
    sd = load_state_dict(best)                                # lowbit.train's {"model": ...}
    assert set(sd) == set(model.state_dict())
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    assert set(load_state_dict(tmp_path / "plain.pt")) == set(sd)
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    assert torch.equal(load_state_dict(tmp_path / "m.safetensors")["head.weight"], model.head.weight)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_state_dict(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="does not exist"):
        load_state_dict(tmp_path / "missing.pt")


def test_cli_ptq_sweep_writes_csv(trained, tmp_path, capsys):
    _, _, best = trained
    argv = ["--checkpoint", str(best), "--model", "cnn", "--model-kwargs", json.dumps(KW), "--dataset", "digits",
            "--weights", "int8,int4", "--acts", "none,int4", "--calib", "percentile", "--calib-samples", "128",
            "--per-channel", "--out", str(tmp_path)]
    assert cli_ptq(argv) == 0
    out = capsys.readouterr().out
    assert "packed KiB" in out and "cost-model KiB" in out and out.count("int4") >= 4
    lines = (tmp_path / "ptq_results.csv").read_text().splitlines()
    assert len(lines) == 1 + 5 and "packed_bytes" in lines[0] and "git_commit" in lines[0]
    html = (tmp_path / "ptq_report.html").read_text()      # table + parallel coordinates + energy, embedded
    assert html.count('src="data:image/png;base64,') == 2 and html.count("<tr>") >= 1 + 5
    assert (tmp_path / "ptq_parallel.png").exists() and (tmp_path / "ptq_layers.csv").exists()


def test_cli_ptq_train_quick(tmp_path, capsys):
    argv = ["--train-quick", "--epochs", "1", "--model", "mlp", "--weights", "int8", "--acts", "int8",
            "--calib-samples", "64", "--out", str(tmp_path), "--json"]
    assert cli_ptq(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["weights"] for r in rows] == ["fp32", "int8"] and rows[1]["packed_bytes"] < rows[0]["packed_bytes"]


@pytest.mark.parametrize("argv,needle", [
    (["--train-quick", "--calib", "entropy"], "--calib 'entropy'"),
    (["--train-quick", "--weights", "int33"], "--weights 'int33'"),
    (["--train-quick", "--acts", "e8m0"], "--acts 'e8m0'"),
    (["--weights", "int8"], "--checkpoint PATH or --train-quick"),
    (["--checkpoint", "/no/such.pt"], "does not exist"),
    (["--train-quick", "--calib-samples", "0"], "--calib-samples 0"),
    (["--train-quick", "--calib-samples", "abc"], "invalid int value: 'abc'"),
    (["--train-quick", "--bogus"], "unrecognized arguments: --bogus"),
    (["--train-quick", "--backend", "fast"], "backend='fast' is not allowed"),
])
def test_cli_ptq_bad_input(capsys, argv, needle):
    assert cli_ptq(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
