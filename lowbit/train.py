"""Training and evaluation: one plain function each, no quantization inside.

    cfg = TrainConfig(epochs=5, optimizer="adamw", lr=2e-3, seed=0)
    result = train(model, splits, cfg, run_dir="runs/x")   # resumes from runs/x/checkpoint.pt
    result["status"], result["summary"]["best_val_acc"], result["epochs"][-1]["test_acc"]

A quantized model (``lowbit.nn.quantize_model``) trains through the same loop: the quantizers are
ordinary modules inside it. Accuracies are fractions in [0, 1]; losses are mean cross-entropy.

Contracts:

* Seeding: ``torch.manual_seed(cfg.seed)`` at the start (dropout, stochastic rounding) and one
  ``torch.Generator`` seeded with ``cfg.seed`` that draws the shuffling order and the augmentation.
  Both states go into the checkpoint, so a resumed run continues bit for bit (same device and
  thread count). Model initialisation is the caller's (seed before ``create_model``).
* Schedule: per step, linear warm-up from ``lr / steps`` to ``lr`` over ``warmup_epochs``, then
  cosine decay to 0 at the last step.
* Divergence: a non-finite training loss (or validation or test loss) stops the run at once; the epoch is
  recorded with what was measured and ``status`` is ``"diverged"``.
* Early stopping: ``patience`` epochs without a new best validation accuracy end the run with
  status ``"early_stopped"``; ``None`` or 0 disables it.
* Checkpoints (``run_dir``): ``checkpoint.pt`` after every epoch (model, optimizer, scheduler,
  scaler, epoch, RNG states, best metric, history) and ``best.pt`` (model weights at the best
  validation accuracy), each written to a temporary file and moved with ``os.replace``, and each
  loadable with ``torch.load(path, weights_only=True)``; with ``checkpoint_every=N`` also
  ``checkpoint_epoch_N.pt`` every N epochs (``train(..., resume_from=that file)`` continues from it).
* Convergence epoch: the first epoch whose validation accuracy reaches 99 % of the best one.
* Overfitting score (``overfit_score``): best minus final validation accuracy (> 0: the run got
  worse after its best epoch), as the ViT study defines it. Time per epoch: ``mean_epoch_time_s``
  and its sample standard deviation ``epoch_time_std_s`` over the run's epochs.
* Generalisation gap: training accuracy minus validation (``gen_gap``) or test (``gen_gap_test``)
  accuracy, both at the best epoch. Training accuracy is the running accuracy of the training pass
  (augmented batches, train mode), as most training logs report it.
"""
from __future__ import annotations

import math
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from lowbit.data import get_augmentation, iterate_batches, normalize, num_batches
from lowbit.train_amp import AMP_MODES, amp_dtype, dtype_name, make_scaler
from lowbit.train_checkpoint import checkpoint_state, resume_file, resume_or_quarantine, save_atomic
from lowbit.train_usage import UsageSampler

OPTIMIZERS = ("sgd", "adamw")
DEVICES = ("auto", "cpu", "cuda")
TERMINAL = ("completed", "early_stopped", "diverged")


@dataclass(frozen=True)
class TrainConfig:
    """Everything :func:`train` needs besides the model and the data.

    ``amp``: "off"; "bf16"/"fp16" autocast in that dtype on CPU and CUDA (fp16 with loss
    scaling; :mod:`lowbit.train_amp`); "auto" is fp16 on CUDA and off on CPU. ``device``: "auto" picks CUDA when available.
    ``augmentation_kwargs`` go to the preset's builder (e.g. ``flip=False`` for digits); the
    identity preset "none" ignores them. ``checkpoint_every``: also keep the full checkpoint of
    every N-th epoch as ``checkpoint_epoch_N.pt`` in the run folder (``train(resume_from=...)``
    restarts from one); None keeps only the latest.
    """

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False      # plain momentum (torch's default, the MobileNet study's SGD)
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0
    grad_clip: float | None = None
    patience: int | None = None
    amp: str = "off"
    augmentation: str = "none"
    augmentation_kwargs: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 512
    checkpoint_every: int | None = None

    def __post_init__(self):
        def need(ok: bool, key: str, what: str):
            if not ok:
                raise ValueError(f"{key}: expected {what}, got {getattr(self, key)!r}")

        def num(key: str) -> bool:  # a finite real number (not a bool)
            v = getattr(self, key)
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        for key in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, key)
            need(isinstance(value, int) and not isinstance(value, bool) and value >= 1, key, "an int >= 1")
        need(num("lr") and self.lr > 0, "lr", "a finite number > 0")
        need(num("momentum") and self.momentum >= 0, "momentum", "a finite number >= 0")
        need(num("label_smoothing") and 0 <= self.label_smoothing < 1, "label_smoothing", "a number in [0, 1)")
        need(num("weight_decay") and self.weight_decay >= 0, "weight_decay", "a finite number >= 0")
        need(num("warmup_epochs") and self.warmup_epochs >= 0, "warmup_epochs", "a finite number >= 0")
        need(self.grad_clip is None or (num("grad_clip") and self.grad_clip > 0), "grad_clip",
             "None or a finite number > 0")
        need(self.patience is None or (isinstance(self.patience, int) and not isinstance(self.patience, bool)
                                       and self.patience >= 0), "patience", "None or an int >= 0")
        need(isinstance(self.seed, int) and not isinstance(self.seed, bool), "seed", "an int")
        need(self.checkpoint_every is None or (isinstance(self.checkpoint_every, int) and not isinstance(
            self.checkpoint_every, bool) and self.checkpoint_every >= 1), "checkpoint_every", "None or an int >= 1")
        need(isinstance(self.nesterov, bool), "nesterov", "true or false")
        for key, allowed in (("optimizer", OPTIMIZERS), ("amp", AMP_MODES), ("device", DEVICES)):
            need(getattr(self, key) in allowed, key, "one of " + ", ".join(allowed))


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when available else cpu; "cuda" without CUDA raises a clear error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    return torch.device(name)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512, *,
             mean=None, std=None, device=None, dtype: torch.dtype | None = None
             ) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (fraction) of ``model`` in eval mode on ``(x, y)``.

    ``x`` is normalised with ``mean``/``std`` when given; ``dtype`` enables autocast.
    """
    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    loss_sum, correct = 0.0, 0
    for xb, yb in iterate_batches(x, y, batch_size, device=device):
        if mean is not None:
            xb = normalize(xb, mean, std)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(xb)
        loss_sum += F.cross_entropy(out.float(), yb, reduction="sum").item()
        correct += (out.argmax(1) == yb).sum().item()
    model.train(was_training)
    n = max(len(y), 1)
    return loss_sum / n, correct / n


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 to 0 at step ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.nesterov and cfg.momentum > 0)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA peak allocated on a GPU, else this process's peak RSS (``ru_maxrss``, KiB on Linux)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def summarize(history: list[dict], status: str) -> dict:
    """Per-run metrics from the per-epoch rows (see the module doc for the definitions)."""
    if not history:
        return {"status": status, "epochs_run": 0}
    finite = [r for r in history if math.isfinite(r["val_acc"])] or history
    best = max(finite, key=lambda r: r["val_acc"])
    target = 0.99 * best["val_acc"]
    conv = next(r["epoch"] for r in finite if r["val_acc"] >= target)
    last = history[-1]
    def mean(key):
        vals = [r[key] for r in history if r.get(key) is not None]
        return sum(vals) / len(vals) if vals else None
    def peak(key):
        vals = [r[key] for r in history if r.get(key) is not None]
        return max(vals) if vals else None
    return {
        "status": status, "epochs_run": len(history), "best_epoch": best["epoch"],
        "best_val_acc": best["val_acc"], "test_acc_at_best": best["test_acc"],
        "train_acc_at_best": best["train_acc"], "final_train_acc": last["train_acc"],
        "final_val_acc": last["val_acc"], "final_test_acc": last["test_acc"],
        "final_train_loss": last["train_loss"], "final_val_loss": last["val_loss"],
        "final_test_loss": last["test_loss"], "convergence_epoch": conv,
        "gen_gap": best["train_acc"] - best["val_acc"],
        "gen_gap_test": best["train_acc"] - best["test_acc"],
        "overfit_score": best["val_acc"] - last["val_acc"],
        "total_time_s": sum(r["epoch_time_s"] for r in history),
        "mean_epoch_time_s": mean("epoch_time_s"), "epoch_time_std_s": _std([r["epoch_time_s"] for r in history]), "mean_throughput": mean("throughput"),
        "peak_mem_mb": peak("peak_mem_mb"), "cpu_util_mean": mean("cpu_util_pct"),
        "cpu_util_max": peak("cpu_util_pct"), "proc_cpu_mean": mean("proc_cpu_pct"),
        "ram_used_pct_mean": mean("ram_used_pct"), "ram_used_pct_max": peak("ram_used_pct"),
        "rss_mb_max": peak("rss_mb"), "gpu_util_mean": mean("gpu_util_pct"),
    }


def _std(values: list[float]) -> float:
    """Sample standard deviation (n - 1); 0 for a single value."""
    if len(values) < 2:
        return 0.0
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def setup_optimization(model: nn.Module, cfg: "TrainConfig", n_train: int):
    """Seed, optimizer, per-step LR schedule (cosine with warm-up) and shuffling generator of a run."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = make_optimizer(model, cfg)
    steps = num_batches(n_train, cfg.batch_size)
    warmup = round(cfg.warmup_epochs * steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, cfg.epochs * steps, warmup))
    return opt, sched, gen


def train(model: nn.Module, splits, cfg: TrainConfig, *, run_dir: str | os.PathLike | None = None,
          on_epoch: Callable[[dict], None] | None = None,
          footprint: Mapping[str, Any] | None = None,
          resume_from: str | os.PathLike | None = None) -> dict:
    """Train ``model`` on ``splits`` (a :class:`lowbit.data.DatasetSplits`) as ``cfg`` says.

    With ``run_dir``, checkpoints go there and an existing ``checkpoint.pt`` is resumed (a finished
    run returns its stored result without training). ``on_epoch(row)`` is called after each epoch's
    checkpoint is written. ``footprint`` (e.g. ``lowbit.nn.footprint(...).to_dict()``) is copied
    into every epoch row. ``resume_from``: a checkpoint file of this loop (``checkpoint.pt`` or
    ``checkpoint_epoch_N.pt``) to continue from instead of ``run_dir``'s; a file that cannot be
    resumed raises :class:`lowbit.checkpoint.CheckpointError`. Returns ``{"status", "epochs": [row, ...], "summary": {...}}``.
    """
    _check_splits(splits)
    device = resolve_device(cfg.device)
    dtype = amp_dtype(cfg.amp, device)
    model.to(device)
    opt, sched, gen = setup_optimization(model, cfg, len(splits.train))
    scaler = make_scaler(device, dtype)
    state = {"epoch": 0, "history": [], "best_val_acc": -1.0, "bad_epochs": 0, "status": "running"}
    ckpt_path = Path(run_dir) / "checkpoint.pt" if run_dir is not None else None
    if ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    if resume_from is not None:
        state = resume_file(Path(resume_from), model, opt, sched, scaler, gen, device)
    elif ckpt_path is not None:
        if ckpt_path.exists():
            resumed = resume_or_quarantine(ckpt_path, model, opt, sched, scaler, gen, device)
            if resumed is None:  # damaged checkpoint moved aside: start from scratch
                opt, sched, gen = setup_optimization(model, cfg, len(splits.train))
                scaler = make_scaler(device, dtype)
            else:
                state = resumed
    if state["status"] in TERMINAL:
        return {"status": state["status"], "epochs": state["history"],
                "summary": {**summarize(state["history"], state["status"]), **_run_info(
                    model, device, dtype)}}
    aug_kw = dict(cfg.augmentation_kwargs) if cfg.augmentation != "none" else {}
    aug = get_augmentation(cfg.augmentation, splits.img_size, splits.in_chans, **aug_kw)
    sampler = UsageSampler(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        batches = iterate_batches(splits.train.x, splits.train.y, cfg.batch_size, shuffle=True,
                                  generator=gen, transform=aug, device=device)
        train_loss, train_acc, seen = _train_epoch(model, batches, splits, cfg, opt, sched,
                                                   scaler, dtype)
        train_time = time.perf_counter() - t0
        ev = dict(mean=splits.mean, std=splits.std, device=device, dtype=dtype)
        val_loss, val_acc = evaluate(model, splits.val.x, splits.val.y, cfg.eval_batch_size, **ev)
        test_loss, test_acc = evaluate(model, splits.test.x, splits.test.y, cfg.eval_batch_size,
                                       **ev)
        diverged = not (math.isfinite(train_loss) and math.isfinite(val_loss) and math.isfinite(test_loss))
        row = {"epoch": epoch, "train_loss": train_loss,
               "train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc,
               "test_loss": test_loss, "test_acc": test_acc, "epoch_lr": lr,
               "epoch_time_s": time.perf_counter() - t0, "train_time_s": train_time,
               "throughput": seen / max(train_time, 1e-9), "peak_mem_mb": peak_memory_mb(device),
               **sampler.sample(), **dict(footprint or {})}
        state["history"].append(row)
        state["epoch"] = epoch
        if val_acc > state["best_val_acc"] and not diverged:
            state["best_val_acc"], state["bad_epochs"] = val_acc, 0
            if ckpt_path is not None:
                save_atomic({"model": model.state_dict(), "epoch": epoch, "val_acc": val_acc},
                            ckpt_path.with_name("best.pt"))
        else:
            state["bad_epochs"] += 1
        if diverged:
            state["status"] = "diverged"
        elif cfg.patience and state["bad_epochs"] >= cfg.patience and epoch < cfg.epochs:
            state["status"] = "early_stopped"
        elif epoch == cfg.epochs:
            state["status"] = "completed"
        if ckpt_path is not None:
            ckpt = checkpoint_state(model, opt, sched, scaler, gen, device, state)
            save_atomic(ckpt, ckpt_path)
            if cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0:
                save_atomic(ckpt, ckpt_path.with_name(f"checkpoint_epoch_{epoch}.pt"))
        if on_epoch is not None:
            on_epoch(row)
        if state["status"] in TERMINAL:
            break
    summary = {**summarize(state["history"], state["status"]), **_run_info(model, device, dtype)}
    return {"status": state["status"], "epochs": state["history"], "summary": summary}


def _check_splits(splits) -> None:
    """An empty training split, or inputs holding Inf/NaN, would give meaningless "completed" runs."""
    if len(splits.train) == 0:
        raise ValueError(f"{getattr(splits, 'name', 'data')}: the training split is empty; allowed: at least 1 example")
    for part in ("train", "val", "test"):
        x = getattr(splits, part).x
        if x.is_floating_point() and x.numel() and not bool(torch.isfinite(x).all()):
            n_inf, n_nan = int(torch.isinf(x).sum()), int(torch.isnan(x).sum())
            raise ValueError(f"{getattr(splits, 'name', 'data')}: the {part} split's inputs hold {n_inf} Inf and {n_nan} NaN values "
                             f"(of {x.numel()}); allowed: finite inputs")


def _train_epoch(model, batches, splits, cfg: TrainConfig, opt, sched, scaler, dtype
                 ) -> tuple[float, float, int]:
    """One pass over ``batches``: (mean loss, accuracy, samples seen). A non-finite loss stops
    the pass before its optimizer step and makes the returned loss NaN."""
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for xb, yb in batches:
        xb = normalize(xb, splits.mean, splits.std)
        with torch.autocast(xb.device.type, dtype=dtype, enabled=dtype is not None):
            out = model(xb)
        loss = F.cross_entropy(out.float(), yb, label_smoothing=cfg.label_smoothing)
        if not torch.isfinite(loss):
            return float("nan"), correct / max(seen, 1), seen
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip is not None:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        sched.step()
        loss_sum += loss.item() * len(yb)
        correct += (out.argmax(1) == yb).sum().item()
        seen += len(yb)
    return loss_sum / max(seen, 1), correct / max(seen, 1), seen


def _run_info(model: nn.Module, device: torch.device, dtype) -> dict:
    return {"device_used": str(device), "amp_dtype": dtype_name(dtype),
            "n_params": sum(p.numel() for p in model.parameters()),
            "threads": torch.get_num_threads()}


__all__ = ["TrainConfig", "train", "evaluate", "summarize", "lr_factor", "resolve_device",
           "amp_dtype", "peak_memory_mb", "save_atomic", "UsageSampler"]
