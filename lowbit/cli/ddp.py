"""``python -m torch.distributed.run --nproc_per_node N -m lowbit.cli.ddp --config CONFIG``: the runs of
a sweep config, one after another, each trained data-parallel over the torchrun processes
(:func:`lowbit.experiments.ddp.run_sweep_ddp`). Bad input: one line on stderr, exit code 2."""
from __future__ import annotations

import argparse
import sys

from lowbit.cli.common import Parser, UsageError, fail


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m lowbit.cli.ddp", description="Train each run "
                                "of a sweep config data-parallel over the torchrun processes.")
    p.add_argument("--config", help="sweep YAML (default: the built-in default sweep)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (as lowbit run --set)")
    p.add_argument("--out", help="output directory (overrides out_dir)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point under torchrun: rank 0 writes each run's ``result.json`` and the tables."""
    from lowbit.experiments.ddp import run_sweep_ddp
    from lowbit.experiments.schema import ConfigError, load_sweep

    try:
        args = build_parser().parse_args(argv)
        cfg = load_sweep(args.config, list(args.overrides) + ([f"out_dir={args.out}"] if args.out else []))
    except SystemExit as exc:   # --help
        return int(exc.code or 0)
    except (UsageError, ConfigError) as err:
        return fail("python -m lowbit.cli.ddp", err)
    run_sweep_ddp(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
