"""Grid expansion: a :class:`SweepConfig` becomes a list of :class:`RunSpec`, one per run.

A run id is the first 10 hex digits of the SHA-256 of the run's canonical JSON (sorted keys, no
whitespace; the sweep name and the quantization backend, which do not change results, excluded),
so the same run gets the same id in any sweep and a re-run finds its folder. Changing anything that affects the run (epochs, lr, a model kwarg) changes it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from lowbit.experiments.precision import RECIPE, resolve_precision
from lowbit.experiments.schema import GRID_KEYS, SOFTMAX_SAME, DataConfig, SweepConfig, excluded
from lowbit.train import TrainConfig

FP32 = "fp32"
NOT_HASHED = ("sweep", "quant_backend")


@dataclass(frozen=True)
class RunSpec:
    """One fully resolved run: the grid point, its training config, model kwargs and data."""

    model: str
    activation: str
    dataset: str
    precision: str
    softmax_precision: str | None
    quantize: tuple[str, ...]
    train: TrainConfig
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    sweep: str = ""
    quant_backend: str = "auto"

    @property
    def seed(self) -> int:
        return self.train.seed

    @property
    def label(self) -> str:
        soft = f"/sm:{self.softmax_precision}" if self.softmax_precision else ""
        amp = f"/amp:{self.train.amp}" if self.train.amp != "off" else ""
        return f"{self.model}/{self.activation}/{self.precision}{soft}{amp}"

    def to_dict(self) -> dict:
        """JSON-ready nested dict; :meth:`from_dict` inverts it."""
        d = dataclasses.asdict(self)
        d["quantize"] = list(self.quantize)
        d["train"]["augmentation_kwargs"] = dict(self.train.augmentation_kwargs)
        return json.loads(json.dumps(d))

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        d = dict(d)
        d["train"] = TrainConfig(**d["train"])
        d["data"] = DataConfig(**d["data"])
        d["quantize"] = tuple(d["quantize"])
        return cls(**d)

    @property
    def run_id(self) -> str:
        canon = {k: v for k, v in self.to_dict().items() if k not in NOT_HASHED}
        if canon["data"].get("on_bad_file") == "skip":  # the default: ids of older sweeps stay
            canon["data"] = {k: v for k, v in canon["data"].items() if k != "on_bad_file"}
        if canon["data"].get("resize", 0) is None:  # the default: ids of older sweeps stay
            canon["data"] = {k: v for k, v in canon["data"].items() if k != "resize"}
        # how often checkpoints are kept does not change results (and keeps ids of older sweeps)
        canon["train"] = {k: v for k, v in canon["train"].items() if k != "checkpoint_every"}
        text = json.dumps(canon, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:10]


def expand(cfg: SweepConfig) -> list[RunSpec]:
    """All runs of ``cfg`` in grid order (model slowest, seed fastest), duplicates removed.

    Grid points matching an ``exclude`` entry are left out. For ``fp32`` the quantize targets are cleared (nothing to quantize) so a ``quantize`` grid
    axis does not repeat the fp32 baseline; ``softmax: same`` resolves to the run's precision
    (None for fp32).
    """
    runs: dict[str, RunSpec] = {}
    for point in itertools.product(*(getattr(cfg, k) for k in GRID_KEYS)):
        if excluded(cfg, dict(zip(GRID_KEYS, point))):
            continue
        model, act, dataset, prec, soft, targets, aug, amp, seed = point
        prec = resolve_precision(prec)
        if soft == SOFTMAX_SAME:
            soft = None if prec == FP32 else prec
        spec = RunSpec(model=model, activation=act, dataset=dataset, precision=prec,
                       softmax_precision=soft, quantize=() if prec == FP32 else tuple(targets),
                       train=cfg.train_config(seed=seed, augmentation=aug, amp=amp),
                       model_kwargs=dict(cfg.model_kwargs.get(model, {})), data=cfg.data,
                       sweep=cfg.name, quant_backend=cfg.quant_backend)
        runs.setdefault(spec.run_id, spec)
    return list(runs.values())


def flatten(spec: RunSpec) -> dict:
    """The run's config as flat columns (kwargs as JSON text) for a results row."""
    t = spec.train
    row = {"sweep": spec.sweep, "run_id": spec.run_id, "model": spec.model,
           "activation": spec.activation, "dataset": spec.dataset, "precision": spec.precision,
           "precision_format": _format_name(spec.precision),
           "precision_bits": _bits(spec.precision),
           "softmax_precision": spec.softmax_precision or "none",
           "quantize": "+".join(spec.quantize) or "none", "augmentation": t.augmentation,
           "seed": t.seed}
    for f in dataclasses.fields(TrainConfig):
        if f.name not in row:
            value = getattr(t, f.name)
            row[f.name] = json.dumps(dict(value), sort_keys=True) if isinstance(value, dict) \
                else value
    row["model_kwargs"] = json.dumps(spec.model_kwargs, sort_keys=True)
    row["quant_backend"] = spec.quant_backend
    for f in dataclasses.fields(DataConfig):
        row[f"data_{f.name}"] = getattr(spec.data, f.name)
    return row


def _format_name(name: str) -> str:
    if name.startswith(RECIPE):
        return "recipe"
    from lowbit.formats import get_format
    return get_format(name).name


def _bits(name: str) -> float:
    if name.startswith(RECIPE):
        return float("nan")  # mixed precision: see the footprint columns
    from lowbit.formats import get_format
    fmt = get_format(name)
    return float(getattr(fmt, "bits_per_element", None) or fmt.bits)
