"""Data-parallel training of one large run through ``torch.distributed`` (DDP).

    torchrun --nproc_per_node 2 -m lowbit.cli.ddp --config configs/vit_fp8.yaml --set epochs=30
    # same as: python -m torch.distributed.run --nproc_per_node 2 -m lowbit.cli.ddp --config ...
    # (the sweep side: lowbit.experiments.ddp.run_sweep_ddp; the command: lowbit.cli.ddp)

Contract of :func:`train_ddp`: with ``world`` processes it computes the same updates as
:func:`lowbit.train.train` in one process with the same :class:`TrainConfig`, up to float
rounding. Every rank draws the same shuffling order and augmentation from one generator seeded
with ``cfg.seed`` (so ``cfg.batch_size`` is the *global* batch), takes the samples
``rank, rank + world, ...`` of each global batch, and scales its summed loss by
``world / global_batch``, so DDP's gradient average equals the full-batch mean gradient even
when the last batch does not split evenly. The lr schedule, optimizer and metrics (train loss
and accuracy summed over ranks; validation and test evaluated on each rank's full copy) are
those of ``train``. BatchNorm layers become :class:`~lowbit.distributed.syncbn.GlobalBatchNorm`
(statistics over the global batch, on CPU too), and in the training forward the dynamic
``tensor``/``channel`` scales of the fake quantizers are reduced over the ranks
(:func:`lowbit.ops.shared_scales.shared_scales` with an all-reduce MAX), so activation scales are
those of the whole batch, as in one process. Not supported here: gradient quantizers keep per-rank
scales (a warning says so), LSQ scales initialised from each rank's first batch, early stopping,
and mid-run checkpoints (an interrupted run starts again).

Backend: gloo on CPU, nccl on CUDA (one GPU per rank, ``LOCAL_RANK``).
"""
from __future__ import annotations

import math
import os
import time
import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lowbit.data import get_augmentation, iterate_batches, normalize
from lowbit.distributed.syncbn import convert_batchnorm
from lowbit.ops.shared_scales import shared_scales
from lowbit.train import (TrainConfig, amp_dtype, evaluate, resolve_device, setup_optimization,
                          summarize)


def shard(batch: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This rank's share of a global batch: items ``rank, rank + world, ...``."""
    return batch[rank::world]


def train_ddp(model: nn.Module, splits, cfg: TrainConfig, on_epoch=None) -> dict:
    """Train ``model`` data-parallel in the current process group (see the module docstring).

    Call it on every rank with the same model initialisation, data and ``cfg``. Returns
    ``{"status", "epochs", "summary"}`` like :func:`lowbit.train.train`, identical on all ranks.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    dtype = amp_dtype(cfg.amp, device)
    model = convert_batchnorm(model)
    _warn_grad_quantizers(model)
    model.to(device)
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda"
                                              else None)
    opt, sched, gen = setup_optimization(model, cfg, len(splits.train))
    aug_kw = dict(cfg.augmentation_kwargs) if cfg.augmentation != "none" else {}
    aug = get_augmentation(cfg.augmentation, splits.img_size, splits.in_chans, **aug_kw)
    history, status = [], "running"
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        batches = iterate_batches(splits.train.x, splits.train.y, cfg.batch_size, shuffle=True,
                                  generator=gen, transform=aug, device=device)
        train_loss, train_acc, seen = _epoch(ddp, batches, splits, cfg, opt, sched, dtype,
                                             rank, world)
        train_time = time.perf_counter() - t0
        ev = dict(mean=splits.mean, std=splits.std, device=device, dtype=dtype)
        val_loss, val_acc = evaluate(model, splits.val.x, splits.val.y, cfg.eval_batch_size, **ev)
        test_loss, test_acc = evaluate(model, splits.test.x, splits.test.y, cfg.eval_batch_size,
                                       **ev)
        row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
               "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss,
               "test_acc": test_acc, "epoch_lr": lr, "epoch_time_s": time.perf_counter() - t0,
               "train_time_s": train_time, "throughput": seen / max(train_time, 1e-9),
               "world_size": world}
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            status = "diverged"
            break
    status = "completed" if status == "running" else status
    return {"status": status, "epochs": history, "summary": summarize(history, status)}


def _epoch(ddp, batches, splits, cfg, opt, sched, dtype, rank, world):
    """One pass; returns (mean loss, accuracy, samples) over all ranks."""
    ddp.train()
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, seen (all ranks)
    for xb, yb in batches:
        n = len(yb)
        xb, yb = shard(normalize(xb, splits.mean, splits.std), rank, world), shard(yb, rank, world)
        with torch.autocast(xb.device.type, dtype=dtype, enabled=dtype is not None), \
                shared_scales(_all_max):
            out = ddp(xb)
        loss_sum = F.cross_entropy(out.float(), yb, label_smoothing=cfg.label_smoothing,
                                   reduction="sum")
        step = torch.tensor([loss_sum.item(), (out.argmax(1) == yb).sum().item(), len(yb)],
                            dtype=torch.float64)
        dist.all_reduce(step)
        if not math.isfinite(step[0].item()):  # every rank sees it: all stop together
            return float("nan"), 0.0, int(totals[2].item())
        opt.zero_grad(set_to_none=True)
        (loss_sum * (world / n)).backward()  # DDP averages over ranks: sum / n in total
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(ddp.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        totals += step
    seen = max(totals[2].item(), 1)
    return totals[0].item() / seen, totals[1].item() / seen, int(totals[2].item())


def _all_max(t: torch.Tensor) -> torch.Tensor:
    """Elementwise max of ``t`` over all ranks (a new tensor)."""
    t = t.detach().clone().contiguous()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def _warn_grad_quantizers(model: nn.Module) -> None:
    from lowbit.nn import GradQuantizer
    if any(isinstance(m, GradQuantizer) for m in model.modules()):
        warnings.warn("DDP: gradient quantizers compute their dynamic scales per rank (the backward "
                      "runs outside lowbit's shared scales), so a run with quantized grads does not "
                      "match one process exactly", stacklevel=3)
