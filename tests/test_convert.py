"""lowbit.nn.convert: packed integer layers on torch's CPU kernels.

Per kernel: the stored integers and scales dequantize to exactly the fake-quantized weight, and the
converted layer's output equals the fake-quantized layer's to within the fp32 accumulation bound
(K + 4) * 2^-24 * sum_k |x_k w_k| (+ |b|), K the reduction length, computed per output element
against an fp64 oracle of the same integers. Then: converted models are smaller (state_dict bytes),
unsupported formats are reported (never skipped silently), and bad calls give one clear line.
"""
import io
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lowbit.models import create_model
from lowbit.nn import (ConvertError, ConvertWarning, convert, dequantize_model, make_recipe, quantize_model,
                       state_bytes)
from lowbit.nn.kernels_cpu import act_codes

U = 2.0 ** -24


def _bound(k, absx, absw, absb, op):
    """Per-element bound on |converted - fake|: both are within gamma_K of the exact sum of the same
    dequantized products (plus the rescale and bias roundings)."""
    return 2 * (k + 4) * U * op(absx.double(), absw.double(), None if absb is None else absb.double()) + 1e-30


def _linear_op(a, w, b):
    return F.linear(a, w, b)


def _check_layer(layer, x, recipe, kernel, op=_linear_op, k=None):
    model = nn.Sequential(layer).eval()
    asg = quantize_model(model, recipe)
    q = model[0]
    with torch.no_grad():
        wq = q.weight_quantizer(q.weight).clone()
        xq = q.input_quantizer(x) if q.input_quantizer is not None else x
        y_fake = model(x)
    report = convert(model, asg)
    assert [r.kernel for r in report.rows] == [kernel], report.table()
    c = model[0]
    assert torch.equal(c.dequantized_weight(), wq)  # bit-exact: the same integers times the same scales
    with torch.no_grad():
        y = model(x)
    bound = _bound(k or wq[0].numel(), xq.abs(), wq.abs(), None if c.bias is None else c.bias.abs(), op)
    err = (y.double() - y_fake.double()).abs()
    assert (err <= bound).all(), f"max err {err.max().item():.3g}, bound there {bound.flatten()[err.argmax()].item():.3g}"
    assert not any(t.dtype == torch.float32 and t.shape == wq.shape for t in model.state_dict().values()), \
        "the fp32 weight is still stored"
    if kernel == "onednn-int8":
        _check_exact_sum(c, x, y, op)
    return model, y


def _check_exact_sum(c, x, y, op):
    """The integer kernel sums exactly: against the fp64 product of the same integers and scales, only
    the final rescale and bias add round (a few ulps of the result)."""
    cx, sx, zp = act_codes(x, c.act_spec, c._fixed())
    sw = c.weight_scale.double().reshape(-1, *[1] * (c.weight_int8.dim() - 1))
    b = None if c.bias is None else c.bias.double()
    exact = op((cx.double() - zp) * sx, c.weight_int8.double() * sw, b)
    tol = 4 * U * (exact.abs() + (0 if b is None else op(torch.zeros_like(cx, dtype=torch.float64),
                                                          c.weight_int8.double() * 0, b.abs())))
    assert ((y.double() - exact).abs() <= tol + 1e-30).all(), (y.double() - exact).abs().max()


LINEAR_CASES = [  # (recipe kwargs, kernel, in, out)
    (dict(weights="int8", inputs="int8"), "onednn-int8", 96, 40),
    (dict(weights="int8", inputs="uint8"), "onednn-int8", 64, 33),
    (dict(weights="int4", inputs="int8"), "onednn-int8", 50, 17),
    (dict(weights={"format": "int8", "scaling": "tensor"}, inputs={"format": "int8", "pow2_scale": True}),
     "onednn-int8", 64, 32),
    (dict(weights="int8_narrow", inputs="int6"), "onednn-int8", 70, 20),
    (dict(weights="int8"), "int8-weight", 96, 40),
    (dict(weights="int8", inputs="fp8_e4m3"), "int8-weight", 64, 24),
    (dict(weights="int4"), "int4-weight", 100, 24),       # N, K padded (16, group)
    (dict(weights="int3"), "int4-weight", 64, 16),
    (dict(weights={"format": "int4", "scaling": "group", "group_size": 32}), "int4-weight", 96, 32),
    (dict(weights={"format": "int4", "scaling": "group", "group_size": 64}, inputs="fp8_e5m2"), "int4-weight", 80, 48),
]


@pytest.mark.parametrize("rec,kernel,k,n", LINEAR_CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(LINEAR_CASES)])
def test_linear_kernels_match_fake_quant(rec, kernel, k, n):
    torch.manual_seed(0)
    x = torch.randn(5, 3, k) * 2.0
    _check_layer(nn.Linear(k, n), x, make_recipe(**rec), kernel)


def _conv_op(layer):
    def op(a, w, b):
        conv = F.conv2d if a.dim() == 4 else F.conv1d
        return conv(a, w, b, layer.stride, layer.padding, layer.dilation, layer.groups)
    return op


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.Conv2d(8, 16, 3, padding=1), (2, 8, 9, 9)),
    (lambda: nn.Conv2d(8, 12, 3, stride=2, padding=(1, 0), dilation=(1, 2), bias=False), (3, 8, 11, 10)),
    (lambda: nn.Conv2d(16, 16, 3, padding=1, groups=16), (2, 16, 7, 7)),   # depthwise
    (lambda: nn.Conv1d(6, 10, 5, padding=2), (4, 6, 20)),
])
@pytest.mark.parametrize("inputs", ["int8", "uint8"])
def test_conv_kernel_matches_fake_quant(make, shape, inputs):
    torch.manual_seed(1)
    layer = make()
    k = layer.weight[0].numel()
    _check_layer(layer, torch.randn(*shape), make_recipe(weights="int8", inputs=inputs), "onednn-int8",
                 op=_conv_op(layer), k=k)


def test_activation_codes_are_the_fake_quantizers():
    """The integer input the kernel gets decodes to exactly what the fake quantizer returns."""
    torch.manual_seed(2)
    layer = nn.Sequential(nn.Linear(32, 8))
    for fmt in ("int8", "uint8", "int4"):
        m = nn.Sequential(nn.Linear(32, 8))
        quantize_model(m, make_recipe(weights="int8", inputs=fmt))
        q = m[0].input_quantizer
        x = torch.randn(64, 32) * 3 + 0.5
        c, s, zp = act_codes(x, q.spec, None)
        assert torch.equal((c.float() - zp) * torch.tensor(s), q(x)), fmt
    del layer


def test_calibrated_static_scales_convert():
    """PTQ's fixed (calibrated) input and weight scales go into the kernel unchanged."""
    from lowbit.ptq import PTQConfig, quantize_ptq
    torch.manual_seed(3)
    model = create_model("mlp", hidden=(64,)).eval()
    x = torch.randn(32, 3, 32, 32)
    res = quantize_ptq(model, "int8", "int8", x, PTQConfig(calib="percentile", percentile=99.0))
    m = res.model
    with torch.no_grad():
        y_fake = m(x)
        ws = {n: mod.weight_quantizer(mod.weight).clone() for n, mod in m.named_modules()
              if getattr(mod, "weight_quantizer", None) is not None}
    report = convert(m, res.assignment)
    assert {r.kernel for r in report.rows} == {"onednn-int8"}, report.table()
    mods = dict(m.named_modules())
    for n, w in ws.items():
        assert torch.equal(mods[n].dequantized_weight(), w), n
        assert mods[n].act_scale is not None
    with torch.no_grad():
        y = m(x)
    # per layer the difference is float rounding; two layers deep a rounding can move one input code
    assert (y - y_fake).abs().max() <= 1e-4 * y_fake.abs().max()


def test_models_are_smaller_and_agree():
    torch.manual_seed(4)
    x = torch.randn(8, 3, 32, 32)
    for name, rec, ratio in [("mlp", dict(weights="int8", inputs="int8"), 0.26),
                             ("mlp", dict(weights="int4"), 0.14), ("cnn", dict(weights="int8", inputs="int8"), 0.26)]:
        m = create_model(name).eval()
        before = state_bytes(m)
        asg = quantize_model(m, make_recipe(**rec))
        with torch.no_grad():
            y_fake = m(x)
        convert(m, asg)
        with torch.no_grad():
            y = m(x)
        assert state_bytes(m) < ratio * before, (name, rec, state_bytes(m), before)
        assert (y.argmax(1) == y_fake.argmax(1)).all()
        assert (y - y_fake).abs().max() <= 1e-3 * y_fake.abs().max(), name
        assert asg.dead_slots() == []      # the converted layers keep the slot counters going


def test_state_dict_round_trip():
    """A converted model's state (int8 / packed int4 buffers) saves with torch.save, loads with
    weights_only=True into another converted model and gives the same outputs."""
    x = torch.randn(4, 3, 32, 32)
    for rec in (dict(weights="int8", inputs="int8"), dict(weights="int4")):
        models = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            m = create_model("mlp").eval()
            convert(m, quantize_model(m, make_recipe(**rec)))
            models.append(m)
        buf = io.BytesIO()
        torch.save(models[0].state_dict(), buf)
        buf.seek(0)
        models[1].load_state_dict(torch.load(buf, weights_only=True))
        with torch.no_grad():
            assert torch.equal(models[0](x), models[1](x))


def test_unsupported_layers_are_reported():
    model = nn.Sequential(nn.Embedding(10, 16), nn.Linear(16, 16), nn.Conv1d(16, 8, 1), nn.Linear(8, 4))
    recipe = make_recipe(weights="int8")   # Embedding: no kernel; the conv has an fp32 input
    asg = quantize_model(model, recipe)
    with pytest.warns(ConvertWarning, match=r"kept 2 quantized layer\(s\).*0: no CPU integer kernel for Embedding"):
        report = convert(model, asg)
    rows = {r.name: r for r in report.rows}
    assert rows["1"].kernel == "int8-weight" and rows["3"].kernel == "int8-weight"
    assert rows["0"].kernel is None and "Embedding" in rows["0"].note
    assert rows["2"].kernel is None and "input is fp32" in rows["2"].note
    assert "(kept)" in report.table() and "2 of 4 weight layers converted" in report.table()

    for rec, why in [(dict(weights="fp8_e4m3"), "fp8_e4m3 has no CPU integer kernel"),
                     (dict(weights="mxfp4"), "mxfp4 has no CPU integer kernel"),
                     (dict(weights="uint8"), "unsigned"),
                     (dict(weights="int8", rounding="stochastic"), "stochastic"),
                     (dict(weights={"format": "int8", "scaling": "group", "group_size": 32}), "group scales"),
                     (dict(weights={"format": "int4", "scaling": "group", "group_size": 16}), "group_size=16"),
                     (dict(weights="int8", learn_weight="lsq"), "learnable")]:
        m = nn.Sequential(nn.Linear(64, 32))
        a = quantize_model(m, make_recipe(**rec))
        with pytest.raises(ConvertError, match=why):
            convert(m, a, strict=True)
        assert m.__dict__.get("_lowbit_converted") is None   # strict: nothing changed
        with pytest.warns(ConvertWarning, match=why):
            assert convert(m, a).rows[0].kernel is None


def test_fp32_layers_are_listed_without_warning():
    m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 4))
    asg = quantize_model(m, make_recipe(weights="int8", inputs="int8", keep_first_last=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = convert(m, asg)
    assert [r.kernel for r in report.rows] == [None, "onednn-int8", None]
    assert [r.note for r in report.rows] == ["not quantized (fp32)", "", "not quantized (fp32)"]


def _one_line(exc_info):
    assert "\n" not in str(exc_info.value), str(exc_info.value)


def test_bad_inputs():
    m = nn.Sequential(nn.Linear(8, 8))
    with pytest.raises(ValueError, match="not quantized") as e:
        convert(m, quantize_model(nn.Sequential(nn.Linear(8, 8)), make_recipe(weights="int8")))
    _one_line(e)
    asg = quantize_model(m, make_recipe(weights="int8"))
    with pytest.raises(TypeError, match="assignment must be") as e:
        convert(m, asg.rows)
    _one_line(e)
    with pytest.raises(TypeError, match="model must be") as e:
        convert("model", asg)
    _one_line(e)
    other = nn.Sequential(nn.Linear(8, 8))
    with pytest.raises(ValueError, match="does not belong") as e:
        convert(m, quantize_model(other, make_recipe(weights="int8")))
    _one_line(e)
    convert(m, asg)
    with pytest.raises(ValueError, match="already converted") as e:
        convert(m, asg)
    _one_line(e)
    with pytest.raises(ValueError, match="cannot be dequantized") as e:
        dequantize_model(m)
    _one_line(e)


def test_hf_gpt2_conv1d_converts():
    """Hugging Face's Conv1D (weight stored (in, out)) runs the int8 kernels too."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(5)
    cfg = transformers.GPT2Config(n_layer=1, n_embd=64, n_head=4, vocab_size=100, n_positions=32)
    model = transformers.GPT2Model(cfg).eval()
    asg = quantize_model(model, make_recipe(weights="int8", inputs="int8"))
    ids = torch.randint(0, 100, (2, 16))
    with torch.no_grad():
        y_fake = model(ids).last_hidden_state
    with pytest.warns(ConvertWarning, match="Embedding"):
        report = convert(model, asg)
    assert {r.kernel for r in report.rows if r.type == "Conv1D"} == {"onednn-int8"}, report.table()
    with torch.no_grad():
        y = model(ids).last_hidden_state
    assert (y - y_fake).abs().max() <= 1e-3 * y_fake.abs().max()


def test_benchmark_script_quick_runs():
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run([sys.executable, str(root / "benchmarks" / "convert.py"), "--quick", "--recipes", "w8a8", "w4"],
                              cwd=root, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip("benchmark smoke run took over 120 s here (a busy machine)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("CPU: ") and "ISA: " in lines[0]
    assert any(line.startswith("mlp   w8a8   onednn-int8:3") for line in lines), proc.stdout
    assert any(line.startswith("mlp   w4     int4-weight:3") for line in lines), proc.stdout
