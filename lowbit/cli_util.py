"""Shared pieces of the subcommand CLIs."""
from __future__ import annotations

import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors become one-line ValueErrors (no usage dump, no SystemExit): each command
    catches them, prints ``lowbit CMD: error: ...`` on stderr and returns exit code 2."""

    def error(self, message):
        raise ValueError(message)


def run_cli(prog: str, parser: argparse.ArgumentParser, run, argv, errors=(ValueError, OSError)) -> int:
    """Parse ``argv`` and call ``run(args)``; a bad argument or one of ``errors`` raised by ``run``
    (bad values, missing files) prints one line ``PROG: error: ...`` on stderr and returns 2."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except ValueError as exc:
        return _fail(prog, exc)
    try:
        return run(args)
    except errors as exc:
        return _fail(prog, exc)


def _fail(prog: str, exc: Exception) -> int:
    print(f"{prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
    return 2
