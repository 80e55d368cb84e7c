"""Accuracy of a quantized model on held-out data, cached, optionally in a process pool.

:class:`Evaluator` quantizes the float model in place with ``lowbit.nn.quantize_model``, runs
``lowbit.train.evaluate`` (eval mode, no grad) and undoes the quantization exactly, so one model
serves every evaluation. Results are cached by the recipe's hash; ``n_evaluations`` counts the
evaluations actually run. With ``workers > 1`` a ``spawn`` process pool evaluates batches of
recipes (each worker holds its own copy of the model and data, one torch thread each; spawn, not
fork, because forking a process that has used OpenMP threads can hang). With ``executor="ray"``
the evaluations run as Ray tasks (one CPU each), in-process or on the cluster at ``address``; the
model and data are put in Ray's object store once.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch
from torch import nn

from lowbit.nn import Recipe, quantize_model
from lowbit.ops.backend import backend as use_backend, check_backend, current_backend
from lowbit.train import evaluate


@dataclass
class EvalData:
    """Unnormalised inputs ``x`` (N, C, H, W), labels ``y`` and the per-channel ``mean``/``std``."""

    x: torch.Tensor
    y: torch.Tensor
    mean: tuple | None = None
    std: tuple | None = None

    @classmethod
    def from_splits(cls, splits, split: str = "val", limit: int | None = None) -> "EvalData":
        if split not in ("train", "val", "test"):
            raise ValueError(f"split={split!r} is not allowed; allowed: train, val, test")
        s = getattr(splits, split)
        if len(s) == 0:
            raise ValueError(f"the {split} split of {splits.name} is empty; allowed: a non-empty split")
        n = len(s) if limit is None else min(int(limit), len(s))
        return cls(s.x[:n], s.y[:n], splits.mean, splits.std)

    def normalized(self) -> torch.Tensor:
        if self.mean is None:
            return self.x
        from lowbit.data import normalize
        return normalize(self.x, self.mean, self.std)

    def __len__(self):
        return len(self.y)


def evaluate_recipe(model: nn.Module, recipe: Recipe | None, data: EvalData, batch_size: int = 512,
                    backend: str | None = None) -> dict:
    """{"loss", "acc"} of ``model`` quantized by ``recipe`` (None: float); the model is left as it was.
    ``backend``: the fake-quant kernels (None: the current ``lowbit.backend``)."""
    asg = quantize_model(model, recipe) if recipe is not None else None
    try:
        with use_backend(backend):
            loss, acc = evaluate(model, data.x, data.y, batch_size, mean=data.mean, std=data.std)
    finally:
        if asg is not None:
            asg.undo()
    return {"loss": float(loss), "acc": float(acc)}


_WORKER: dict = {}


def _init_worker(model, data, batch_size, backend):
    torch.set_num_threads(1)
    _WORKER.update(model=model, data=data, batch_size=batch_size, backend=backend)


def _work(recipe_dict):
    return evaluate_recipe(_WORKER["model"], Recipe.from_dict(recipe_dict), _WORKER["data"], _WORKER["batch_size"],
                           _WORKER["backend"])


def _ray_work(model, data, batch_size, recipe_dict, backend):
    torch.set_num_threads(1)
    return evaluate_recipe(model, Recipe.from_dict(recipe_dict), data, batch_size, backend)


EXECUTORS = ("local", "ray")


class Evaluator:
    """``evaluator(recipes) -> [{"loss", "acc"}, ...]``; ``baseline()`` is the float model.

    ``backend``: the fake-quant kernels of every evaluation, also in worker processes (None: the
    ``lowbit.backend`` current when the evaluator is created).
    """

    def __init__(self, model: nn.Module, data: EvalData, batch_size: int = 512, workers: int = 1,
                 executor: str = "local", address: str | None = None, backend: str | None = None):
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers={workers!r} is not allowed; allowed: an integer >= 1")
        if executor not in EXECUTORS:
            raise ValueError(f"executor={executor!r} is not allowed; allowed: {', '.join(EXECUTORS)}")
        self.model, self.data, self.batch_size, self.workers = model, data, batch_size, workers
        self.executor, self.address, self._ray = executor, address, None
        self.backend = check_backend(backend) if backend is not None else current_backend()
        self.cache: dict = {}
        self.n_evaluations = 0
        self._pool = None
        self._baseline = None

    def baseline(self) -> dict:
        if self._baseline is None:
            self._baseline = evaluate_recipe(self.model, None, self.data, self.batch_size, self.backend)
        return self._baseline

    def __call__(self, recipes: list[Recipe]) -> list[dict]:
        keys = [r.hash() for r in recipes]
        todo = {k: r for k, r in zip(keys, recipes) if k not in self.cache}
        if todo:
            if self.executor == "ray":
                results = self._ray_map([r.to_dict() for r in todo.values()])
            elif self.workers > 1 and len(todo) > 1:
                results = list(self._executor().map(_work, [r.to_dict() for r in todo.values()]))
            else:
                results = [evaluate_recipe(self.model, r, self.data, self.batch_size, self.backend)
                           for r in todo.values()]
            self.cache.update(zip(todo, results))
            self.n_evaluations += len(todo)
        return [dict(self.cache[k]) for k in keys]

    def _ray_map(self, recipe_dicts: list[dict]) -> list[dict]:
        if self._ray is None:
            from lowbit.distributed.ray import init_ray

            ray = init_ray(self.address)
            self._ray = (ray, ray.remote(num_cpus=1)(_ray_work), ray.put(self.model), ray.put(self.data))
        ray, fn, model_ref, data_ref = self._ray
        return ray.get([fn.remote(model_ref, data_ref, self.batch_size, d, self.backend) for d in recipe_dicts])

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                             initargs=(self.model, self.data, self.batch_size, self.backend))
        return self._pool

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
