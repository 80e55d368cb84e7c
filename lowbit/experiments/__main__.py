"""``python -m lowbit.experiments [CONFIG] [--set k=v] [-j N]``: same as ``lowbit run``."""
import sys

from lowbit.experiments.cli import cli_run

if __name__ == "__main__":
    sys.exit(cli_run())
