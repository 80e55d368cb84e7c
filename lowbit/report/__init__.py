"""Reports from a results directory: plots (PNG), comparison tables, one self-contained HTML page.

    build_report("runs/default", "runs/default/report")   # -> path of index.html
    print(terminal_summary(load_tables("runs/default")["runs"]))

``cli_report(argv)`` is ``lowbit report``; ``python -m lowbit.report`` does the same.
"""
from lowbit.report.build import build_report, cli_report
from lowbit.report.tables import comparison_table, precision_table, terminal_summary

__all__ = ["build_report", "cli_report", "comparison_table", "precision_table",
           "terminal_summary"]
