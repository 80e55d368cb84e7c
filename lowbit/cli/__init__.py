"""The ``lowbit`` command line: one module per command, one parser convention, one model/data source.

    lowbit formats [NAME ...] [--values] [--kind KIND] [--json]   the number formats      (cli/formats.py)
    lowbit run [CONFIG.yaml] [--set key=value ...] [-j N]          an experiment sweep     (cli/run.py)
    lowbit report RESULTS_DIR [--out DIR]                          plots + HTML report     (cli/report.py)
    lowbit ptq | sensitivity | search | cost ...                   PTQ and analysis        (cli/ptq.py, ...)
    lowbit export onnx | packed | c ...                            deployment exports      (cli/export*.py)
    python -m torch.distributed.run ... -m lowbit.cli.ddp ...      a sweep, data-parallel  (cli/ddp.py)

Every command is an argparse sub-parser (``add_parser(sub)`` in its module, registered in
:data:`COMMANDS`) whose ``run(args)`` turns the flags into Python objects once and calls the libraries
(lowbit.ptq, lowbit.search, lowbit.cost, lowbit.export, lowbit.experiments, lowbit.report). The model
and data flags mean the same everywhere (:mod:`lowbit.cli.source`). Bad input gives one line on
stderr (``lowbit CMD: error: ...``: which value, what is allowed) and exit code 2; ``--help`` works on
every command and sub-command; ``lowbit --version`` prints the version.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from lowbit.cli.common import Parser, UsageError, fail

# command modules, in the order ``lowbit --help`` lists them (a new command: a module + one entry)
COMMANDS = ("formats", "run", "report", "ptq", "sensitivity", "search", "cost", "export")
ERRORS = (ValueError, OSError, ImportError)   # raised by a command's run(): one line, exit 2


def build_parser() -> argparse.ArgumentParser:
    from lowbit import __version__

    p = Parser(prog="lowbit", description="lowbit: a precision laboratory for PyTorch.")
    p.add_argument("--version", action="version", version=f"lowbit {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"lowbit.cli.{name}").add_parser(sub)
    return p


def _prog(args) -> str:
    parser = getattr(args, "parser", None)
    return parser.prog if parser is not None else "lowbit"


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """lowbit's own warnings as one line, ``lowbit: ConfigWarning: ...`` (no path, no source line)."""
    if category.__module__.startswith("lowbit"):
        return f"lowbit: {category.__name__}: {message}\n"
    return _default_format(message, category, filename, lineno, line)


_default_format = warnings.formatwarning


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lowbit``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.formatwarning = _one_line_warning
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            raise UsageError(f"unrecognized arguments: {' '.join(extra)}", _prog(args))
    except SystemExit as exc:   # --help, --version
        return int(exc.code or 0)
    except UsageError as exc:
        return fail(exc.prog or "lowbit", exc)
    if getattr(args, "run", None) is None:
        (getattr(args, "parser", None) or parser).print_help()
        return 0 if args.cmd is None else 2
    try:
        from lowbit.ops.backend import backend
        with backend(getattr(args, "backend", None)):   # --backend: one scoped choice for the whole command
            return int(args.run(args) or 0)
    except UsageError as exc:
        return fail(exc.prog or _prog(args), exc)
    except getattr(args, "errors", ERRORS) as exc:
        return fail(_prog(args), exc)


if __name__ == "__main__":
    sys.exit(main())
