"""Score mixed-precision recipes exactly as the exported C computes them (for ``lowbit search --target c``).

:class:`IntegerEvaluator` has the interface of :class:`lowbit.search.evaluate.Evaluator`
(``evaluator(recipes) -> [{"loss", "acc"}]``, ``baseline()``, ``n_evaluations``, a context manager):
each recipe's int2/int4/int8 weights are resolved per layer (lowbit.export.c.bits), the model is
calibrated on ``calib_x`` and quantized into the integer model of the C export (per-tensor weights,
8-bit activations, integer requantization), and the Python integer reference, which the C matches bit
for bit, is scored. So the accuracy the search reports is the accuracy of ``lowbit export c`` with the
same recipe, calibration samples and evaluation data.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .bits import resolve_bits
from .graph import trace
from .integer import build_qmodel
from .reference import run_integer


class IntegerEvaluator:
    def __init__(self, model: nn.Module, data, calib_x: torch.Tensor, width: int = 31):
        self.model, self.data, self.calib_x, self.width = model.eval(), data, calib_x, width
        self.x = data.normalized()
        self.graph = trace(self.model, tuple(self.x.shape[1:]))
        self.cache: dict = {}
        self.n_evaluations = 0
        self._baseline = None

    def baseline(self) -> dict:
        """The float model on the same data (the reference for --max-acc-drop)."""
        if self._baseline is None:
            from lowbit.search.evaluate import evaluate_recipe
            self._baseline = evaluate_recipe(self.model, None, self.data)
        return self._baseline

    def score(self, recipe) -> dict:
        qm = build_qmodel(self.model, self.graph, self.calib_x, resolve_bits(self.model, self.graph, recipe),
                          self.width)
        out = run_integer(qm, qm.quantize_input(self.x))
        y = self.data.y.numpy()
        logits = torch.from_numpy(out.astype(np.float64) * qm.values[qm.output].scale)
        loss = float(nn.functional.cross_entropy(logits, self.data.y.long()))
        return {"loss": loss, "acc": float((out.argmax(1) == y).mean())}

    def __call__(self, recipes) -> list[dict]:
        keys = [r.hash() for r in recipes]
        for k, r in zip(keys, recipes):
            if k not in self.cache:
                self.cache[k] = self.score(r)
                self.n_evaluations += 1
        return [dict(self.cache[k]) for k in keys]

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
