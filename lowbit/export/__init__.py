"""Deployment exports, each checked against a Python golden model (a library: Python objects in, files out).

* ``c`` (:mod:`lowbit.export.c`): ``export_c(model, calib_x, eval_x, eval_y, out_dir, bits, ...)``,
  integer-only C99 for host, RV32IMC and RV32IMC + Xlbmac, checked bit for bit; measured
  instruction/cycle tables in :mod:`lowbit.export.c.measure`.
* ``onnx`` (:mod:`lowbit.export.onnx`): ``export_onnx`` / ``compare_onnx``, QDQ graphs run in onnxruntime.
* ``packed`` (:mod:`lowbit.export.packed`): ``save_packed`` / ``load_packed``, bit-packed safetensors.

The commands ``lowbit export c|onnx|packed``: :mod:`lowbit.cli.export`.
"""
from __future__ import annotations

from lowbit.registry import Registry

from .c import UnsupportedLayerError, export_c

# target -> its library module (imported on use: onnx needs the onnx package); the command of target T
# is lowbit/cli/export_T.py
EXPORTERS = Registry("export target", ordered=True)
EXPORTERS.add("onnx", "lowbit.export.onnx")
EXPORTERS.add("packed", "lowbit.export.packed")
EXPORTERS.add("c", "lowbit.export.c")

__all__ = ["EXPORTERS", "UnsupportedLayerError", "export_c"]
