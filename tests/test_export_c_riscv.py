"""The two RISC-V programs (RV32IMC, RV32IMC + Xlbmac) under unicorn: bit-exact, counted, cheaper with
fewer bits; cycle classes; per-layer widths from maps/recipes; MaxPool padding; memory sizing; the
search scoring the C arithmetic end to end."""
from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
import torch
from torch import nn

from lowbit.export.c.bits import resolve_bits
from lowbit.export.c.build import parse_memory, riscv_available, run_emulated, run_riscv
from lowbit.export.c.cycles import CYCLES, classify_block, tally
from lowbit.export.c.emulator import unicorn_available
from lowbit.export.c.export import export_c, integer_model
from lowbit.export.c.graph import trace
from lowbit.export.c.reference import run_float, run_integer
from lowbit.export.c.reference_ext import run_ext

from test_export_c import mlp, small_cnn

_missing = riscv_available(qemu=False) or unicorn_available()
needs_emu = pytest.mark.skipif(_missing is not None, reason=f"RISC-V emulation: {_missing}")
needs_qemu = pytest.mark.skipif(riscv_available() is not None, reason=f"QEMU: {riscv_available()}")


@pytest.mark.parametrize("model,bits", [("mlp", 2), ("cnn", 4), ("cnn", {"c1": 2, "pw": 8, "fc": 4, "*": 2})])
def test_ext_reference_equals_integer_reference(model, bits):
    """The Xlbmac program's arithmetic (packing + the instructions' semantics) = the golden reference."""
    m = {"mlp": mlp, "cnn": small_cnn}[model]()
    x = torch.randn(32, 1, 8, 8)
    _, qm = integer_model(m, x, (1, 8, 8), bits)
    xq = qm.quantize_input(x)
    assert np.array_equal(run_ext(qm, xq), run_integer(qm, xq))


@needs_emu
@pytest.mark.parametrize("model,bits", [("mlp", 2), ("cnn", {"c1": 2, "pw": 4, "fc": 8, "*": 2})])
def test_both_programs_bit_exact_under_unicorn(tmp_path, model, bits):
    m = {"mlp": mlp, "cnn": small_cnn}[model]()
    x = torch.randn(6, 1, 8, 8)
    rep = export_c(m, x, x, None, tmp_path, bits=bits, width=7, n_golden=6, build=False, emulate=True)
    plain, ext = rep["emulated"]["rv32imc"], rep["emulated"]["rv32imc_xlbmac"]
    for e in (plain, ext):
        assert e["mismatches"] == 0 and e["returncode"] == 0
        assert e["instructions"] == sum(v["instructions"] for v in e["layers"].values()) > 0
    assert plain["ext_instructions_executed"] == 0 < ext["ext_instructions_executed"]
    assert ext["cycles"] < plain["cycles"] and rep["speedup_cycles"] > 1
    assert "lb.mac" not in (tmp_path / "model.h").read_text()
    assert "#define LOWBIT_XLBMAC 1" in (tmp_path / "ext" / "model.h").read_text()


@needs_emu
def test_corrupted_ext_weight_is_caught(tmp_path):
    m = small_cnn()
    x = torch.randn(4, 1, 8, 8)
    export_c(m, x, x, None, tmp_path, bits=2, n_golden=4, build=False)
    h = tmp_path / "ext" / "model.h"
    text = h.read_text()
    i = text.index("w_3[")                                  # the pointwise conv: an Xlbmac layer
    word = re.compile(r"0x([0-9a-f]{8})u").search(text, i)
    v = int(word.group(1), 16) ^ 0x00000004                  # flip one bit of one 2-bit field
    h.write_text(text[:word.start(1)] + f"{v:08x}" + text[word.end(1):])
    r = run_emulated(tmp_path / "ext", count=False)
    assert r.mismatches >= 1 and r.returncode != 0


@needs_emu
@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_cycles_fall_with_the_bits_on_the_zoo_models(tmp_path, name):
    """With Xlbmac every weight layer costs fewer cycles at 2 than at 4 bits, and at 4 than at 8."""
    from lowbit.export.c.measure import measure_instructions
    from lowbit.cli.source import build_model, quick_model_kwargs
    torch.manual_seed(0)
    m = build_model(name, "digits", quick_model_kwargs(name)).eval()
    x = torch.randn(4, 1, 8, 8)
    tables = measure_instructions(m, x, x, tmp_path, bits=(2, 4, 8))
    ext, plain = tables["rv32imc_xlbmac"], tables["rv32imc"]
    assert set(ext.layers) == {n for n, mod in m.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))}
    for layer, c in ext.cycles.items():
        assert c[2] < c[4] < c[8], (layer, c)
        assert ext.layers[layer][2] < ext.layers[layer][4] < ext.layers[layer][8]
        assert c[8] < plain.cycles[layer][8]
    raw = json.loads((tmp_path / "instructions.json").read_text())
    assert raw["version"] == 2 and "Ibex" in raw["cycle_model"]


def test_cycle_classes_and_branch_accounting():
    enc = lambda w: w.to_bytes(4, "little")   # noqa: E731
    code = (enc(0x00052503) + enc(0x00a52023) + enc(0x02b50533) + enc(0x02b51533) + enc(0x02b54533)
            + (0x4108).to_bytes(2, "little") + enc(0x0007b00b) + enc(0x0000102b) + enc(0x00b50463))
    assert classify_block(code) == ["load", "store", "mul", "mulh", "div", "load", "ext_move", "ext_rq", "branch"]
    blocks = {(0, 0x100, len(code)): 10}
    counts = tally(blocks, {(0, 0x100, len(code)): 3}, {0x100: code}, ["conv1"])
    c = counts["conv1"]
    assert c["classes"]["branch_nt"] == 3 and c["classes"]["branch_t"] == 7 and c["instructions"] == 90
    per = sum(CYCLES[k] for k in ("load", "store", "mul", "mulh", "div", "load", "ext_move", "ext_rq"))
    assert c["cycles"] == 10 * per + 3 * CYCLES["branch_nt"] + 7 * CYCLES["branch_t"]
    assert classify_block((0x9002).to_bytes(2, "little")) == ["csr"]       # c.ebreak
    assert classify_block((0x8082).to_bytes(2, "little")) == ["jump"]      # c.jr ra (ret)
    assert classify_block((0xc119).to_bytes(2, "little")) == ["branch"]    # c.beqz


class PoolNet(nn.Module):
    def __init__(self, ceil):
        super().__init__()
        self.c = nn.Conv2d(1, 8, 3, padding=1)
        self.r = nn.ReLU()
        self.mp = nn.MaxPool2d(3, 2, padding=1, ceil_mode=ceil)
        self.fc = nn.Linear(8 * (4 if not ceil else 4) * 4, 10)

    def forward(self, x):
        return self.fc(self.mp(self.r(self.c(x))).flatten(1))


@pytest.mark.parametrize("ceil", [False, True])
def test_maxpool_padding_and_ceil_mode(tmp_path, ceil):
    torch.manual_seed(0)
    m = PoolNet(ceil).eval()
    x = torch.randn(16, 1, 7, 7) if ceil else torch.randn(16, 1, 8, 8)
    if ceil:
        m.fc = nn.Linear(8 * 4 * 4, 10)
    g = trace(m, tuple(x.shape[1:]))
    assert torch.allclose(run_float(g, x), m(x), atol=1e-5)
    rep = export_c(m, x, x, None, tmp_path, bits=4, n_golden=16, emulate=_missing is None, count=False)
    assert rep["host"]["mismatches"] == 0
    if _missing is None:
        assert all(e["mismatches"] == 0 for e in rep["emulated"].values())


def test_layer_names_that_match_nothing_are_errors():
    from lowbit.nn import Recipe, Rule
    m = mlp()
    g = trace(m, (1, 8, 8))
    assert resolve_bits(m, g, {"1": 2, "*": 4}) == {"_1": 2, "_4": 4, "_6": 4}   # module path or fx name
    with pytest.raises(ValueError, match="layer 'nope' matches no weight layer of the model; allowed: 1, 4, 6"):
        resolve_bits(m, g, {"nope": 2})
    r = Recipe((Rule(pattern="1", spec={"weight": "int2"}), Rule(pattern="*", spec={"weight": "int4"})))
    assert resolve_bits(m, g, r) == {"_1": 2, "_4": 4, "_6": 4}
    with pytest.raises(ValueError, match="recipe rule pattern 'fc9' matches no weight layer"):
        resolve_bits(m, g, Recipe((Rule(pattern="fc9", spec={"weight": "int2"}), Rule(spec={"weight": "int8"}))))
    with pytest.raises(ValueError, match="layer '6' has weights fp32; allowed for the integer C export: int2, int4, int8"):
        resolve_bits(m, g, Recipe((Rule(pattern="1", spec={"weight": "int2"}), Rule(pattern="4", spec={"weight": "int8"}))))
    with pytest.raises(ValueError, match="has weights fp8_e4m3"):
        resolve_bits(m, g, Recipe((Rule(spec={"weight": "fp8_e4m3"}),)))


def test_export_takes_an_assignment():
    from lowbit.nn import Recipe, Rule, quantize_model
    m = mlp()
    r = Recipe((Rule(pattern="4", spec={"weight": "int2"}), Rule(types=("Linear",), spec={"weight": "int8"})))
    asg = quantize_model(m, r)
    asg.undo()
    assert resolve_bits(m, trace(m, (1, 8, 8)), asg) == {"_1": 8, "_4": 2, "_6": 8}


def test_memory_option_and_refusals(tmp_path, capsys):
    from lowbit.cli.export import main as cli_export
    assert parse_memory("flash=16M,ram=512K") == {"flash": 16 << 20, "ram": 512 << 10}
    with pytest.raises(ValueError, match="allowed: flash=SIZE,ram=SIZE"):
        parse_memory("rom=1M")
    t = time.time()
    rc = cli_export(["c", "--train-quick", "--model", "vit", "--epochs", "50", "--out", str(tmp_path / "v")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and time.time() - t < 60 and "the C export" in err and "\n" not in err
    assert not (tmp_path / "v").exists()                     # refused before training wrote anything


@needs_qemu
def test_memory_too_small_is_one_line(tmp_path):
    m = mlp()
    x = torch.randn(2, 1, 8, 8)
    export_c(m, x, x, None, tmp_path, bits=8, n_golden=2, build=False)
    with pytest.raises(RuntimeError, match="RISC-V link failed with flash=8K, ram=8K .*allowed: a --memory"):
        run_riscv(tmp_path, memory={"flash": 8 << 10, "ram": 8 << 10})


@needs_qemu
@pytest.mark.slow
def test_resnet18_links_and_runs_under_qemu(tmp_path):
    """11 M parameters: flash and RAM are sized from the linked program (the old fixed 2 MiB failed)."""
    from lowbit.cli.source import build_model
    torch.manual_seed(0)
    m = build_model("resnet18", "digits", {}).eval()
    x = torch.randn(4, 1, 8, 8)
    rep = export_c(m, x, x[:1], None, tmp_path, bits=8, n_golden=1, build=False, riscv=True)
    r = rep["riscv"]
    assert r["mismatches"] == 0 and r["returncode"] == 0
    assert r["size"]["flash_bytes"] > 11_000_000 > 2 << 20


def _table(path, names):
    """A version 2 table with distinct made-up counts (cheaper with fewer bits on Xlbmac)."""
    from lowbit.cost.measured import InstructionTable, write_tables
    ext = InstructionTable({n: {2: 100.0, 4: 200.0, 8: 400.0} for n in names}, 10.0, "t",
                           {n: {2: 150.0, 4: 300.0, 8: 600.0} for n in names}, 20.0, "rv32imc_xlbmac")
    plain = InstructionTable({n: {2: 5e3, 4: 5e3, 8: 5e3} for n in names}, 10.0, "t",
                             {n: {2: 8e3, 4: 8e3, 8: 8e3} for n in names}, 20.0, "rv32imc")
    write_tables(path, {"rv32imc": plain, "rv32imc_xlbmac": ext}, "test", "test")


def test_search_scores_what_the_c_computes(tmp_path, capsys):
    """lowbit search --objective cycles (target c) on digits, then export c of its recipe: same accuracy."""
    from lowbit.cli import main as lowbit

    def cli_search(argv):
        return lowbit(["search", *argv])
    _table(tmp_path / "t.json", ["features.1", "head"])
    rc = cli_search(["--model", "mlp", "--dataset", "digits", "--model-kwargs", "{hidden: [32]}", "--train-quick",
                     "--epochs", "2", "--formats", "int2,int4,int8", "--objective", "cycles", "--instructions-table",
                     str(tmp_path / "t.json"), "--max-acc-drop", "3", "--eval-split", "test", "--out", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert rc == 0, out
    acc = float(re.search(r"chosen acc ([\d.]+)%", out).group(1))
    sp = re.search(r"RV32IMC ([\d,]+), RV32IMC \+ Xlbmac ([\d,]+): speed-up ([\d.]+)x", out)
    assert sp and float(sp.group(3)) == pytest.approx(float(sp.group(1).replace(",", "")) /
                                                      float(sp.group(2).replace(",", "")), rel=1e-2)
    rc = lowbit(["export", "c", "--checkpoint", str(tmp_path / "s" / "model.pt"), "--model", "mlp", "--model-kwargs", '{"hidden": [32]}',
                     "--recipe", str(tmp_path / "s" / "recipe.yaml"), "--golden", "5", "--out", str(tmp_path / "c")])
    out2 = capsys.readouterr().out
    assert rc == 0, out2
    integer = float(re.search(r"integer ([\d.]+)", out2).group(1))
    assert abs(100 * integer - acc) <= 100 / 359 + 1e-6          # within one test image (exactly equal here)
    assert cli_search(["--objective", "cycles", "--train-quick", "--out", str(tmp_path / "z")]) == 2
    assert "--objective cycles needs --instructions-table" in capsys.readouterr().err
    assert cli_search(["--target", "c", "--formats", "fp8_e4m3,int4", "--train-quick", "--out", str(tmp_path / "z")]) == 2
    assert "not allowed with --target c" in capsys.readouterr().err


@needs_emu
def test_riscv_cycles_benchmark_runs():
    """benchmarks/riscv_cycles.py (the source of docs/riscv-extension.md's figures) prints its table."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "riscv_cycles.py"), "--models", "mlp",
                           "--bits", "2,8"], capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [l for l in proc.stdout.splitlines() if l.startswith("| features.1 |")]
    assert len(rows) == 2 and "whole inference, cycles: int2:" in proc.stdout
