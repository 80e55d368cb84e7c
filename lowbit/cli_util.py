"""Shared pieces of the subcommand CLIs."""
from __future__ import annotations

import argparse


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors become one-line ValueErrors (no usage dump, no SystemExit): each command
    catches them, prints ``lowbit CMD: error: ...`` on stderr and returns exit code 2."""

    def error(self, message):
        raise ValueError(message)
