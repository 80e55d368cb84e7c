"""Packed checkpoints (lowbit.export.packed): bit-exact round trip, size vs the cost model, metadata."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from lowbit.cli.export_packed import main as cli_packed
from lowbit.export.packed import (FORMAT_TAG, SEP, cost_bytes, load_packed, read_header,
                                  read_metadata, save_packed)
from lowbit.models import create_model
from lowbit.nn import make_recipe, quantize_model
from lowbit.nn.modules import QuantLayer
from lowbit.ptq import PTQConfig, quantize_ptq

KW = {"channels": [8, 16, 16]}
SHAPE = (1, 1, 8, 8)


def _cnn(seed=0):
    torch.manual_seed(seed)
    return create_model("cnn", num_classes=10, in_chans=1, img_size=8, **KW).eval()


def _qweights(model):
    return {f"{n}.weight": m.weight_quantizer(m.weight) for n, m in model.named_modules()
            if isinstance(m, QuantLayer) and m.weight_quantizer is not None}


def _check_sizes(info, model, path):
    n, _ = read_header(path)
    assert info.header_bytes == 8 + n
    assert info.file_bytes == path.stat().st_size == info.header_bytes + info.params_bytes + info.buffer_bytes
    cb = cost_bytes(model, SHAPE)
    assert 0 <= info.params_bytes - cb < info.packed_tensors, (info.params_bytes, cb)
    return cb


@pytest.mark.parametrize("fmt", ["int8", "int4", "int2", "fp4_e2m1", "mxfp4", "nvfp4", "uint4", "fp8_e4m3", "nf4"])
def test_round_trip_bit_exact_and_size(tmp_path, fmt):
    q = _cnn()
    asg = quantize_model(q, make_recipe(weights=fmt))
    path = tmp_path / "m.lowbit.safetensors"
    info = save_packed(asg, path)
    _check_sizes(info, q, path)
    fresh = _cnn(seed=1)                       # different random weights: everything must come from the file
    load_packed(path, fresh)
    params = dict(fresh.named_parameters())
    for name, w in _qweights(q).items():
        assert torch.equal(params[name], w), name
    for name, p in q.named_parameters():
        if name not in _qweights(q):
            assert torch.equal(params[name], p), name
    for name, b in q.named_buffers():
        assert torch.equal(dict(fresh.named_buffers())[name], b), name
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(fresh(x), q(x))       # the float model with decoded weights == the fake-quant model


def test_sub_byte_is_smaller():
    sizes = {}
    for fmt in ("int8", "int4", "int2"):
        q = _cnn()
        quantize_model(q, make_recipe(weights=fmt))
        sizes[fmt] = cost_bytes(q, SHAPE)
    assert sizes["int2"] < sizes["int4"] < sizes["int8"]


def test_metadata(tmp_path):
    q = _cnn()
    quantize_model(q, make_recipe(weights="int4"))
    path = tmp_path / "m.safetensors"
    save_packed(q, path)
    _, header = read_header(path)
    assert header["__metadata__"]["format"] == FORMAT_TAG
    meta = read_metadata(path)
    assert meta["version"] == 1
    e = meta["weights"]["features.0.0.weight"]
    assert e["spec"]["format"] == "int4" and e["spec"]["scaling"] == "channel" and e["bits"] == 4
    assert e["shape"] == [8, 1, 3, 3] and e["count"] == 72 and e["scale"] == "tensor" and not e["fixed_scale"]
    assert header["features.0.0.weight"]["dtype"] == "U8" and header["features.0.0.weight"]["shape"] == [36]
    assert header[f"features.0.0.weight{SEP}scale0"]["dtype"] == "F32"
    assert header["head.bias"]["dtype"] == "F32"
    assert "features.0.1.running_mean" in meta["buffers"]
    json.dumps(meta)  # plain JSON
    nv = _cnn()
    quantize_model(nv, make_recipe(weights="nvfp4"))
    save_packed(nv, path)
    e = read_metadata(path)["weights"]["head.weight"]
    assert e["spec"]["format"] == "nvfp4" and e["scale"] == "pair" and e["bits"] == 4
    assert read_header(path)[1][f"head.weight{SEP}scale0"]["dtype"] == "U8"


def test_ptq_fixed_scales_and_quantized_target(tmp_path):
    model = _cnn()
    calib = torch.randn(64, 1, 8, 8)
    res = quantize_ptq(model, "int4", "int8", calib, PTQConfig(per_channel=True))
    path = tmp_path / "ptq.safetensors"
    info = save_packed(res.model, path)
    _check_sizes(info, res.model, path)
    assert read_metadata(path)["weights"]["head.weight"]["fixed_scale"]
    target = copy.deepcopy(res.model)
    with torch.no_grad():
        for p in target.parameters():
            p.zero_()
    load_packed(path, target)                   # a quantized model of the same structure works too
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(target(x), res.model(x))
    fresh = _cnn(seed=3)
    load_packed(path, fresh)
    for name, w in _qweights(res.model).items():
        assert torch.equal(dict(fresh.named_parameters())[name], w)


def test_wrong_model_rejected(tmp_path):
    q = _cnn()
    quantize_model(q, make_recipe(weights="int8"))
    save_packed(q, tmp_path / "m.safetensors")
    torch.manual_seed(0)
    other = create_model("cnn", num_classes=10, in_chans=1, img_size=8, channels=[8, 16, 32])
    with pytest.raises(ValueError, match="does not fit"):
        load_packed(tmp_path / "m.safetensors", other)
    with pytest.raises(TypeError):
        save_packed(object(), tmp_path / "x.safetensors")


def test_cli(tmp_path, capsys):
    ck = tmp_path / "cnn.pt"
    torch.save(_cnn().state_dict(), ck)
    out = tmp_path / "m.lowbit.safetensors"
    rc = cli_packed(["--checkpoint", str(ck), "--model", "cnn", "--model-kwargs", '{"channels": [8, 16, 16]}',
                     "--weights", "int4", "--out", str(out), "--verify"])
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file()
    assert "file size" in text and "cost model" in text and "bit-exact: True" in text
    assert cli_packed(["--checkpoint", str(ck), "--weights", "e8m0", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "e8m0" in err and "allowed" in err
    assert cli_packed(["--weights", "int4"]) == 2
