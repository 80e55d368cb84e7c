"""Overhead of the Ray executor against the local one on a sweep of many short runs.

    python benchmarks/executor_overhead.py               # 12 runs: tiny mlp, digits, 1 epoch
    python benchmarks/executor_overhead.py --seeds 4     # 24 runs

Both executors run the same sweep (mlp x {relu, gelu} x 6 precisions x seeds, 1 epoch, 300
training samples) into fresh temporary folders with 2 runs at a time (local: ``-j 2``; Ray:
``num_cpus=2`` and ``resources: {cpus: 1}``), in one process, one after the other. Printed:
wall time of each sweep, Ray's start-up (``ray.init``, not in the sweep time) and the ratio
Ray / local. Needs ``pip install ray``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

from lowbit.experiments import run_sweep, sweep_from_dict

PRECISIONS = ["fp32", "bf16", "fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp4_e2m1"]


def sweep(out_dir: str, seeds: int):
    return sweep_from_dict({
        "name": "overhead", "out_dir": out_dir, "models": ["mlp"], "activations": ["relu", "gelu"],
        "precisions": PRECISIONS, "seeds": list(range(seeds)), "datasets": ["digits"],
        "epochs": 1, "batch_size": 64, "quant_backend": "eager",
        "data": {"train_subset": 300, "eval_subset": 100}, "resources": {"cpus": 1, "gpus": 0}})


def timed(cfg, **kw) -> float:
    t0 = time.perf_counter()
    runs = run_sweep(cfg, quiet=True, **kw)
    elapsed = time.perf_counter() - t0
    bad = runs[runs["status"] != "completed"]
    if len(bad):
        sys.exit(f"{len(bad)} run(s) did not complete: {bad['error'].tolist()[:2]}")
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=1, help="seeds per config (12 runs each)")
    args = p.parse_args()
    try:
        import ray
    except ImportError:
        sys.exit("needs Ray: pip install ray")
    n = 12 * args.seeds
    with tempfile.TemporaryDirectory() as local_dir, tempfile.TemporaryDirectory() as ray_dir:
        local = timed(sweep(local_dir, args.seeds), jobs=2)
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        start = time.perf_counter() - t0
        try:
            remote = timed(sweep(ray_dir, args.seeds), executor="ray")
        finally:
            ray.shutdown()
    print(f"sweep of {n} runs (mlp, digits, 1 epoch), 2 at a time")
    print(f"  local executor : {local:7.2f} s  ({local / n:.2f} s/run)")
    print(f"  ray executor   : {remote:7.2f} s  ({remote / n:.2f} s/run), "
          f"plus ray.init {start:.2f} s")
    print(f"  ratio ray / local: {remote / local:.2f} (with ray.init: "
          f"{(remote + start) / local:.2f})")


if __name__ == "__main__":
    main()
