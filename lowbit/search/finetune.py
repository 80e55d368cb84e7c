"""Quantization-aware fine-tuning of a chosen assignment with :func:`lowbit.train.train`.

A deep copy of the float model is quantized with the recipe (fake quantization, STE gradients) and
trained for a few epochs at a small learning rate (AdamW, cosine schedule, no weight decay); the
original model is untouched. Returns validation/test accuracy before and after, and the fine-tuned
float weights (``state_dict``, dequantized: load them and apply the recipe again to deploy).
"""
from __future__ import annotations

import copy

from lowbit.nn import dequantize_model, quantize_model
from lowbit.train import TrainConfig, evaluate, train


def finetune(model, recipe, splits, epochs: int, *, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
             device: str = "cpu") -> dict:
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"finetune epochs={epochs!r} is not allowed; allowed: an integer >= 1")
    q = copy.deepcopy(model)
    quantize_model(q, recipe)
    ev = dict(mean=splits.mean, std=splits.std)
    before = {s: evaluate(q, getattr(splits, s).x, getattr(splits, s).y, **ev)[1] for s in ("val", "test")}
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer="adamw", lr=lr, weight_decay=0.0,
                      seed=seed, device=device)
    out = train(q, splits, cfg)
    after = {s: evaluate(q, getattr(splits, s).x, getattr(splits, s).y, **ev)[1] for s in ("val", "test")}
    dequantize_model(q)
    return {"epochs": epochs, "lr": lr, "status": out["status"], "val_acc_before": before["val"],
            "test_acc_before": before["test"], "val_acc_after": after["val"], "test_acc_after": after["test"],
            "state_dict": q.state_dict()}
