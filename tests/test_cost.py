"""lowbit.cost: hand-computed MACs and storage, knob liveness, Horowitz constants, energy files, CLI."""
import json
import math

import pytest
import torch
from torch import nn

from lowbit.cost import (EnergyModel, LayerPlan, model_cost, plan_from_assignment, profile_layers,
                         simd_lanes, uniform_plan)
from lowbit.cli.cost import main as cli_cost
from lowbit.nn import footprint, make_recipe, quantize_model


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))


@pytest.fixture(scope="module")
def layers():
    return profile_layers(small_net(), (2, 3, 4, 4))


def by_name(rows):
    return {r["name"]: r for r in rows}


def test_macs_by_hand(layers):
    d = {li.name: li for li in layers}
    assert [li.name for li in layers] == ["0", "2", "5", "7"]
    assert d["0"].macs == 8 * 4 * 4 * (3 * 3 * 3)            # out elements x (in/groups) x k x k
    assert (d["0"].in_numel, d["0"].out_numel, d["0"].params) == (48, 128, 8 * 27 + 8)
    assert d["2"].macs == 8 * 4 * 4 * (1 * 3 * 3) and d["2"].depthwise and d["2"].groups == 8
    assert d["5"].macs == 128 * 64 and d["7"].macs == 64 * 10
    assert d["5"].type == "Linear" and d["0"].type == "Conv2d" and not d["0"].depthwise
    assert layers.other_params == 16                          # the BatchNorm's weight and bias


def test_linear_rows_and_conv1d_macs():
    m = nn.Sequential(nn.Linear(6, 5), nn.Conv1d(7, 4, 3))   # Linear over (B, 7, 6): 7 rows per sample
    li = profile_layers(m, (3, 7, 6))
    assert li[0].macs == 7 * 6 * 5 and li[0].out_numel == 35
    assert li[1].macs == 4 * 3 * (7 * 3)                      # out (4, 3) x in 7 x k 3


def test_storage_with_scale_overhead(layers):
    plan = {"0": LayerPlan("int8", None), "5": LayerPlan("mxfp4", None), "7": LayerPlan("nvfp4", None)}
    r = by_name(model_cost(layers, plan).rows)
    assert r["0"]["element_bits"] == 216 * 8 and r["0"]["scale_bits"] == 8 * 32   # int8 per channel: 8 fp32 scales
    assert r["0"]["weight_bits"] == 216 * 8 + 8 * 32 + 8 * 32                       # + fp32 bias
    assert r["5"]["scale_bits"] == (128 // 32) * 64 * 8                            # one E8M0 per 32 elements
    assert r["7"]["scale_bits"] == (64 // 16) * 10 * 8 + 32                       # E4M3 per 16 + fp32 per tensor
    assert r["7"]["element_bits"] == 640 * 4
    t = model_cost(layers, {"0": LayerPlan({"format": "int4", "scaling": "tensor"})}).rows[0]
    assert t["scale_bits"] == 32 and t["element_bits"] == 216 * 4
    u = model_cost(layers, {"0": LayerPlan({"format": "uint4", "scaling": "tensor"})}).rows[0]
    assert u["scale_bits"] == 64                                                   # scale + zero point
    assert r["2"]["weight_bits"] == 72 * 32 and r["2"]["compression"] == 1.0       # not in the plan: fp32


def test_cost_agrees_with_footprint():
    m = small_net()
    li = profile_layers(m, (1, 3, 4, 4))
    asg = quantize_model(m, make_recipe(weights="int4", inputs="int8"))
    rep = model_cost(li, plan_from_assignment(asg))
    assert rep.total["weight_bits"] == footprint(m, asg).weight_bits
    assert rep.total["compression"] == pytest.approx(rep.total["fp32_bytes"] / rep.total["weight_bytes"])


@pytest.mark.parametrize("key", ["weight_bytes", "bitops", "energy_pj", "instructions", "energy_mac_pj"])
def test_weight_format_knob_is_live(layers, key):
    vals = [model_cost(layers, uniform_plan(layers, w, "int8")).total[key] for w in ("int8", "int4", "int2")]
    assert vals[0] > vals[1] > vals[2]


@pytest.mark.parametrize("key", ["bitops", "act_bytes", "peak_act_bytes", "energy_mac_pj", "energy_mem_pj"])
def test_act_format_knob_is_live(layers, key):
    vals = [model_cost(layers, uniform_plan(layers, "int8", a)).total[key] for a in ("fp32", "int8", "int4")]
    assert vals[0] > vals[1] > vals[2]


def test_float_and_block_formats_change_cost(layers):
    tot = {w: model_cost(layers, uniform_plan(layers, w, w)).total for w in ("fp8_e4m3", "mxfp8_e4m3", "mxfp4")}
    assert tot["mxfp8_e4m3"]["weight_bytes"] > tot["fp8_e4m3"]["weight_bytes"] > tot["mxfp4"]["weight_bytes"]
    assert tot["mxfp8_e4m3"]["energy_mac_pj"] > tot["mxfp4"]["energy_mac_pj"]
    assert all(t["energy_is_model"] for t in tot.values())


def test_instruction_proxy_packing():
    assert [simd_lanes(b) for b in (2, 4, 8, 16, 32, 3, 6)] == [16, 8, 4, 2, 1, 8, 4]
    li = profile_layers(nn.Sequential(nn.Linear(32, 32)), (1, 32))
    for w, lanes in (("int2", 16), ("int4", 8), ("int8", 4)):
        assert model_cost(li, uniform_plan(li, w)).total["instructions"] == 32 * 32 / lanes


def test_horowitz_constants_exact_at_8_and_32_bits():
    e = EnergyModel.horowitz()
    assert e.int_mult(8, 8) == pytest.approx(0.2, rel=1e-12) and e.int_mult(32, 32) == pytest.approx(3.1, rel=1e-12)
    assert e.int_add(8) == pytest.approx(0.03, rel=1e-12) and e.int_add(32) == pytest.approx(0.1, rel=1e-12)
    assert e.mac("int8", "int8") == (pytest.approx(0.2 + 0.1), False)          # int32 accumulator
    assert e.mac("fp16", "fp16") == (pytest.approx(1.1 + 0.9), False)          # fp32 accumulation
    assert e.mac(None, None) == (pytest.approx(3.7 + 0.9), False)
    assert e.mac("int4", None) == (pytest.approx(3.7 + 0.9), False)            # weight-only: fp32 MACs
    assert 3.5 < e.int_mult(16, 16) / e.int_mult(8, 8) < 4.0                  # ~ b^2
    assert 1.7 < e.int_add(16) / e.int_add(8) < 2.0                            # ~ b
    assert e.int_mult(2, 2) < e.int_mult(4, 4) < e.int_mult(8, 4) < e.int_mult(8, 8)
    pj, modelled = e.mac("fp8_e4m3", "fp8_e4m3")
    assert modelled and pj == pytest.approx(1.1 * (4 * 4 + 4) / 126 + 0.9)
    assert e.mac("mxfp4", "mxfp4")[1] and e.mac("mxint8", "mxint8") == e.mac("int8", "int8")
    assert e.level(4000) == ("SRAM8KB", 10.0) and e.level(10 ** 6) == ("SRAM1MB", 100.0)
    assert e.level(2 ** 21)[0] == "DRAM"


def test_memory_level_follows_model_size():
    small = profile_layers(nn.Sequential(nn.Linear(16, 16)), (1, 16))
    big = profile_layers(nn.Sequential(nn.Linear(1024, 1024)), (1, 1024))
    assert model_cost(small).total["mem_level_w"] == "SRAM8KB"
    assert model_cost(big).total["mem_level_w"] == "DRAM"          # 4 MB of fp32 weights
    assert model_cost(big, uniform_plan(big, "int4")).total["mem_level_w"] == "SRAM1MB"


def test_relative_model_is_labelled(layers):
    e = EnergyModel.relative()
    assert e.unit == "rel" and e.mac("int8", "int8") == (1.0, False) and e.mac("int4", "int4")[0] == 0.25
    rep = model_cost(layers, uniform_plan(layers, "int8", "int8"), "relative")
    assert rep.total["energy_unit"] == "rel" and all(r["energy_unit"] == "rel" for r in rep.rows)
    assert "RELATIVE, UNITLESS" in rep.table() and "E[rel]" in rep.table()
    hz = model_cost(layers, uniform_plan(layers, "fp4_e2m1", "fp8_e4m3"))
    assert "MODELLED" in hz.table() and "*" in hz.table()


def test_user_constants_file(tmp_path, layers):
    y = tmp_path / "e.yaml"
    y.write_text("name: test-node\nint8_mult_pj: 0.4\nsram_64b_pj: {4KB: 5, 64 KiB: 30}\ndram_64b_pj: 1300\n")
    e = EnergyModel.from_file(y)
    assert e.name == "test-node" and e.int_mult(8, 8) == pytest.approx(0.4) and e.int32_mult_pj == 3.1
    assert e.sram_64b_pj == ((4096, 5.0), (65536, 30.0)) and e.level(5000) == ("SRAM64KB", 30.0)
    j = tmp_path / "e.json"
    j.write_text(json.dumps({"int8_add_pj": 0.06, "int32_add_pj": 0.2}))
    base = model_cost(layers, uniform_plan(layers, "int8", "int8")).total["energy_mac_pj"]
    assert model_cost(layers, uniform_plan(layers, "int8", "int8"), str(j)).total["energy_mac_pj"] > base


@pytest.mark.parametrize("text,needle", [
    ("int8_mult_pj: -1\n", "positive number"),
    ("bogus_key: 1\n", "unknown key 'bogus_key'"),
    ("- 1\n- 2\n", "must hold a mapping"),
    ("sram_64b_pj: {tiny: 3}\n", "SRAM capacity 'tiny'"),
    ("float_acc: fp8\n", "float_acc='fp8'"),
    ("int8_mult_pj: [1\n", "not valid YAML/JSON"),
])
def test_bad_energy_file(tmp_path, text, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ValueError, match=None) as exc:
        EnergyModel.from_file(p)
    assert needle in str(exc.value) and "bad.yaml" in str(exc.value)


def test_plan_errors(layers):
    with pytest.raises(ValueError, match="unknown layer 'nope'"):
        model_cost(layers, {"nope": LayerPlan("int8")})
    with pytest.raises(ValueError, match="int33"):
        LayerPlan("int33")
    with pytest.raises(ValueError, match="a LayerPlan"):
        model_cost(layers, {"0": "int8"})
    a = model_cost(layers, {"0": ("int4", "int8")}).total
    assert a == model_cost(layers, {"0": {"weight": "int4", "act": "int8"}}).total
    assert a == model_cost(layers, {"0": LayerPlan("int4", "int8")}).total


def test_cli_cost_table_and_json(capsys):
    argv = ["--model", "mlp", "--dataset", "digits", "--weights", "int4", "--acts", "int8", "--per-layer"]
    assert cli_cost(argv) == 0
    out = capsys.readouterr().out
    assert "total" in out and "E[nJ]" in out and "Horowitz" in out
    assert cli_cost(["--model", "mlp", "--weights", "mxfp4", "--acts", "fp8", "--energy", "relative", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["total"]["energy_unit"] == "rel" and d["energy_model"]["kind"] == "relative"
    assert math.isclose(d["total"]["bitops"], sum(r["bitops"] for r in d["rows"]))


@pytest.mark.parametrize("argv,needle", [
    (["--weights", "int33"], "--weights 'int33'"),
    (["--acts", "fp9"], "--acts 'fp9'"),
    (["--energy", "/no/such/file.yaml"], "cannot be read"),
    (["--model", "nosuchmodel"], "unknown model 'nosuchmodel'"),
    (["--batch", "x"], "invalid int value: 'x'"),
    (["--per-channel", "--per-tensor", "--weights", "int4"], "exclude each other"),
    (["--checkpoint", "/no/such.pt"], "does not exist"),
])
def test_cli_cost_bad_input(capsys, argv, needle):
    assert cli_cost(["--model", "mlp"] + argv if "--model" not in argv else argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
