"""The C export's library API: float model + calibration data -> integer-only C99, checked bit for bit.

:func:`export_c` writes two programs from one :class:`~lowbit.export.c.integer.QModel`:

* ``out_dir/``: the plain program (host cc and RV32IMC): model.h (versioned header: format version,
  layer table, packed weights, biases, multipliers/shifts), model.c (kernels,
  ``int model_infer(const int8_t *in, int8_t *out)``), golden.h (golden inputs and expected outputs),
  main.c (runs them, prints the mismatch count, exit code != 0 on mismatch), manifest.json;
* ``out_dir/ext/``: the RV32IMC + Xlbmac program (same model.c and main.c; model.h with the
  extension's weight packing, docs/riscv-extension.md).

The expected outputs come from the Python integer reference (:func:`~lowbit.export.c.reference.run_integer`);
every build (host, QEMU, unicorn) is compared against them.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .bits import resolve_bits
from .build import host_cc, riscv_available, run_emulated, run_host, run_riscv
from .codegen import FORMAT_VERSION, layer_words, write_sources
from .graph import trace
from .integer import build_qmodel
from .reference import run_float, run_integer

PROGRAMS = {"rv32imc": ".", "rv32imc_xlbmac": "ext"}   # program name -> folder under out_dir


def integer_model(model: torch.nn.Module, calib_x: torch.Tensor, input_shape, bits=8, width: int = 31):
    """(graph, QModel) of ``model``: traced, calibrated on ``calib_x``, weights at ``bits`` (an int, a
    {layer: bits} map, a lowbit.nn Recipe or Assignment; see lowbit.export.c.bits)."""
    graph = trace(model.eval(), tuple(input_shape))
    return graph, build_qmodel(model, graph, calib_x, resolve_bits(model, graph, bits), width)


def integer_accuracy(qm, x: torch.Tensor, y) -> float:
    """Top-1 accuracy of the integer model (exactly what the C computes) on normalised inputs ``x``."""
    yq = run_integer(qm, qm.quantize_input(x))
    return float((yq.argmax(1) == (y.numpy() if hasattr(y, "numpy") else y)).mean())


def _report(qm, eval_x, width, n_golden, ext: bool) -> dict:
    layers = [ql for ql in qm.layers if ql.kind != "flatten"]
    return {
        "format_version": FORMAT_VERSION, "multiplier_bits": width, "input_shape": list(eval_x.shape[1:]),
        "input_scale": qm.values[qm.input].scale, "output_scale": qm.values[qm.output].scale,
        "output_signed": qm.values[qm.output].signed, "golden_inputs": min(n_golden, len(eval_x)),
        "weight_bytes": int(sum(layer_words(ql, False).nbytes for ql in layers if ql.kind == "conv")),
        "layers": [{"name": ql.name, "kind": ql.kind, "bits": ql.bits if ql.kind == "conv" else None,
                    "w_scale": ql.w_scale or None, "q": ql.q, "n": ql.n, "clamp": [ql.lo, ql.hi],
                    "out_scale": qm.values[ql.output].scale, "out_signed": qm.values[ql.output].signed,
                    "rq32": ql.kind in ("conv", "add") and ql.rq32()}
                   for ql in layers],
        "programs": {name: str(sub) for name, sub in PROGRAMS.items() if ext or sub == "."},
    }


def export_c(model: torch.nn.Module, calib_x: torch.Tensor, eval_x: torch.Tensor, eval_y: torch.Tensor | None,
             out_dir, bits=8, width: int = 31, n_golden: int = 100, build: bool = True, riscv: bool = False,
             emulate: bool = False, memory: dict | None = None, count: bool = True) -> dict:
    """Export ``model`` (inputs already normalised) to C in ``out_dir``; returns the report (manifest).

    ``bits``: see :func:`integer_model`. Accuracies (when ``eval_y`` is given) are for fp32, the
    fake-quantized graph and the integer model. ``build`` compiles and runs the golden diff with the
    host cc; ``riscv`` also runs the plain program under QEMU; ``emulate`` runs both programs (plain
    and Xlbmac) under unicorn and, with ``count``, reports per-layer instructions and cycles.
    ``memory``: {"flash", "ram"} bytes for the RISC-V link (default: sized from the model).
    """
    model = model.eval()
    graph, qm = integer_model(model, calib_x, eval_x.shape[1:], bits, width)
    xq = qm.quantize_input(eval_x)
    yq = run_integer(qm, xq)
    report = _report(qm, eval_x, width, n_golden, ext=True)
    if eval_y is not None:
        with torch.no_grad():
            fp32 = model(eval_x).argmax(1)
            fake = run_float(graph, eval_x, qm).argmax(1)
        y = eval_y.numpy()
        report["accuracy"] = {"fp32": float((fp32.numpy() == y).mean()),
                              "fake_quant": float((fake.numpy() == y).mean()),
                              "integer": float((yq.argmax(1) == y).mean()), "samples": len(y)}
    g = slice(0, report["golden_inputs"])
    gx, gy = xq[g].reshape(len(xq[g]), -1), yq[g]
    files = write_sources(qm, out_dir, gx, gy, report)
    files += write_sources(qm, Path(out_dir) / "ext", gx, gy, report, ext=True)
    if build and host_cc():
        r = run_host(out_dir)
        report["host"] = {"mismatches": r.mismatches, "returncode": r.returncode}
    if riscv:
        report["riscv"] = _qemu(out_dir, memory)
    if emulate:
        report["emulated"] = _emulate(out_dir, memory, count)
        if "rv32imc" in report["emulated"] and "rv32imc_xlbmac" in report["emulated"]:
            p, x = (report["emulated"][k].get("cycles") for k in ("rv32imc", "rv32imc_xlbmac"))
            if p and x:
                report["speedup_cycles"] = p / x
    (Path(out_dir) / "manifest.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    report["files"] = [str(f) for f in files]
    return report


def _qemu(out_dir, memory) -> dict:
    missing = riscv_available()
    if missing:
        return {"skipped": missing}
    r = run_riscv(out_dir, memory=memory)
    return {"mismatches": r.mismatches, "returncode": r.returncode, "size": r.size,
            "instret_per_inference": r.total_instret, "layer_instret": r.layer_instret}


def _emulate(out_dir, memory, count: bool) -> dict:
    from .emulator import unicorn_available
    missing = riscv_available(qemu=False) or unicorn_available()
    if missing:
        return {"skipped": missing}
    out = {}
    for name, sub in PROGRAMS.items():
        r = run_emulated(Path(out_dir) / sub, count=count, memory=memory)
        e = {"mismatches": r.mismatches, "returncode": r.returncode, "size": r.size,
             "ext_instructions_executed": r.ext_executed}
        if r.layer_counts:
            e["layers"] = {k: {"instructions": v["instructions"], "cycles": v["cycles"]}
                           for k, v in r.layer_counts.items()}
            e["instructions"] = sum(v["instructions"] for v in r.layer_counts.values())
            e["cycles"] = sum(v["cycles"] for v in r.layer_counts.values())
        out[name] = e
    return out
