"""Transformer export through torch.onnx.export with lowbit's scales as Q/DQ (lowbit.export.onnx_traced).

Oracle: lowbit's fake-quantized model (activation scales frozen from calibration data). The weights
in the graph are lowbit's grid values, so only accumulation order differs: a sample whose value
lands on a rounding tie of an activation quantizer moves by one step (seen: 1 of 128 for vit), so
>= 95% of samples within 1e-4 (90% with onnxruntime's optimiser on: its fused integer matmuls round
differently; seen 93% for vit) and argmax agreement >= 98%.
"""
from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from lowbit.data import load_dataset, normalize  # noqa: E402
from lowbit.export.onnx import compare_onnx  # noqa: E402
from lowbit.export.onnx_traced import export_onnx_traced  # noqa: E402
from lowbit.models import create_model  # noqa: E402
from lowbit.nn import make_recipe, quantize_model  # noqa: E402
from lowbit.nn.modules import QuantLayer  # noqa: E402


@pytest.fixture(scope="module")
def xs():
    splits = load_dataset("digits", seed=0)
    return normalize(splits.test.x, splits.mean, splits.std)[:128]


def _quantized(name, **recipe):
    torch.manual_seed(0)
    m = create_model(name, num_classes=10, in_chans=1, img_size=8).eval()
    quantize_model(m, make_recipe(**recipe))
    return m.eval()


@pytest.mark.parametrize("name", ["vit", "mlpmixer"])
def test_transformer_matches_fake_quant(xs, tmp_path, name):
    q = _quantized(name, weights="int8", inputs="int8")
    info = export_onnx_traced(q, tmp_path / "t.onnx", xs[:1], calib_x=xs)
    layers = sum(1 for m in q.modules() if isinstance(m, QuantLayer))
    assert layers > 4 and info.nodes["QuantizeLinear"] == info.nodes["DequantizeLinear"] == 2 * layers
    assert {"LayerNormalization", "MatMul"} <= set(info.nodes)
    if name == "vit":
        assert "Softmax" in info.nodes and "Transpose" in info.nodes
    for opt in (False, True):
        c = compare_onnx(tmp_path / "t.onnx", info.model, xs, optimize=opt)
        assert c["frac_exact"] >= (0.9 if opt else 0.95) and c["argmax_agree"] >= 0.98, (opt, c)
        assert c["max_abs_diff"] <= 0.05 * c["ref_max_abs"], c
    # the scales are live: the fp32 model's output differs from the quantized graph's
    with torch.no_grad():
        fp32 = copy.deepcopy(info.model)
        for m in fp32.modules():
            for s in ("input_quantizer", "weight_quantizer"):
                if getattr(m, s, None) is not None:
                    setattr(m, s, None)
        ref = fp32(xs)
    from lowbit.export.onnx import run_onnx
    assert (run_onnx(tmp_path / "t.onnx", xs) - ref).abs().max() > 1e-3


def test_traced_refusals(xs, tmp_path):
    with pytest.raises(ValueError, match="int4.*allowed: int8, uint8"):
        export_onnx_traced(_quantized("vit", weights="int4"), tmp_path / "x.onnx", xs[:1])
    with pytest.raises(ValueError, match="calib_x"):
        export_onnx_traced(_quantized("vit", weights="int8", inputs="int8"), tmp_path / "x.onnx", xs[:1])
    with pytest.raises(ValueError, match="not exported; allowed"):
        export_onnx_traced(_quantized("vit", weights="int8", softmax="int8"), tmp_path / "x.onnx", xs[:1],
                           calib_x=xs)


def test_cli_falls_back_to_torch_exporter(tmp_path, capsys):
    from lowbit.cli.export_onnx import main as cli_onnx
    torch.manual_seed(0)
    ck = tmp_path / "vit.pt"
    torch.save(create_model("vit", num_classes=10, in_chans=1, img_size=8).state_dict(), ck)
    out = tmp_path / "vit.onnx"
    args = ["--checkpoint", str(ck), "--model", "vit", "--dataset", "digits", "--weights", "int8", "--acts", "int8",
            "--calib-samples", "64", "--latency-runs", "2", "--out", str(out)]
    assert cli_onnx(args) == 0 and out.is_file()
    cap = capsys.readouterr()
    assert "torch.onnx.export" in cap.err and "LayerNormalization" in cap.out and "latency" in cap.out
    assert cli_onnx(args + ["--exporter", "graph"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "allowed" in err
