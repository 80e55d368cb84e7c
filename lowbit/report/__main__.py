"""``python -m lowbit.report RESULTS_DIR [--out DIR]``: same as ``lowbit report``."""
import sys

from lowbit.report.build import cli_report

if __name__ == "__main__":
    sys.exit(cli_report())
