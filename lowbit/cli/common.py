"""Pieces every command shares: the parser class, one-line errors, format flags, output checks.

Convention: ``lowbit COMMAND [SUBCOMMAND] --flag ...`` with argparse subparsers (:mod:`lowbit.cli`).
A bad flag or value raises :class:`UsageError` (or a ValueError / OSError / ImportError from the
libraries); :func:`lowbit.cli.main` prints it as one line ``lowbit CMD: error: ...`` on stderr and
returns 2. ``--help`` works on every command and sub-command (exit 0).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

NONE_WORDS = ("none", "fp32")


class UsageError(ValueError):
    """A bad command line; ``prog`` is the command that rejected it (e.g. "lowbit ptq")."""

    def __init__(self, message: str, prog: str | None = None):
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """argparse whose errors become :class:`UsageError` (no usage dump, no SystemExit)."""

    def error(self, message):
        raise UsageError(message, self.prog)


def fail(prog: str, exc: BaseException) -> int:
    """Print ``PROG: error: MESSAGE`` on one line to stderr; return 2."""
    print(f"{prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
    return 2


def positive(flag: str, value, lo: int = 1):
    """``value`` if it is an integer >= ``lo``; else a one-line UsageError naming ``flag``."""
    if value is not None and value < lo:
        raise UsageError(f"{flag} {value} is not allowed; allowed: an integer >= {lo}")
    return value


def tensor_format(flag: str, name: str, also: str = "") -> str:
    """Canonical name of a format that can hold tensors (not the E8M0 scale format); one-line errors.
    ``also`` names further allowed values for the message (e.g. ", or none")."""
    from lowbit.formats.registry import get_format

    try:
        f = get_format(name)
    except ValueError as exc:
        raise UsageError(f"{flag} {name!r}: {exc}") from None
    if not f.holds_tensors:
        raise UsageError(f"{flag} {name!r}: a scale format cannot hold tensors; allowed: int/uint, minifloat, "
                         f"codebook, MX or NVFP4 formats{also}")
    return f.name


def optional_format(flag: str, name: str | None) -> str | None:
    """None for none/fp32 (keep float), else :func:`tensor_format`."""
    if name is None or name.strip().lower() in NONE_WORDS:
        return None
    return tensor_format(flag, name.strip(), also=", or none")


def format_list(flag: str, text: str) -> list:
    """A comma-separated list of formats (none/fp32 = None); at least one."""
    out = [optional_format(flag, item) for item in (t.strip() for t in text.split(",")) if item]
    if not out:
        raise UsageError(f"{flag} {text!r} names no format; allowed: a comma-separated list such as int8,int4")
    return out


def check_out(path, *, kind: str = "folder", flag: str = "--out") -> Path:
    """``path`` if a command can write its output there: a ``kind`` ("folder" or "file") that is not
    the other kind, does not lie under a file, and sits in a writable folder. One-line UsageError."""
    p = Path(path)
    if p.exists() and kind == "folder" and not p.is_dir():
        raise UsageError(f"{flag} {str(path)!r} is a file; allowed: a folder (new or existing)")
    if p.exists() and kind == "file" and p.is_dir():
        raise UsageError(f"{flag} {str(path)!r} is a folder; allowed: a file path")
    probe = p if (kind == "folder" and p.is_dir()) else p.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UsageError(f"{flag} {str(path)!r} lies under the file {str(probe)!r}; allowed: a path in a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {str(path)!r}: the folder {str(probe)!r} is not writable")
    return p


def add_command(sub, name: str, run, help: str, description: str | None = None, errors=None):
    """A sub-command parser ``name`` whose ``run(args)`` executes it; ``errors``: exception types that
    become one-line errors (default :data:`lowbit.cli.ERRORS`)."""
    p = sub.add_parser(name, help=help, description=description or help)
    p.set_defaults(run=run, parser=p, **({"errors": errors} if errors else {}))
    return p
