"""Deployment exports, each checked against a Python golden model (a library: Python objects in, files out).

* ``c`` (:mod:`lowbit.export.c_export`): ``export_c(model, calib_x, eval_x, eval_y, out_dir, bits, ...)``,
  integer-only C99 for host and RV32IMC, checked bit for bit; ``measure_instructions`` (RV32IMC counts).
* ``onnx`` (:mod:`lowbit.export.onnx`): ``export_onnx`` / ``compare_onnx``, QDQ graphs run in onnxruntime.
* ``packed`` (:mod:`lowbit.export.packed`): ``save_packed`` / ``load_packed``, bit-packed safetensors.

The commands ``lowbit export c|onnx|packed``: :mod:`lowbit.cli.export`.
"""
from __future__ import annotations

from lowbit.registry import Registry

from .c_export import export_c
from .c_graph import UnsupportedLayerError

# target -> its library module (imported on use: onnx needs the onnx package); the command of target T
# is lowbit/cli/export_T.py
EXPORTERS = Registry("export target", ordered=True)
EXPORTERS.add("onnx", "lowbit.export.onnx")
EXPORTERS.add("packed", "lowbit.export.packed")
EXPORTERS.add("c", "lowbit.export.c_export")

__all__ = ["EXPORTERS", "UnsupportedLayerError", "export_c"]
