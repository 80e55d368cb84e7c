"""``lowbit export c``: float model + calibration data -> integer-only C99 (host and RV32IMC), checked
bit for bit against the golden Python integer reference.

    lowbit export c --train-quick --model cnn --dataset digits --weights-bits 4 --out /tmp/c_cnn
    lowbit export c --checkpoint runs/xyz --model mlp --weights-bits fc1=2,8 --multiplier 7 --out DIR --riscv

The command line is lowbit/cli/export_c.py; this module is the library (export_c, measure_instructions).

Output directory: model.h (versioned header: format version, layer table, packed weights, biases,
multipliers/shifts), model.c (kernels, ``int model_infer(const int8_t *in, int8_t *out)``), golden.h
(golden inputs and expected outputs), main.c (runs them, prints the mismatch count, exit code != 0 on
mismatch), manifest.json (scales, per-layer bits, accuracies, C/RISC-V results).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .c_build import host_cc, riscv_available, run_host, run_riscv
from .c_codegen import FORMAT_VERSION, write_sources
from .c_graph import trace
from .c_integer import build_qmodel, pack_weights
from .c_reference import run_float, run_integer


def export_c(model: torch.nn.Module, calib_x: torch.Tensor, eval_x: torch.Tensor, eval_y: torch.Tensor | None,
             out_dir, bits=8, width: int = 31, n_golden: int = 100, build: bool = True, riscv: bool = False) -> dict:
    """Export ``model`` (inputs already normalised) to C in ``out_dir``; returns the report (manifest).

    Accuracies (when ``eval_y`` is given) are for fp32, the fake-quantized graph and the integer model.
    ``build`` compiles and runs the golden diff with the host cc; ``riscv`` also runs it under QEMU.
    """
    model = model.eval()
    graph = trace(model, tuple(eval_x.shape[1:]))
    qm = build_qmodel(model, graph, calib_x, bits, width)
    xq = qm.quantize_input(eval_x)
    yq = run_integer(qm, xq)
    layers = [ql for ql in qm.layers if ql.kind != "flatten"]
    report = {
        "format_version": FORMAT_VERSION, "multiplier_bits": width, "input_shape": list(eval_x.shape[1:]),
        "input_scale": qm.values[qm.input].scale, "output_scale": qm.values[qm.output].scale,
        "output_signed": qm.values[qm.output].signed, "golden_inputs": min(n_golden, len(xq)),
        "weight_bytes": int(sum(pack_weights(ql.codes, ql.bits).nbytes for ql in layers if ql.kind == "conv")),
        "layers": [{"name": ql.name, "kind": ql.kind, "bits": ql.bits if ql.kind == "conv" else None,
                    "w_scale": ql.w_scale or None, "q": ql.q, "n": ql.n, "clamp": [ql.lo, ql.hi],
                    "out_scale": qm.values[ql.output].scale, "out_signed": qm.values[ql.output].signed,
                    "rq32": ql.kind in ("conv", "add") and ql.rq32()}
                   for ql in layers],
    }
    if eval_y is not None:
        with torch.no_grad():
            fp32 = model(eval_x).argmax(1)
            fake = run_float(graph, eval_x, qm).argmax(1)
        y = eval_y.numpy()
        report["accuracy"] = {"fp32": float((fp32.numpy() == y).mean()),
                              "fake_quant": float((fake.numpy() == y).mean()),
                              "integer": float((yq.argmax(1) == y).mean()), "samples": len(y)}
    g = slice(0, report["golden_inputs"])
    files = write_sources(qm, out_dir, xq[g].reshape(len(xq[g]), -1), yq[g], report)
    if build and host_cc():
        r = run_host(out_dir)
        report["host"] = {"mismatches": r.mismatches, "returncode": r.returncode}
    if riscv:
        missing = riscv_available()
        if missing:
            report["riscv"] = {"skipped": missing}
        else:
            r = run_riscv(out_dir)
            report["riscv"] = {"mismatches": r.mismatches, "returncode": r.returncode, "size": r.size,
                               "instret_per_inference": r.total_instret, "layer_instret": r.layer_instret}
    (Path(out_dir) / "manifest.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    report["files"] = [str(f) for f in files]
    return report


def measure_instructions(model: torch.nn.Module, calib_x: torch.Tensor, eval_x: torch.Tensor, out_dir,
                         bits=(2, 4, 8), width: int = 31):
    """Measured RV32IMC instructions per weight layer and weight width -> :class:`InstructionTable`.

    Exports ``model`` once per width in ``bits`` (uniform weights; depthwise convs keep 8 bits), runs
    one golden inference under QEMU (``rdinstret`` around each layer) and keys the counts by module
    path (as lowbit.cost names layers). Non-weight operations go to ``fixed`` (their mean).
    """
    from lowbit.cost.measured import InstructionTable

    graph = trace(model.eval(), tuple(eval_x.shape[1:]))
    modules = {op.name: op.extra.get("module", op.name) for op in graph.ops}
    layers, fixed = {}, []
    for b in bits:
        rep = export_c(model, calib_x, eval_x[:1], None, Path(out_dir) / f"w{b}", b, width, 1, riscv=True)
        r = rep.get("riscv", {})
        if "layer_instret" not in r or r.get("mismatches", 1) != 0:
            raise RuntimeError(f"RV32IMC run at {b}-bit weights failed or was skipped: {r.get('skipped', r)}")
        kinds = {l["name"]: (l["kind"], l["bits"]) for l in rep["layers"]}
        rest = 0
        for name, count in r["layer_instret"].items():
            kind, lbits = kinds.get(name, ("other", None))
            if kind == "conv" and lbits is not None:
                layers.setdefault(modules.get(name, name), {})[int(lbits)] = float(count)
            else:
                rest += count
        fixed.append(rest)
    return InstructionTable(layers, sum(fixed) / len(fixed), f"RV32IMC under QEMU, {width}-bit multipliers")
