"""ONNX QDQ export (lowbit.export.onnx): onnxruntime vs the fake-quantized PyTorch model.

Tolerances: dequantized weights are bit-identical (DequantizeLinear computes (code - zp) * scale
exactly as lowbit.decode); QuantizeLinear/DequantizeLinear equal lowbit.quantize with the same scale
bit for bit. Whole-model outputs differ only by the accumulation order of conv/matmul: weight-only
exports agree within 1e-4 on every sample (logits up to ~10); with quantized activations a sample
whose pre-quantization value sits on a rounding boundary may move by one step of the activation
format (seen: 1 of 359 digits test samples for fp8_e4m3, 0.019), so: >= 98% of samples within 1e-4,
max |diff| <= 5% of the largest logit, argmax agreement >= 99%, accuracy within 1 point.
"""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import trained_digits_models

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from lowbit.data import load_dataset, normalize  # noqa: E402
from lowbit.cli.export_onnx import main as cli_onnx  # noqa: E402
from lowbit.export.onnx import (check_format, compare_onnx, export_onnx,  # noqa: E402
                                freeze_activation_scales, onnx_weights)
from lowbit.models import create_model  # noqa: E402
from lowbit.nn import make_recipe, quantize_model  # noqa: E402
from lowbit.nn.modules import QuantLayer  # noqa: E402
from lowbit.ptq import PTQConfig, calibration_inputs, quantize_ptq  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module")
def setup():
    splits, calib, xt, models = trained_digits_models()
    return splits, models["cnn"], models["mlp"], calib, xt


def _check(c):
    assert c["frac_exact"] >= 0.98, c
    assert c["max_abs_diff"] <= 0.05 * c["ref_max_abs"], c
    assert c["argmax_agree"] >= 0.99, c
    assert abs(c["acc_onnx"] - c["acc_torch"]) <= 0.01, c
    assert c["acc_onnx"] > 0.8, c


@pytest.mark.parametrize("fmt", ["int8", "fp8_e4m3", "int4", "uint8"])
def test_qdq_export_matches_fake_quant(setup, tmp_path, fmt):
    splits, cnn, _, calib, xt = setup
    res = quantize_ptq(cnn, fmt, fmt, calib, PTQConfig(per_channel=True))
    info = export_onnx(res.model, tmp_path / "m.onnx", xt[:1], calib_x=calib, layout="simulate")
    assert info.nodes["QuantizeLinear"] == 4 and info.nodes["DequantizeLinear"] == 8
    assert {f for _, f, _ in info.weights} == {fmt} and {f for _, f, _ in info.acts} == {fmt}
    c = compare_onnx(tmp_path / "m.onnx", info.model, xt, splits.test.y)
    _check(c)
    print(f"{fmt}: max|diff| {c['max_abs_diff']:.2e}, acc torch {c['acc_torch']:.4f} onnx {c['acc_onnx']:.4f}")


@pytest.mark.parametrize("layout,op", [("simulate", "MatMul"), ("deploy", "Gemm")])
def test_mlp_int8_export(setup, tmp_path, layout, op):
    splits, _, mlp, calib, xt = setup
    res = quantize_ptq(mlp, "int8", "int8", calib, PTQConfig())
    info = export_onnx(res.model, tmp_path / "mlp.onnx", xt[:1], layout=layout)
    assert "Flatten" in info.nodes and info.nodes[op] == 2
    _check(compare_onnx(tmp_path / "mlp.onnx", info.model, xt, splits.test.y))


@pytest.mark.parametrize("fmt", ["int8", "int4", "uint8", "fp8_e4m3", "fp8_e5m2"])
def test_weight_only_weights_bit_exact(setup, tmp_path, fmt):
    splits, cnn, _, calib, xt = setup
    res = quantize_ptq(cnn, fmt, None, calib, PTQConfig(per_channel=fmt.startswith(("int", "uint"))))
    info = export_onnx(res.model, tmp_path / "w.onnx", xt[:1])
    ws = onnx_weights(tmp_path / "w.onnx")
    layers = {n: m for n, m in info.model.named_modules() if isinstance(m, QuantLayer) and m.weight_quantizer}
    assert set(ws) == set(layers)
    for n, m in layers.items():
        assert torch.equal(torch.from_numpy(ws[n]), m.weight_quantizer(m.weight)), n
    c = compare_onnx(tmp_path / "w.onnx", info.model, xt, splits.test.y)
    assert c["max_abs_diff"] <= TOL and c["frac_exact"] == 1.0 and c["argmax_agree"] >= 0.99


def test_dynamic_scales_frozen_from_calibration(setup, tmp_path):
    splits, cnn, _, calib, xt = setup
    q = copy.deepcopy(cnn)
    quantize_model(q, make_recipe(weights="int8", inputs="int8"))
    q.eval()
    with pytest.raises(ValueError, match="calib_x"):
        export_onnx(q, tmp_path / "d.onnx", xt[:1])
    info = export_onnx(q, tmp_path / "d.onnx", xt[:1], calib_x=calib)
    assert all(type(m.input_quantizer).__name__ == "CalibratedQuantizer"
               for m in info.model.modules() if isinstance(m, QuantLayer))
    _check(compare_onnx(tmp_path / "d.onnx", info.model, xt, splits.test.y))
    frozen = freeze_activation_scales(q, calib)
    assert type(frozen.head.input_quantizer).__name__ == "CalibratedQuantizer"
    assert type(q.head.input_quantizer).__name__ == "FakeQuantizer"   # the original is untouched


@pytest.mark.parametrize("fmt", ["fp6_e3m2", "fp4_e2m1", "mxfp4", "nvfp4", "nf4", "fp3"])
def test_unsupported_formats_clear_error(setup, tmp_path, fmt):
    with pytest.raises(ValueError) as e:
        check_format(fmt)
    msg = str(e.value)
    assert "\n" not in msg and "cannot be exported to ONNX" in msg and "allowed: int8" in msg and "fp8_e4m3" in msg
    _, cnn, _, calib, xt = setup
    q = copy.deepcopy(cnn)
    quantize_model(q, make_recipe(weights=fmt))
    with pytest.raises(ValueError, match="cannot be exported to ONNX"):
        export_onnx(q.eval(), tmp_path / "x.onnx", xt[:1])


def test_unsupported_layer_error(tmp_path):
    m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)).eval()
    quantize_model(m, make_recipe(weights="int8"))
    with pytest.raises(ValueError, match="LayerNorm.*allowed"):
        export_onnx(m, tmp_path / "x.onnx", torch.randn(1, 4))


def test_cli(setup, tmp_path, capsys):
    _, cnn, _, _, _ = setup
    ck = tmp_path / "cnn.pt"
    torch.save(cnn.state_dict(), ck)
    out = tmp_path / "m.onnx"
    rc = cli_onnx(["--checkpoint", str(ck), "--model", "cnn", "--model-kwargs", '{"channels": [8, 16, 16]}',
                   "--dataset", "digits", "--weights", "int8", "--acts", "int8", "--calib-samples", "64",
                   "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file()
    assert "max |diff|" in text and "onnxruntime" in text and "accuracy: fp32" in text
    assert "latency" in text and "fp32" in text and (tmp_path / "m.fp32.onnx").is_file()
    rc = cli_onnx(["--checkpoint", str(ck), "--weights", "mxfp4", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "mxfp4" in err and "allowed: int8" in err
    assert cli_onnx(["--bogus"]) == 2
    assert cli_onnx(["--weights", "int8"]) == 2 and "--checkpoint" in capsys.readouterr().err
