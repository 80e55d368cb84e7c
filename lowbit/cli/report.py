"""``lowbit report RESULTS_DIR [--out DIR] [--include DIR ...]``: plots, tables and one HTML page.

RESULTS_DIR: a sweep (results/runs.csv), or a ``lowbit ptq`` (ptq_results.csv) / ``lowbit search``
(results.csv + recipe.yaml) / ``lowbit sensitivity`` output folder.
"""
from __future__ import annotations

import sys
from pathlib import Path

from lowbit.cli.common import UsageError, add_command, check_out


def add_parser(sub):
    p = add_command(sub, "report", run, "plots and the HTML report of a sweep, ptq or search folder",
                    "Plots, tables and an HTML page from a sweep's results (the sweep's out_dir or its "
                    "results/ folder), or from a lowbit ptq / search / sensitivity output folder.")
    p.add_argument("results_dir", nargs="?", default="runs/default",
                   help="sweep, ptq or search output directory (default runs/default)")
    p.add_argument("--out", help="report directory (default RESULTS_DIR/report)")
    p.add_argument("--title", help="page title")
    p.add_argument("--include", action="append", default=[], metavar="DIR",
                   help="a ptq / search output folder to add as a section (repeatable); folders of "
                        "that kind directly inside RESULTS_DIR are added without it")
    return p


def run(args) -> int:
    from lowbit.report import build_report
    from lowbit.report.sections import build_folder_report, detect, find_sections

    root = Path(args.results_dir)
    for inc in args.include:
        if detect(inc) is None:
            raise UsageError(f"--include {inc!r} is not a ptq or search output folder (expected "
                             f"ptq_results.csv, or results.csv + recipe.yaml, or sensitivity.csv there)")
    base = root.parent if root.name == "results" else root
    out = check_out(args.out if args.out else base / "report")
    if not (root / "results" / "runs.csv").exists() and not (root / "runs.csv").exists():
        if detect(root) is None:
            raise UsageError(f"no results in {str(root)!r} (expected results/runs.csv, ptq_results.csv, "
                             f"results.csv + recipe.yaml, or sensitivity.csv there)")
        print(f"report: {build_folder_report([root, *args.include], out, args.title)}")
        return 0
    include = [d for d in find_sections(base) if d not in map(Path, args.include)] + \
        [Path(d) for d in args.include]
    print(f"report: {build_report(root, out, args.title, include)}")
    return 0


def main(argv=None) -> int:
    from lowbit.cli import main as lowbit
    return lowbit(["report", *(sys.argv[1:] if argv is None else argv)])
