"""Driver for tests/test_cli_errors.py: runs ``lowbit`` command lines in one process, each with
its own stderr (Python's and file descriptor 2, so C++ and warnings output count too), every
warning shown ("always"), and prints one JSON row per case: argv, exit code, stderr lines.

    python tests/cli_cases_driver.py CASES.json   (a list of argv lists)
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import warnings


def run_case(argv: list[str]) -> dict:
    from lowbit.cli import main
    warnings.simplefilter("always")
    err = io.StringIO()
    with tempfile.TemporaryFile(mode="w+") as fd2, open(os.devnull, "w") as null:
        saved = os.dup(2)
        os.dup2(fd2.fileno(), 2)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(null):
                try:
                    rc = main(argv)
                except SystemExit as exc:
                    rc = exc.code
                except BaseException as exc:  # noqa: BLE001 - a traceback is what we look for
                    import traceback
                    rc, _ = "exception", traceback.print_exc(file=err)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        fd2.seek(0)
        text = err.getvalue() + fd2.read()
    return {"argv": argv, "rc": rc, "stderr": text.strip().splitlines()}


if __name__ == "__main__":
    cases = json.load(open(sys.argv[1]))
    for argv in cases:
        print(json.dumps(run_case(argv)), flush=True)
