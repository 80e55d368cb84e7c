"""Deployment exports, each checked against a Python golden model (a library: Python objects in, files out).

* ``c`` (:mod:`lowbit.export.c_export`): ``export_c(model, calib_x, eval_x, eval_y, out_dir, bits, ...)``,
  integer-only C99 for host and RV32IMC, checked bit for bit; ``measure_instructions`` (RV32IMC counts).
* ``onnx`` (:mod:`lowbit.export.onnx`): ``export_onnx`` / ``compare_onnx``, QDQ graphs run in onnxruntime.
* ``packed`` (:mod:`lowbit.export.packed`): ``save_packed`` / ``load_packed``, bit-packed safetensors.

The commands ``lowbit export c|onnx|packed``: :mod:`lowbit.cli.export`.
"""
from __future__ import annotations

from .c_export import export_c
from .c_graph import UnsupportedLayerError

__all__ = ["UnsupportedLayerError", "export_c"]
