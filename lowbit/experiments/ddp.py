"""A sweep's runs one after another, each trained data-parallel over the torchrun processes.

    torchrun --nproc_per_node 2 -m lowbit.cli.ddp --config CONFIG [--set k=v] [--out DIR]

:func:`run_sweep_ddp` is called on every rank; each run's data and model come from the same
:func:`lowbit.experiments.worker.load_run_data` / ``build_run_model`` as a local run, training is
:func:`lowbit.distributed.ddp.train_ddp`, and rank 0 writes each run's ``result.json`` (with its
``world_size``) and the tables. A run over N ranks has its own run id (``world_size`` is part of
it), so it never mixes with the single-process run of the same config; each rank uses the run's
``threads`` torch threads. Finished runs are skipped; an interrupted run starts again.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.distributed as dist

from lowbit.distributed.ddp import train_ddp
from lowbit.experiments import store
from lowbit.experiments.env import code_version, environment
from lowbit.experiments.grid import flatten
from lowbit.experiments.runner import is_finished, prepare
from lowbit.experiments.schema import SweepConfig
from lowbit.experiments.worker import build_run_model, load_run_data
from lowbit.ops.backend import backend
from lowbit.train import resolve_device


def run_sweep_ddp(cfg: SweepConfig) -> Path:
    """Run ``cfg`` under torchrun (see the module docstring); returns the results folder."""
    cuda = resolve_device(cfg.device).type == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    out = cfg.results_dir
    box = [prepare(cfg, world_size=dist.get_world_size()) if rank == 0 else None]
    dist.broadcast_object_list(box)
    specs = box[0]
    for spec in specs:
        run_dir = out / "runs" / spec.run_id
        if is_finished(run_dir):
            continue
        torch.set_num_threads(spec.threads)
        splits = load_run_data(spec)
        with backend(spec.quant_backend):  # the run's fake-quant kernels, as in the local worker
            model, _, footprint, _ = build_run_model(spec, splits)
            t0 = time.time()
            res = train_ddp(model, splits, spec.train)
        if rank == 0:
            device = "cuda" if cuda else "cpu"
            store.write_json(run_dir / store.RESULT_FILE, {
                "run_id": spec.run_id, "config": flatten(spec), "spec": spec.to_dict(),
                "env": {**code_version(), **environment(device),
                        "world_size": dist.get_world_size()},
                "started": t0, "status": res["status"], "error": None,
                "summary": res["summary"], "epochs": [{**r, **footprint} for r in res["epochs"]],
                "footprint": footprint, "finished": time.time()})
            print(f"{spec.run_id} {spec.label}: {res['status']}, best val_acc "
                  f"{res['summary'].get('best_val_acc', float('nan')):.4f}", flush=True)
    if rank == 0:
        store.rebuild_tables(out)
        print(f"results: {Path(out) / 'results'}")
    dist.barrier()
    dist.destroy_process_group()
    return Path(out) / "results"
