"""lowbit export c: integer reference vs generated C (host cc, RV32IMC under QEMU), packing, errors."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from lowbit.cli.export import main as cli_export
from lowbit.export import UnsupportedLayerError, export_c
from lowbit.export.c.build import host_cc, riscv_available, run_host, run_riscv
from lowbit.export.c.graph import trace
from lowbit.export.c.integer import pack_weights, quantize_multiplier, unpack_weights
from lowbit.export.c.reference import run_float

needs_cc = pytest.mark.skipif(host_cc() is None, reason="no host C compiler (cc/gcc/clang)")


class SmallCNN(nn.Module):
    """conv-bn-relu, depthwise-bn-relu6, residual add + relu, pointwise, max/avg/global pool, linear."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1, self.r = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        self.dw, self.b2 = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8)
        self.r6 = nn.ReLU6()
        self.pw = nn.Conv2d(8, 12, 1)
        self.s2 = nn.Conv2d(12, 12, 3, stride=2, padding=1, groups=3)
        self.mp, self.ap, self.gap = nn.MaxPool2d(2), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        x = self.r(self.b1(self.c1(x)))
        x = torch.relu(x + self.r6(self.b2(self.dw(x))))
        x = self.ap(self.mp(self.pw(x)))          # 8 -> 4 -> 2
        x = self.s2(x)                            # grouped, strided: 2 -> 1
        return self.fc(self.gap(x).flatten(1))


def small_cnn():
    torch.manual_seed(0)
    m = SmallCNN().eval()
    for b in (m.b1, m.b2):
        b.running_mean.uniform_(-0.2, 0.2)
        b.running_var.uniform_(0.5, 2.0)
        b.weight.data.uniform_(0.5, 1.5)
    return m


def mlp():
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 16), nn.ReLU(),
                         nn.Linear(16, 10)).eval()


MODELS = {"mlp": mlp, "cnn": small_cnn}


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_pack_round_trip_and_msb_first(bits):
    rng = np.random.default_rng(bits)
    qmax = (1 << (bits - 1)) - 1
    codes = rng.integers(-qmax, qmax + 1, size=(5, 37))
    words = pack_weights(codes, bits)
    per = 32 // bits
    assert words.dtype == np.uint32 and len(words) == 5 * -(-37 // per)
    assert np.array_equal(unpack_weights(words, bits, 5, 37), codes)
    first = pack_weights(np.array([[1] + [0] * (per - 1)]), bits)[0]
    assert first == 1 << (32 - bits)                      # field 0 = most significant bits


@pytest.mark.parametrize("width", [31, 7])
def test_quantize_multiplier(width):
    for m in np.geomspace(1e-6, 20, 50):
        q, n = quantize_multiplier(float(m), width)
        assert (1 << (width - 1)) <= q <= (1 << width) and (width == 7 or q < 1 << 31)
        assert abs(q * 2.0 ** -n - m) <= m * 2.0 ** -(width - 1)
    with pytest.raises(ValueError, match="allowed: 31, 7"):
        quantize_multiplier(0.5, 16)


def test_trace_float_graph_matches_model():
    m = small_cnn()
    g = trace(m, (1, 8, 8))
    kinds = [op.kind for op in g.ops]
    assert kinds.count("conv") == 5 and "add" in kinds and "pool_max" in kinds and "pool_avg" in kinds
    assert not any(op.kind == "bn" for op in g.ops)       # folded
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(run_float(g, x), m(x), atol=1e-5)


@pytest.mark.parametrize("layer,name", [(nn.GELU(), "GELU"), (nn.LayerNorm(64), "LayerNorm"),
                                        (nn.Sigmoid(), "Sigmoid")])
def test_unsupported_layer_is_a_clear_error(layer, name):
    m = nn.Sequential(nn.Flatten(), layer, nn.Linear(64, 10))
    with pytest.raises(UnsupportedLayerError) as e:
        trace(m, (1, 8, 8))
    msg = str(e.value)
    assert name in msg and "'1'" in msg and "supported:" in msg and "Conv2d" in msg and "\n" not in msg


class DataDependent(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


def test_untraceable_model_is_a_clear_error():
    with pytest.raises(UnsupportedLayerError, match="cannot be traced by torch.fx"):
        trace(DataDependent(), (1, 8, 8))


def test_bn_without_conv_is_rejected():
    m = nn.Sequential(nn.BatchNorm2d(1), nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(UnsupportedLayerError, match="BatchNorm not directly after"):
        trace(m, (1, 8, 8))


@needs_cc
@pytest.mark.parametrize("model,width,bits", [("mlp", 31, 8), ("mlp", 7, 2), ("cnn", 31, 4), ("cnn", 7, 8),
                                              ("cnn", 31, {"c1": 2, "pw": 4, "fc": 8})])
def test_c_matches_integer_reference_bit_exact(tmp_path, model, width, bits):
    m = MODELS[model]()
    torch.manual_seed(2)
    x = torch.randn(100, 1, 8, 8)
    rep = export_c(m, x[:64], x, None, tmp_path, bits=bits, width=width, n_golden=100)
    assert rep["host"] == {"mismatches": 0, "returncode": 0}
    assert rep["golden_inputs"] == 100
    if isinstance(bits, dict):
        got = {l["name"]: l["bits"] for l in rep["layers"] if l["kind"] == "conv"}
        assert got["c1"] == 2 and got["pw"] == 4 and got["fc"] == 8 and got["dw"] == 8 and got["s2"] == 8
    if width == 7:
        assert all(64 <= q <= 128 for l in rep["layers"] for q in l["q"])
        assert all(l["rq32"] for l in rep["layers"] if l["kind"] == "conv")    # 32-bit requantization path
    else:
        assert not any(l["rq32"] for l in rep["layers"])


@needs_cc
def test_golden_files_versioned_and_diff_catches_a_change(tmp_path):
    m = small_cnn()
    x = torch.randn(20, 1, 8, 8)
    export_c(m, x, x, None, tmp_path, bits=4, n_golden=20, build=False)
    for f in ("model.h", "model.c", "golden.h", "main.c", "manifest.json"):
        assert (tmp_path / f).is_file()
    h = (tmp_path / "model.h").read_text()
    assert "#define LOWBIT_MODEL_FORMAT_VERSION 2" in h and "const uint32_t w_0" in h
    assert "int model_infer(const int8_t *in, int8_t *out);" in h
    c = (tmp_path / "model.c").read_text()
    assert "malloc" not in c and "float" not in c and "double" not in c
    assert run_host(tmp_path).mismatches == 0
    g = tmp_path / "golden.h"
    text = g.read_text()
    out = text.index("golden_out")
    first = re.compile(r"\{(-?\d+)").search(text, out)
    v = int(first.group(1))
    g.write_text(text[:first.start(1)] + str(v + 1 if v < 127 else v - 1) + text[first.end(1):])
    bad = run_host(tmp_path)
    assert bad.mismatches >= 1 and bad.returncode != 0


@pytest.fixture(scope="module")
def digits_mlp():
    from lowbit.data import load_dataset, normalize
    from lowbit.cli.source import build_model, train_quick
    splits = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", "digits", {"hidden": [64, 32]})
    train_quick(model, splits, epochs=4, seed=0)
    norm = lambda x: normalize(x, splits.mean, splits.std)  # noqa: E731
    return model.eval(), norm(splits.train.x[:256]), norm(splits.test.x), splits.test.y


@needs_cc
@pytest.mark.parametrize("width", [31, 7])
def test_integer_accuracy_close_to_fake_quant(tmp_path, digits_mlp, width):
    model, cx, ex, ey = digits_mlp
    rep = export_c(model, cx, ex, ey, tmp_path, bits=8, width=width, n_golden=100)
    a = rep["accuracy"]
    assert a["fp32"] > 0.85
    assert abs(a["integer"] - a["fake_quant"]) <= 0.02
    assert abs(a["fake_quant"] - a["fp32"]) <= 0.03
    assert rep["host"]["mismatches"] == 0


@needs_cc
def test_cli_export_c_from_checkpoint(tmp_path, capsys):
    from lowbit.cli.source import build_model
    torch.manual_seed(0)
    m = build_model("mlp", "digits", {"hidden": [16]})
    torch.save(m.state_dict(), tmp_path / "m.pt")
    rc = cli_export(["c", "--checkpoint", str(tmp_path / "m.pt"), "--model", "mlp", "--model-kwargs", '{"hidden": [16]}',
                     "--weights-bits", "features_1=2,4", "--multiplier", "7", "--eval-samples", "50",
                     "--golden", "10", "--calib-samples", "64", "--out", str(tmp_path / "c")])
    out = capsys.readouterr().out
    assert rc == 0 and "host cc: 0 mismatches on 10 golden inputs" in out and "bits=2" in out
    assert cli_export(["nope"]) == 2
    assert cli_export(["c", "--out", str(tmp_path / "x"), "--weights-bits", "3"]) == 2


@pytest.mark.skipif(riscv_available() is not None, reason=f"RISC-V toolchain: {riscv_available()}")
def test_riscv_qemu_bit_exact_with_instruction_counts(tmp_path):
    m = small_cnn()
    x = torch.randn(8, 1, 8, 8)
    export_c(m, x, x, None, tmp_path, bits=4, width=7, n_golden=8, build=False)
    r = run_riscv(tmp_path, timeout=120)
    assert r.returncode == 0 and r.mismatches == 0, r.stdout
    assert set(r.layer_instret) == {"c1", "dw", "add", "pw", "mp", "ap", "s2", "gap", "fc"}
    assert r.total_instret == sum(r.layer_instret.values()) > 0
    assert r.size["prog_text"] > r.size["model_text"] > 0


@needs_cc
@pytest.mark.parametrize("name,kwargs", [("cnn", {"channels": [8, 16, 16]}), ("mobilenetv2", {})])
def test_zoo_models_bit_exact(tmp_path, name, kwargs):
    """Zoo models as built for digits: nested ConvBnAct, depthwise + ReLU6 + residual adds (MobileNetV2)."""
    from lowbit.cli.source import build_model
    torch.manual_seed(0)
    m = build_model(name, "digits", kwargs).eval()
    x = torch.randn(10, 1, 8, 8)
    rep = export_c(m, x, x, None, tmp_path, bits=4, width=31, n_golden=10)
    assert rep["host"]["mismatches"] == 0
    assert any(l["kind"] == "add" for l in rep["layers"]) == (name == "mobilenetv2")


def test_instruction_table_feeds_the_cost_model(tmp_path):
    """Measured counts replace the proxy in lowbit.cost (and so in lowbit search); gaps are errors."""
    from lowbit.cost import InstructionTable, LayerPlan, model_cost, profile_layers

    m = mlp()
    layers = profile_layers(m, (1, 1, 8, 8))
    names = [li.name for li in layers if li.macs]
    table = InstructionTable({n: {2: 1000.0 + i, 4: 2000.0 + i, 8: 4000.0 + i} for i, n in enumerate(names)},
                             fixed=7.0)
    path = tmp_path / "instructions.json"
    path.write_text(table.to_json())
    table = InstructionTable.from_file(path)
    plan = {n: LayerPlan(weight="int4") for n in names}
    rep = model_cost(layers, plan, instructions=table)
    assert rep.total["instructions"] == sum(2000.0 + i for i in range(len(names))) + 7.0
    assert rep.total["instructions_source"] == "measured"
    assert model_cost(layers, plan).total["instructions"] != rep.total["instructions"]  # the proxy differs
    with pytest.raises(ValueError, match="with weights fp4_e2m1; allowed: int2, int4, int8"):
        model_cost(layers, {names[0]: LayerPlan(weight="fp4_e2m1")}, instructions=table)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="cannot be read"):
        InstructionTable.from_file(bad)


@pytest.mark.skipif(riscv_available() is not None, reason=f"RISC-V toolchain: {riscv_available()}")
def test_measure_instructions_on_riscv(tmp_path):
    from lowbit.export.c.measure import measure_instructions

    m = mlp()
    x = torch.rand(16, 1, 8, 8)
    tables = measure_instructions(m, x, x, tmp_path, bits=(2, 8))
    weight_layers = {n for n, mod in m.named_modules() if isinstance(mod, nn.Linear)}
    assert set(tables) == {"rv32imc", "rv32imc_xlbmac"}
    for table in tables.values():
        assert set(table.layers) == weight_layers == set(table.cycles)
        assert all(set(per) == {2, 8} and all(c > 0 for c in per.values()) for per in table.layers.values())
    from lowbit.cost import InstructionTable
    back = InstructionTable.from_file(tmp_path / "instructions.json", "rv32imc")
    assert back.layers == tables["rv32imc"].layers and back.cycles == tables["rv32imc"].cycles
    with pytest.raises(ValueError, match="program 'nope' is not in the instruction table"):
        InstructionTable.from_file(tmp_path / "instructions.json", "nope")
