"""Deployment exports, each checked against a Python golden model.

* ``c`` (:mod:`lowbit.export.c`): integer-only C99 for host, RV32IMC and RV32IMC + Xlbmac.
* ``onnx`` / ``packed``: :mod:`lowbit.export.onnx` / :mod:`lowbit.export.packed` (separate modules).

``cli_export(argv)`` dispatches ``lowbit export c|onnx|packed ...``.
"""
from __future__ import annotations

import importlib
import sys

from lowbit.registry import Registry

from .c import UnsupportedLayerError, cli_c, export_c

# target -> (module, command function); modules are imported on use (onnx needs the onnx package)
EXPORTERS = Registry("export target", ordered=True)
EXPORTERS.add("c", ("lowbit.export.c.cli", "cli_c"))
EXPORTERS.add("onnx", ("lowbit.export.onnx", "cli_onnx"))
EXPORTERS.add("packed", ("lowbit.export.packed", "cli_packed"))


def cli_export(argv=None) -> int:
    """``lowbit export TARGET ...`` with TARGET in c, onnx, packed (onnx/packed when installed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in EXPORTERS:
        got = repr(argv[0]) if argv else "nothing"
        print(f"lowbit export: target {got} is not allowed; allowed: {EXPORTERS.allowed()}", file=sys.stderr)
        return 2
    mod, fn = EXPORTERS.get(argv[0])
    try:
        run = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as exc:
        print(f"lowbit export {argv[0]}: not available ({exc})", file=sys.stderr)
        return 2
    return run(argv[1:])


__all__ = ["EXPORTERS", "UnsupportedLayerError", "cli_c", "cli_export", "export_c"]
