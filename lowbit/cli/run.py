"""``lowbit run``: run a sweep from a YAML file (or the built-in default), then report.

Exit codes: 0 every run finished (completed, early_stopped or diverged); 1 some run failed;
2 invalid config or arguments (one line on stderr, no traceback); 130 interrupted by SIGINT, 143 by
SIGTERM (re-run the same command to resume). Either signal stops the run processes at once (they
leave no result; finished runs and checkpoints stay), and with them the forkserver.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import time

from lowbit.cli.common import UsageError, add_command


def add_parser(sub):
    p = add_command(sub, "run", run, "run an experiment sweep (default: the built-in one)",
                    "Run a precision sweep: every combination of the config's lists, each run in its own "
                    "process; finished runs are skipped on a re-run.")
    p.add_argument("config", nargs="?", help="sweep YAML (default: the built-in default sweep, "
                   "see configs/default.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key; VALUE is YAML, dotted keys reach into mappings "
                   "(--set epochs=2 --set model_kwargs.cnn.channels=[8,16])")
    p.add_argument("-j", "--jobs", type=int, default=None, help="runs in parallel, each with "
                   "the config's threads torch threads (default: cores // threads on CPU, 1 on GPU)")
    p.add_argument("--executor", choices=("local", "ray"), default="local", help="where runs "
                   "execute: local child processes (default) or Ray tasks (pip install ray)")
    p.add_argument("--address", default=None, help="with --executor ray: the Ray cluster to "
                   "join (e.g. auto, ray://head:10001; default: start Ray in this process)")
    p.add_argument("--log", choices=("tensorboard", "mlflow", "wandb"), default=None,
                   help="mirror each finished run's config and epoch metrics into a tracker "
                   "under the output directory (needs that package; wandb runs offline)")
    p.add_argument("--out", help="output directory (overrides out_dir; default runs/<name>)")
    p.add_argument("--resume", metavar="FILE", default=None, help="restart the run whose folder holds "
                   "FILE (a checkpoint_epoch_N.pt kept with the key checkpoint_every) from that epoch, "
                   "then run the sweep")
    p.add_argument("--dry-run", action="store_true", help="list the runs (every setting that "
                   "differs between them) and exit, writing nothing")
    p.add_argument("--no-report", action="store_true", help="skip plots and HTML at the end")
    p.add_argument("-q", "--quiet", action="store_true", help="print only finished runs")
    return p


def run(args) -> int:
    from lowbit.cli.common import check_out
    from lowbit.experiments import load_sweep, run_sweep

    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"-j/--jobs: expected an int >= 1, got {args.jobs}")
    if args.out:
        check_out(args.out)
    cfg = load_sweep(args.config, list(args.overrides) + ([f"out_dir={args.out}"] if args.out else []))
    if args.dry_run:  # lists the runs; writes nothing (no sweep.yaml, no run folders)
        from lowbit.experiments.grid import describe, expand
        print("\n".join(describe(expand(cfg))))
        return 0
    if args.resume:
        from lowbit.experiments.rewind import rewind_run
        rewind_run(cfg, args.resume)
    t0 = time.perf_counter()
    on_result = None
    if args.log:
        from lowbit.experiments.tracking import make_logger
        on_result = make_logger(args.log, cfg.results_dir)
    try:
        with _sigterm_interrupts() as got:
            runs = run_sweep(cfg, jobs=args.jobs, quiet=args.quiet, executor=args.executor,
                             address=args.address, on_result=on_result)
    except KeyboardInterrupt:
        print("\ninterrupted: finished runs are saved; run the same command again to resume",
              file=sys.stderr)
        return 143 if got else 130
    finally:
        if on_result is not None:  # the tracker's queue: flushed, failures reported
            on_result.close()
    from lowbit.report import build_report, terminal_summary
    out = cfg.results_dir
    print(terminal_summary(runs))
    if not args.no_report:
        print(f"report: {build_report(out, out / 'report')}")
    print(f"results: {out / 'results'} ({len(runs)} runs, {time.perf_counter() - t0:.1f}s)")
    failed = int((runs["status"] == "failed").sum()) if len(runs) else 0
    if failed:
        print(f"{failed} run(s) failed; see runs/<id>/log.txt", file=sys.stderr)
    return 1 if failed else 0


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM raises KeyboardInterrupt (as SIGINT does), so the executor stops its children instead
    of this process vanishing and leaving them to train on. Yields a list that holds the signal once
    one came."""
    got: list = []

    def handler(signum, frame):
        got.append(signum)
        raise KeyboardInterrupt
    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield got
        return
    try:
        yield got
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv=None) -> int:
    from lowbit.cli import main as lowbit
    return lowbit(["run", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
