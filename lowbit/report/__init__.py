"""Reports from a results directory: plots (PNG), comparison tables, one self-contained HTML page.

    build_report("runs/default", "runs/default/report")   # -> path of index.html
    print(terminal_summary(load_tables("runs/default")["runs"]))

Figures: :mod:`lowbit.report.plots` (sweeps), :mod:`lowbit.report.plots_search` (search, sensitivity,
PTQ); sections for ptq / search folders: :mod:`lowbit.report.sections`; the command: :mod:`lowbit.cli.report`.
"""
from lowbit.report.build import build_report
from lowbit.report.tables import comparison_table, precision_table, terminal_summary

__all__ = ["build_report", "comparison_table", "precision_table",
           "terminal_summary"]
