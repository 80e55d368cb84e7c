"""Deployable ONNX (lowbit.export.onnx_deploy): onnxruntime's optimiser fuses integer kernels and the
graph keeps the fake-quantized model's accuracy with the optimiser on and off.

Oracle: lowbit's fake-quantized PyTorch model of the BatchNorm-FOLDED float model (the arithmetic
the graph does), with its biases rounded to the int32 grid s_in * s_w exactly as the graph stores
them. Integer kernels requantize with their own fixed-point multipliers, so "equal accuracy" means
within one test image; without the optimiser the outputs match to float rounding.
"""
from __future__ import annotations

import collections

import pytest
import torch
from conftest import trained_digits_models

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import onnx  # noqa: E402

from lowbit.data import load_dataset, normalize  # noqa: E402
from lowbit.export.onnx import compare_onnx, export_onnx  # noqa: E402
from lowbit.export.onnx_deploy import fold_batchnorm  # noqa: E402
from lowbit.export.onnx_latency import compare_latency  # noqa: E402
from lowbit.nn.packing import encode_weight  # noqa: E402
from lowbit.models import create_model  # noqa: E402
from lowbit.ptq import PTQConfig, calibration_inputs, quantize_ptq  # noqa: E402

INTEGER_KERNELS = {"QLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger", "ConvInteger", "MatMulIntegerToFloat"}


@pytest.fixture(scope="module")
def setup():
    splits, calib, xt, models = trained_digits_models()
    return splits, models, calib, xt


def _optimized_ops(path, level) -> collections.Counter:
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.optimized_model_filepath = str(path) + ".opt.onnx"
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(str(path) + ".opt.onnx").graph.node)


def _export(setup, tmp_path, name, fmt, per_channel=True):
    splits, models, calib, xt = setup
    folded = fold_batchnorm(models[name])
    res = quantize_ptq(folded, fmt, fmt, calib, PTQConfig(per_channel=per_channel))
    path = tmp_path / f"{name}_{fmt}.onnx"
    return path, export_onnx(res.model, path, xt[:1], calib_x=calib)


def test_fold_batchnorm(setup):
    _, models, _, xt = setup
    folded = fold_batchnorm(models["cnn"])
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in models["cnn"].modules())   # original untouched
    with torch.no_grad():
        torch.testing.assert_close(folded(xt), models["cnn"](xt), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["cnn", "mlp"])
@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_graph_fuses_integer_kernels(setup, tmp_path, name, per_channel):
    splits, _, _, xt = setup
    path, info = _export(setup, tmp_path, name, "int8", per_channel)
    assert info.nodes["QuantizeLinear"] > 0 and "BatchNormalization" not in info.nodes
    m = onnx.load(str(path))
    assert any(t.data_type == onnx.TensorProto.INT32 for t in m.graph.initializer)   # int32 bias codes
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        ops = _optimized_ops(path, level)
        assert set(ops) & INTEGER_KERNELS, (level, ops)
        assert "Conv" not in ops or name == "mlp" or ops["QLinearConv"] >= 2, ops
    for opt in (False, True):
        c = compare_onnx(path, info.model, xt, splits.test.y, optimize=opt)
        assert round(abs(c["acc_onnx"] - c["acc_torch"]) * len(xt)) <= 1, (opt, c)   # in whole images
        assert c["acc_onnx"] > 0.8, c
        if not opt:
            assert c["frac_exact"] >= 0.98, c


@pytest.mark.parametrize("fmt", ["fp8_e4m3", "int4", "uint8"])
def test_other_formats_load_and_keep_accuracy_optimized(setup, tmp_path, fmt):
    splits, _, _, xt = setup
    path, info = _export(setup, tmp_path, "cnn", fmt)
    for opt in (False, True):
        c = compare_onnx(path, info.model, xt, splits.test.y, optimize=opt)
        assert round(abs(c["acc_onnx"] - c["acc_torch"]) * len(xt)) <= 1, (fmt, opt, c)   # whole images
        if not opt:
            assert c["frac_exact"] >= 0.98, c


def test_int32_bias_is_the_comparison_models_bias(setup, tmp_path):
    """The bias knob is live: the exported model's biases moved onto the s_in * s_w grid (and only by
    half a step), the caller's model is untouched."""
    splits, models, calib, xt = setup
    res = quantize_ptq(fold_batchnorm(models["mlp"]), "int8", "int8", calib, PTQConfig())
    before = res.model.head.bias.detach().clone()
    info = export_onnx(res.model, tmp_path / "b.onnx", xt[:1], calib_x=calib)
    after = info.model.head.bias.detach()
    assert torch.equal(res.model.head.bias.detach(), before)
    assert not torch.equal(after, before)
    h = info.model.head
    s_w = encode_weight(h.weight, h.weight_quantizer).scale.reshape(-1)
    grid = (h.input_quantizer.fixed_scale().reshape(()) * s_w).float()
    codes = after / grid
    torch.testing.assert_close(codes, codes.round(), rtol=0, atol=1e-3)   # on the int32 grid
    assert ((after - before).abs() <= grid / 2 * (1 + 1e-5)).all()


def test_latency_measured(setup, tmp_path):
    _, models, _, xt = setup
    path, _ = _export(setup, tmp_path, "mlp", "int8")
    export_onnx(models["mlp"], tmp_path / "f.onnx", xt[:1])
    lat = compare_latency(path, tmp_path / "f.onnx", xt, runs=3)
    assert lat["quant_ms"] > 0 and lat["fp32_ms"] > 0 and lat["speedup"] > 0
    with pytest.raises(ValueError, match="allowed"):
        compare_latency(path, tmp_path / "f.onnx", xt, runs=0)


@pytest.mark.parametrize("fmt", ["int4", "uint4"])
@pytest.mark.parametrize("name,axis,group", [("mlp", -1, 16), ("cnn", 1, 4)])
def test_groupwise_weights_blocked_dequantize(setup, tmp_path, fmt, name, axis, group):
    """Group-wise weights become DequantizeLinear with block_size (opset 21): the dequantized weights
    equal lowbit's bit for bit, the model output matches with the optimiser on and off, and the group
    size is live (a different size gives different weights)."""
    from lowbit.export.onnx import onnx_weights
    from lowbit.nn import make_recipe, quantize_model
    from lowbit.nn.modules import QuantLayer
    from lowbit.ops.quantize import QuantSpec
    splits, models, _, xt = setup

    def export(g):
        q = fold_batchnorm(models[name])
        quantize_model(q, make_recipe(weights=QuantSpec(fmt, scaling="group", group_size=g, axis=axis, pad=True)))
        path = tmp_path / f"g{g}.onnx"
        return path, export_onnx(q.eval(), path, xt[:1])
    path, info = export(group)
    m = onnx.load(str(path))
    blocked = [n for n in m.graph.node if n.op_type == "DequantizeLinear"
               and any(a.name == "block_size" and a.i == group for a in n.attribute)]
    layers = {n: mod for n, mod in info.model.named_modules() if isinstance(mod, QuantLayer)}
    assert len(blocked) == len(layers) > 0
    ws = onnx_weights(path)
    for n, mod in layers.items():
        assert torch.equal(torch.from_numpy(ws[n]), mod.weight_quantizer(mod.weight)), n
    for opt in (False, True):
        c = compare_onnx(path, info.model, xt, splits.test.y, optimize=opt)
        assert c["max_abs_diff"] <= 1e-4 and c["argmax_agree"] == 1.0, (opt, c)
    other, _ = export(group * 2)
    last = list(layers)[-1]   # (the first conv of the cnn has one input channel: one group whatever the size)
    assert not torch.equal(torch.from_numpy(onnx_weights(other)[last]), torch.from_numpy(ws[last]))
