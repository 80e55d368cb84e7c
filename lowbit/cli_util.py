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


def add_model_source(p: argparse.ArgumentParser) -> None:
    """--checkpoint | --train-quick, --model, --model-kwargs, --dataset: where a command's model comes from."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="trained weights: lowbit.train's best.pt, a state dict, .safetensors")
    src.add_argument("--train-quick", action="store_true", help="train the model on the dataset first")
    p.add_argument("--model", default="cnn", help="zoo model name (default cnn)")
    p.add_argument("--model-kwargs", default=None, help="JSON object of model options")
    p.add_argument("--dataset", default="digits", help="dataset name (default digits)")


def tensor_format(flag: str, name: str, also: str = "") -> str:
    """Canonical name of a format that can hold tensors (not the E8M0 scale format); one-line errors.
    ``also`` names further allowed values for the message (e.g. ", or none")."""
    from lowbit.formats.registry import get_format

    try:
        f = get_format(name)
    except ValueError as exc:
        raise ValueError(f"{flag} {name!r}: {exc}") from None
    if not f.holds_tensors:
        raise ValueError(f"{flag} {name!r}: a scale format cannot hold tensors; allowed: int/uint, minifloat, "
                         f"codebook, MX or NVFP4 formats{also}")
    return f.name
