"""``lowbit export onnx|packed|c ...``: deployment exports (one sub-command module each).

    lowbit export onnx   ...   ONNX QDQ graph, checked in onnxruntime            (lowbit/cli/export_onnx.py)
    lowbit export packed ...   bit-packed safetensors checkpoint                   (lowbit/cli/export_packed.py)
    lowbit export c      ...   integer-only C99 (host, RV32IMC), bit-exact check   (lowbit/cli/export_c.py)
"""
from __future__ import annotations

import importlib
import sys



def add_parser(sub):
    from lowbit.export import EXPORTERS
    p = sub.add_parser("export", help="integer-only C / RISC-V, ONNX QDQ, packed checkpoints",
                       description="Deployment exports, each checked against the Python model.")
    p.set_defaults(parser=p)
    targets = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name in EXPORTERS.names():     # a new exporter: register it there, add lowbit/cli/export_NAME.py
        importlib.import_module(f"lowbit.cli.export_{name}").add_parser(targets)
    return p


def main(argv=None) -> int:
    from lowbit.cli import main as lowbit
    return lowbit(["export", *(sys.argv[1:] if argv is None else argv)])
